//! Bounded grants: each constraint honoured and violated, an unknown constraint refused, expiry
//! and lifetime caps, the gateway key (`cnf`), the two grant types kept apart, tampering, and a
//! third-party check with josekit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use countersign_protocol::bounded::{
    BOUNDED_DEFAULT_LIFETIME_SECS, BOUNDED_MAX_LIFETIME_SECS, BoundedDraft, BoundedGrant, Bounds,
};
use countersign_protocol::grant::Confirmation;
use countersign_protocol::{ActionRequest, MintError, Presentation, VerifyError};
use josekit::jwk::Jwk;
use josekit::jws::EdDSA;
use josekit::jwt;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{Fixture, NOW, challenge_of, decode, pending, request, sign_token};

/// The thumbprint of the gateway key the grants below are bound to.
const GATEWAY_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

/// Three refunds within an hour, up to 5000.00, in euros, for any order.
fn bounds() -> Bounds {
    Bounds {
        uses: 3,
        lifetime_secs: BOUNDED_DEFAULT_LIFETIME_SECS,
        max: BTreeMap::from([("amount".to_owned(), "5000.00".to_owned())]),
        vary: BTreeSet::from(["order".to_owned()]),
    }
}

fn cnf() -> Confirmation {
    Confirmation {
        jkt: GATEWAY_JKT.into(),
    }
}

fn mint_with(fx: &mut Fixture, bounds: &Bounds) -> BoundedGrant {
    let draft = BoundedDraft::new(
        &pending(),
        &fx.issuer,
        bounds,
        cnf(),
        NOW,
        BOUNDED_DEFAULT_LIFETIME_SECS,
    )
    .unwrap();
    let assertion = fx.assert(draft.challenge());
    draft.sign(assertion, &fx.device).unwrap()
}

fn mint(fx: &mut Fixture) -> BoundedGrant {
    mint_with(fx, &bounds())
}

/// The reviewed refund with other arguments.
fn call(arguments: Value) -> ActionRequest {
    let mut action = request();
    action.context.arguments = arguments.as_object().unwrap().clone();
    action.context.intent = "A later refund".into();
    action
}

fn by_gateway<'a>(grant: &'a str, action: &'a ActionRequest) -> Presentation<'a> {
    Presentation {
        grant,
        action,
        presenter_jkt: Some(GATEWAY_JKT),
    }
}

#[test]
fn covers_the_reviewed_call_and_later_calls_within_its_constraints() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let claims = &grant.claims().approval;
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.constraints.uses, 3);
    assert_eq!(
        claims.constraints.equal,
        BTreeMap::from([("currency".to_owned(), json!("EUR"))])
    );
    let verifier = fx.verifier();

    let reviewed = request();
    verifier
        .check_bounded(&by_gateway(grant.token(), &reviewed))
        .unwrap();
    for later in [
        json!({"order": "9001", "amount": "12.50", "currency": "EUR"}),
        json!({"order": 7, "amount": 5000, "currency": "EUR"}),
        json!({"amount": "4999.99", "currency": "EUR"}),
    ] {
        let action = call(later.clone());
        let verified = verifier
            .check_bounded(&by_gateway(grant.token(), &action))
            .unwrap_or_else(|e| panic!("{later} refused: {e}"));
        assert_eq!(verified.claims.approval.jti, claims.jti);
    }
}

