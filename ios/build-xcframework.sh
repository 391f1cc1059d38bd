#!/usr/bin/env bash
# Builds ios/build/EdgeloopFFI.xcframework (iOS device, iOS simulator and
# macOS slices of the static library, with the C header and module map)
# and generates the Swift bindings into Sources/Edgeloop/Generated.
# Needs a Mac with Xcode and:
#   rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios \
#                     aarch64-apple-darwin x86_64-apple-darwin
set -euo pipefail
cd "$(dirname "$0")/.."
out=ios/build
rm -rf "$out" ios/Sources/Edgeloop/Generated
mkdir -p "$out/headers" ios/Sources/Edgeloop/Generated

build() { cargo build --release --locked -p edgeloop-ffi --lib --target "$1"; }
for target in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios \
              aarch64-apple-darwin x86_64-apple-darwin; do
  build "$target"
done
lib=libedgeloop_ffi.a
mkdir -p "$out/ios-simulator" "$out/macos"
lipo -create target/aarch64-apple-ios-sim/release/$lib target/x86_64-apple-ios/release/$lib \
  -output "$out/ios-simulator/$lib"
lipo -create target/aarch64-apple-darwin/release/$lib target/x86_64-apple-darwin/release/$lib \
  -output "$out/macos/$lib"

# The bindings come from the host library's metadata.
cargo build --release --locked -p edgeloop-ffi -p uniffi-bindgen
./target/release/uniffi-bindgen generate --library target/release/libedgeloop_ffi.dylib \
  --language swift --out-dir "$out/swift"
cp "$out/swift/Edgeloop.swift" ios/Sources/Edgeloop/Generated/
cp "$out/swift/edgeloopFFI.h" "$out/headers/"
cp "$out/swift/EdgeloopFFI.modulemap" "$out/headers/module.modulemap"

xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/release/$lib -headers "$out/headers" \
  -library "$out/ios-simulator/$lib" -headers "$out/headers" \
  -library "$out/macos/$lib" -headers "$out/headers" \
  -output "$out/EdgeloopFFI.xcframework"
echo "built $out/EdgeloopFFI.xcframework" >&2
