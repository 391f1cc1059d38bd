// The edgeloop Android library (AAR): the Kotlin API over the generated
// UniFFI bindings, with the Rust library built for each Android ABI.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "edgeloop-android"
