//! The WebAuthn half of a grant: user verification, the registered credential, the binding to
//! these claims, the relying party, the ceremony and the sign counter.

use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::webauthn::{FLAG_UP, FLAG_UV, RP_ID, RelyingParty};
use countersign_protocol::{AssertionError, VerifyError};
use serde_json::json;

use crate::support::{
    Fixture, RawAuthenticator, challenge_of, client_data, decode, pending, present, request,
    sign_token,
};

fn check(fx: &Fixture, token: &str) -> Result<(), VerifyError> {
    fx.verifier().check(&present(token, &request())).map(|_| ())
}

fn assertion_error(fx: &Fixture, token: &str) -> AssertionError {
    match check(fx, token) {
        Err(VerifyError::Assertion(e)) => e,
        other => panic!("expected an assertion error, got {other:?}"),
    }
}

#[test]
fn an_assertion_without_user_verification_is_refused() {
    let mut fx = Fixture::new();
    let draft = fx.draft(&pending());
    let id = fx.credential_id().to_owned();
    let assertion = fx
        .approver
        .authenticator
        .assert(&id, draft.challenge(), false)
        .unwrap();
    let grant = draft.sign(assertion, &fx.device).unwrap();
    assert_eq!(
        assertion_error(&fx, grant.token()),
        AssertionError::UserNotVerified
    );
}

#[test]
fn an_assertion_by_an_unregistered_credential_is_refused() {
    let fx = Fixture::new();
    let mut stranger = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
    let credential = stranger.register("mallory@example.com").unwrap();
    let draft = fx.draft(&pending());
    let assertion = stranger
        .assert(&credential.id, draft.challenge(), true)
        .unwrap();
    let grant = draft.sign(assertion, &fx.device).unwrap();
    assert_eq!(
        assertion_error(&fx, grant.token()),
        AssertionError::UnknownCredential(credential.id)
    );
}

#[test]
fn an_assertion_made_for_another_grant_is_refused() {
    let mut fx = Fixture::new();
    let first = fx.mint(&pending());
    let second = fx.mint(&pending());
    // Second grant's genuine assertion moved into the first grant's claims, JWS re-signed.
    let (header, mut payload) = decode(first.token());
    let (_, other) = decode(second.token());
    payload["webauthn"] = other["webauthn"].clone();
    let token = sign_token(&header, &payload, &fx.device);
    assert_eq!(
        assertion_error(&fx, &token),
        AssertionError::ChallengeMismatch
    );
}

#[test]
fn an_assertion_for_another_relying_party_is_refused() {
    let mut fx = Fixture::new();
    // Same credential, but the client ran the ceremony for another rp_id and origin.
    let evil = RelyingParty::new("evil.example", "https://evil.example").unwrap();
    let mut elsewhere = SoftAuthenticator::new(evil).unwrap();
    let credential = elsewhere.register("alice@example.com").unwrap();
    let mut document = countersign_protocol::registry::RegistryDocument {
        approvers: vec![fx.entry()],
    };
    document.approvers[0].credentials.push(credential.clone());
    fx.with_registry(document);
    let draft = fx.draft(&pending());
    let assertion = elsewhere
        .assert(&credential.id, draft.challenge(), true)
        .unwrap();
    let grant = draft.sign(assertion, &fx.device).unwrap();
    assert!(matches!(
        assertion_error(&fx, grant.token()),
        AssertionError::OriginMismatch(_)
    ));

    // A sub-origin of the rp_id is a valid WebAuthn origin, but not the Countersign app's.
    let sub = RelyingParty::new(RP_ID, "https://app.countersign.dev").unwrap();
    let mut subdomain = SoftAuthenticator::new(sub).unwrap();
    let credential = subdomain.register("alice@example.com").unwrap();
    let mut document = countersign_protocol::registry::RegistryDocument {
        approvers: vec![fx.entry()],
    };
    document.approvers[0].credentials.push(credential.clone());
    fx.with_registry(document);
    let draft = fx.draft(&pending());
    let assertion = subdomain
        .assert(&credential.id, draft.challenge(), true)
        .unwrap();
    let grant = draft.sign(assertion, &fx.device).unwrap();
    assert_eq!(
        assertion_error(&fx, grant.token()),
        AssertionError::OriginMismatch("https://app.countersign.dev".into())
    );
}

/// The origin is compared as WebAuthn serialises it, exactly: a URL's trailing slash (what a
/// URL type writes) is refused, as a relying party that compares strings refuses it.
#[test]
fn an_origin_that_is_not_exactly_the_apps_is_refused() {
    let mut fx = Fixture::new();
    let raw = RawAuthenticator::new();
    let mut document = countersign_protocol::registry::RegistryDocument {
        approvers: vec![fx.entry()],
    };
    document.approvers[0].credentials.push(raw.credential());
    fx.with_registry(document);
    let (header, mut payload) = decode(fx.mint(&pending()).token());
    let challenge = challenge_of(&payload);
    for (counter, origin) in [
        "https://countersign.dev/",
        "https://countersign.dev:443",
        "https://COUNTERSIGN.DEV",
        " https://countersign.dev",
    ]
    .into_iter()
    .enumerate()
    {
        let client = client_data("webauthn.get", &challenge, origin);
        payload["webauthn"] = serde_json::to_value(raw.assertion(
            &client,
            RP_ID,
            FLAG_UP | FLAG_UV,
            u32::try_from(counter).unwrap() + 1,
        ))
        .unwrap();
        let token = sign_token(&header, &payload, &fx.device);
        assert_eq!(
            assertion_error(&fx, &token),
            AssertionError::OriginMismatch(origin.into()),
            "{origin:?}"
        );
    }
}

