#!/usr/bin/env bash
# The mobile builds that can be checked without the Android NDK or Xcode:
# edgeloop-ffi (and with it edgeloop-core) compiled for Android
# (aarch64-linux-android) and iOS (aarch64-apple-ios) as static libraries,
# which type-checks every line for those targets, and each archive checked
# to export the bindings' entry points. Linking the Android shared library
# needs the NDK (android/README.md); the XCFramework needs Xcode
# (ios/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add aarch64-linux-android aarch64-apple-ios >/dev/null

# Android compiles SQLite from source (rusqlite's `bundled`). Without the
# NDK's clang, the system clang compiles it for the same target against the
# arm64 C headers of Debian's cross libc (libc6-dev-arm64-cross). iOS links
# the SDK's own SQLite, so no C is compiled for it.
export CC_aarch64_linux_android="${CC_aarch64_linux_android:-clang}"
export AR_aarch64_linux_android="${AR_aarch64_linux_android:-llvm-ar}"
export CFLAGS_aarch64_linux_android="${CFLAGS_aarch64_linux_android:---target=aarch64-linux-android24 -isystem /usr/aarch64-linux-gnu/include}"

for target in aarch64-linux-android aarch64-apple-ios; do
  cargo rustc --release --locked -p edgeloop-ffi --lib --target "$target" --crate-type staticlib
  archive="target/$target/release/libedgeloop_ffi.a"
  # (This llvm-nm cannot read the bitcode some std members carry; the
  # library's own objects are what matters.)
  symbols="$(llvm-nm --defined-only "$archive" 2>/dev/null || true)"
  for symbol in uniffi_edgeloop_ffi_fn_constructor_engine_open uniffi_edgeloop_ffi_fn_method_session_generate \
                ffi_edgeloop_ffi_uniffi_contract_version; do
    # Mach-O prefixes C symbols with an underscore.
    if ! grep -Eq " _?$symbol\$" <<<"$symbols"; then
      echo "$archive does not define $symbol" >&2
      exit 1
    fi
  done
  echo "$target: $(du -h "$archive" | cut -f1) static library exports the bindings" >&2
done
