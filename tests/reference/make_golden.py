#!/usr/bin/env python3
"""Generate llama.cpp reference ("golden") data for the edgeloop tests.

Run with the llama_cpp Python package built by build_llamacpp.sh on PYTHONPATH:

    PYTHONPATH=$EDGELOOP_REF_DIR/python python3 tests/reference/make_golden.py \
        --smollm2 /path/SmolLM2-135M-Instruct.Q4_1.gguf \
        --gemma3 /path/gemma-3-270m-q4_k_m.gguf \
        --out tests/golden

Writes, for each model, <out>/<model_name>/tokenizer.json and logits.json.
Everything is computed on CPU with 2 threads; output is deterministic
(fixed prompts, argmax decoding, sorted keys, fixed float rounding).
See tests/reference/README.md for the exact file formats.
"""

import argparse
import hashlib
import json
import os
import re
import sys

import numpy as np

import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "corpus.txt")

N_CTX = 512
N_BATCH = 512
N_THREADS = 2
SEQ_LEN = 64  # teacher-forced sequence length
N_GREEDY = 32  # greedy tokens after the prompt alone
TOP_K = 20
LOGIT_DECIMALS = 5

# Fixed prompts. "special": whether special-token text in the prompt is parsed
# (llama_tokenize parse_special). All prompts are tokenized with
# add_special=True, i.e. llama.cpp adds BOS/EOS only where the GGUF asks for it
# (tokenizer.ggml.add_bos_token / add_eos_token); the resulting ids are stored.
COMMON_PROMPTS = [
    {"name": "english", "text": "The quick brown fox jumps over the lazy dog.", "special": False},
    {"name": "arithmetic", "text": "Question: What is 12 plus 7?\nAnswer:", "special": False},
    {
        "name": "code",
        "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "special": False,
    },
]
CHATML_PROMPT = {
    "name": "chatml",
    "text": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "special": True,
}

MODELS = {
    # key: (cli arg, model_name, extra prompts)
    "smollm2": ("smollm2-135m-instruct", COMMON_PROMPTS + [CHATML_PROMPT]),
    "gemma3": ("gemma3-270m", COMMON_PROMPTS),
}

_ESC_RE = re.compile(r"\\(u\{([0-9a-fA-F]{1,6})\}|.)", re.S)


def decode_line(line):
    """Decode the corpus escapes: \\n \\t \\r \\\\ \\# \\u{HEX}; others stay literal."""

    def rep(m):
        if m.group(2) is not None:
            return chr(int(m.group(2), 16))
        c = m.group(1)
        return {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "#": "#"}.get(c, "\\" + c)

    return _ESC_RE.sub(rep, line)


def read_corpus(path):
    out = []
    with open(path, "r", encoding="utf-8", newline="\n") as fh:
        for raw in fh:
            line = raw[:-1] if raw.endswith("\n") else raw
            if line == "" or line.startswith("#"):
                continue
            out.append(decode_line(line))
    seen = set()
    for s in out:
        if s in seen:
            raise SystemExit(f"duplicate corpus string: {s!r}")
        seen.add(s)
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions():
    info = {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_version": llama_cpp.llama_version().decode("utf-8", "replace"),
        "llama_cpp_commit": "unknown",
    }
    # build_llamacpp.sh writes REF_INFO.json next to the package.
    ref_info = os.path.join(os.path.dirname(llama_cpp.__file__), "REF_INFO.json")
    if os.path.exists(ref_info):
        with open(ref_info) as fh:
            ri = json.load(fh)
        info["llama_cpp_commit"] = ri.get("llama_cpp_commit", "unknown")
    info["llama_cpp_commit"] = os.environ.get("EDGELOOP_LLAMACPP_COMMIT", info["llama_cpp_commit"])
    return info


