#!/usr/bin/env bash
# Runs edgeloop's whole test suite on a fresh machine: builds the CLI and tests, pulls
# the two real models the tests run on (a no-op when they are cached), then
# runs every test in release mode (the models are too slow unoptimised),
# then the bindings' tests (Python, C header, Kotlin on the JVM), the
# mobile target builds and the NEON kernels' tests under emulation.
#
# Besides Rust and Python 3 with pip, the binding tests need pytest, a C
# compiler, kotlinc ($KOTLINC or on PATH), a JDK, JNA and JUnit 4, the
# mobile builds clang, llvm and the arm64 C headers, the NEON kernels'
# tests qemu-user and gcc-aarch64-linux-gnu, the GPU tests a
# Vulkan driver (lavapipe: mesa-vulkan-drivers), and the fuzz run
# cargo-fuzz and a C++ compiler; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPU tests run on Vulkan; on a machine without a GPU that is lavapipe
# (NODEVICE_SELECT silences a harmless Mesa warning).
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" NODEVICE_SELECT=1

# Runs one step, then prints how long it took (on stderr), so that a slow
# step shows in the log.
step() {
  local start=$SECONDS
  "$@"
  echo "== $* took $((SECONDS - start)) s ($SECONDS s in all)" >&2
}

# Build everything first: tests, binaries, the bindings' library and their
# generator, in one build with the features the whole workspace's tests
# unify to, so nothing is compiled twice.
step cargo build --release --locked --workspace --all-targets
step ./target/release/edgeloop pull smollm2-135m-instruct
step ./target/release/edgeloop pull gemma3-270m
step cargo test --release --locked --workspace

# The bindings, generated from the library just built, and their tests.
step bash ffi/bindgen.sh --no-build
step python3 -m pytest -q ffi/tests/python
step bash ffi/tests/c/run.sh
step bash android/test-jvm.sh

step bash tests/mobile.sh
step bash tests/arm.sh

# Every fuzz target for 20 seconds from its seeds (AddressSanitizer on).
step bash fuzz/run.sh 20
