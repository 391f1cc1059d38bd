#!/usr/bin/env bash
# edgeloop against llama.cpp on the same machine, same run, same model files:
# prefill (pp) and decode (tg) tokens/s and their ratio.
#
#   bash tests/bench/vs_llamacpp.sh [MODEL_NAME ...]   (default: both real models)
#
# Environment: THREADS (default 2), PP (256), TG (128), REPS (3),
# EDGELOOP_REF_DIR (where tests/reference/build_llamacpp.sh builds llama.cpp).
# This prints figures; it asserts nothing (shared machines are noisy).
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS="${THREADS:-2}"
PP="${PP:-256}"
TG="${TG:-128}"
REPS="${REPS:-3}"
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(smollm2-135m-instruct gemma3-270m)

cargo build --release --locked -p edgeloop-desktop >&2
EDGELOOP=./target/release/edgeloop
LLAMA_BENCH=$(bash tests/reference/build_llamacpp.sh 2>/dev/null | sed -n 's/^llama-bench=//p')
[ -x "$LLAMA_BENCH" ] || { echo "llama-bench was not built" >&2; exit 1; }

printf '%-24s %-6s %12s %12s %8s\n' model test edgeloop llama.cpp ratio
for name in "${MODELS[@]}"; do
  "$EDGELOOP" pull "$name" >&2
  path=$("$EDGELOOP" models path "$name")
  ours=$("$EDGELOOP" bench --model "$path" --offline --threads "$THREADS" -p "$PP" -n "$TG" -r "$REPS" --json)
  theirs=$("$LLAMA_BENCH" -m "$path" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -o json 2>/dev/null)
  python3 - "$name" "$PP" "$TG" "$ours" "$theirs" <<'PY'
import json, sys
name, pp, tg, ours, theirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5])
ref = {}
for r in theirs:
    key = "pp" if r["n_prompt"] > 0 and r["n_gen"] == 0 else "tg"
    ref[key] = r["avg_ts"]
for key, n, mine in (("pp", pp, ours["prefill_tok_s"]), ("tg", tg, ours["decode_tok_s"])):
    print(f"{name:<24} {key}{n:<4} {mine:12.1f} {ref[key]:12.1f} {mine / ref[key]:8.2f}")
print(f"{name:<24} load   {ours['load_ms']:9.1f} ms   peak RSS {ours['peak_rss_mb']:.0f} MB   weights/token {ours['weights_mb_per_token']:.1f} MB")
PY
done
