//! A broker restarted while requests are pending loses nothing: items, event ids, consumed grant
//! ids and idempotency keys all survive.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{
    BILLING, OWNER, PAYMENTS, TestApprover, TestBroker, big_refund, hold, scenario,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_pending_loses_nothing() {
    let mut broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let refund = agent.request(&big_refund()).unwrap();
    let ticket = hold(&agent, &refund).await;
    agent
        .evaluate(&agent.request(&scenario("github/repos.delete")).unwrap())
        .await
        .unwrap();
    let before = approver.list(None).await;
    assert_eq!(before.requests.len(), 2);

    broker.restart().await;
    // Same device, new address: the proof binds the URL, so the client follows the broker.
    let mut approver = TestApprover {
        url: broker.url.clone(),
        ..approver
    };
    let after = approver.list(None).await;
    assert_eq!(after.requests.len(), 2);
    assert_eq!(after.last_event_id, before.last_event_id);

    // Approve after the restart; the stream resumes from the old id.
    let mut events = approver.stream(Some(before.last_event_id)).await;
    let view = after
        .requests
        .iter()
        .find(|r| r.pending.id == ticket.id)
        .unwrap()
        .clone();
    assert_eq!(
        approver.approve(&view, "after-restart").await.0,
        StatusCode::OK
    );
    let approved = events.next().await;
    assert_eq!(approved.id, before.last_event_id + 1);
    let agent = broker.agent(BILLING);
    let grant = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(
        agent.redeem(PAYMENTS, &grant, &refund).await.unwrap(),
        StatusCode::OK
    );

    // Consumed ids and idempotency keys survive a second restart.
    broker.restart().await;
    let approver = TestApprover {
        url: broker.url.clone(),
        ..approver
    };
    let agent = broker.agent(BILLING);
    assert_eq!(
        agent.redeem(PAYMENTS, &grant, &refund).await.unwrap(),
        StatusCode::CONFLICT
    );
    let replay = approver
        .decide(
            &ticket.id,
            &serde_json::json!({"decision": "approve", "grant": grant}),
            "after-restart",
        )
        .await;
    assert_eq!(replay.0, StatusCode::OK, "the stored answer to that key");
}
