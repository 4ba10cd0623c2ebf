//! Pending actions and presented calls are parsed strictly; hostile input gets a typed error.

use countersign_protocol::action::Status;
use countersign_protocol::{ActionRequest, ParseError, PendingAction};
use serde_json::{Value, json};

use crate::support::{pending, request};

fn pending_json() -> Value {
    serde_json::to_value(pending()).unwrap()
}

fn parse(value: &Value) -> Result<PendingAction, ParseError> {
    PendingAction::from_json(value.to_string().as_bytes())
}

#[test]
fn the_design_example_round_trips_and_its_hash_verifies() {
    let value = pending_json();
    let parsed = parse(&value).unwrap();
    assert_eq!(parsed, pending());
    assert!(parsed.verify_hash());
    assert_eq!(parsed.status, Status::Pending);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
    assert_eq!(
        parsed.authorization_details[0].kind,
        "https://countersign.dev/tool-call"
    );
    assert_eq!(parsed.action_hash.fingerprint().len(), 19);
}

#[test]
fn a_changed_field_is_detected_by_the_recomputed_hash() {
    let mut value = pending_json();
    value["context"]["arguments"]["amount"] = json!("500000.00");
    let parsed = parse(&value).unwrap();
    assert!(
        !parsed.verify_hash(),
        "shown amount differs from the hashed one"
    );
}

#[test]
fn unknown_fields_anywhere_in_the_bound_part_are_refused() {
    for pointer in [
        "",
        "/subject",
        "/actor",
        "/action",
        "/resource",
        "/context",
        "/context/data",
        "/policy",
        "/authorization_details/0",
    ] {
        let mut value = pending_json();
        value
            .pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert("hidden".into(), json!("x"));
        let err = parse(&value).unwrap_err();
        assert!(
            matches!(err, ParseError::Schema(ref m) if m.contains("hidden")),
            "{pointer}: {err}"
        );
    }
}

#[test]
fn ambiguous_json_is_refused() {
    let text = pending_json().to_string();
    let doubled = text.replacen("\"intent\":", "\"intent\":\"benign\",\"intent\":", 1);
    assert_eq!(
        PendingAction::from_json(doubled.as_bytes()).unwrap_err(),
        ParseError::DuplicateKey {
            key: "intent".into()
        }
    );
    let mut value = pending_json();
    value["context"]["arguments"]["amount"] = json!(9_007_199_254_740_993u64);
    assert!(matches!(
        parse(&value),
        Err(ParseError::InexactNumber { .. })
    ));
    let mut value = pending_json();
    value["subject"]["properties"] = Value::Null;
    assert!(matches!(parse(&value), Err(ParseError::NotCanonical(_))));
}

#[test]
fn oversized_and_deeply_nested_arguments_are_refused() {
    let mut value = pending_json();
    value["context"]["arguments"]["blob"] = json!("A".repeat(1024 * 1024));
    assert!(matches!(parse(&value), Err(ParseError::TooLarge { .. })));

    let mut deep = json!("bottom");
    for _ in 0..64 {
        deep = json!([deep]);
    }
    let mut value = pending_json();
    value["context"]["arguments"]["deep"] = deep;
    assert_eq!(
        parse(&value).unwrap_err(),
        ParseError::TooDeep { limit: 32 }
    );
    // serde_json's own recursion limit is not what stops us: 10,000 levels are refused cleanly.
    let text = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        ActionRequest::from_json(text.as_bytes()).unwrap_err(),
        ParseError::TooDeep { limit: 32 }
    );
}

#[test]
fn hostile_text_is_kept_verbatim_for_the_display_to_neutralise() {
    let mut value = pending_json();
    let hostile = "<script>alert(1)</script>\u{202e}gnp.exe\u{200b}";
    value["context"]["intent"] = json!(hostile);
    let mut parsed = parse(&value).unwrap();
    assert_eq!(parsed.context.intent, hostile);
    // The hash is over exactly these characters.
    parsed.context.intent = "<script>alert(1)</script>gnp.exe".into();
    assert_ne!(
        parsed.computed_hash().unwrap(),
        parse(&value).unwrap().computed_hash().unwrap()
    );
}

#[test]
fn field_rules_are_enforced() {
    let cases: [(&str, Value); 13] = [
        // Tool names: MCP's alphabet only, so no two spellings that look alike can pass policy
        // separately (a Cyrillic с, a space, a fullwidth letter, or too long).
        ("/resource/id", json!("stripe/refunds.\u{0441}reate")),
        ("/resource/id", json!("github/repos delete")),
        ("/resource/id", json!("github/\u{FF52}epos.delete")),
        ("/resource/id", json!("x".repeat(129))),
        ("/actor/id", json!("https://example.com/agent")),
        ("/actor/act/sub", json!("spiffe://Example.com/x")),
        ("/audience", json!("ftp://gateway.example.com")),
        ("/audience", json!("not a url")),
        ("/expires_at", json!("2026-09-21T10:00:00+02:00")),
        ("/expires_at", json!("yesterday")),
        ("/authorization_details/0/type", json!("payment_initiation")),
        ("/action_hash", json!("short")),
        ("/context/intent", json!("   ")),
    ];
    for (pointer, bad) in cases {
        let mut value = pending_json();
        *value.pointer_mut(pointer).unwrap() = bad.clone();
        assert!(parse(&value).is_err(), "{pointer} = {bad}");
    }
    let mut value = pending_json();
    value["expires_at"] = value["created_at"].clone();
    assert!(matches!(
        parse(&value),
        Err(ParseError::InvalidField {
            field: "expires_at",
            ..
        })
    ));
}

#[test]
fn tool_names_match_in_one_canonical_form() {
    use countersign_protocol::action::{canonical_tool_name, tool_name};
    assert_eq!(
        canonical_tool_name("github/Repos.delete"),
        canonical_tool_name("github/repos.delete")
    );
    assert!(tool_name("mcp__github__delete_repo").is_ok());
    assert!(tool_name("").is_err());
}

#[test]
fn a_presented_call_parses_strictly_and_hashes_like_the_pending_action() {
    let text = serde_json::to_vec(&request()).unwrap();
    let parsed = ActionRequest::from_json(&text).unwrap();
    assert_eq!(parsed.action_hash().unwrap(), pending().action_hash);
    assert!(ActionRequest::from_json(b"{\"subject\":{}}").is_err());
    assert!(ActionRequest::from_json(b"not json").is_err());
}

#[test]
fn errors_have_stable_codes() {
    assert_eq!(ParseError::TooDeep { limit: 1 }.code(), "too_deep");
    assert_eq!(
        ParseError::DuplicateKey { key: "k".into() }.code(),
        "duplicate_key"
    );
    let err = PendingAction::from_json(b"{").unwrap_err();
    assert_eq!(err.code(), "malformed_json");
}
