#!/usr/bin/env bash
# Build the llama.cpp reference used to generate edgeloop's golden data.
#
# Source: the sdist of llama-cpp-python 0.3.36 (which vendors llama.cpp, incl. its git metadata).
# Result (under $EDGELOOP_REF_DIR, default $HOME/.cache/edgeloop/llamacpp):
#   src/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/{llama-bench,llama-batched-bench,llama-simple}
#   python/llama_cpp/            importable package with lib/lib*.so  (PYTHONPATH=$EDGELOOP_REF_DIR/python)
#   python/llama_cpp/REF_INFO.json   versions + llama.cpp commit
#
# Idempotent: every step is skipped when its output already exists; the ninja build is incremental.
# Environment: EDGELOOP_REF_DIR, PYTHON (default python3), JOBS (default: number of cores),
# VULKAN=1 (a second build in build-vulkan/ with ggml's Vulkan backend, for the GPU
# benchmark; needs a Vulkan loader, its headers and glslc: apt-get install libvulkan-dev glslc).
set -euo pipefail

VERSION=0.3.36
PKG=llama-cpp-python
REF_DIR="${EDGELOOP_REF_DIR:-$HOME/.cache/edgeloop/llamacpp}"
PY="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

SDIST_DIR="$REF_DIR/sdist"
SRC_PARENT="$REF_DIR/src"
SRC="$SRC_PARENT/llama_cpp_python-$VERSION"
LLAMA="$SRC/vendor/llama.cpp"
BUILD="$LLAMA/build"
PYOUT="$REF_DIR/python"
if [ "${VULKAN:-0}" = 1 ]; then
    BUILD="$LLAMA/build-vulkan"
    PYOUT="$REF_DIR/python-vulkan"
fi

log() { echo "[build_llamacpp] $*" >&2; }

mkdir -p "$REF_DIR" "$SDIST_DIR" "$SRC_PARENT"

# 1. build tools (pip only installs wheels here; nothing is compiled by pip)
if ! "$PY" -c 'import scikit_build_core' 2>/dev/null || ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
    log "installing build tools (scikit-build-core, cmake, ninja)"
    "$PY" -m pip install --only-binary :all: scikit-build-core cmake ninja
fi
# runtime deps of the llama_cpp python package
if ! "$PY" -c 'import numpy, typing_extensions, diskcache, jinja2' 2>/dev/null; then
    log "installing python runtime deps (numpy, typing-extensions, diskcache, jinja2)"
    "$PY" -m pip install --only-binary :all: numpy typing-extensions diskcache jinja2
fi

# 2. download the sdist
SDIST="$SDIST_DIR/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    log "downloading $PKG==$VERSION sdist"
    "$PY" -m pip download --no-deps --no-binary "$PKG" --no-build-isolation -d "$SDIST_DIR" "$PKG==$VERSION"
fi
[ -f "$SDIST" ] || { log "sdist not found at $SDIST"; exit 1; }

# 3. extract
if [ ! -f "$SRC/.edgeloop_extracted" ]; then
    log "extracting $SDIST"
    rm -rf "$SRC"
    tar -xzf "$SDIST" -C "$SRC_PARENT"
    touch "$SRC/.edgeloop_extracted"
fi

# 4. configure
if [ ! -f "$BUILD/build.ninja" ]; then
    log "configuring llama.cpp in $BUILD"
    (cd "$LLAMA" && cmake -S . -B "$BUILD" -G Ninja \
        -DGGML_VULKAN="$([ "${VULKAN:-0}" = 1 ] && echo ON || echo OFF)" \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF)
fi

# 5. build (incremental; a no-op when up to date)
log "building (jobs=$JOBS)"
cmake --build "$BUILD" -j"$JOBS" --target llama llama-bench llama-batched-bench llama-simple

# 6. python package dir with the shared libraries in llama_cpp/lib
find_lib() {
    local name="$1" f
    for d in "$BUILD/bin" "$BUILD/src" "$BUILD/ggml/src" "$BUILD"; do
        [ -e "$d/$name" ] && { echo "$d/$name"; return 0; }
    done
    f=$(find "$BUILD" -name "$name" \( -type f -o -type l \) | head -n1)
    [ -n "$f" ] && { echo "$f"; return 0; }
    return 1
}
LIBLLAMA=$(find_lib libllama.so) || { log "libllama.so not found under $BUILD"; exit 1; }
log "laying out python package in $PYOUT"
rm -rf "$PYOUT.tmp"
mkdir -p "$PYOUT.tmp"
cp -a "$SRC/llama_cpp" "$PYOUT.tmp/llama_cpp"
rm -rf "$PYOUT.tmp/llama_cpp/lib"
mkdir -p "$PYOUT.tmp/llama_cpp/lib"
# copy libllama.so/libggml*.so/libmtmd*.so (with their soname symlinks) from the build tree
find "$BUILD" \( -name 'libllama.so*' -o -name 'libggml*.so*' -o -name 'libmtmd*.so*' \) \( -type f -o -type l \) \
    -not -path '*/CMakeFiles/*' -print0 | while IFS= read -r -d '' f; do
    cp -a "$f" "$PYOUT.tmp/llama_cpp/lib/"
done

LLAMA_COMMIT=$(git -C "$LLAMA" rev-parse HEAD 2>/dev/null || echo unknown)
LLAMA_CPP_PY_COMMIT=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
cat > "$PYOUT.tmp/llama_cpp/REF_INFO.json" <<EOF
{"llama_cpp_python": "$VERSION", "llama_cpp_python_commit": "$LLAMA_CPP_PY_COMMIT", "llama_cpp_commit": "$LLAMA_COMMIT", "cmake_flags": "-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF"}
EOF
rm -rf "$PYOUT"
mv "$PYOUT.tmp" "$PYOUT"

# 7. check the import and print the tool paths
# (LD_LIBRARY_PATH makes libllama's dependencies resolvable from the copied lib dir even if the
#  build tree's RUNPATH is not valid on this machine)
LD_LIBRARY_PATH="$PYOUT/llama_cpp/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONPATH="$PYOUT" \
    "$PY" -c 'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "llama.cpp", llama_cpp.llama_version().decode(), file=__import__("sys").stderr)'

log "llama.cpp commit: $LLAMA_COMMIT"
log "PYTHONPATH=$PYOUT"
for t in llama-bench llama-batched-bench; do
    p="$BUILD/bin/$t"
    [ -x "$p" ] || p=$(find "$BUILD" -name "$t" -type f -perm -u+x | head -n1)
    [ -n "$p" ] && [ -x "$p" ] || { log "$t not found"; exit 1; }
    echo "$t=$p"
done
echo "PYTHONPATH=$PYOUT"