/// What Countersign's own ceremonies write: exactly `{type, challenge, origin, crossOrigin}`,
/// the origin serialised as WebAuthn does, no `tokenBinding` (no WebAuthn level defines null).
#[test]
fn real_assertions_carry_the_exact_origin_and_no_token_binding() {
    let mut fx = Fixture::new();
    let (_, payload) = decode(fx.mint(&pending()).token());
    let client = countersign_protocol::hash::b64url_decode(
        payload["webauthn"]["clientDataJSON"].as_str().unwrap(),
    )
    .unwrap();
    let client: serde_json::Value = serde_json::from_slice(&client).unwrap();
    assert_eq!(client["origin"], "https://countersign.dev");
    assert_eq!(client["type"], "webauthn.get");
    assert_eq!(client["crossOrigin"], false);
    let keys: Vec<&String> = client.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{client}");
    assert!(client.get("tokenBinding").is_none());
}

/// Ceremonies no honest authenticator produces, made with a spec-written P-256 authenticator.
#[test]
fn wrong_ceremony_type_missing_flags_rp_hash_and_cross_origin_are_refused() {
    let mut fx = Fixture::new();
    let raw = RawAuthenticator::new();
    let mut document = countersign_protocol::registry::RegistryDocument {
        approvers: vec![fx.entry()],
    };
    document.approvers[0].credentials.push(raw.credential());
    fx.with_registry(document);
    let (header, mut payload) = decode(fx.mint(&pending()).token());
    let challenge = challenge_of(&payload);
    let origin = "https://countersign.dev";

    let mut with = |client: serde_json::Value, rp_id: &str, flags: u8, counter: u32| {
        payload["webauthn"] =
            serde_json::to_value(raw.assertion(&client, rp_id, flags, counter)).unwrap();
        sign_token(&header, &payload, &fx.device)
    };
    let good = with(
        client_data("webauthn.get", &challenge, origin),
        RP_ID,
        FLAG_UP | FLAG_UV,
        7,
    );
    let create = with(
        client_data("webauthn.create", &challenge, origin),
        RP_ID,
        FLAG_UP | FLAG_UV,
        8,
    );
    let payment = with(
        client_data("payment.get", &challenge, origin),
        RP_ID,
        FLAG_UP | FLAG_UV,
        8,
    );
    let no_up = with(
        client_data("webauthn.get", &challenge, origin),
        RP_ID,
        FLAG_UV,
        8,
    );
    let no_uv = with(
        client_data("webauthn.get", &challenge, origin),
        RP_ID,
        FLAG_UP,
        8,
    );
    let rp = with(
        client_data("webauthn.get", &challenge, origin),
        "evil.example",
        FLAG_UP | FLAG_UV,
        8,
    );
    let mut cross = client_data("webauthn.get", &challenge, origin);
    cross["crossOrigin"] = json!(true);
    let cross = with(cross, RP_ID, FLAG_UP | FLAG_UV, 8);
    let mut extra = client_data("webauthn.get", &challenge, origin);
    extra["tokenBinding"] = json!(null);
    extra["other_keys_can_be_added_here"] =
        json!("do not compare clientDataJSON against a template");
    let extra = with(extra, RP_ID, FLAG_UP | FLAG_UV, 9);
    let wrong_challenge = with(
        client_data("webauthn.get", &[0u8; 32], origin),
        RP_ID,
        FLAG_UP | FLAG_UV,
        8,
    );

    assert_eq!(check(&fx, &good), Ok(()));
    assert_eq!(assertion_error(&fx, &create), AssertionError::WrongCeremony);
    assert_eq!(
        assertion_error(&fx, &payment),
        AssertionError::WrongCeremony
    );
    assert_eq!(assertion_error(&fx, &no_up), AssertionError::UserNotPresent);
    assert_eq!(
        assertion_error(&fx, &no_uv),
        AssertionError::UserNotVerified
    );
    assert_eq!(assertion_error(&fx, &rp), AssertionError::RpIdMismatch);
    assert_eq!(assertion_error(&fx, &cross), AssertionError::CrossOrigin);
    assert_eq!(
        assertion_error(&fx, &wrong_challenge),
        AssertionError::ChallengeMismatch
    );
    assert_eq!(
        check(&fx, &extra),
        Ok(()),
        "unknown clientDataJSON members are tolerated"
    );
}

#[test]
fn the_sign_counter_must_advance_when_grants_are_accepted() {
    let mut fx = Fixture::new();
    let older = fx.mint(&pending());
    let newer = fx.mint(&pending());
    let action = request();
    fx.verifier().accept_issued(newer.token(), &action).unwrap();
    let err = fx
        .verifier()
        .accept_issued(older.token(), &action)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Assertion(AssertionError::CounterRegressed { .. })
        ),
        "{err}"
    );
    // A fresh grant from the same authenticator still passes.
    let next = fx.mint(&pending());
    fx.verifier().accept_issued(next.token(), &action).unwrap();
    // Redemption order is free: the newest first, then an older one.
    fx.verifier()
        .redeem(&present(next.token(), &action))
        .unwrap();
    fx.verifier()
        .redeem(&present(newer.token(), &action))
        .unwrap();
}
