//! Batch decisions (`POST /v1/approver/decisions`): the grants of one ceremony are checked
//! together before any is recorded, then each is its own single-use grant at the gateway.

use std::time::Duration;

use countersign_protocol::action::Status;
use countersign_protocol::api::{BatchDecided, RequestView};
use countersign_protocol::grant::{BatchDraft, GrantDraft, GrantOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BILLING, OWNER, PAYMENTS, TestApprover, TestBroker, big_refund, hold};

/// `n` refunds held for approval, different orders of one agent, as the owner lists them.
async fn held(broker: &TestBroker, approver: &TestApprover, n: usize) -> Vec<RequestView> {
    let agent = broker.agent(BILLING);
    let mut ids = Vec::new();
    for i in 0..n {
        let mut refund = big_refund();
        refund.arguments["order"] = json!(format!("B-{i}"));
        ids.push(hold(&agent, &agent.request(&refund).unwrap()).await.id);
    }
    let listed = approver.list(Some("pending")).await.requests;
    ids.iter()
        .map(|id| listed.iter().find(|v| &v.pending.id == id).unwrap().clone())
        .collect()
}

/// One ceremony over `views`: each request's grant, in order.
fn batch_grants(approver: &mut TestApprover, views: &[&RequestView]) -> Vec<String> {
    let now = countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
    let drafts = views
        .iter()
        .map(|v| GrantDraft::new(&v.pending, &approver.dev.issuer, GrantOptions::at(now)).unwrap())
        .collect();
    approver
        .dev
        .sign_batch(BatchDraft::new(drafts).unwrap())
        .unwrap()
        .iter()
        .map(|g| g.token().to_owned())
        .collect()
}

async fn send_batch(
    approver: &TestApprover,
    approvals: &[(&str, &str)],
    key: &str,
) -> (StatusCode, Value) {
    let body = json!({
        "approvals": approvals
            .iter()
            .map(|(id, grant)| json!({"id": id, "grant": grant}))
            .collect::<Vec<_>>()
    });
    let response = approver
        .send(
            Method::POST,
            "/v1/approver/decisions",
            Some(&body),
            &[("idempotency-key", key)],
        )
        .await;
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_checked_whole_then_each_grant_is_redeemed_once() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let views = held(&broker, &approver, 3).await;
    let ids: Vec<&str> = views.iter().map(|v| v.pending.id.as_str()).collect();
    let all: Vec<&RequestView> = views.iter().collect();

    // Refused whole, recording nothing: a grant left out of its batch, grants sent for each
    // other's requests, a batch of one, no key.
    let grants = batch_grants(&mut approver, &all);
    let (status, body) = send_batch(
        &approver,
        &[(ids[0], &grants[0]), (ids[1], &grants[1])],
        "short",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_in_batch")),
        "{body}"
    );
    let (status, body) = send_batch(
        &approver,
        &[
            (ids[1], &grants[0]),
            (ids[0], &grants[1]),
            (ids[2], &grants[2]),
        ],
        "swapped",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("action_hash_mismatch")),
        "{body}"
    );
    let (status, body) = send_batch(&approver, &[(ids[0], &grants[0])], "one").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("batch_invalid")),
        "{body}"
    );
    let (status, body) = send_batch(&approver, &[(ids[0], &grants[0])], "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("idempotency_key_missing")),
        "{body}"
    );
    assert_eq!(approver.list(Some("pending")).await.requests.len(), 3);

    // The whole batch, with a new ceremony: every request approved at once.
    let grants = batch_grants(&mut approver, &all);
    let approvals: Vec<(&str, &str)> = ids
        .iter()
        .copied()
        .zip(grants.iter().map(String::as_str))
        .collect();
    let (status, body) = send_batch(&approver, &approvals, "batch-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided: BatchDecided = serde_json::from_value(body.clone()).unwrap();
    assert!(decided.decided.iter().zip(&ids).all(|(d, id)| d.recorded
        && d.request.status == Status::Approved
        && d.request.pending.id == *id));
    // Sent again under its key: the same answer. Under another key, the same ceremony is a
    // replay of the authenticator's counter.
    assert_eq!(
        send_batch(&approver, &approvals, "batch-1").await,
        (StatusCode::OK, body)
    );
    let (status, body) = send_batch(&approver, &approvals, "batch-2").await;
    assert!(status.is_client_error(), "{status} {body}");

    // Each grant is its own: redeemed once, for its own call only.
    let agent = broker.agent(BILLING);
    for view in &views {
        let granted = agent
            .wait(&view.pending.id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(granted.status, Status::Approved);
        let grant = granted.grant.unwrap();
        let call = view.pending.request();
        let other = views.iter().find(|v| v.pending.id != view.pending.id);
        assert_eq!(
            agent
                .redeem(PAYMENTS, &grant, &other.unwrap().pending.request())
                .await
                .unwrap(),
            StatusCode::FORBIDDEN,
            "another request's call"
        );
        assert_eq!(
            agent.redeem(PAYMENTS, &grant, &call).await.unwrap(),
            StatusCode::OK
        );
        assert_eq!(
            agent.redeem(PAYMENTS, &grant, &call).await.unwrap(),
            StatusCode::CONFLICT,
            "a replay"
        );
    }
    assert_eq!(approver.list(Some("redeemed")).await.requests.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_decided_meanwhile_keeps_its_decision_and_the_rest_are_recorded() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let views = held(&broker, &approver, 2).await;
    let grants = batch_grants(&mut approver, &views.iter().collect::<Vec<_>>());
    let (status, _) = approver
        .deny(&views[0].pending.id, "not this one", false, "deny-first")
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = send_batch(
        &approver,
        &[
            (&views[0].pending.id, &grants[0]),
            (&views[1].pending.id, &grants[1]),
        ],
        "batch",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided: BatchDecided = serde_json::from_value(body).unwrap();
    let outcomes: Vec<(bool, Status)> = decided
        .decided
        .iter()
        .map(|d| (d.recorded, d.request.status))
        .collect();
    assert_eq!(
        outcomes,
        [(false, Status::Denied), (true, Status::Approved)]
    );
}
