#!/usr/bin/env bash
# Runs edgeloop's whole test suite on a fresh machine: builds the CLI, pulls
# the two real models the tests run on (a no-op when they are cached), then
# runs every test in release mode (the models are too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p edgeloop-desktop
./target/release/edgeloop pull smollm2-135m-instruct
./target/release/edgeloop pull gemma3-270m
cargo test --release --locked --workspace
