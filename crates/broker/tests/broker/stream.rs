//! The approver stream: resume after a dropped connection loses and repeats nothing; decisions
//! are idempotent and the first one wins.

use std::collections::BTreeSet;

use countersign_protocol::api::EventKind;
use reqwest::StatusCode;

use crate::support::{BILLING, DEVOPS, OWNER, TestBroker, big_refund, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_dropped_connection_loses_and_repeats_nothing() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let billing = broker.agent(BILLING);
    let devops = broker.agent(DEVOPS);
    let mut seen = Vec::new();

    let mut events = approver.stream(None).await;
    billing
        .evaluate(&billing.request(&big_refund()).unwrap())
        .await
        .unwrap();
    seen.push(events.next().await);
    events.drop_connection();

    // While disconnected: new items, a merge and a denial.
    for tool in ["github/repos.delete", "postgres/query", "gmail/send"] {
        devops
            .evaluate(&devops.request(&scenario(tool)).unwrap())
            .await
            .unwrap();
    }
    billing
        .evaluate(&billing.request(&big_refund()).unwrap())
        .await
        .unwrap();
    let first = seen[0].request.as_ref().unwrap().pending.id.clone();
    approver.deny(&first, "no", false, "d1").await;

    let mut events = approver.stream(Some(seen.last().unwrap().id)).await;
    for _ in 0..5 {
        seen.push(events.next().await);
    }
    // And live again after the backlog.
    devops
        .evaluate(&devops.request(&scenario("stripe/refunds.create")).unwrap())
        .await
        .unwrap();
    seen.push(events.next().await);

    let ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {ids:?}"
    );
    let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Pending,
            EventKind::Pending,
            EventKind::Pending,
            EventKind::Pending,
            EventKind::Merged,
            EventKind::Denied,
            EventKind::Pending
        ]
    );
    // Nothing else is pending in the backlog: a third connection from the last id is silent.
    let mut tail = approver.stream(Some(*ids.last().unwrap())).await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), tail.rx.recv())
            .await
            .is_err()
    );
    // The listing agrees with the stream.
    let listed: BTreeSet<String> = approver
        .list(Some("pending"))
        .await
        .requests
        .into_iter()
        .map(|r| r.pending.id)
        .collect();
    let streamed: BTreeSet<String> = seen
        .iter()
        .filter(|e| e.kind == EventKind::Pending && e.request.as_ref().unwrap().pending.id != first)
        .map(|e| e.request.as_ref().unwrap().pending.id.clone())
        .collect();
    assert_eq!(listed, streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_idempotent_and_the_first_wins() {
    let broker = TestBroker::start().await;
    let mut laptop = broker.approver(OWNER).await;
    let mut phone = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    agent
        .evaluate(&agent.request(&big_refund()).unwrap())
        .await
        .unwrap();
    let view = laptop.list(Some("pending")).await.requests.remove(0);

    // The same request sent twice (a retry after a lost response) gets the same answer.
    let grant = laptop.grant(&view);
    let body = serde_json::json!({"decision": "approve", "grant": grant});
    let first = laptop.decide(&view.pending.id, &body, "retry-key").await;
    let again = laptop.decide(&view.pending.id, &body, "retry-key").await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, again);

    // A second decision, by the other device, comes too late.
    let (status, conflict) = phone.approve(&view, "phone-key").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["code"], "already_decided");
    let (status, _) = laptop
        .deny(&view.pending.id, "changed my mind", false, "other-key")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Two devices racing on a fresh item: exactly one wins.
    agent
        .evaluate(&agent.request(&scenario("github/repos.delete")).unwrap())
        .await
        .unwrap();
    let view = laptop.list(Some("pending")).await.requests.remove(0);
    let a_grant = laptop.grant(&view);
    let b_grant = phone.grant(&view);
    let id = view.pending.id.clone();
    let a_body = serde_json::json!({"decision": "approve", "grant": a_grant});
    let b_body = serde_json::json!({"decision": "approve", "grant": b_grant});
    let a = laptop.decide(&id, &a_body, "race-a");
    let b = phone.decide(&id, &b_body, "race-b");
    let (a, b) = tokio::join!(a, b);
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_another_request_or_a_forged_grant_is_refused() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    // Two refunds for the same gateway, differing only in the amount.
    let mut larger = big_refund();
    larger.arguments["amount"] = serde_json::json!("7000.00");
    agent
        .evaluate(&agent.request(&big_refund()).unwrap())
        .await
        .unwrap();
    agent
        .evaluate(&agent.request(&larger).unwrap())
        .await
        .unwrap();
    let views = approver.list(Some("pending")).await.requests;
    let other_grant = approver.grant(&views[1]);
    let (status, body) = approver
        .decide(
            &views[0].pending.id,
            &serde_json::json!({"decision": "approve", "grant": other_grant}),
            "x",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "action_hash_mismatch");
    let (status, body) = approver
        .decide(
            &views[0].pending.id,
            &serde_json::json!({"decision": "approve", "grant": "a.b.c"}),
            "y",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Still pending: refusals decide nothing.
    assert_eq!(approver.list(Some("pending")).await.requests.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_sign_counter_went_backwards_is_refused_at_acceptance() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    agent
        .evaluate(&agent.request(&big_refund()).unwrap())
        .await
        .unwrap();
    agent
        .evaluate(&agent.request(&scenario("github/repos.delete")).unwrap())
        .await
        .unwrap();
    let views = approver.list(Some("pending")).await.requests;
    // Made in this order by one authenticator, delivered in the other: as from a clone.
    let older = approver.grant(&views[0]);
    let newer = approver.grant(&views[1]);
    let (status, _) = approver
        .decide(
            &views[1].pending.id,
            &serde_json::json!({"decision": "approve", "grant": newer}),
            "n",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = approver
        .decide(
            &views[0].pending.id,
            &serde_json::json!({"decision": "approve", "grant": older}),
            "o",
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("assertion_counter_regressed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_carries_heartbeats() {
    use futures_util::StreamExt as _;
    let broker = TestBroker::start_with(|c| c.heartbeat_secs = 1).await;
    let approver = broker.approver(OWNER).await;
    let proof = approver.proof("GET", "/v1/approver/stream", b"");
    let response = reqwest::Client::new()
        .get(format!("{}/v1/approver/stream", broker.url))
        .header(countersign_protocol::proof::PROOF_HEADER, proof)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains(": heartbeat\n") {
        let Ok(chunk) = tokio::time::timeout_at(deadline, body.next()).await else {
            panic!("no heartbeat within 5 s; received so far: {seen:?}");
        };
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(
        seen.contains("retry: 2000"),
        "the stream tells clients how soon to retry: {seen}"
    );
}