#[test]
fn each_constraint_is_enforced() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let verifier = fx.verifier();
    let refused = |arguments: Value, constraint: &str, argument: &str| {
        let action = call(arguments.clone());
        match verifier.check_bounded(&by_gateway(grant.token(), &action)) {
            Err(VerifyError::ConstraintViolated {
                constraint: c,
                argument: a,
            }) => assert_eq!((c, a.as_str()), (constraint, argument), "{arguments}"),
            other => panic!("{arguments}: {other:?}"),
        }
    };
    refused(
        json!({"order": "1", "amount": "5000.01", "currency": "EUR"}),
        "max",
        "amount",
    );
    refused(
        json!({"order": "1", "amount": 5001, "currency": "EUR"}),
        "max",
        "amount",
    );
    refused(json!({"order": "1", "currency": "EUR"}), "max", "amount");
    refused(
        json!({"order": "1", "amount": "five", "currency": "EUR"}),
        "max",
        "amount",
    );
    refused(
        json!({"order": "1", "amount": "10.00", "currency": "USD"}),
        "equal",
        "currency",
    );
    refused(
        json!({"order": "1", "amount": "10.00"}),
        "equal",
        "currency",
    );
    refused(
        json!({"order": "1", "amount": "10.00", "currency": "EUR", "refund_to": "IBAN…"}),
        "arguments",
        "refund_to",
    );

    // Another agent, another tool, on someone else's behalf: as for a single-use grant.
    let mut other_agent = request();
    other_agent.actor.act = None;
    assert_eq!(
        verifier
            .check_bounded(&by_gateway(grant.token(), &other_agent))
            .unwrap_err(),
        VerifyError::ActorMismatch
    );
    let mut other_tool = request();
    other_tool.resource.id = "stripe/payouts.create".into();
    assert_eq!(
        verifier
            .check_bounded(&by_gateway(grant.token(), &other_tool))
            .unwrap_err(),
        VerifyError::DetailsMismatch
    );
    let mut other_owner = request();
    other_owner.subject.id = "mallory@example.com".into();
    assert_eq!(
        verifier
            .check_bounded(&by_gateway(grant.token(), &other_owner))
            .unwrap_err(),
        VerifyError::SubjectMismatch
    );
}

#[test]
fn an_unknown_constraint_is_refused_even_when_properly_signed() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let (header, mut payload) = decode(grant.token());
    payload["constraints"]["weekdays_only"] = json!(true);
    // A real assertion over the changed claims and a real device signature: only the unknown
    // constraint is wrong.
    let token = fx.reassert_and_sign(&header, &mut payload);
    assert_eq!(
        fx.verifier()
            .check_bounded(&by_gateway(&token, &request()))
            .unwrap_err(),
        VerifyError::UnknownConstraint("weekdays_only".into())
    );
    // A claim outside `constraints` that the verifier does not know is refused too.
    let (header, mut payload) = decode(grant.token());
    payload["purpose"] = json!("anything");
    let token = fx.reassert_and_sign(&header, &mut payload);
    assert!(matches!(
        fx.verifier().check_bounded(&by_gateway(&token, &request())),
        Err(VerifyError::Claims(_))
    ));
}

#[test]
fn the_gateway_key_must_present_it() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let verifier = fx.verifier();
    let action = request();
    for presenter in [None, Some("another-key-thumbprint"), Some("")] {
        let presentation = Presentation {
            grant: grant.token(),
            action: &action,
            presenter_jkt: presenter,
        };
        assert_eq!(
            verifier.check_bounded(&presentation).unwrap_err(),
            VerifyError::ConfirmationMismatch,
            "{presenter:?}"
        );
    }
    // And a bounded grant without `cnf` is no bounded grant.
    let (header, mut payload) = decode(grant.token());
    payload.as_object_mut().unwrap().remove("cnf");
    let token = fx.reassert_and_sign(&header, &mut payload);
    assert!(matches!(
        verifier.check_bounded(&by_gateway(&token, &action)),
        Err(VerifyError::Claims(_))
    ));
}

#[test]
fn it_expires_and_its_lifetime_is_capped() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let action = request();
    fx.clock.set(NOW + 3600 + 59);
    fx.verifier()
        .check_bounded(&by_gateway(grant.token(), &action))
        .unwrap();
    fx.clock.set(NOW + 3600 + 60);
    assert_eq!(
        fx.verifier()
            .check_bounded(&by_gateway(grant.token(), &action))
            .unwrap_err(),
        VerifyError::Expired
    );

    // Past the broker's cap, minting refuses: never a silently shorter grant.
    let long = Bounds {
        lifetime_secs: 2 * 3600,
        ..bounds()
    };
    let refused = BoundedDraft::new(&pending(), &fx.issuer, &long, cnf(), NOW, 3600).unwrap_err();
    assert!(matches!(
        refused,
        MintError::LifetimeTooLong {
            requested: 7200,
            cap: 3600
        }
    ));
    let beyond = Bounds {
        lifetime_secs: BOUNDED_MAX_LIFETIME_SECS + 1,
        ..bounds()
    };
    assert!(matches!(
        BoundedDraft::new(&pending(), &fx.issuer, &beyond, cnf(), NOW, i64::MAX),
        Err(MintError::LifetimeTooLong { .. })
    ));

    // A two-hour grant, signed properly, is refused by a verifier that allows one hour.
    fx.clock.set(NOW);
    let draft = BoundedDraft::new(&pending(), &fx.issuer, &long, cnf(), NOW, 7200).unwrap();
    let assertion = fx.assert(draft.challenge());
    let two_hours = draft.sign(assertion, &fx.device).unwrap();
    assert_eq!(
        fx.verifier()
            .check_bounded(&by_gateway(two_hours.token(), &action))
            .unwrap_err(),
        VerifyError::BadLifetime
    );
}

