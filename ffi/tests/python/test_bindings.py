"""The Python bindings against the real default model: streaming
generation, cancellation, async calls, solving with test-time scaling,
verification, the trace store's round trip to a real host, and errors."""

import asyncio
import gzip
import json
import os
import subprocess
import threading

import pytest

import edgeloop
from conftest import BIN, DEFAULT_MODEL, TOKEN, Collect, greedy

PROMPT = "What is the capital of France?"


def test_version_and_model_info(engine):
    assert edgeloop.version() == "0.1.0"
    info = engine.info()
    assert info.name == DEFAULT_MODEL
    assert info.architecture == "llama"
    # Auto: a hardware GPU when there is one, else the CPU with the reason.
    assert info.backend in (edgeloop.Backend.CPU, edgeloop.Backend.GPU)
    assert info.device
    assert (info.backend_note is None) == (info.backend == edgeloop.Backend.GPU)
    assert info.context == 4096 and info.vocab_size == 49152 and info.layers == 30
    assert info.file_bytes > 50_000_000
    assert engine.count_tokens("Hello world") == 2


def test_the_gpu_backend_answers_like_the_cpu():
    try:
        gpu = edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig(backend=edgeloop.Backend.GPU))
    except edgeloop.EdgeloopError.Unsupported as e:
        if os.environ.get("EDGELOOP_SKIP_GPU_TESTS") == "1":
            pytest.skip(f"no GPU adapter: {e}")
        raise
    info = gpu.info()
    assert info.backend == edgeloop.Backend.GPU and info.backend_note is None
    assert info.device
    cpu = edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig(backend=edgeloop.Backend.CPU))
    assert cpu.info().backend == edgeloop.Backend.CPU
    # Greedy replies may part at a near tie (the two paths round
    # differently), but both answer the question.
    question = "What is the capital of France? Answer in one word."
    for e in (gpu, cpu):
        r = e.new_session(None).generate(question, greedy(8), None)
        assert "Paris" in r.text and r.completion_tokens <= 8


def test_streamed_pieces_make_the_reply_and_match_the_cli(engine):
    listener = Collect()
    r = engine.new_session(None).generate(PROMPT, greedy(16), listener)
    assert r.finish_reason == edgeloop.FinishReason.LENGTH
    assert r.completion_tokens == 16 and r.prompt_tokens > 10
    assert "".join(listener.pieces) == r.text and len(listener.pieces) > 1
    assert r.decode_tokens_per_second > 0
    # The command-line tool, an independent caller of the same core, writes
    # the same greedy text.
    cli = subprocess.run(
        [str(BIN / "edgeloop"), "generate", "--offline", "--temperature", "0", "-n", "16", PROMPT],
        capture_output=True, text=True, check=True)
    assert cli.stdout.rstrip("\n") == r.text


def test_seeded_sampling_repeats_and_seeds_differ(engine):
    config = edgeloop.GenerateConfig(max_tokens=24, temperature=1.0, seed=7)
    a = engine.new_session(None).generate("Tell me a story.", config, None).text
    b = engine.new_session(None).generate("Tell me a story.", config, None).text
    config.seed = 8
    c = engine.new_session(None).generate("Tell me a story.", config, None).text
    assert a == b
    assert a != c


def test_stop_string_ends_the_reply(engine):
    full = engine.new_session(None).generate(PROMPT, greedy(16), None).text
    cut = full.split()[2]
    r = engine.new_session(None).generate(PROMPT, greedy(16, stop=[cut]), None)
    assert r.finish_reason == edgeloop.FinishReason.STOP_STRING
    assert r.text == full[: full.index(cut)]


