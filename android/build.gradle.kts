// Builds the AAR: `./gradlew assembleRelease` (needs the Android SDK and
// NDK, and `cargo install cargo-ndk`). `./gradlew test` runs the JVM tests
// in src/test against the desktop build of the library
// (target/release/libedgeloop_ffi.*), as `test-jvm.sh` does without Gradle.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
}

val repoRoot = rootDir.parentFile
val generatedKotlin = layout.buildDirectory.dir("generated/uniffi/kotlin")
val jniLibsOut = layout.buildDirectory.dir("rustJniLibs")

// The Android ABIs and the Rust targets that build them.
val abis = mapOf(
    "arm64-v8a" to "aarch64-linux-android",
    "armeabi-v7a" to "armv7-linux-androideabi",
    "x86_64" to "x86_64-linux-android",
)

android {
    namespace = "dev.edgeloop"
    compileSdk = 35
    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += abis.keys }
    }
    sourceSets["main"].apply {
        kotlin.srcDir(generatedKotlin)
        jniLibs.srcDir(jniLibsOut)
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    testOptions.unitTests.all {
        // JNA in the JVM tests loads the desktop library ("libsForTests").
        it.systemProperty("jna.library.path", File(repoRoot, "target/release").path)
        it.environment("EDGELOOP_MODELS_DIR", System.getenv("EDGELOOP_MODELS_DIR") ?: "")
    }
}

kotlin {
    compilerOptions.jvmTarget.set(JvmTarget.JVM_17)
}

dependencies {
    implementation("net.java.dev.jna:jna:5.14.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.9.0")
    testImplementation("junit:junit:4.13.2")
    testImplementation("net.java.dev.jna:jna:5.14.0")
}

// The Rust library for every ABI, with cargo-ndk, into jniLibs.
val cargoNdk by tasks.registering(Exec::class) {
    workingDir = repoRoot
    val args = mutableListOf("cargo", "ndk", "--platform", "24")
    abis.keys.forEach { args += listOf("-t", it) }
    args += listOf("-o", jniLibsOut.get().asFile.path, "build", "--release", "--locked", "-p", "edgeloop-ffi")
    commandLine(args)
}

// The desktop library (JVM tests, and the input of the binding generator).
val cargoHost by tasks.registering(Exec::class) {
    workingDir = repoRoot
    commandLine("cargo", "build", "--release", "--locked", "-p", "edgeloop-ffi", "-p", "uniffi-bindgen")
}

// The Kotlin bindings, generated from the library's metadata.
val generateBindings by tasks.registering(Exec::class) {
    dependsOn(cargoHost)
    workingDir = repoRoot
    val lib = File(repoRoot, "target/release/" + System.mapLibraryName("edgeloop_ffi"))
    commandLine(
        File(repoRoot, "target/release/uniffi-bindgen").path, "generate",
        "--library", lib.path, "--language", "kotlin",
        "--out-dir", generatedKotlin.get().asFile.path, "--no-format",
    )
}

tasks.named("preBuild") { dependsOn(generateBindings, cargoNdk) }
