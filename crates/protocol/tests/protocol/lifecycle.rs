//! A grant minted here verifies here and with an independent JOSE implementation (josekit, on
//! OpenSSL), and josekit-made grants verify here.

use countersign_protocol::grant::{Confirmation, GrantDraft, GrantOptions};
use countersign_protocol::hash::b64url;
use countersign_protocol::{Presentation, VerifyError};
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsHeader};
use josekit::jwt::{self, JwtPayload};
use serde_json::{Value, json};

use crate::support::{
    AUDIENCE, Fixture, NOW, OWNER, challenge_of, decode, pending, present, request,
};

#[test]
fn a_minted_grant_verifies_and_redeems_once() {
    let mut fx = Fixture::new();
    let pending = pending();
    let grant = fx.mint(&pending);
    let action = request();
    let verifier = fx.verifier();

    let checked = verifier.check(&present(grant.token(), &action)).unwrap();
    assert_eq!(checked.claims.approval.txn, pending.id);
    assert_eq!(checked.claims.approval.sub, OWNER);
    assert_eq!(checked.claims.approval.aud, AUDIENCE);
    assert_eq!(
        checked.claims.approval.exp - checked.claims.approval.iat,
        120
    );
    assert_eq!(checked.claims.approval.amr, ["hwk", "user"]);
    assert_eq!(checked.claims.approval.act.links().len(), 2);

    // check() does not consume; redeem() does, once.
    verifier.check(&present(grant.token(), &action)).unwrap();
    verifier.redeem(&present(grant.token(), &action)).unwrap();
    let again = verifier
        .redeem(&present(grant.token(), &action))
        .unwrap_err();
    assert_eq!(again, VerifyError::Replayed);
    assert_eq!(again.code(), "replayed");
}

/// The approver's own check before sending: the grant it just minted passes as a gateway would
/// check it; checked against another credential, another broker or a later time, it does not.
#[test]
fn an_approver_checks_what_it_minted_before_sending_it() {
    use countersign_protocol::grant::Issuer;
    use countersign_protocol::verify::{MintCheckError, check_minted};
    let mut fx = Fixture::new();
    let pending = pending();
    let grant = fx.mint(&pending);
    let device = fx.device.public_jwk();
    let credential = fx.approver.credential.clone();
    let checked = check_minted(
        &grant,
        &pending,
        &fx.issuer,
        device.clone(),
        credential.clone(),
        NOW,
    )
    .unwrap();
    assert_eq!(checked.claims.approval.txn, pending.id);

    let other = countersign_protocol::dev_authenticator::DevApprover::new("apr_x", OWNER, "b")
        .unwrap()
        .credential;
    let refused = |issuer: &Issuer, credential, now| {
        check_minted(&grant, &pending, issuer, device.clone(), credential, now).unwrap_err()
    };
    assert!(matches!(
        refused(&fx.issuer, other, NOW),
        MintCheckError::Refused(VerifyError::Assertion(_))
    ));
    let elsewhere = Issuer {
        broker: "https://another-broker.example.com".into(),
        ..fx.issuer.clone()
    };
    assert!(matches!(
        refused(&elsewhere, credential.clone(), NOW),
        MintCheckError::Refused(VerifyError::WrongBroker(_))
    ));
    assert!(matches!(
        refused(&fx.issuer, credential, NOW + 3600),
        MintCheckError::Refused(VerifyError::Expired)
    ));
}

