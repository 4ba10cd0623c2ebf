//! Batch approval: one ceremony approves several actions, and each grant still verifies alone,
//! spends alone, and approves only its own action.

use countersign_protocol::grant::{BatchDraft, GrantDraft, GrantOptions};
use countersign_protocol::hash::b64url;
use countersign_protocol::{ActionRequest, MintError, PendingAction, VerifyError};
use josekit::jwk::Jwk;
use josekit::jws::EdDSA;
use josekit::jwt;
use serde_json::{Value, json};

use crate::support::{Fixture, NOW, challenge_of, decode, pending_for, present, request};

/// Three refunds held at once, each its own pending action.
fn held() -> Vec<(PendingAction, ActionRequest)> {
    ["1001", "1002", "1003"]
        .into_iter()
        .map(|order| {
            let mut action = request();
            action.context.arguments["order"] = json!(order);
            let mut pending = pending_for(action.clone());
            pending.id = format!("pa_batch_{order}");
            (pending, action)
        })
        .collect()
}

fn drafts(fx: &Fixture, held: &[(PendingAction, ActionRequest)]) -> Vec<GrantDraft> {
    held.iter()
        .map(|(pending, _)| GrantDraft::new(pending, &fx.issuer, GrantOptions::at(NOW)).unwrap())
        .collect()
}

#[test]
fn one_ceremony_approves_each_action_with_its_own_grant() {
    let mut fx = Fixture::new();
    let held = held();
    let batch = BatchDraft::new(drafts(&fx, &held)).unwrap();
    let grants = fx.approver.sign_batch(batch).unwrap();
    assert_eq!(grants.len(), 3);
    let verifier = fx.verifier();
    for (grant, (pending, action)) in grants.iter().zip(&held) {
        let verified = verifier.redeem(&present(grant.token(), action)).unwrap();
        assert_eq!(verified.claims.approval.txn, pending.id);
        assert_eq!(verified.claims.batch.as_ref().map(Vec::len), Some(3));
        // Spent once, like any grant.
        assert_eq!(
            verifier
                .redeem(&present(grant.token(), action))
                .unwrap_err(),
            VerifyError::Replayed
        );
    }
    // Each grant approves its own action only, though one assertion covers all three.
    let (_, first_action) = &held[0];
    assert_eq!(
        verifier
            .check(&present(grants[1].token(), first_action))
            .unwrap_err(),
        VerifyError::ActionHashMismatch
    );
    // The one assertion moved the authenticator's counter once: a broker accepts the batch by
    // advancing the counter for the first grant and taking the others with the same assertion.
    let (_, a) = decode(grants[0].token());
    let (_, b) = decode(grants[2].token());
    assert_eq!(a["webauthn"], b["webauthn"]);
}

#[test]
fn a_grant_outside_its_batch_or_with_a_changed_batch_is_refused() {
    let mut fx = Fixture::new();
    let held = held();
    let grants = fx
        .approver
        .sign_batch(BatchDraft::new(drafts(&fx, &held)).unwrap())
        .unwrap();
    let token = grants[0].token();
    let action = &held[0].1;
    let verifier = fx.verifier();
    let (header, payload) = decode(token);
    let resign = |payload: &Value| crate::support::sign_token(&header, payload, &fx.device);

    // Its own hash dropped from the batch (a stolen device key re-signing): not in the batch.
    let mut dropped = payload.clone();
    dropped["batch"].as_array_mut().unwrap().remove(0);
    assert_eq!(
        verifier
            .check(&present(&resign(&dropped), action))
            .unwrap_err(),
        VerifyError::NotInBatch
    );
    // Another hash swapped in: the assertion was over the original list.
    let mut swapped = payload.clone();
    swapped["batch"][1] = json!(b64url(&[7u8; 32]));
    assert!(matches!(
        verifier.check(&present(&resign(&swapped), action)),
        Err(VerifyError::Assertion(_))
    ));
    // The batch removed: the assertion is not over this grant's claims alone.
    let mut alone = payload.clone();
    alone.as_object_mut().unwrap().remove("batch");
    assert!(matches!(
        verifier.check(&present(&resign(&alone), action)),
        Err(VerifyError::Assertion(_))
    ));
    // Malformed lists: one member, repeated members, not hashes.
    for batch in [
        json!([challenge_hash(&payload)]),
        json!([challenge_hash(&payload), challenge_hash(&payload)]),
        json!([challenge_hash(&payload), "not-a-hash"]),
        json!("one"),
        json!((0..51).map(|i| b64url(&[i as u8; 32])).collect::<Vec<_>>()),
    ] {
        let mut bad = payload.clone();
        bad["batch"] = batch;
        assert_eq!(
            verifier.check(&present(&resign(&bad), action)).unwrap_err(),
            VerifyError::NotInBatch
        );
    }
    // A claim changed, then re-signed: its hash is no longer in the batch.
    let mut changed = payload;
    changed["exp"] = json!(NOW + 100);
    assert_eq!(
        verifier
            .check(&present(&resign(&changed), action))
            .unwrap_err(),
        VerifyError::NotInBatch
    );
}

