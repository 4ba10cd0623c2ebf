//! Strict JSON parsing: never a panic, and what it accepts is a subset of what serde_json reads,
//! read the same way, and survives its own re-encoding.
#![no_main]

use countersign_protocol::json::{Limits, parse_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 64 * 1024,
        max_depth: 32,
    };
    let Ok(value) = parse_value(data, limits) else {
        return;
    };
    // Strictness only refuses: a document it accepts means the same to a standard reader.
    let standard: serde_json::Value =
        serde_json::from_slice(data).expect("strict accepted what serde_json refuses");
    assert_eq!(value, standard, "strict and standard readings differ");
    // And the value it produced is itself strict JSON, read back unchanged.
    let again = serde_json::to_vec(&value).expect("a parsed value serialises");
    let back = parse_value(&again, Limits { max_bytes: usize::MAX, ..limits })
        .expect("the re-encoded value is refused");
    assert_eq!(value, back, "the re-encoded value reads differently");
});
