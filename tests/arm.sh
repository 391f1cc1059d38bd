#!/usr/bin/env bash
# The NEON kernels, run: edgeloop-core's kernel, quantization and element-wise
# tests (each NEON kernel against the scalar reference, bit for bit where
# the scalar one is exact) cross-compiled for aarch64-unknown-linux-gnu and
# run under qemu-user's emulation of an Armv8 CPU.
#
# Needs qemu-user, gcc-aarch64-linux-gnu (the linker, and the C compiler for
# the bundled SQLite) and the Rust target; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add aarch64-unknown-linux-gnu >/dev/null
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo test --release --locked --target aarch64-unknown-linux-gnu -p edgeloop-core --lib -- \
  kernels:: quant:: model::ops::
