//! The whole path: agent → pending → approver stream → decision with a real grant → agent gets
//! the grant → gateway redeems → a second redemption is refused; and the deny path.

use std::sync::Arc;
use std::time::Duration;

use countersign_protocol::action::Status;
use countersign_protocol::api::{EventKind, Outcome, RedeemRequest};
use reqwest::StatusCode;

use crate::support::{BILLING, OWNER, PAYMENTS, TOOLS, TestBroker, big_refund, hold, post_raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_redeem_once_and_the_owner_sees_it_all() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let mut events = approver.stream(None).await;

    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let answer = agent.evaluate(&request).await.unwrap();
    assert!(!answer.decision);
    let context = answer.context.unwrap();
    assert_eq!(context.outcome, Outcome::ApprovalRequired);
    assert_eq!(context.policy_id.as_deref(), Some("refunds-over-1000"));
    let ticket = context.approval.unwrap();
    assert_eq!(ticket.status_url, format!("/v1/requests/{}", ticket.id));

    // The approver is told, with everything it must show, and the hash checks out.
    let pending = events.until(EventKind::Pending).await;
    let view = pending.request.unwrap();
    assert_eq!(view.pending.id, ticket.id);
    assert_eq!(view.pending.audience, PAYMENTS);
    assert_eq!(
        view.pending.actor.act.as_ref().unwrap().sub.as_str(),
        "spiffe://example.com/agent/planner"
    );
    assert_eq!(
        view.pending.policy.reason,
        "refunds over 1000 need the owner"
    );
    assert!(view.pending.verify_hash());

    // The agent long-polls while the owner decides.
    let waiting = {
        let agent = broker.agent(BILLING);
        let id = ticket.id.clone();
        tokio::spawn(async move { agent.wait(&id, Duration::from_secs(20)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = approver.approve(&view, "approve-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = waiting.await.unwrap();
    assert_eq!(status.status, Status::Approved);
    let grant = status.grant.unwrap();

    // The gateway redeems once; the second time is a replay.
    assert_eq!(
        agent.redeem(PAYMENTS, &grant, &request).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        agent.redeem(PAYMENTS, &grant, &request).await.unwrap(),
        StatusCode::CONFLICT
    );
    let redeemed = events.until(EventKind::Redeemed).await;
    assert_eq!(redeemed.request.unwrap().status, Status::Redeemed);

    // Another gateway, or another call, cannot use it.
    let (status, body) = post_raw(
        &format!("{}/v1/grants/redeem", broker.url),
        &broker.gateway_secret(TOOLS),
        "application/json",
        serde_json::to_vec(&RedeemRequest {
            grant: grant.clone(),
            action: request.clone(),
            presenter_jkt: None,
        })
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_audience"))
    );
    let listed = approver.list(Some("redeemed")).await;
    assert_eq!(listed.requests.len(), 1);
    assert_eq!(listed.requests[0].pending.id, ticket.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_reaches_the_agent_with_its_reason() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let ticket = hold(&agent, &request).await;
    let (status, body) = approver
        .deny(&ticket.id, "not this customer", false, "deny-1")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.status, Status::Denied);
    assert_eq!(status.reason.as_deref(), Some("not this customer"));
    assert!(status.grant.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_64_concurrent_redemptions_wins() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let ticket = hold(&agent, &request).await;
    let view = approver.list(Some("pending")).await.requests.remove(0);
    assert_eq!(view.pending.id, ticket.id);
    assert_eq!(approver.approve(&view, "k").await.0, StatusCode::OK);
    let grant = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();

    let agent = Arc::new(agent);
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (agent, grant, request, barrier) = (
                agent.clone(),
                grant.clone(),
                request.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                agent.redeem(PAYMENTS, &grant, &request).await.unwrap()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT)
    );
}

/// The gateway that spent a grant says what became of the call, once; no other gateway, no
/// other grant, and nothing before the redemption.
#[tokio::test]
async fn the_gateway_that_spent_a_grant_reports_the_outcome_once() {
    let broker = TestBroker::start().await;
    let mut alice = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    let ticket = hold(&agent, &request).await;
    let view = alice.list(Some("pending")).await.requests.remove(0);
    let report = |gateway: &'static str, body: serde_json::Value| {
        let url = format!("{}/v1/grants/outcome", broker.url);
        let secret = broker.gateway_secret(gateway);
        async move {
            post_raw(
                &url,
                &secret,
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    let outcome = |jti: &str| serde_json::json!({"txn": ticket.id, "jti": jti, "outcome": "succeeded", "detail": "ok"});
    // Nothing is redeemed yet.
    let (status, body) = report(PAYMENTS, outcome("none")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("outcome_not_redeemed")),
        "{body}"
    );
    assert_eq!(alice.approve(&view, "outcome-1").await.0, StatusCode::OK);
    let grant = agent
        .wait(&ticket.id, Duration::from_secs(10))
        .await
        .unwrap()
        .grant
        .unwrap();
    let (status, redeemed) = post_raw(
        &format!("{}/v1/grants/redeem", broker.url),
        &broker.gateway_secret(PAYMENTS),
        "application/json",
        serde_json::to_vec(&RedeemRequest {
            grant,
            action: request.clone(),
            presenter_jkt: None,
        })
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");
    let jti = redeemed["jti"].as_str().unwrap().to_owned();
    let mut stream = alice.stream(None).await;
    // Another gateway, another grant, an oversized detail: refused, nothing written.
    let (_, body) = report(TOOLS, outcome(&jti)).await;
    assert_eq!(body["code"], "outcome_not_redeemed", "{body}");
    let (_, body) = report(PAYMENTS, outcome("another-jti")).await;
    assert_eq!(body["code"], "outcome_not_redeemed", "{body}");
    let mut long = outcome(&jti);
    long["detail"] = serde_json::json!("x".repeat(2000));
    let (status, body) = report(PAYMENTS, long).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("outcome_invalid")),
        "{body}"
    );
    // The gateway that spent it, once.
    let (status, body) = report(PAYMENTS, outcome(&jti)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let event = stream.until(EventKind::Outcome).await;
    let seen = event.request.unwrap().outcome.unwrap();
    assert_eq!(
        seen.outcome,
        countersign_protocol::api::RunOutcome::Succeeded
    );
    assert_eq!(seen.detail.as_deref(), Some("ok"));
    let (_, body) = report(PAYMENTS, outcome(&jti)).await;
    assert_eq!(
        body["code"], "outcome_not_redeemed",
        "the first report stands: {body}"
    );
    let listed = alice.list(Some("redeemed")).await.requests.remove(0);
    assert_eq!(listed.outcome.unwrap().detail.as_deref(), Some("ok"));
}