#[test]
fn bounds_must_fit_the_reviewed_call() {
    let fx = Fixture::new();
    let mint = |bounds: Bounds| {
        BoundedDraft::new(&pending(), &fx.issuer, &bounds, cnf(), NOW, 3600).map(|_| ())
    };
    assert!(mint(bounds()).is_ok());
    let refused = |bounds: Bounds| {
        assert!(
            matches!(mint(bounds.clone()), Err(MintError::Bounds(_))),
            "{bounds:?}"
        );
    };
    // The reviewed refund is 5000.00: a ceiling below it would not cover it.
    refused(Bounds {
        max: BTreeMap::from([("amount".to_owned(), "4000".to_owned())]),
        ..bounds()
    });
    refused(Bounds {
        max: BTreeMap::from([("amount".to_owned(), "lots".to_owned())]),
        ..bounds()
    });
    refused(Bounds {
        max: BTreeMap::from([("currency".to_owned(), "10".to_owned())]),
        ..bounds()
    });
    refused(Bounds {
        vary: BTreeSet::from(["nonexistent".to_owned()]),
        ..bounds()
    });
    refused(Bounds {
        vary: BTreeSet::from(["amount".to_owned()]),
        ..bounds()
    });
    refused(Bounds {
        uses: 0,
        ..bounds()
    });
    refused(Bounds {
        uses: 1001,
        ..bounds()
    });
}

#[test]
fn single_use_and_bounded_grants_cannot_pass_for_each_other() {
    let mut fx = Fixture::new();
    let bounded = mint(&mut fx);
    let single = fx.mint(&pending());
    let action = request();
    let verifier = fx.verifier();
    assert_eq!(
        verifier
            .check(&by_gateway(bounded.token(), &action))
            .unwrap_err(),
        VerifyError::WrongType
    );
    assert_eq!(
        verifier
            .check_bounded(&by_gateway(single.token(), &action))
            .unwrap_err(),
        VerifyError::WrongType
    );
    // The bounded grant's claims under the single-use type, re-signed: still refused.
    let (mut header, mut payload) = decode(bounded.token());
    header["typ"] = json!("countersign-grant+jwt");
    let token = fx.reassert_and_sign(&header, &mut payload);
    assert!(verifier.check(&by_gateway(&token, &action)).is_err());
}

#[test]
fn accepting_it_requires_the_reviewed_call() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let verifier = fx.verifier();
    let later = call(json!({"order": "9001", "amount": "12.50", "currency": "EUR"}));
    assert_eq!(
        verifier.accept_bounded(grant.token(), &later).unwrap_err(),
        VerifyError::ActionHashMismatch
    );
    let accepted = verifier.accept_bounded(grant.token(), &request()).unwrap();
    assert_eq!(accepted.claims.approval.txn, pending().id);
    // The sign counter moved on: the same assertion is not accepted twice.
    assert!(matches!(
        verifier.accept_bounded(grant.token(), &request()),
        Err(VerifyError::Assertion(_))
    ));
}

#[test]
fn josekit_verifies_a_bounded_grant_and_its_binding() {
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let jwk = Jwk::from_bytes(serde_json::to_vec(&fx.device.public_jwk()).unwrap()).unwrap();
    let verifier = EdDSA.verifier_from_jwk(&jwk).unwrap();
    let (payload, header) = jwt::decode_with_verifier(grant.token(), &verifier).unwrap();
    assert_eq!(header.token_type(), Some("countersign-bounded-grant+jwt"));
    assert_eq!(payload.claim("cnf"), Some(&json!({"jkt": GATEWAY_JKT})));
    assert_eq!(payload.claim("constraints").unwrap()["uses"], json!(3));

    // The assertion's challenge is SHA-256 of the JCS of every claim but `webauthn`, computed
    // here from what josekit decoded.
    let claims = Value::Object(payload.claims_set().clone());
    let expected = challenge_of(&claims);
    let client_data = payload.claim("webauthn").unwrap()["clientDataJSON"]
        .as_str()
        .unwrap()
        .to_owned();
    let client_data: Value =
        serde_json::from_slice(&countersign_protocol::hash::b64url_decode(&client_data).unwrap())
            .unwrap();
    assert_eq!(
        client_data["challenge"],
        json!(countersign_protocol::hash::b64url(&expected))
    );
}

