//! Bounded grants at the broker: accepted from a review (bound to the gateway's key, within the
//! broker's maximum lifetime), later calls that fit released without a prompt, each use counted
//! once at redemption — exactly N under 64 concurrent redemptions — and revocation at once.

use std::collections::{BTreeMap, BTreeSet};

use countersign_protocol::ActionRequest;
use countersign_protocol::action::Status;
use countersign_protocol::api::{BoundedGrantList, GatewayList, RequestView};
use countersign_protocol::bounded::{BoundedDraft, Bounds};
use countersign_protocol::grant::Confirmation;
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    BILLING, OWNER, PAYMENTS, SqlValue, TestApprover, TestBroker, big_refund, gateway_key, hold,
};

/// A refund of `amount` for `order`, in `currency`, as the billing agent asks for it.
fn refund(broker: &TestBroker, order: &str, amount: &str, currency: &str) -> ActionRequest {
    let mut scenario = big_refund();
    scenario.arguments = json!({"order": order, "amount": amount, "currency": currency});
    broker.agent(BILLING).request(&scenario).unwrap()
}

/// The payments gateway's key thumbprint, as the broker tells approvers.
async fn payments_jkt(approver: &TestApprover) -> String {
    let response = approver
        .send(Method::GET, "/v1/approver/gateways", None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let list: GatewayList = response.json().await.unwrap();
    let payments = list
        .gateways
        .iter()
        .find(|g| g.audience == PAYMENTS)
        .unwrap();
    payments
        .jkt
        .clone()
        .expect("the payments gateway has a key")
}

/// Up to `uses` refunds of any order, at most 6000 EUR, for `lifetime_secs`.
fn bounds(uses: u32, lifetime_secs: i64) -> Bounds {
    Bounds {
        uses,
        lifetime_secs,
        max: BTreeMap::from([("amount".to_owned(), "6000.00".to_owned())]),
        vary: BTreeSet::from(["order".to_owned()]),
    }
}

/// A real bounded grant over `view`, bound to `jkt`, made here and not sent.
fn bounded_grant(
    approver: &mut TestApprover,
    view: &RequestView,
    bounds: &Bounds,
    jkt: &str,
) -> String {
    let now = countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
    let draft = BoundedDraft::new(
        &view.pending,
        &approver.dev.issuer,
        bounds,
        Confirmation {
            jkt: jkt.to_owned(),
        },
        now,
        countersign_protocol::bounded::BOUNDED_MAX_LIFETIME_SECS,
    )
    .unwrap();
    approver.dev.sign_bounded(draft).unwrap().token().to_owned()
}

/// Submits `call`, which policy holds, and returns it as the owner lists it.
async fn held_view(
    broker: &TestBroker,
    approver: &TestApprover,
    call: &ActionRequest,
) -> RequestView {
    let ticket = hold(&broker.agent(BILLING), call).await;
    approver
        .list(Some("pending"))
        .await
        .requests
        .into_iter()
        .find(|v| v.pending.id == ticket.id)
        .unwrap()
}

/// Holds the first refund, approves it with a bounded grant of `uses`, and returns the
/// reviewed call, its request and the grant.
async fn granted(
    broker: &TestBroker,
    approver: &mut TestApprover,
    uses: u32,
) -> (ActionRequest, RequestView, String) {
    let first = refund(broker, "A-1", "5000.00", "EUR");
    let view = held_view(broker, approver, &first).await;
    let jkt = payments_jkt(approver).await;
    let grant = bounded_grant(approver, &view, &bounds(uses, 1800), &jkt);
    let (status, body) = approver
        .decide(
            &view.pending.id,
            &json!({"decision": "approve", "grant": grant}),
            "bounded-1",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recorded: RequestView = serde_json::from_value(body).unwrap();
    assert_eq!(recorded.status, Status::Approved);
    assert!(recorded.bounded_grant.is_some());
    (first, recorded, grant)
}

/// Evaluates `call`: `Some(id)` when released at once under a bounded grant, `None` when held
/// for the owner.
async fn evaluate(broker: &TestBroker, call: &ActionRequest) -> (String, bool) {
    let agent = broker.agent(BILLING);
    let ticket = hold(&agent, call).await;
    let status = agent
        .wait(&ticket.id, std::time::Duration::from_secs(0))
        .await
        .unwrap();
    (ticket.id, status.status == Status::Approved)
}

async fn redeem(broker: &TestBroker, grant: &str, call: &ActionRequest) -> (StatusCode, Value) {
    let (status, body) = broker
        .agent(BILLING)
        .redeem_answer(PAYMENTS, grant, call)
        .await
        .unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn active(approver: &TestApprover) -> BoundedGrantList {
    let response = approver
        .send(Method::GET, "/v1/approver/bounded", None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_calls_within_the_limits_are_released_and_each_use_is_counted() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let (first, view, grant) = granted(&broker, &mut approver, 3).await;

    // The reviewed call is the first use.
    let agent = broker.agent(BILLING);
    let polled = agent
        .wait(&view.pending.id, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(polled.grant.as_deref(), Some(grant.as_str()));
    let (status, body) = redeem(&broker, &grant, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["txn"], json!(view.pending.id));
    let (status, body) = redeem(&broker, &grant, &first).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("grant_not_accepted"))
    );

    // A later refund of another order, under the ceiling: released without a prompt.
    let second = refund(&broker, "A-2", "5999.99", "EUR");
    let (id, released) = evaluate(&broker, &second).await;
    assert!(released, "a call within the limits is released");
    let (status, body) = redeem(&broker, &grant, &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["txn"], json!(id));
    let owner_sees = approver.list(None).await.requests;
    let released_view = owner_sees.iter().find(|v| v.pending.id == id).unwrap();
    assert_eq!(released_view.status, Status::Redeemed);
    assert_eq!(released_view.bounded_grant, view.bounded_grant);

    // Over the ceiling, another currency, another argument: each held for the owner.
    for call in [
        refund(&broker, "A-3", "6000.01", "EUR"),
        refund(&broker, "A-3", "1500", "USD"),
    ] {
        let (_, released) = evaluate(&broker, &call).await;
        assert!(!released, "{:?} is held", call.context.arguments);
        let (status, body) = redeem(&broker, &grant, &call).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "constraint_violated", "{body}");
    }
    let mut extra = refund(&broker, "A-3", "1500", "EUR");
    extra.context.arguments.insert("note".into(), json!("rush"));
    let (_, released) = evaluate(&broker, &extra).await;
    assert!(!released, "an argument the owner did not cover is held");

    // Two of three used, none waiting.
    let list = active(&approver).await;
    assert_eq!(list.grants.len(), 1);
    let g = &list.grants[0];
    assert_eq!((g.uses, g.used, g.released), (3, 2, 0));
    assert_eq!(g.constraints["max"], json!({"amount": "6000.00"}));

    // The third use, then none left: the next fitting call goes to the owner.
    let third = refund(&broker, "A-4", "2000.00", "EUR");
    let (_, released) = evaluate(&broker, &third).await;
    assert!(released);
    assert_eq!(redeem(&broker, &grant, &third).await.0, StatusCode::OK);
    assert!(
        active(&approver).await.grants.is_empty(),
        "spent grants are not listed"
    );
    let fourth = refund(&broker, "A-5", "2000.00", "EUR");
    let (_, released) = evaluate(&broker, &fourth).await;
    assert!(!released, "a spent grant releases nothing");
    let (status, body) = redeem(&broker, &grant, &fourth).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("bounded_spent"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_holding_the_key_redeems_it() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let (first, _, grant) = granted(&broker, &mut approver, 2).await;
    let body = serde_json::to_vec(&json!({"grant": grant, "action": first})).unwrap();
    let url = format!("{}/v1/grants/redeem", broker.url);
    let post = |proof: Option<String>| {
        let mut call = reqwest::Client::new()
            .post(&url)
            .bearer_auth(broker.gateway_secret(PAYMENTS))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(proof) = proof {
            call = call.header(PROOF_HEADER, proof);
        }
        async move {
            let response = call.send().await.unwrap();
            let status = response.status();
            let value: Value = response.json().await.unwrap();
            (
                status,
                value["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let now = countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
    let request = ProofRequest {
        method: "POST",
        url: &url,
        body: &body,
        now,
    };
    // No proof; a proof by another key; a proof over another body; a proof in another
    // gateway's name.
    assert_eq!(
        post(None).await,
        (StatusCode::UNAUTHORIZED, "proof_missing".into())
    );
    let stranger = countersign_protocol::DeviceSigningKey::generate();
    let refused = post(Some(sign_proof(&stranger, PAYMENTS, &request))).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{refused:?}");
    let other_body = ProofRequest {
        body: b"{}",
        ..request
    };
    let refused = post(Some(sign_proof(
        &gateway_key(PAYMENTS),
        PAYMENTS,
        &other_body,
    )))
    .await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{refused:?}");
    let refused = post(Some(sign_proof(
        &gateway_key(PAYMENTS),
        "https://elsewhere",
        &request,
    )))
    .await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{refused:?}");
    // The right proof, once; the same proof again is a replay.
    let proof = sign_proof(&gateway_key(PAYMENTS), PAYMENTS, &request);
    assert_eq!(post(Some(proof.clone())).await.0, StatusCode::OK);
    assert_eq!(
        post(Some(proof)).await,
        (StatusCode::UNAUTHORIZED, "proof_replayed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_refused_whole_when_it_is_longer_or_bound_elsewhere_than_allowed() {
    let broker = TestBroker::start_with(|config| config.max_bounded_lifetime_secs = 600).await;
    let mut approver = broker.approver(OWNER).await;
    let call = refund(&broker, "C-1", "5000.00", "EUR");
    let view = held_view(&broker, &approver, &call).await;
    let jkt = payments_jkt(&approver).await;
    let cases = [
        // Longer than the broker's maximum: refused, never shortened.
        (
            bounded_grant(&mut approver, &view, &bounds(2, 601), &jkt),
            "bad_lifetime",
        ),
        // Bound to a key that is not the gateway's.
        (
            bounded_grant(&mut approver, &view, &bounds(2, 600), "not-the-gateway-key"),
            "confirmation_mismatch",
        ),
    ];
    for (i, (grant, code)) in cases.iter().enumerate() {
        let (status, body) = approver
            .decide(
                &view.pending.id,
                &json!({"decision": "approve", "grant": grant}),
                &format!("c-{i}"),
            )
            .await;
        assert_eq!(body["code"], *code, "{status} {body}");
    }
    assert!(active(&approver).await.grants.is_empty());
    let still = approver.list(Some("pending")).await.requests;
    assert!(
        still.iter().any(|v| v.pending.id == view.pending.id),
        "nothing was recorded"
    );
    // Within the maximum, bound to the gateway: accepted.
    let grant = bounded_grant(&mut approver, &view, &bounds(2, 600), &jkt);
    let (status, body) = approver
        .decide(
            &view.pending.id,
            &json!({"decision": "approve", "grant": grant}),
            "c-ok",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_key_takes_no_bounded_grant() {
    let broker = TestBroker::start_with(|config| {
        for gateway in &mut config.gateways {
            gateway.key = None;
        }
    })
    .await;
    let mut approver = broker.approver(OWNER).await;
    let call = refund(&broker, "K-1", "5000.00", "EUR");
    let view = held_view(&broker, &approver, &call).await;
    let response = approver
        .send(Method::GET, "/v1/approver/gateways", None, &[])
        .await;
    let list: GatewayList = response.json().await.unwrap();
    assert!(list.gateways.iter().all(|g| g.jkt.is_none()));
    let grant = bounded_grant(&mut approver, &view, &bounds(2, 600), "any");
    let (status, body) = approver
        .decide(
            &view.pending.id,
            &json!({"decision": "approve", "grant": grant}),
            "k-1",
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("gateway_key_missing")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_n_uses_are_counted_under_64_concurrent_redemptions() {
    const USES: u32 = 5;
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let (_, view, grant) = granted(&broker, &mut approver, USES).await;
    let jti = view.bounded_grant.clone().unwrap();
    let call = refund(&broker, "N-1", "1500.00", "EUR");
    let (id, released) = evaluate(&broker, &call).await;
    assert!(released);
    // 63 more copies of that released request, so that every redemption finds one to take and
    // only the count can stop it.
    let mut db = broker.db().await;
    let rows: Vec<Vec<SqlValue>> = (0..63)
        .map(|i| {
            vec![
                SqlValue::Text(format!("pa_copy_{i:02}")),
                SqlValue::Text(id.clone()),
            ]
        })
        .collect();
    db.execute_many(
        "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at,
         grant_token, grant_jti, grant_exp, decided_by, decided_at, bounded_jti)
         SELECT $1, owner, agent, action_hash, status, pending, created_at, expires_at,
         grant_token, grant_jti, grant_exp, decided_by, decided_at, bounded_jti
         FROM requests WHERE id = $2",
        &rows,
    )
    .await;

    let mut tasks = Vec::new();
    for _ in 0..64 {
        let agent = broker.agent(BILLING);
        let (grant, call) = (grant.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            agent.redeem_answer(PAYMENTS, &grant, &call).await.unwrap()
        }));
    }
    let mut redeemed = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::OK {
            redeemed += 1;
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(body.contains("bounded_spent"), "{body}");
        }
    }
    assert_eq!(
        redeemed, USES,
        "exactly {USES} of 64 concurrent redemptions"
    );
    let counted = db
        .integers(&format!(
            "SELECT CAST(used AS BIGINT), CAST((SELECT COUNT(*) FROM requests WHERE bounded_jti = '{jti}' AND status = 'redeemed') AS BIGINT) FROM bounded_grants WHERE jti = '{jti}'"
        ))
        .await;
    assert_eq!(counted, vec![i64::from(USES), i64::from(USES)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_at_once() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let (first, view, grant) = granted(&broker, &mut approver, 10).await;
    let jti = view.bounded_grant.clone().unwrap();
    let call = refund(&broker, "R-1", "1500.00", "EUR");
    let (id, released) = evaluate(&broker, &call).await;
    assert!(released);

    // Another owner can neither see nor revoke it.
    let path = format!("/v1/approver/bounded/{jti}/revoke");
    let bob = broker.approver(crate::support::BOB).await;
    assert!(active(&bob).await.grants.is_empty());
    let theirs = bob.send(Method::POST, &path, None, &[]).await;
    assert_eq!(theirs.status(), StatusCode::CONFLICT);
    assert_eq!(active(&approver).await.grants.len(), 1);

    let response = approver.send(Method::POST, &path, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let revoked: Value = response.json().await.unwrap();
    assert_eq!(revoked["revoked"], json!(true));

    // Nothing it covered runs now: neither the reviewed call nor the one it released.
    for presented in [&first, &call] {
        let (status, body) = redeem(&broker, &grant, presented).await;
        assert_eq!(body["code"], "revoked", "{status} {body}");
    }
    let listed = approver.list(None).await.requests;
    for released in [&view.pending.id, &id] {
        let v = listed.iter().find(|v| &v.pending.id == released).unwrap();
        assert_eq!(v.status, Status::Revoked);
    }
    let (_, released) = evaluate(&broker, &refund(&broker, "R-2", "1500.00", "EUR")).await;
    assert!(!released, "a revoked grant releases nothing");
    assert!(active(&approver).await.grants.is_empty());
    let again = approver.send(Method::POST, &path, None, &[]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}
