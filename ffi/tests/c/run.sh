#!/usr/bin/env bash
# Compiles header_test.c against the generated C header and the desktop
# library, then runs it on the default model.
#
#   ffi/tests/c/run.sh [BINDINGS_DIR]     (default: target/bindings, from ffi/bindgen.sh)
set -euo pipefail
cd "$(dirname "$0")/../../.."
bindings="${1:-target/bindings}"
model="$(./target/release/edgeloop models path smollm2-135m-instruct)"
contract="$(sed -n 's/.*bindings_contract_version = \([0-9]*\).*/\1/p' "$bindings/swift/Edgeloop.swift")"
out=target/c-header-test
mkdir -p "$out"
# The header uses clang's nullability qualifiers; other compilers drop them.
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -D_Nonnull= -D_Nullable= \
  -I "$bindings/swift" ffi/tests/c/header_test.c \
  -L target/release -ledgeloop_ffi -o "$out/header_test"
LD_LIBRARY_PATH=target/release "$out/header_test" "$model" "$contract"