fn challenge_hash(payload: &Value) -> String {
    let mut claims = payload.clone();
    claims.as_object_mut().unwrap().remove("batch");
    b64url(&challenge_of(&claims))
}

#[test]
fn batches_hold_two_to_fifty_distinct_actions() {
    let fx = Fixture::new();
    let held = held();
    let one = drafts(&fx, &held[..1]);
    assert!(matches!(BatchDraft::new(one), Err(MintError::BatchSize(1))));
    let mut twice = drafts(&fx, &held[..1]);
    twice.extend(drafts(&fx, &held[..1]));
    assert!(matches!(
        BatchDraft::new(twice),
        Err(MintError::BatchRepeats)
    ));
}

#[test]
fn josekit_reads_a_batch_grant_and_its_binding_can_be_recomputed() {
    let mut fx = Fixture::new();
    let held = held();
    let grants = fx
        .approver
        .sign_batch(BatchDraft::new(drafts(&fx, &held)).unwrap())
        .unwrap();
    let jwk = Jwk::from_bytes(serde_json::to_vec(&fx.device.public_jwk()).unwrap()).unwrap();
    let verifier = EdDSA.verifier_from_jwk(&jwk).unwrap();
    let (payload, header) = jwt::decode_with_verifier(grants[1].token(), &verifier).unwrap();
    assert_eq!(header.token_type(), Some("countersign-grant+jwt"));
    let claims = Value::Object(payload.claims_set().clone());
    // The grant's own hash: JCS of the claims without `webauthn` and `batch`.
    let own = challenge_hash(&claims);
    let batch: Vec<String> = serde_json::from_value(claims["batch"].clone()).unwrap();
    assert_eq!(batch[1], own);
    // The challenge: JCS of the list, hashed.
    let challenge: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(serde_json_canonicalizer::to_vec(&batch).unwrap()).into()
    };
    let client_data = countersign_protocol::hash::b64url_decode(
        claims["webauthn"]["clientDataJSON"].as_str().unwrap(),
    )
    .unwrap();
    let client_data: Value = serde_json::from_slice(&client_data).unwrap();
    assert_eq!(client_data["challenge"], json!(b64url(&challenge)));
}

#[test]
fn a_broker_accepts_a_whole_batch_at_once_and_only_once() {
    let mut fx = Fixture::new();
    let held = held();
    let grants = fx
        .approver
        .sign_batch(BatchDraft::new(drafts(&fx, &held)).unwrap())
        .unwrap();
    let all: Vec<(&str, &ActionRequest)> = grants
        .iter()
        .zip(&held)
        .map(|(g, (_, a))| (g.token(), a))
        .collect();
    let verifier = fx.verifier();

    // Part of the batch, a grant twice, or grants mixed with another ceremony's: refused, and
    // the counter is not moved by a refusal.
    assert_eq!(
        verifier.accept_batch(&all[..2]).unwrap_err(),
        VerifyError::NotInBatch
    );
    assert_eq!(
        verifier
            .accept_batch(&[all[0], all[0], all[1]])
            .unwrap_err(),
        VerifyError::NotInBatch
    );
    let other = fx
        .approver
        .sign_batch(BatchDraft::new(drafts(&fx, &held)).unwrap())
        .unwrap();
    let mixed = [all[0], all[1], (other[2].token(), &held[2].1)];
    assert_eq!(
        verifier.accept_batch(&mixed).unwrap_err(),
        VerifyError::NotInBatch
    );
    let single = fx.mint(&held[0].0);
    assert_eq!(
        verifier
            .accept_batch(&[(single.token(), &held[0].1)])
            .unwrap_err(),
        VerifyError::NotInBatch
    );

    // The whole batch, once: the counter moves once for the ceremony.
    let accepted = verifier.accept_batch(&all).unwrap();
    assert_eq!(accepted.len(), 3);
    assert!(matches!(
        verifier.accept_batch(&all),
        Err(VerifyError::Assertion(_))
    ));
    // Accepted one by one, the second grant of a batch would look like a cloned authenticator.
    let fresh = fx
        .approver
        .sign_batch(BatchDraft::new(drafts(&fx, &held)).unwrap())
        .unwrap();
    verifier
        .accept_issued(fresh[0].token(), &held[0].1)
        .unwrap();
    assert!(matches!(
        verifier.accept_issued(fresh[1].token(), &held[1].1),
        Err(VerifyError::Assertion(_))
    ));
}
