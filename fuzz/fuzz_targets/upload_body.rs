//! The host's upload body parser (`POST /v1/traces` of `edgeloop-trainer`):
//! gzip or plain body decoded under a cap, then the batch parsed and every
//! record validated, all before anything is stored.
//!
//! Input: the first byte picks the content encoding (even: gzip, odd:
//! none), the rest is the body.
#![no_main]

use edgeloop_core::trace::ingest::{decode_body, parse_batch};
use libfuzzer_sys::fuzz_target;

/// The cap on the decoded JSON (the host's default is larger; a small one
/// lets the fuzzer reach it).
const MAX_JSON: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let encoding = if sel % 2 == 0 { Some("gzip") } else { None };
    let Ok(json) = decode_body(body, encoding, MAX_JSON) else {
        return;
    };
    assert!(json.len() <= MAX_JSON);
    if let Ok(records) = parse_batch(&json) {
        for r in &records {
            r.validate().expect("an accepted record is valid");
            assert!(r.consent);
        }
    }
});
