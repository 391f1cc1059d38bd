//! `uniffi-bindgen`: generates the Kotlin, Swift and Python sources of
//! edgeloop-ffi from the built library (`generate --library PATH`); see
//! `ffi/bindgen.sh`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
