#!/usr/bin/env bash
# edgeloop against llama.cpp on the same machine, same run, same model files:
# prefill (pp) and decode (tg) tokens/s and their ratio, at each thread count.
#
#   bash tests/bench/vs_llamacpp.sh [MODEL ...]   (names or .gguf paths; default: both real models)
#
# Then N sequences decoded together from a shared 128-token prompt (128
# tokens each), against llama-batched-bench -pps, for N in NPL. On the CPU it
# also prints the bandwidth bound: the measured memory read bandwidth divided
# by the bytes of weights one decoded token streams, and decode as a share of
# it; and the time from the start of the load to the first token.
#
# Environment: THREADS (thread counts, default "1 2"), PP (256), TG (128),
# REPS (3), NPL (1,4,8,16), EDGELOOP_REF_DIR (where
# tests/reference/build_llamacpp.sh builds llama.cpp), BACKEND (cpu, the
# default, or wgpu: edgeloop on the GPU against llama.cpp's Vulkan backend with
# every layer offloaded, -ngl 99, on the same GPU; builds llama.cpp with
# VULKAN=1, which needs libvulkan-dev, glslc and spirv-headers).
# EDGELOOP (an edgeloop binary) and LLAMA_BIN (a folder holding llama-bench
# and llama-batched-bench) use prebuilt tools instead of building them, e.g.
# on a machine without compilers.
# This prints figures; it asserts nothing (shared machines are noisy).
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS="${THREADS:-1 2}"
PP="${PP:-256}"
TG="${TG:-128}"
REPS="${REPS:-3}"
NPL="${NPL:-1,4,8,16}"
BACKEND="${BACKEND:-cpu}"
case "$BACKEND" in
  cpu) VULKAN=0; NGL=() ;;
  wgpu) VULKAN=1; NGL=(-ngl 99); THREADS="${THREADS%% *}" ;;
  *) echo "BACKEND must be cpu or wgpu, not $BACKEND" >&2; exit 2 ;;
esac
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(smollm2-135m-instruct gemma3-270m)

if [ -z "${EDGELOOP:-}" ]; then
  cargo build --release --locked -p edgeloop-desktop >&2
  EDGELOOP=./target/release/edgeloop
fi
if [ -n "${LLAMA_BIN:-}" ]; then
  LLAMA_BENCH="$LLAMA_BIN/llama-bench"
  LLAMA_BATCHED="$LLAMA_BIN/llama-batched-bench"
else
  TOOLS=$(VULKAN=$VULKAN bash tests/reference/build_llamacpp.sh 2>/dev/null)
  LLAMA_BENCH=$(sed -n 's/^llama-bench=//p' <<<"$TOOLS")
  LLAMA_BATCHED=$(sed -n 's/^llama-batched-bench=//p' <<<"$TOOLS")
fi
[ -x "$LLAMA_BENCH" ] && [ -x "$LLAMA_BATCHED" ] || { echo "llama.cpp's benchmarks were not built" >&2; exit 1; }

printf '%-24s %-3s %-6s %12s %12s %8s\n' model thr test edgeloop llama.cpp ratio
for name in "${MODELS[@]}"; do
  if [ -f "$name" ]; then
    path=$name
    name=$(basename "$name" .gguf)
  else
    "$EDGELOOP" pull "$name" >&2
    path=$("$EDGELOOP" models path "$name")
  fi
  for t in $THREADS; do
  ours=$("$EDGELOOP" bench --model "$path" --offline --backend "$BACKEND" --threads "$t" -p "$PP" -n "$TG" -r "$REPS" --json)
  theirs=$("$LLAMA_BENCH" -m "$path" "${NGL[@]}" -t "$t" -p "$PP" -n "$TG" -r "$REPS" -o json 2>/dev/null)
  python3 - "$name" "$t" "$PP" "$TG" "$ours" "$theirs" <<'PY'
import json, sys
name, t, pp, tg, ours, theirs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5]), json.loads(sys.argv[6])
ref = {}
for r in theirs:
    key = "pp" if r["n_prompt"] > 0 and r["n_gen"] == 0 else "tg"
    ref[key] = r["avg_ts"]
for key, n, mine in (("pp", pp, ours["prefill_tok_s"]), ("tg", tg, ours["decode_tok_s"])):
    print(f"{name:<24} {t:<3} {key}{n:<4} {mine:12.1f} {ref[key]:12.1f} {mine / ref[key]:8.2f}")
print(f"{name:<24} {t:<3} on {ours['backend']} ({ours['device']})")
print(f"{name:<24} {t:<3} load {ours['load_ms']:.1f} ms, first token {ours['first_token_ms']:.1f} ms, peak RSS {ours['peak_rss_mb']:.0f} MB")
if ours["read_gb_s"] > 0:
    bound = ours["bound_tok_s"]
    print(f"{name:<24} {t:<3} bound  {ours['read_gb_s']:.1f} GB/s read / {ours['weights_mb_per_token']:.1f} MB per token = {bound:.1f} tok/s;"
          f" decode at {ours['decode_tok_s'] / bound:.0%} of it (llama.cpp {ref['tg'] / bound:.0%})")
PY
  ours=$("$EDGELOOP" bench --model "$path" --offline --backend "$BACKEND" --threads "$t" -p 128 -n 128 -r 1 --parallel "$NPL" --json)
  theirs=$("$LLAMA_BATCHED" -m "$path" "${NGL[@]}" -t "$t" -c 4096 -npp 128 -ntg 128 -npl "$NPL" -pps --output-format jsonl 2>/dev/null)
  python3 - "$name" "$t" "$ours" "$theirs" <<'PY'
import json, sys
name, t, ours = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ref = {r["pl"]: r["speed_tg"] for r in map(json.loads, filter(None, sys.argv[4].splitlines()))}
for p in ours["parallel"]:
    n, mine = p["sequences"], p["decode_tok_s"]
    print(f"{name:<24} {t:<3} N={n:<4} {mine:12.1f} {ref[n]:12.1f} {mine / ref[n]:8.2f}   (aggregate decode, shared pp128, tg128 each)")
PY
  done
done
