//! RFC 8725 attacks, each with a real signature where the attack has one.

use countersign_protocol::grant::{ApprovalClaims, GrantDraft};
use countersign_protocol::hash::b64url;
use countersign_protocol::registry::{ApproverEntry, RegistryDocument};
use countersign_protocol::{DeviceSigningKey, VerifyError};
use serde_json::{Value, json};

use crate::support::{AUDIENCE, Fixture, NOW, decode, pending, present, request, sign_token};

fn verify(fx: &Fixture, token: &str) -> Result<(), VerifyError> {
    fx.verifier().check(&present(token, &request())).map(|_| ())
}

#[test]
fn alg_none_is_refused() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (mut header, payload) = decode(grant.token());
    header["alg"] = json!("none");
    let unsigned = format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    );
    assert_eq!(
        verify(&fx, &unsigned),
        Err(VerifyError::AlgorithmNotAllowed("none".into()))
    );
    // Missing alg as well.
    header.as_object_mut().unwrap().remove("alg");
    let token = sign_token(&header, &payload, &fx.device);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::AlgorithmNotAllowed(String::new()))
    );
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (_, payload) = decode(grant.token());
    let public = fx.device.public_jwk();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("countersign-grant+jwt".into());
    header.kid = Some(public.kid.clone());
    // The classic confusion: the verifier's public key used as an HMAC secret, in both forms.
    for secret in [
        public.x.as_bytes().to_vec(),
        countersign_protocol::hash::b64url_decode(&public.x).unwrap(),
    ] {
        let token = jsonwebtoken::encode(
            &header,
            &payload,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(
            verify(&fx, &token),
            Err(VerifyError::AlgorithmNotAllowed("HS256".into()))
        );
    }
    // Other algorithms and case variants of EdDSA are refused too.
    for alg in ["ES256", "RS256", "eddsa", "Ed25519", "EdDSA "] {
        let token = sign_token(
            &json!({"alg": alg, "typ": "countersign-grant+jwt", "kid": public.kid}),
            &payload,
            &fx.device,
        );
        assert_eq!(
            verify(&fx, &token),
            Err(VerifyError::AlgorithmNotAllowed(alg.into())),
            "{alg}"
        );
    }
}

#[test]
fn unknown_kid_is_refused() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (mut header, payload) = decode(grant.token());
    let stranger = DeviceSigningKey::generate();
    header["kid"] = json!(stranger.public_jwk().kid);
    let token = sign_token(&header, &payload, &stranger);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::UnknownKey(stranger.public_jwk().kid))
    );
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_token(&header, &payload, &fx.device);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::UnknownKey(String::new()))
    );
}

#[test]
fn jku_x5u_and_jwk_headers_are_never_followed() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (header, payload) = decode(grant.token());
    let attacker = DeviceSigningKey::generate();
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).unwrap();

    // The attacker's key embedded in the header, and its kid: the kid is unknown.
    let mut h = header.clone();
    h["jwk"] = attacker_jwk.clone();
    h["kid"] = json!(attacker.public_jwk().kid);
    let token = sign_token(&h, &payload, &attacker);
    assert!(matches!(
        verify(&fx, &token),
        Err(VerifyError::UnknownKey(_))
    ));

    // The real kid, with the attacker's key offered by value and by URL: the signature fails.
    let mut h = header.clone();
    h["jwk"] = attacker_jwk;
    h["jku"] = json!("https://attacker.example/jwks.json");
    h["x5u"] = json!("https://attacker.example/cert.pem");
    h["x5c"] = json!(["MIIB"]);
    let token = sign_token(&h, &payload, &attacker);
    assert_eq!(verify(&fx, &token), Err(VerifyError::BadSignature));

    // The same headers on a token the real device signed change nothing: they are ignored.
    let token = sign_token(&h, &payload, &fx.device);
    assert_eq!(verify(&fx, &token), Ok(()));

    // crit is refused, since we understand no extension.
    let mut h = header;
    h["crit"] = json!(["exp"]);
    let token = sign_token(&h, &payload, &fx.device);
    assert!(matches!(
        verify(&fx, &token),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn typ_must_be_exact() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (header, payload) = decode(grant.token());
    for typ in [
        json!("JWT"),
        json!("countersign-grant+JWT"),
        json!("application/countersign-grant+jwt"),
        json!(null),
        json!(["countersign-grant+jwt"]),
    ] {
        let mut h = header.clone();
        h["typ"] = typ.clone();
        let token = sign_token(&h, &payload, &fx.device);
        assert_eq!(verify(&fx, &token), Err(VerifyError::WrongType), "{typ}");
    }
    let mut h = header;
    h.as_object_mut().unwrap().remove("typ");
    assert_eq!(
        verify(&fx, &sign_token(&h, &payload, &fx.device)),
        Err(VerifyError::WrongType)
    );
}

#[test]
fn audience_must_be_exactly_this_verifier() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    for other in [
        "https://payments-gateway.example.com/",
        "https://PAYMENTS-gateway.example.com",
        "https://mail-gateway.example.com",
    ] {
        let err = fx
            .verifier_for(other)
            .check(&present(grant.token(), &request()))
            .unwrap_err();
        assert_eq!(err, VerifyError::WrongAudience(AUDIENCE.into()), "{other}");
    }
}

