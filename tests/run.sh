#!/usr/bin/env bash
# Runs edgeloop's whole test suite on a fresh machine: builds the CLI and tests, pulls
# the two real models the tests run on (a no-op when they are cached), then
# runs every test in release mode (the models are too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build the tests (and with them the binaries) first: one build with the
# features the whole workspace's tests unify to, so nothing is compiled twice.
cargo test --release --locked --workspace --no-run
./target/release/edgeloop pull smollm2-135m-instruct
./target/release/edgeloop pull gemma3-270m
cargo test --release --locked --workspace
