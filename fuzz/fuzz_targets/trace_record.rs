//! Trace record decoding: any text is refused or is a valid record that
//! survives a round trip through JSON.
#![no_main]

use edgeloop_core::trace::TraceRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(record) = TraceRecord::from_json(json) else {
        return;
    };
    record.validate().expect("a parsed record is valid");
    let again = TraceRecord::from_json(&record.to_json()).expect("a valid record round-trips");
    assert_eq!(again.to_json(), record.to_json());
});