#[test]
fn issuer_must_be_the_approver_that_owns_the_key() {
    let mut fx = Fixture::new();
    // A second, legitimately paired approver of another owner.
    let other = DeviceSigningKey::generate();
    let mut document = RegistryDocument {
        approvers: vec![fx.entry()],
    };
    document.approvers.push(ApproverEntry {
        id: "apr_bob_phone".into(),
        owner: "bob@example.com".into(),
        device_keys: vec![other.public_jwk()],
        credentials: vec![],
    });
    fx.with_registry(document);
    let grant = fx.mint(&pending());
    let (header, payload) = decode(grant.token());

    // iss claims the other approver, signed by ours (re-asserted by our authenticator).
    let mut p = payload.clone();
    p["iss"] = json!("apr_bob_phone");
    let token = fx.reassert_and_sign(&header, &mut p);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::UnknownIssuer("apr_bob_phone".into()))
    );

    // An unregistered issuer.
    let mut p = payload.clone();
    p["iss"] = json!("apr_unknown");
    let token = fx.reassert_and_sign(&header, &mut p);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::UnknownIssuer("apr_unknown".into()))
    );

    // Bob's device key signing a grant that says it is ours.
    let mut h = header;
    h["kid"] = json!(other.public_jwk().kid);
    let token = sign_token(&h, &payload, &other);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::UnknownIssuer("apr_laptop".into()))
    );

    // sub must be the registered owner.
    let mut p = payload;
    p["sub"] = json!("mallory@example.com");
    let token = fx.reassert_and_sign(&fx.header(), &mut p);
    assert_eq!(verify(&fx, &token), Err(VerifyError::WrongSubject));
}

/// A grant names the broker that held the call; a verifier accepts only its own broker's.
#[test]
fn a_grant_accepted_by_another_broker_is_refused() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    assert_eq!(grant.claims().approval.broker, crate::support::BROKER);
    let elsewhere = countersign_protocol::GrantVerifier::new(
        countersign_protocol::VerifierConfig::new(AUDIENCE, "https://other-broker.example.com"),
        fx.registry.clone(),
        fx.replay.clone(),
        fx.counters.clone(),
        fx.clock.clone(),
    );
    assert_eq!(
        elsewhere
            .check(&present(grant.token(), &request()))
            .map(drop),
        Err(VerifyError::WrongBroker(crate::support::BROKER.into()))
    );
    // And a grant whose broker claim was changed no longer matches its assertion or JWS; one
    // re-signed by the approver's own keys (a compromised approver) names the other broker.
    let (header, mut payload) = decode(grant.token());
    payload["broker"] = json!("https://other-broker.example.com");
    let token = fx.reassert_and_sign(&header, &mut payload);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::WrongBroker(
            "https://other-broker.example.com".into()
        ))
    );
}