/// Claim names of a bounded grant, `webauthn` included.
const CLAIMS: [&str; 16] = [
    "iss",
    "sub",
    "aud",
    "broker",
    "iat",
    "nbf",
    "exp",
    "jti",
    "txn",
    "act",
    "cnf",
    "authorization_details",
    "action_hash",
    "constraints",
    "amr",
    "webauthn",
];

struct Minted {
    fx: std::sync::Mutex<Fixture>,
    token: String,
}

fn minted() -> &'static Minted {
    static MINTED: OnceLock<Minted> = OnceLock::new();
    MINTED.get_or_init(|| {
        let mut fx = Fixture::new();
        let token = mint(&mut fx).token().to_owned();
        Minted {
            fx: std::sync::Mutex::new(fx),
            token,
        }
    })
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,24}".prop_map(Value::String),
        (-(1i64 << 40)..(1i64 << 40)).prop_map(|n| json!(n)),
        Just(json!(null)),
        Just(json!([])),
        Just(json!({"uses": 1000})),
        Just(json!({"uses": 3, "vary": ["order", "amount", "currency"]})),
        Just(json!({"uses": 3, "max": {"amount": "1000000"}, "vary": ["order", "currency"]})),
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
        let action = request();
        let result = fx.verifier().check_bounded(&by_gateway(&token, &action));
        prop_assert!(result.is_err(), "{claim} changed and still accepted");
    }

    /// Any byte of the token changed: refused.
    #[test]
    fn any_changed_token_byte_is_refused(position in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let mut bytes = m.token.clone().into_bytes();
        let at = position.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let token = String::from_utf8(bytes).unwrap();
        let action = request();
        prop_assert!(fx.verifier().check_bounded(&by_gateway(&token, &action)).is_err());
    }

    /// Any amount over the ceiling, any other currency: refused; within both: covered.
    #[test]
    fn ceilings_and_equalities_hold_for_any_value(
        cents in 0u64..2_000_000,
        currency in prop_oneof![Just("EUR".to_owned()), "[A-Z]{3}"],
    ) {
        let m = minted();
        let fx = m.fx.lock().unwrap();
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let action = call(json!({"order": "1", "amount": amount, "currency": currency}));
        let result = fx.verifier().check_bounded(&by_gateway(&m.token, &action));
        prop_assert_eq!(result.is_ok(), cents <= 500_000 && currency == "EUR", "{:?}", result.err());
    }
}

/// The approver's own check before sending a bounded grant: it passes as its gateway would
/// check it; later than its expiry, or against another credential, it does not.
#[test]
fn an_approver_checks_the_bounded_grant_it_minted() {
    use countersign_protocol::verify::{MintCheckError, check_minted_bounded};
    let mut fx = Fixture::new();
    let grant = mint(&mut fx);
    let device = fx.device.public_jwk();
    let credential = fx.approver.credential.clone();
    let checked = check_minted_bounded(
        &grant,
        &pending(),
        &fx.issuer,
        device.clone(),
        credential.clone(),
        NOW,
    )
    .unwrap();
    assert_eq!(checked.claims.approval.txn, pending().id);
    let late = check_minted_bounded(
        &grant,
        &pending(),
        &fx.issuer,
        device.clone(),
        credential,
        NOW + 7200,
    );
    assert!(
        matches!(late, Err(MintCheckError::Refused(VerifyError::Expired))),
        "{late:?}"
    );
    let other = countersign_protocol::dev_authenticator::DevApprover::new("apr_x", "o", "b")
        .unwrap()
        .credential;
    let refused = check_minted_bounded(&grant, &pending(), &fx.issuer, device, other, NOW);
    assert!(
        matches!(
            refused,
            Err(MintCheckError::Refused(VerifyError::Assertion(_)))
        ),
        "{refused:?}"
    );
}
