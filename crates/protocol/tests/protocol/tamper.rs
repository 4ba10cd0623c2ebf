//! Tampering: any change to any claim, to the presented call, to any byte of the token or of
//! the embedded assertion is refused.

use std::sync::OnceLock;

use countersign_protocol::hash::{b64url, b64url_decode};
use countersign_protocol::{ActionRequest, VerifyError};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{Fixture, decode, pending_for, present, request, sign_token};

/// Claim names of a grant, `webauthn` included.
const CLAIMS: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "txn",
    "act",
    "cnf",
    "authorization_details",
    "action_hash",
    "amr",
    "webauthn",
];
const ASSERTION_FIELDS: [&str; 4] = ["id", "authenticatorData", "clientDataJSON", "signature"];

struct Minted {
    fx: std::sync::Mutex<Fixture>,
    token: String,
    action: ActionRequest,
}

/// One grant shared by the byte-level properties (minting per case would only test minting).
fn minted() -> &'static Minted {
    static MINTED: OnceLock<Minted> = OnceLock::new();
    MINTED.get_or_init(|| {
        let mut fx = Fixture::new();
        let action = request();
        let token = fx.mint(&pending_for(action.clone())).token().to_owned();
        Minted {
            fx: std::sync::Mutex::new(fx),
            token,
            action,
        }
    })
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,24}".prop_map(Value::String),
        (-(1i64 << 40)..(1i64 << 40)).prop_map(|n| json!(n)),
        Just(json!(null)),
        Just(json!([])),
        Just(json!({"sub": "spiffe://example.com/agent/other"})),
        Just(json!({"jkt": "x"})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any claim changed, then re-signed with the real device key (a stolen device key):
    /// the assertion no longer matches, or an earlier check refuses.
    #[test]
    fn any_changed_claim_is_refused(index in 0..CLAIMS.len(), value in replacement()) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let (header, mut payload) = decode(&m.token);
        let claim = CLAIMS[index];
        prop_assume!(payload.get(claim) != Some(&value));
        payload[claim] = value;
        let token = sign_token(&header, &payload, &fx.device);
        let result = fx.verifier().check(&present(&token, &m.action));
        prop_assert!(result.is_err(), "{claim} changed and still accepted");
    }

    /// Any byte of the compact token changed: refused, and never by a panic.
    #[test]
    fn any_changed_token_byte_is_refused(position in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let mut bytes = m.token.clone().into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let token = String::from_utf8(bytes).unwrap();
        prop_assert!(fx.verifier().check(&present(&token, &m.action)).is_err());
    }

    /// Any byte of any part of the embedded assertion flipped, re-signed with the real device
    /// key: the WebAuthn checks refuse it.
    #[test]
    fn any_changed_assertion_byte_is_refused(
        field in 0..ASSERTION_FIELDS.len(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let (header, mut payload) = decode(&m.token);
        let name = ASSERTION_FIELDS[field];
        let mut raw = b64url_decode(payload["webauthn"][name].as_str().unwrap()).unwrap();
        let i = position.index(raw.len());
        raw[i] ^= mask;
        payload["webauthn"][name] = json!(b64url(&raw));
        let token = sign_token(&header, &payload, &fx.device);
        let err = fx.verifier().check(&present(&token, &m.action)).unwrap_err();
        prop_assert!(matches!(err, VerifyError::Assertion(_)), "{name}[{i}]: {err}");
    }

    /// The gateway presents a call that differs from the approved one in any argument.
    #[test]
    fn any_changed_presented_call_is_refused(
        key in "(order|amount|currency|[a-z]{1,6})",
        value in "[ -~]{0,12}",
    ) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let mut action = m.action.clone();
        prop_assume!(action.context.arguments.get(&key) != Some(&json!(value)));
        action.context.arguments.insert(key, json!(value));
        let err = fx.verifier().check(&present(&m.token, &action)).unwrap_err();
        prop_assert_eq!(err, VerifyError::ActionHashMismatch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Over varied actions: each grant verifies for its own call and for no neighbour.
    #[test]
    fn grants_bind_their_own_call(
        intent in "\\PC{1,40}",
        amount in "[0-9]{1,7}\\.[0-9]{2}",
        other in "[0-9]{1,7}\\.[0-9]{2}",
    ) {
        prop_assume!(amount != other);
        let mut fx = Fixture::new();
        let mut action = request();
        action.context.intent = intent;
        action.context.arguments.insert("amount".into(), json!(amount));
        let grant = fx.mint(&pending_for(action.clone()));
        prop_assert!(fx.verifier().check(&present(grant.token(), &action)).is_ok());
        let mut neighbour = action.clone();
        neighbour.context.arguments.insert("amount".into(), json!(other));
        prop_assert_eq!(
            fx.verifier().check(&present(grant.token(), &neighbour)).unwrap_err(),
            VerifyError::ActionHashMismatch
        );
        let mut relabelled = action;
        relabelled.resource.id = "stripe/payouts.create".into();
        prop_assert!(fx.verifier().check(&present(grant.token(), &relabelled)).is_err());
    }
}

#[test]
fn other_actor_or_subject_is_refused() {
    let m = minted();
    let fx = m.fx.lock().unwrap();
    let mut action = m.action.clone();
    action.actor.act = None;
    assert_eq!(
        fx.verifier()
            .check(&present(&m.token, &action))
            .unwrap_err(),
        VerifyError::ActionHashMismatch
    );
    let mut action = m.action.clone();
    action.subject.id = "bob@example.com".into();
    assert_eq!(
        fx.verifier()
            .check(&present(&m.token, &action))
            .unwrap_err(),
        VerifyError::ActionHashMismatch
    );
}
