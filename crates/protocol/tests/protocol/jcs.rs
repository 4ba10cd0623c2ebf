//! RFC 8785 conformance, through the same strict parser and canonicaliser the action hash uses.

use std::path::Path;

use countersign_protocol::hash::canonicalize;
use countersign_protocol::json::{Limits, parse_value};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{pending_for, request};

fn vectors() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/jcs"))
}

fn canonical(input: &[u8]) -> Vec<u8> {
    canonicalize(&parse_value(input, Limits::ACTION).unwrap()).unwrap()
}

#[test]
fn reference_test_data() {
    let mut seen = 0;
    for entry in std::fs::read_dir(vectors().join("input")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let out = canonical(&std::fs::read(&path).unwrap());
        let expected =
            std::fs::read(vectors().join("output").join(format!("{name}.json"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected),
            "{name}"
        );
        let hex =
            std::fs::read_to_string(vectors().join("outhex").join(format!("{name}.txt"))).unwrap();
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(out, bytes, "{name} (bytes)");
        seen += 1;
    }
    assert_eq!(seen, 6, "all six reference files");
}

#[test]
fn rfc_examples_3_2_2_and_3_2_3() {
    for name in ["rfc_example", "rfc_sorting"] {
        let input = std::fs::read(vectors().join(format!("{name}.input.json"))).unwrap();
        let expected = std::fs::read(vectors().join(format!("{name}.expected.json"))).unwrap();
        assert_eq!(canonical(&input), expected, "{name}");
    }
}

/// RFC 8785 Appendix B: IEEE-754 doubles and their ES6 serialisation.
#[test]
fn rfc_appendix_b_numbers() {
    let cases: [(u64, &str); 24] = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, expected) in cases {
        let value = json!(f64::from_bits(bits));
        assert_eq!(
            String::from_utf8(canonicalize(&value).unwrap()).unwrap(),
            expected,
            "{bits:#x}"
        );
    }
}

/// A JSON text for `value` with its own key order, whitespace and string escapes.
fn spell(value: &Value, seed: &mut u64) -> String {
    let ws = |n: u64| [" ", "", "\n ", "\t"][(n % 4) as usize];
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            let rotate = if entries.is_empty() {
                0
            } else {
                (next(seed) as usize) % entries.len()
            };
            entries.rotate_left(rotate);
            if next(seed).is_multiple_of(2) {
                entries.reverse();
            }
            let parts: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| {
                    let n = next(seed);
                    format!("{}{}:{}{}", ws(n), escape(k, n), ws(n >> 2), spell(v, seed))
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|v| format!(" {}", spell(v, seed)))
                .collect();
            format!("[{}]", parts.join(","))
        }
        Value::String(s) => escape(s, next(seed)),
        other => other.to_string(),
    }
}

/// A small deterministic generator (PCG-style step).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// A string literal, with some characters spelled as `\uXXXX` escapes.
fn escape(s: &str, n: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let as_escape = (n >> (i % 32)) & 1 == 1;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || as_escape => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Key order, whitespace and escape spelling never change the canonical form or the hash.
    #[test]
    fn spelling_never_changes_the_canonical_form(value in json_value(), seed in any::<u64>()) {
        let reference = canonicalize(&value).unwrap();
        let mut s = seed;
        let text = spell(&value, &mut s);
        let reparsed = parse_value(text.as_bytes(), Limits::ACTION).unwrap();
        prop_assert_eq!(canonicalize(&reparsed).unwrap(), reference);
    }

    /// The action hash changes whenever any argument value changes.
    #[test]
    fn any_value_change_changes_the_action_hash(
        key in "[a-z]{1,8}",
        a in json_value(),
        b in json_value(),
    ) {
        // Values that are the same JSON number (1 and 1.0) are the same value.
        prop_assume!(canonicalize(&a).unwrap() != canonicalize(&b).unwrap());
        let mut left = request();
        left.context.arguments.insert(key.clone(), a);
        let mut right = request();
        right.context.arguments.insert(key, b);
        prop_assert_ne!(left.action_hash().unwrap(), right.action_hash().unwrap());
        // And the pending action built from each carries its own hash.
        prop_assert!(pending_for(left).verify_hash());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The canonicaliser the hashes use writes exactly what serde_json_canonicalizer writes.
    #[test]
    fn canonical_form_equals_the_reference_crate(value in json_value()) {
        prop_assert_eq!(canonicalize(&value).unwrap(), serde_json_canonicalizer::to_vec(&value).unwrap());
    }
}