/// The action's subject is the grant's `sub`: an approver's grant never covers an action on
/// someone else's behalf, even one whose hash it signed.
#[test]
fn an_action_for_another_subject_is_refused() {
    let mut fx = Fixture::new();
    let mut for_bob = request();
    for_bob.subject.id = "bob@example.com".into();
    // The approver's side refuses to make such a grant at all.
    assert!(matches!(
        GrantDraft::new(
            &crate::support::pending_for(for_bob.clone()),
            &fx.issuer,
            countersign_protocol::grant::GrantOptions::at(NOW)
        ),
        Err(countersign_protocol::MintError::SubjectNotOwner)
    ));
    // A compromised approver makes one anyway: its hash binds bob's action, its sub is alice.
    let token = mint_claims(&mut fx, |claims| {
        claims.action_hash = for_bob.action_hash().unwrap();
    });
    assert_eq!(
        fx.verifier().check(&present(&token, &for_bob)).map(drop),
        Err(VerifyError::SubjectMismatch)
    );
}

#[test]
fn expiry_and_not_before_honour_the_skew_bound_exactly() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let claims = grant.claims().approval.clone();
    let at = |fx: &Fixture, now: i64| {
        fx.clock.set(now);
        verify(fx, grant.token())
    };
    assert_eq!(at(&fx, claims.exp + 59), Ok(()));
    assert_eq!(at(&fx, claims.exp + 60), Err(VerifyError::Expired));
    assert_eq!(at(&fx, claims.exp + 3600), Err(VerifyError::Expired));
    assert_eq!(at(&fx, claims.nbf - 60), Ok(()));
    assert_eq!(at(&fx, claims.nbf - 61), Err(VerifyError::NotYetValid));
}

/// Claims with a valid assertion over them: what a compromised approver could issue.
fn mint_claims(fx: &mut Fixture, edit: impl FnOnce(&mut ApprovalClaims)) -> String {
    let mut claims = fx.draft(&pending()).claims().clone();
    edit(&mut claims);
    let draft = GrantDraft::from_claims(claims).unwrap();
    fx.sign_draft(draft).token().to_owned()
}

#[test]
fn nbf_in_the_future_and_inconsistent_lifetimes_are_refused() {
    let mut fx = Fixture::new();
    let token = mint_claims(&mut fx, |c| {
        c.nbf = NOW + 300;
        c.exp = c.iat + 120;
    });
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::BadLifetime),
        "exp before nbf"
    );
    let token = mint_claims(&mut fx, |c| {
        c.iat = NOW + 300;
        c.nbf = NOW + 300;
        c.exp = NOW + 400;
    });
    assert_eq!(verify(&fx, &token), Err(VerifyError::NotYetValid));
    let token = mint_claims(&mut fx, |c| c.nbf = c.iat - 1);
    assert_eq!(
        verify(&fx, &token),
        Err(VerifyError::BadLifetime),
        "nbf before iat"
    );
}

#[test]
fn lifetime_over_the_cap_is_refused_even_when_properly_signed() {
    let mut fx = Fixture::new();
    let token = mint_claims(&mut fx, |c| c.exp = c.iat + 121);
    assert_eq!(verify(&fx, &token), Err(VerifyError::BadLifetime));
    let token = mint_claims(&mut fx, |c| c.exp = c.iat + 120);
    assert_eq!(verify(&fx, &token), Ok(()));
}

#[test]
fn malformed_tokens_get_typed_errors() {
    let fx = Fixture::new();
    for token in [
        "",
        "a.b",
        "a.b.c.d",
        "...",
        "!!.??.**",
        &"A".repeat(200_000),
    ] {
        let err = verify(&fx, token).unwrap_err();
        assert_eq!(err.code(), "malformed", "{token:.20}: {err}");
    }
    let header = fx.header();
    // A payload with an unknown claim, a duplicate key, or an inexact number.
    let payload: Value = json!({"iss": "apr_laptop", "extra": 1});
    let err = verify(&fx, &sign_token(&header, &payload, &fx.device)).unwrap_err();
    assert_eq!(err.code(), "malformed_claims");
    let raw = r#"{"iss":"apr_laptop","iss":"apr_other"}"#;
    let token = {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(raw.as_bytes())
        );
        format!(
            "{input}.{}",
            b64url(&fx.device.sign_bytes(input.as_bytes()))
        )
    };
    assert!(matches!(
        verify(&fx, &token),
        Err(VerifyError::Claims(
            countersign_protocol::ParseError::DuplicateKey { .. }
        ))
    ));
}
