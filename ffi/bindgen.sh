#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python sources of edgeloop-ffi from the
# built desktop library, with the workspace's own uniffi-bindgen (the same
# UniFFI version as the library). The sources are build outputs: never
# edit or commit them.
#
#   ffi/bindgen.sh [--no-build] [OUT_DIR]      (default: target/bindings)
#
# --no-build uses the library and generator already in target/release (as
# tests/run.sh builds them with the rest of the workspace).
#
# OUT_DIR/kotlin/dev/edgeloop/edgeloop.kt, OUT_DIR/swift/{Edgeloop.swift,
# edgeloopFFI.h, EdgeloopFFI.modulemap}, OUT_DIR/python/edgeloop.py with the
# library copied beside it (importable with OUT_DIR/python on sys.path).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
if [ "${1:-}" = "--no-build" ]; then
  build=0
  shift
fi
out="${1:-target/bindings}"

if [ "$build" = 1 ]; then
  cargo build --release --locked -p edgeloop-ffi -p uniffi-bindgen
fi
case "$(uname -s)" in
  Darwin) lib=target/release/libedgeloop_ffi.dylib ;;
  *) lib=target/release/libedgeloop_ffi.so ;;
esac

for language in kotlin swift python; do
  rm -rf "${out:?}/$language"
  ./target/release/uniffi-bindgen generate --library "$lib" \
    --language "$language" --out-dir "$out/$language" --no-format
done
cp "$lib" "$out/python/"
echo "bindings in $out (kotlin, swift, python)" >&2