def dump_cases_json(path, header, list_key, items):
    """Write JSON with one list item per line (small diffs, deterministic)."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("{\n")
        for k, v in header.items():
            fh.write(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, sort_keys=True)},\n")
        fh.write(f"  {json.dumps(list_key)}: [\n")
        for i, it in enumerate(items):
            sep = "," if i + 1 < len(items) else ""
            fh.write("    " + json.dumps(it, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + sep + "\n")
        fh.write("  ]\n}\n")


def quiet_llama(path, **kw):
    return Llama(model_path=path, verbose=False, **kw)


def tokenizer_golden(model_path, model_name, sha, corpus, vers, out_dir):
    llm = quiet_llama(model_path, vocab_only=True)
    cases = []
    n_roundtrip_diff = 0
    for s in corpus:
        ids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
        cases.append({"text": s, "ids": [int(t) for t in ids]})
        back = llm.detokenize(ids, special=False)
        if back != s.encode("utf-8"):
            n_roundtrip_diff += 1
    header = {
        "model": model_name,
        "sha256": sha,
        "tokenization": "llama_tokenize(text, add_special=false, parse_special=false): no BOS/EOS added; text of "
        "CONTROL tokens (e.g. <|im_start|>, <start_of_turn>, <bos>) is tokenized as plain text. Note: llama.cpp still "
        "matches USER_DEFINED tokens (GGUF token_type 4) as whole tokens before BPE/SPM, even with "
        "parse_special=false (gemma3: whitespace runs like '\\n' or '    ', '\\t', some HTML tags, '<s>', "
        "'<start_of_image>', ...)",
        "versions": vers,
    }
    os.makedirs(out_dir, exist_ok=True)
    dump_cases_json(os.path.join(out_dir, "tokenizer.json"), header, "cases", cases)
    # sanity: special-token-looking text must not produce control tokens
    specials = {}
    for t in ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "</s>", "<think>", "<|endoftext|>"]:
        sp = llm.tokenize(t.encode(), add_bos=False, special=True)
        pl = llm.tokenize(t.encode(), add_bos=False, special=False)
        specials[t] = (sp, pl)
    del llm
    return cases, n_roundtrip_diff, specials


def topk(row, k):
    # sort by logit descending, ties by token id ascending (stable, deterministic)
    order = np.lexsort((np.arange(row.shape[0]), -row.astype(np.float64)))[:k]
    return [[int(i), round(float(row[i]), LOGIT_DECIMALS)] for i in order]


def logsumexp(row):
    r = row.astype(np.float64)
    m = r.max()
    return float(m + np.log(np.exp(r - m).sum()))


def logits_golden(model_path, model_name, sha, prompts, vers, out_dir):
    llm = quiet_llama(
        model_path,
        n_ctx=N_CTX,
        n_batch=N_BATCH,
        n_ubatch=N_BATCH,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        n_gpu_layers=0,
        logits_all=True,
        seed=0,
        flash_attn=False,
    )
    meta = llm.metadata
    add_bos = meta.get("tokenizer.ggml.add_bos_token", "unset")
    add_eos = meta.get("tokenizer.ggml.add_eos_token", "unset")
    bos = llm.token_bos()
    eos = llm.token_eos()
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    eog_ids = [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    results = []
    for p in prompts:
        prompt_ids = [int(t) for t in llm.tokenize(p["text"].encode("utf-8"), add_bos=True, special=p["special"])]
        assert len(prompt_ids) < SEQ_LEN
        # greedy decode: argmax of llama.cpp's logits (first index on ties), no sampler.
        n_gen = max(N_GREEDY, SEQ_LEN - len(prompt_ids))
        llm.reset()
        llm.eval(prompt_ids)
        gen = []
        for _ in range(n_gen):
            row = llm.scores[llm.n_tokens - 1]
            tok = int(np.argmax(row))
            gen.append(tok)
            llm.eval([tok])
        seq = (prompt_ids + gen)[:SEQ_LEN]
        # teacher forcing: one eval (single llama_decode, n_batch 512) of the full sequence
        llm.reset()
        llm.eval(seq)
        scores = np.array(llm.scores[:SEQ_LEN], dtype=np.float32, copy=True)
        positions = []
        tf_argmax_mismatch = []
        for i in range(SEQ_LEN):
            row = scores[i]
            positions.append({"pos": i, "top": topk(row, TOP_K), "logsumexp": round(logsumexp(row), LOGIT_DECIMALS)})
            if i + 1 < SEQ_LEN and i >= len(prompt_ids) - 1 and int(np.argmax(row)) != seq[i + 1]:
                tf_argmax_mismatch.append(i)
        if p["special"]:
            how = ("llama_tokenize(text, add_special=true, parse_special=true): special-token text such as "
                   "<|im_start|> IS parsed into special tokens; BOS added only if the GGUF add_bos_token is true")
        else:
            how = ("llama_tokenize(text, add_special=true, parse_special=false): BOS added only if the GGUF "
                   "add_bos_token is true; no special-token parsing")
        results.append(
            {
                "name": p["name"],
                "prompt": p["text"],
                "tokenization": how,
                "add_special": True,
                "parse_special": p["special"],
                "prompt_ids": prompt_ids,
                "greedy": gen[:N_GREEDY],
                "sequence": seq,
                "teacher_forced_argmax_mismatch_positions": tf_argmax_mismatch,
                "logits": positions,
            }
        )
        print(f"  [{model_name}] {p['name']}: prompt {len(prompt_ids)} ids, greedy[:8]={gen[:8]}, "
              f"top1@last_prompt_pos={positions[len(prompt_ids)-1]['top'][0]}, "
              f"tf/greedy mismatches={tf_argmax_mismatch}", file=sys.stderr)
        print("    greedy text: " + repr(llm.detokenize(gen[:N_GREEDY]).decode("utf-8", "replace")), file=sys.stderr)
    header = {
        "model": model_name,
        "sha256": sha,
        "versions": vers,
        "settings": {
            "n_ctx": N_CTX,
            "n_batch": N_BATCH,
            "n_ubatch": N_BATCH,
            "n_threads": N_THREADS,
            "n_gpu_layers": 0,
            "flash_attn": False,
            "logits_all": True,
            "seq_len": SEQ_LEN,
            "top_k": TOP_K,
            "logit_decimals": LOGIT_DECIMALS,
            "n_greedy": N_GREEDY,
        },
        "gguf_add_bos_token": add_bos,
        "gguf_add_eos_token": add_eos,
        "bos_id": int(bos),
        "eos_id": int(eos),
        "eog_ids": eog_ids,
        "n_vocab": int(llm.n_vocab()),
        "description": (
            "For each prompt: prompt_ids = tokenization described in 'tokenization'; greedy = the first "
            f"{N_GREEDY} ids of llama.cpp's argmax continuation of the prompt (prompt evaluated in one batch, then "
            "one llama_decode per generated token; argmax over raw logits, lowest id on ties, no sampler, no "
            "repetition penalty, EOS not treated specially, generation does not stop at EOS); "
            f"sequence = (prompt_ids + that continuation)[:{SEQ_LEN}]; logits[i] = the top-{TOP_K} "
            "[token_id, logit] pairs (sorted by logit desc, then id asc) of the next-token logits at position "
            "i, computed by ONE eval of the whole sequence (logits_all), plus logsumexp over the full vocab. "
            "teacher_forced_argmax_mismatch_positions lists positions i >= len(prompt_ids)-1 where the "
            "teacher-forced argmax differs from sequence[i+1]: llama.cpp's single-token decode and its batched "
            "decode are not bit-identical (for some tokens they differ by up to ~1 logit, same order as its "
            "activation-quantization noise), so near-ties can flip."
        ),
    }
    os.makedirs(out_dir, exist_ok=True)
    dump_cases_json(os.path.join(out_dir, "logits.json"), header, "prompts", results)
    del llm
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", required=True, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--gemma3", required=True, help="path to gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--out", required=True, help="output dir, e.g. tests/golden")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    args = ap.parse_args()

    corpus = read_corpus(args.corpus)
    vers = versions()
    print(f"corpus: {len(corpus)} strings; versions: {vers}", file=sys.stderr)
    for key in ("smollm2", "gemma3"):
        path = getattr(args, key)
        name, prompts = MODELS[key]
        sha = sha256_file(path)
        out_dir = os.path.join(args.out, name)
        print(f"{name}: {path} sha256={sha}", file=sys.stderr)
        cases, n_rt, specials = tokenizer_golden(path, name, sha, corpus, vers, out_dir)
        print(f"  tokenizer: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids, "
              f"{n_rt} cases where detokenize(ids) != text", file=sys.stderr)
        for t, (sp, pl) in specials.items():
            print(f"    {t!r}: special=True -> {sp}  special=False -> {pl}", file=sys.stderr)
        logits_golden(path, name, sha, prompts, vers, out_dir)


if __name__ == "__main__":
    main()