def test_conversation_keeps_turns_and_their_cache(engine):
    s = engine.new_session("You are a terse assistant.")
    first = s.generate("Name a color.", greedy(8), None)
    assert first.cached_prompt_tokens == 0
    second = s.generate("Name another one.", greedy(8), None)
    roles = [m.role for m in s.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages()[2].content == first.text
    # The second turn computes only what follows the first prompt and reply.
    assert second.cached_prompt_tokens >= first.prompt_tokens
    assert second.prompt_tokens > second.cached_prompt_tokens
    s.reset()
    assert [m.role for m in s.messages()] == ["system"]
    again = s.generate("Name a color.", greedy(8), None)
    assert again.cached_prompt_tokens == 0 and again.text == first.text


def test_listener_returning_false_cancels_and_keeps_history(engine):
    s = engine.new_session(None)
    listener = Collect(stop_after=3)
    r = s.generate(PROMPT, greedy(64), listener)
    assert r.finish_reason == edgeloop.FinishReason.CANCELLED
    assert len(listener.pieces) == 3
    assert r.completion_tokens < 64
    assert s.messages() == []


def test_cancel_from_another_thread(engine):
    s = engine.new_session(None)
    started = threading.Event()
    out = {}

    def run():
        out["r"] = s.generate("Write a long essay about the sea.",
                              edgeloop.GenerateConfig(max_tokens=2000, temperature=0.0),
                              Collect(on_first=started.set))

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    s.cancel()
    t.join(60)
    assert not t.is_alive()
    assert out["r"].finish_reason == edgeloop.FinishReason.CANCELLED
    assert out["r"].completion_tokens < 2000
    # The session is still usable.
    assert s.generate(PROMPT, greedy(4), None).completion_tokens == 4


def test_async_generate_and_solve(engine):
    sync = engine.new_session(None).generate(PROMPT, greedy(12), None).text

    async def both():
        a = engine.new_session(None).generate_async(PROMPT, greedy(12), None)
        b = engine.solve_async("What is 2 + 3?", edgeloop.SolveConfig(strategy="greedy", max_tokens=48))
        return await asyncio.gather(a, b)

    gen, sol = asyncio.run(both())
    assert gen.text == sync
    assert sol.strategy == "greedy" and sol.spend.samples == 1


def test_sessions_on_one_engine_run_from_several_threads(engine):
    prompts = ["Name a fruit.", "Name a city.", "Name an animal."]
    serial = [engine.new_session(None).generate(p, greedy(10), None).text for p in prompts]
    results = [None] * len(prompts)

    def run(i):
        results[i] = engine.new_session(None).generate(prompts[i], greedy(10), None).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == serial


def test_solve_with_self_consistency(engine):
    r = engine.solve("What is 7 + 5?", edgeloop.SolveConfig(strategy="self-consistency", samples=4, max_tokens=64))
    assert r.strategy == "self-consistency"
    assert r.spend.samples == 4 and len(r.samples) == 4
    assert r.spend.tokens == sum(s.tokens for s in r.samples)
    votes = [s.answer for s in r.samples if s.answer is not None]
    assert r.answer is not None and r.answer in votes
    assert r.confidence == pytest.approx(votes.count(r.answer) / len(votes))
    # The same seed gives the same samples.
    again = engine.solve("What is 7 + 5?", edgeloop.SolveConfig(strategy="self-consistency", samples=4, max_tokens=64))
    assert [s.text for s in again.samples] == [s.text for s in r.samples]


def test_solve_with_beam_search(engine):
    config = edgeloop.SolveConfig(strategy="beam", samples=2, max_tokens=48)
    r = engine.solve("What is 7 + 5?", config)
    assert r.strategy == "beam"
    assert 1 <= len(r.samples) <= 2
    # The answer is that of the most likely answered hypothesis, found
    # without sampling: the same every time.
    answered = [s for s in r.samples if s.answer is not None]
    assert r.answer == answered[0].answer
    assert engine.solve("What is 7 + 5?", config).answer == r.answer


def test_solve_with_a_fitted_auto_policy(engine):
    # Never confident by the trace's probability: greedy, then the second
    # beam group led by the greedy trace.
    policy = '{"gate": "trace", "confidence": 1.5, "beams": 2}'
    r = engine.solve("What is 7 + 5?", edgeloop.SolveConfig(max_tokens=48, auto_policy=policy))
    assert r.strategy == "auto"
    assert len(r.samples) == 2
    with pytest.raises(edgeloop.EdgeloopError.InvalidArgument, match="auto_policy"):
        engine.solve("What is 7 + 5?", edgeloop.SolveConfig(auto_policy='{"gate": "vibes", "confidence": 0.5, "beams": 2}'))
    with pytest.raises(edgeloop.EdgeloopError.InvalidArgument, match="beam count"):
        engine.solve("What is 7 + 5?", edgeloop.SolveConfig(auto_policy='{"gate": "trace", "confidence": 0.5, "beams": 0}'))


def test_solve_respects_the_token_budget(engine):
    r = engine.solve("What is 7 + 5?", edgeloop.SolveConfig(strategy="self-consistency", samples=8, max_tokens=64, max_total_tokens=40))
    assert r.spend.limited
    assert r.spend.tokens <= 40 + 8


def test_verify_runs_the_named_stages(engine):
    v = engine.verify("What is 2 + 2?", "4", "2 + 2 = 4.",
                      edgeloop.VerifyConfig(stages=["correctness"], votes=2, judge_tokens=32))
    assert [x.stage for x in v.votes] == ["correctness", "correctness"]
    assert v.spend.samples == 2
    assert v.accepted == all(x.verdict is True for x in v.votes)


def test_traces_round_trip_to_a_host(engine, host, tmp_path):
    traces = edgeloop.Traces.open(str(tmp_path / "traces.sqlite"), None)
    assert traces.stats().traces == 0
    checked = engine.solve_checked(
        "What is 3 + 4?",
        edgeloop.SolveConfig(strategy="self-consistency", samples=4, max_tokens=64),
        edgeloop.VerifyConfig(stages=["agreement"], votes=1, min_share=0.0),
        traces, True)
    assert checked.verification.accepted, checked.verification
    tid = checked.trace_id
    listed = traces.list(10, 0, None)
    assert [t.id for t in listed] == [tid]
    assert listed[0].state == "stored" and listed[0].consent and listed[0].accepted
    record = json.loads(traces.record_json(tid))
    assert record["id"] == tid and record["question"] == "What is 3 + 4?"
    assert record["answer"] == checked.solution.answer
    assert traces.record_json("0" * 64) is None

    bundle = tmp_path / "bundle.jsonl.gz"
    assert traces.export(str(bundle), True) == 1
    lines = gzip.decompress(bundle.read_bytes()).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [tid]

    assert not traces.report_settings().enabled
    traces.enable_reporting(host.url, TOKEN)
    settings = traces.report_settings()
    assert settings.enabled and settings.url == host.url and settings.has_token
    sent = traces.report_now()
    assert (sent.marked, sent.accepted, sent.remaining) == (1, 1, 0)
    assert traces.stats().reported == 1
    assert traces.list(10, 0, "reported")[0].id == tid
    # The host holds it, once.
    at_host = edgeloop.Traces.open(str(host.db), None)
    assert [t.id for t in at_host.list(10, 0, None)] == [tid]
    assert traces.report_now().marked == 0

    traces.disable_reporting()
    assert not traces.report_settings().has_token
    with pytest.raises(edgeloop.EdgeloopError.Report, match="reporting is off"):
        traces.report_now()


def test_errors_name_what_was_wrong(engine, tmp_path):
    E = edgeloop.EdgeloopError
    with pytest.raises(E.ModelNotFound, match="no-such-model"):
        edgeloop.Engine.open("no-such-model", edgeloop.EngineConfig())
    with pytest.raises(E.ModelNotFound, match="missing.gguf"):
        edgeloop.Engine.open(str(tmp_path / "missing.gguf"), edgeloop.EngineConfig())
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(E.BadModel):
        edgeloop.Engine.open(str(junk), edgeloop.EngineConfig())
    with pytest.raises(E.ResourceLimit, match="memory budget"):
        edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig(memory_budget_bytes=1_000_000)).new_session(None).generate(PROMPT, greedy(4), None)
    # A GPU asked for where there is none (no DX12 on this system).
    saved = os.environ.get("WGPU_BACKEND")
    os.environ["WGPU_BACKEND"] = "dx12"
    try:
        with pytest.raises(E.Unsupported, match="no usable GPU"):
            edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig(backend=edgeloop.Backend.GPU))
    finally:
        if saved is None:
            del os.environ["WGPU_BACKEND"]
        else:
            os.environ["WGPU_BACKEND"] = saved

    small = edgeloop.Engine.open(DEFAULT_MODEL, edgeloop.EngineConfig(context=32))
    with pytest.raises(E.ResourceLimit, match="context of 32"):
        small.new_session(None).generate("word " * 40, greedy(4), None)

    s = engine.new_session(None)
    with pytest.raises(E.InvalidArgument, match="max_tokens"):
        s.generate(PROMPT, greedy(0), None)
    with pytest.raises(E.InvalidArgument, match="temperature"):
        s.generate(PROMPT, edgeloop.GenerateConfig(temperature=-1.0), None)
    with pytest.raises(E.InvalidArgument, match="empty prompt"):
        s.complete("", greedy(4), None)
    with pytest.raises(E.InvalidArgument, match="unknown strategy"):
        engine.solve("What is 1 + 1?", edgeloop.SolveConfig(strategy="magic"))
    with pytest.raises(E.InvalidArgument, match="samples = 0"):
        engine.solve("What is 1 + 1?", edgeloop.SolveConfig(samples=0))
    with pytest.raises(E.InvalidArgument, match="kind"):
        engine.solve("What is 1 + 1?", edgeloop.SolveConfig(kind="poem"))
    with pytest.raises(E.InvalidArgument):
        engine.verify("What is 1 + 1?", "2", "", edgeloop.VerifyConfig(stages=["vibes"]))

    not_a_store = tmp_path / "notes.sqlite"
    not_a_store.write_text("these are my notes")
    with pytest.raises(E.Store):
        edgeloop.Traces.open(str(not_a_store), None)
    assert not_a_store.read_text() == "these are my notes"
    traces = edgeloop.Traces.open(str(tmp_path / "t.sqlite"), None)
    with pytest.raises(E.InvalidArgument):
        traces.enable_reporting("ftp://example", TOKEN)
    with pytest.raises(E.InvalidArgument, match="state"):
        traces.list(10, 0, "lost")


def test_a_failing_listener_is_an_error_not_a_crash(engine):
    class Boom(edgeloop.TokenListener):
        def on_token(self, text):
            raise RuntimeError("listener failed")

    s = engine.new_session(None)
    with pytest.raises(edgeloop.EdgeloopError.Internal):
        s.generate(PROMPT, greedy(8), Boom())
    assert s.generate(PROMPT, greedy(4), None).completion_tokens == 4
