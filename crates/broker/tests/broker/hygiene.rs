//! Expiry, rate limits, merging of identical requests, quarantine and suspension.

use std::time::Duration;

use countersign_broker::config::RateLimit;
use countersign_protocol::action::Status;
use countersign_protocol::api::EventKind;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{BILLING, DEVOPS, OWNER, TestBroker, big_refund, hold, post_raw, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_requests_expire_and_everyone_is_told() {
    let broker = TestBroker::start_with(|c| c.pending_ttl_secs = 1).await;
    let approver = broker.approver(OWNER).await;
    let mut events = approver.stream(None).await;
    let agent = broker.agent(BILLING);
    let ticket = hold(&agent, &agent.request(&big_refund()).unwrap()).await;
    events.until(EventKind::Pending).await;
    let status = agent
        .wait(&ticket.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.status, Status::Expired);
    let expired = events.until(EventKind::Expired).await;
    assert_eq!(expired.request.unwrap().pending.id, ticket.id);
    let (status, body) = approver.deny(&ticket.id, "too late", false, "late").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_decided"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_pending_requests_merge_with_a_count() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let mut ids = Vec::new();
    for expected in 1..=3 {
        let ticket = hold(&agent, &request).await;
        assert_eq!(ticket.merged, expected);
        ids.push(ticket.id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]));
    let listed = approver.list(Some("pending")).await.requests;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].merged, 3);
    // Another agent's identical call is its own item.
    let other = broker.agent(DEVOPS);
    let ticket = hold(&other, &other.request(&big_refund()).unwrap()).await;
    assert_ne!(ticket.id, ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_has_its_own_rate_limit() {
    let broker = TestBroker::start_with(|c| {
        c.rate_limit = RateLimit {
            per_minute: 1,
            burst: 3,
        }
    })
    .await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&scenario("calendar/events.list")).unwrap();
    for _ in 0..3 {
        assert!(agent.evaluate(&request).await.unwrap().decision);
    }
    let (status, body) = post_raw(
        &format!("{}/access/v1/evaluation", broker.url),
        &broker.agent_secret(BILLING),
        "application/json",
        serde_json::to_vec(&json!({"subject": request.subject, "action": request.action, "resource": request.resource, "context": request.context})).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    // The other agent is unaffected.
    let other = broker.agent(DEVOPS);
    assert!(
        other
            .evaluate(&other.request(&scenario("calendar/events.list")).unwrap())
            .await
            .unwrap()
            .decision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_denials_quarantine_the_agent_until_its_owner_releases_it() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let mut events = approver.stream(None).await;
    let agent = broker.agent(DEVOPS);
    for (i, tool) in ["github/repos.delete", "postgres/query", "gmail/send"]
        .into_iter()
        .enumerate()
    {
        let ticket = hold(&agent, &agent.request(&scenario(tool)).unwrap()).await;
        let (status, _) = approver
            .deny(&ticket.id, "not allowed", false, &format!("q{i}"))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let event = events.until(EventKind::AgentQuarantined).await;
    assert_eq!(event.agent.as_deref(), Some(DEVOPS));
    let refused = agent
        .evaluate(&agent.request(&scenario("calendar/events.list")).unwrap())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("agent_quarantined"),
        "{refused}"
    );

    // Only its owner can release it.
    let response = approver
        .send(
            Method::POST,
            "/v1/approver/agents/resume",
            Some(&json!({"agent": DEVOPS})),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    events.until(EventKind::AgentResumed).await;
    assert!(
        agent
            .evaluate(&agent.request(&scenario("calendar/events.list")).unwrap())
            .await
            .unwrap()
            .decision
    );

    // Deny and suspend.
    let ticket = hold(
        &agent,
        &agent.request(&scenario("github/repos.delete")).unwrap(),
    )
    .await;
    approver.deny(&ticket.id, "stop", true, "suspend").await;
    events.until(EventKind::AgentSuspended).await;
    let refused = agent
        .evaluate(&agent.request(&scenario("calendar/events.list")).unwrap())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("agent_suspended"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_grant_can_be_revoked_before_redemption() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let ticket = hold(&agent, &request).await;
    let view = approver.list(Some("pending")).await.requests.remove(0);
    assert_eq!(approver.approve(&view, "a").await.0, StatusCode::OK);
    let grant = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();
    let path = format!("/v1/approver/requests/{}/revoke", ticket.id);
    assert_eq!(
        approver.send(Method::POST, &path, None, &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        agent
            .redeem(crate::support::PAYMENTS, &grant, &request)
            .await
            .unwrap(),
        StatusCode::GONE
    );
    assert_eq!(
        approver.send(Method::POST, &path, None, &[]).await.status(),
        StatusCode::CONFLICT
    );
}