#[test]
fn the_token_is_a_standard_compact_jws() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let (header, payload) = decode(grant.token());
    assert_eq!(header, fx.header());
    let webauthn = payload["webauthn"].as_object().unwrap();
    let mut keys: Vec<&str> = webauthn.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["authenticatorData", "clientDataJSON", "id", "signature"]
    );
    // The challenge in clientDataJSON is SHA-256(JCS(claims without webauthn)).
    let client: Value = serde_json::from_slice(
        &countersign_protocol::hash::b64url_decode(webauthn["clientDataJSON"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(client["type"], "webauthn.get");
    assert_eq!(client["challenge"], b64url(&challenge_of(&payload)));
}

#[test]
fn josekit_verifies_a_grant_minted_here() {
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let jwk = Jwk::from_bytes(serde_json::to_vec(&fx.device.public_jwk()).unwrap()).unwrap();
    let verifier = EdDSA.verifier_from_jwk(&jwk).unwrap();
    let (payload, header) = jwt::decode_with_verifier(grant.token(), &verifier).unwrap();
    assert_eq!(header.token_type(), Some("countersign-grant+jwt"));
    assert_eq!(header.key_id(), Some(fx.device.public_jwk().kid.as_str()));
    assert_eq!(payload.claim("aud"), Some(&json!(AUDIENCE)));
    assert_eq!(payload.claim("txn"), Some(&json!(pending().id)));

    // And josekit refuses it once a byte of the payload changes.
    let mut forged = grant.token().to_owned();
    let dot = forged.find('.').unwrap();
    forged.replace_range(
        dot + 5..dot + 6,
        if &forged[dot + 5..dot + 6] == "A" {
            "B"
        } else {
            "A"
        },
    );
    assert!(jwt::decode_with_verifier(&forged, &verifier).is_err());
}

#[test]
fn a_grant_signed_by_josekit_verifies_here() {
    let mut fx = Fixture::new();
    let draft = fx.draft(&pending());
    let assertion = fx.assert(draft.challenge());
    let mut claims = serde_json::to_value(draft.claims()).unwrap();
    claims["webauthn"] = serde_json::to_value(assertion).unwrap();

    let public = fx.device.public_jwk();
    let private = json!({
        "kty": "OKP", "crv": "Ed25519", "x": public.x, "d": b64url(fx.device.secret().as_ref()),
    });
    let signer = EdDSA
        .signer_from_jwk(&Jwk::from_bytes(private.to_string()).unwrap())
        .unwrap();
    let mut header = JwsHeader::new();
    header.set_token_type("countersign-grant+jwt");
    header.set_key_id(public.kid);
    let payload = JwtPayload::from_map(claims.as_object().unwrap().clone()).unwrap();
    let token = jwt::encode_with_signer(&payload, &header, &signer).unwrap();

    let action = request();
    let verified = fx.verifier().redeem(&present(&token, &action)).unwrap();
    assert_eq!(verified.claims.approval.jti, draft.claims().jti);
}

#[test]
fn sender_constrained_grant_needs_the_bound_key() {
    let mut fx = Fixture::new();
    let mut options = GrantOptions::at(NOW);
    options.confirmation = Some(Confirmation {
        jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
    });
    let draft = GrantDraft::new(&pending(), &fx.issuer, options).unwrap();
    let grant = fx.sign_draft(draft);
    let action = request();
    let verifier = fx.verifier();
    let without = verifier
        .check(&present(grant.token(), &action))
        .unwrap_err();
    assert_eq!(without, VerifyError::ConfirmationMismatch);
    let other = Presentation {
        presenter_jkt: Some("another-key-thumbprint"),
        ..present(grant.token(), &action)
    };
    assert_eq!(
        verifier.check(&other).unwrap_err(),
        VerifyError::ConfirmationMismatch
    );
    let bound = Presentation {
        presenter_jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),
        ..present(grant.token(), &action)
    };
    verifier.redeem(&bound).unwrap();
}

#[test]
fn a_revoked_grant_is_refused_and_cannot_be_redeemed() {
    use countersign_protocol::ReplayStore as _;
    let mut fx = Fixture::new();
    let grant = fx.mint(&pending());
    let claims = &grant.claims().approval;
    fx.replay.revoke(&claims.jti, claims.exp, NOW).unwrap();
    let action = request();
    assert_eq!(
        fx.verifier()
            .check(&present(grant.token(), &action))
            .unwrap_err(),
        VerifyError::Revoked
    );
    assert_eq!(
        fx.verifier()
            .redeem(&present(grant.token(), &action))
            .unwrap_err(),
        VerifyError::Revoked
    );
}

#[test]
fn minting_refuses_an_item_whose_hash_disagrees_with_what_it_shows() {
    let fx = Fixture::new();
    let mut item = pending();
    item.context
        .arguments
        .insert("amount".into(), json!("50000.00"));
    let err = GrantDraft::new(&item, &fx.issuer, GrantOptions::at(NOW)).unwrap_err();
    assert!(
        matches!(err, countersign_protocol::MintError::ActionHashMismatch),
        "{err}"
    );
}

#[test]
fn minting_refuses_an_overlong_lifetime_and_a_foreign_assertion() {
    let mut fx = Fixture::new();
    let mut options = GrantOptions::at(NOW);
    options.lifetime_secs = 121;
    let err = GrantDraft::new(&pending(), &fx.issuer, options).unwrap_err();
    assert!(matches!(
        err,
        countersign_protocol::MintError::LifetimeTooLong { requested: 121, .. }
    ));

    let first = fx.draft(&pending());
    let second = fx.draft(&pending());
    let assertion = fx.assert(second.challenge());
    let err = first.sign(assertion, &fx.device).unwrap_err();
    assert!(matches!(
        err,
        countersign_protocol::MintError::AssertionForOtherClaims
    ));
}
