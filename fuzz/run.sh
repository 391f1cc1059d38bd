#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS_PER_TARGET seconds (30 by
# default) with AddressSanitizer, starting from its seed corpus in
# corpus/<target>/. Fails on the first crash, leak, timeout or out-of-memory
# (libFuzzer writes the input to artifacts/<target>/). Prints per target:
# executions, coverage (cov/ft of libFuzzer's last stats line), corpus size.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler;
# a stable toolchain is enough: RUSTC_BOOTSTRAP=1 lets it take the
# `-Zsanitizer` flags cargo-fuzz passes.
set -euo pipefail

secs="${1:-30}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

# Longest input per target: GGUF seeds are ~11 KB; templates, records and
# bodies are smaller.
declare -A max_len=(
    [gguf_load]=32768
    [tokenizer_build]=16384
    [chat_template]=4096
    [trace_record]=8192
    [upload_body]=16384
)
targets=(gguf_load tokenizer_build chat_template trace_record upload_body)

# Optimised, with debug assertions and overflow checks (cargo-fuzz's
# default), AddressSanitizer on.
cargo fuzz build 2>&1 | tail -n 3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

summary=()
for t in "${targets[@]}"; do
    log="$work/$t.log"
    echo "== $t: ${secs}s"
    # New inputs land in corpus/<t>/ too (git ignores all but seed-*).
    if ! cargo fuzz run "$t" corpus/"$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAIL: $t crashed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    stats="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$stats")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")"
    n="$(find corpus/"$t" -type f | wc -l)"
    seeds="$(find corpus/"$t" -type f -name 'seed-*' | wc -l)"
    line="$t: ${execs:-?} executions, cov ${cov:-?}, ft ${ft:-?}, corpus $n files ($seeds seeds)"
    echo "$line"
    summary+=("$line")
done
echo "== all targets passed (${secs}s each)"
printf '%s\n' "${summary[@]}"
