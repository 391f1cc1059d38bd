#!/usr/bin/env bash
# Runs the Kotlin API's tests on the JVM against the desktop build of the
# library, without Gradle: kotlinc compiles the generated bindings, the
# Kotlin API (src/main) and the tests (src/test); java runs them with
# JUnit 4, JNA loading target/release/libedgeloop_ffi.so.
#
# Needs kotlinc ($KOTLINC or on PATH: the npm package `kotlin-compiler`),
# JNA and JUnit 4 (Debian: libjna-java, junit4), the bindings from
# ffi/bindgen.sh, and the default model pulled.
set -euo pipefail
cd "$(dirname "$0")/.."

kotlinc="${KOTLINC:-$(command -v kotlinc || true)}"
[ -n "$kotlinc" ] || { echo "kotlinc not found: set KOTLINC or install the npm package kotlin-compiler" >&2; exit 1; }
kotlin_lib="$(dirname "$(dirname "$(readlink -f "$kotlinc")")")/lib"
java_lib=/usr/share/java
for jar in "$java_lib/jna.jar" "$java_lib/junit4.jar" "$java_lib/hamcrest-core.jar" \
           "$kotlin_lib/kotlin-stdlib.jar" "$kotlin_lib/kotlinx-coroutines-core-jvm.jar"; do
  [ -f "$jar" ] || { echo "missing $jar" >&2; exit 1; }
done
bindings=target/bindings/kotlin
[ -d "$bindings" ] || { echo "no bindings in $bindings: run ffi/bindgen.sh" >&2; exit 1; }

out=target/kotlin-tests
rm -rf "$out"
deps="$java_lib/jna.jar:$kotlin_lib/kotlinx-coroutines-core-jvm.jar:$java_lib/junit4.jar"
"$kotlinc" -jvm-target 17 -nowarn -cp "$deps" -d "$out" \
  "$bindings" android/src/main/kotlin android/src/test/kotlin
java -Djna.library.path=target/release \
  -cp "$out:$deps:$kotlin_lib/kotlin-stdlib.jar:$java_lib/hamcrest-core.jar" \
  org.junit.runner.JUnitCore dev.edgeloop.EdgeloopTest
