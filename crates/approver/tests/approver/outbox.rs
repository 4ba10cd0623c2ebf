//! Approve and deny through the outbox against the real broker: a crash between writing the
//! decision and sending it, or between sending and hearing back, loses nothing and never yields
//! two different grants for one item.

use std::time::Duration;

use countersign_approver::Error;
use countersign_approver::client::DecisionOutcome;
use countersign_approver::history::History;
use countersign_approver::outbox;
use countersign_broker::simulate::scenarios;
use countersign_protocol::action::Status;
use countersign_protocol::api::Decision;

use crate::history::{pending_to, pending_with};
use crate::support::{GATEWAY, Paired, now, paired, sim};

/// Approves `item` at time `at` with the paired approver's authenticator.
fn approve(
    history: &mut History,
    p: &mut Paired,
    item: &str,
    at: i64,
) -> Result<outbox::Queued, Error> {
    outbox::approve(
        history,
        item,
        &p.issuer,
        &p.device,
        &mut p.authenticator,
        at,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_anywhere_in_approving_yields_exactly_one_grant() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = paired(dir.path()).await;
    let agent = sim(&p.url);
    let refund = agent.request(&scenarios()[0]).unwrap();
    let ticket = agent
        .evaluate(&refund)
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    let path = dir.path().join("history.db");
    let mut history = History::open(&path).unwrap();
    for view in p.client.pending().await.unwrap().requests {
        history.receive(p.client.base(), &view.pending, 1).unwrap();
    }

    // Approve: written to the outbox and the history together, nothing sent yet ... then crash.
    let queued = approve(&mut history, &mut p, &ticket.id, now()).unwrap();
    let Decision::Approve { grant } = &queued.decision else {
        panic!("an approval")
    };
    drop(history);

    // Restart: the same decision is still queued; approving again does not mint a second grant.
    let mut history = History::open(&path).unwrap();
    let again = approve(&mut history, &mut p, &ticket.id, now()).unwrap();
    assert_eq!(again, queued);
    assert_eq!(history.unsent().unwrap().len(), 1);

    // Sent, but the answer is lost (as if the process died right after sending) ...
    let first = p
        .client
        .decide(&ticket.id, &queued.decision, &queued.idempotency_key)
        .await
        .unwrap();
    assert!(matches!(first, DecisionOutcome::Recorded(_)));
    // ... so it is sent again after restart, and the broker gives the same answer.
    let sent = outbox::flush(&mut history, &p.client, now()).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert!(matches!(&sent[0].1, outbox::Sent::Acknowledged(o) if **o == first));
    assert!(history.unsent().unwrap().is_empty());

    // The agent receives exactly that grant, and the gateway redeems it once.
    let status = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.status, Status::Approved);
    assert_eq!(status.grant.as_deref(), Some(grant.as_str()));
    assert_eq!(
        agent.redeem(GATEWAY, grant, &refund).await.unwrap(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        agent.redeem(GATEWAY, grant, &refund).await.unwrap(),
        reqwest::StatusCode::CONFLICT
    );

    let kinds: Vec<String> = history
        .entries(&ticket.id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["received", "approved"]);
    history.verify().unwrap();
    p.broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_is_queued_sent_and_seen_by_the_agent_and_refusals_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = paired(dir.path()).await;
    let agent = sim(&p.url);
    let ticket = agent
        .evaluate(&agent.request(&scenarios()[2]).unwrap())
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    let view = p.client.pending().await.unwrap().requests.remove(0);

    // An item whose contents disagree with its hash is refused on arrival and cannot be approved.
    let mut lying = view.pending.clone();
    lying.id = "pa_lying".into();
    lying.context.intent = "Archive the repository".into();
    history.receive(p.client.base(), &lying, 1).unwrap();
    let refused = approve(&mut history, &mut p, "pa_lying", now());
    assert!(
        matches!(refused, Err(Error::NotPending { ref status, .. }) if *status == "refused"),
        "{refused:?}"
    );

    history.receive(p.client.base(), &view.pending, 1).unwrap();
    assert!(matches!(
        outbox::deny(&mut history, &ticket.id, "  ", false, now()),
        Err(Error::ReasonRequired)
    ));
    outbox::deny(
        &mut history,
        &ticket.id,
        "not this repository",
        false,
        now(),
    )
    .unwrap();
    // The first decision stays the decision: approving after a denial is refused.
    let late = approve(&mut history, &mut p, &ticket.id, now());
    assert!(
        matches!(late, Err(Error::NotPending { ref status, .. }) if *status == "denied"),
        "{late:?}"
    );
    let first = history.queued(&ticket.id).unwrap().unwrap();
    assert!(matches!(first.decision, Decision::Deny { .. }));
    outbox::flush(&mut history, &p.client, now()).await.unwrap();
    let status = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (status.status, status.reason.as_deref()),
        (Status::Denied, Some("not this repository"))
    );
    p.broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_grant_reopens_the_item_but_never_while_it_could_be_redeemed() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = paired(dir.path()).await;
    let agent = sim(&p.url);
    let mut tickets = Vec::new();
    let mut requests = Vec::new();
    for scenario in [&scenarios()[0], &scenarios()[2]] {
        let request = agent.request(scenario).unwrap();
        let ticket = agent
            .evaluate(&request)
            .await
            .unwrap()
            .context
            .unwrap()
            .approval
            .unwrap();
        tickets.push(ticket.id);
        requests.push(request);
    }
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    for view in p.client.pending().await.unwrap().requests {
        history.receive(p.client.base(), &view.pending, 1).unwrap();
    }
    let (stale, live) = (&tickets[0], &tickets[1]);

    // An approval queued while the broker was out of reach, sent after its grant expired
    // (here: made five minutes ago). The broker refuses it for good ...
    let old = now() - 300;
    let queued = approve(&mut history, &mut p, stale, old).unwrap();
    let sent = outbox::flush(&mut history, &p.client, now()).await.unwrap();
    assert!(
        matches!(&sent[..], [(item, outbox::Sent::Rejected(Error::Broker { status: 400..=499, .. }))] if item == stale),
        "{sent:?}"
    );
    // ... which is recorded, does not block the queue, and opens the item again.
    assert!(history.unsent().unwrap().is_empty());
    assert_eq!(history.item(stale).unwrap().unwrap().1, "pending");
    let kinds: Vec<String> = history
        .entries(stale)
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["received", "approved", "rejected"]);

    // The owner approves again: a new ceremony, a new grant, and that one is redeemed.
    let again = approve(&mut history, &mut p, stale, now()).unwrap();
    assert_ne!(again.decision, queued.decision);
    let sent = outbox::flush(&mut history, &p.client, now()).await.unwrap();
    assert!(
        matches!(
            &sent[..],
            [(_, outbox::Sent::Acknowledged(o))] if matches!(**o, DecisionOutcome::Recorded(_))
        ),
        "{sent:?}"
    );
    let Decision::Approve { grant } = &again.decision else {
        panic!("an approval")
    };
    let status = agent.wait(stale, Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.grant.as_deref(), Some(grant.as_str()));
    assert_eq!(
        agent.redeem(GATEWAY, grant, &requests[0]).await.unwrap(),
        reqwest::StatusCode::OK
    );

    // A broker that claims to refuse a grant which could still be redeemed gets no second one
    // until the first is dead everywhere (exp + the verifiers' 60 s skew).
    let first = approve(&mut history, &mut p, live, now()).unwrap();
    let refusal = Error::Broker {
        status: 403,
        code: "forbidden".into(),
        message: "no".into(),
        body: String::new(),
    };
    outbox::reject(&mut history, live, &refusal, now()).unwrap();
    let early = approve(&mut history, &mut p, live, now());
    assert!(
        matches!(early, Err(Error::GrantStillLive { ref item, until }) if item == live && until > now() + 120),
        "{early:?}"
    );
    // Denying needs no wait: it makes no grant. Nor does a refused denial clear the way for a
    // second grant while the first could still be redeemed.
    outbox::deny(&mut history, live, "not now", false, now()).unwrap();
    outbox::reject(&mut history, live, &refusal, now()).unwrap();
    assert_eq!(history.item(live).unwrap().unwrap().1, "pending");
    let early = approve(&mut history, &mut p, live, now());
    assert!(
        matches!(early, Err(Error::GrantStillLive { .. })),
        "{early:?}"
    );
    let later = approve(&mut history, &mut p, live, now() + 181).unwrap();
    assert_ne!(later.decision, first.decision);
    history.verify().unwrap();
    p.broker.stop();
}

/// A batch is 2 to 50 distinct pending items for one gateway, of one agent or for one tool;
/// its approvals are queued together under one key, or none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_of_one_kind_for_one_gateway_and_queued_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = paired(dir.path()).await;
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    let refunds = "stripe/refunds.create";
    let amount = || serde_json::json!({"amount": "10.00"});
    let items = [
        pending_with("pa_a", "billing", refunds, "a", 1000, amount()),
        pending_with("pa_b", "billing", "stripe/charges.get", "b", 1001, amount()),
        pending_with("pa_c", "devops", "github/repos.delete", "c", 1002, amount()),
        pending_to(GATEWAY, "pa_d", "billing", refunds, "d", 1003, amount()),
        pending_with("pa_e", "devops", refunds, "e", 1004, amount()),
    ];
    for pending in &items {
        history.receive(p.client.base(), pending, 1).unwrap();
    }
    let mut batch = |history: &mut History, ids: &[&str]| {
        let ids: Vec<String> = ids.iter().map(|i| (*i).to_owned()).collect();
        outbox::approve_batch(
            history,
            &ids,
            &p.issuer,
            &p.device,
            &mut p.authenticator,
            now(),
        )
    };
    for (ids, why) in [
        (&["pa_a"][..], "2 to 50 items, not 1"),
        (&["pa_a", "pa_b", "pa_a"], "listed twice"),
        (&["pa_a", "pa_c"], "neither of one agent nor for one tool"),
        (&["pa_a", "pa_d"], "different gateways"),
    ] {
        let refused = batch(&mut history, ids).unwrap_err();
        assert!(
            matches!(&refused, Error::BadBatch(m) if m.contains(why)),
            "{ids:?}: {refused}"
        );
    }
    assert!(history.unsent().unwrap().is_empty());

    // Of one agent: queued together, under one key; asked again, the same approvals.
    let queued = batch(&mut history, &["pa_a", "pa_b"]).unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].idempotency_key, queued[1].idempotency_key);
    assert!(
        queued
            .iter()
            .all(|q| matches!(q.decision, Decision::Approve { .. }))
    );
    assert_eq!(batch(&mut history, &["pa_a", "pa_b"]).unwrap(), queued);
    // An item approved already cannot join another batch; nothing more is queued.
    let refused = batch(&mut history, &["pa_a", "pa_e"]).unwrap_err();
    assert!(
        matches!(&refused, Error::NotPending { item, .. } if item == "pa_a"),
        "{refused}"
    );
    // For one tool, of two agents: fine.
    history
        .receive(
            p.client.base(),
            &pending_with("pa_f", "research", refunds, "f", 1005, amount()),
            1,
        )
        .unwrap();
    assert_eq!(batch(&mut history, &["pa_e", "pa_f"]).unwrap().len(), 2);
    assert_eq!(history.unsent().unwrap().len(), 4);
}

/// A batch whose answer was recorded here for some of its approvals only (a crash in between):
/// the rest go to the broker as the batch they are, and its first answer covers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_acknowledged_before_a_crash_is_finished_by_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = paired(dir.path()).await;
    let agent = sim(&p.url);
    let mut ids = Vec::new();
    for order in ["H-1", "H-2", "H-3"] {
        let mut refund = scenarios()[0].clone();
        refund.arguments["order"] = serde_json::json!(order);
        let answer = agent
            .evaluate(&agent.request(&refund).unwrap())
            .await
            .unwrap();
        ids.push(answer.context.unwrap().approval.unwrap().id);
    }
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    for view in p.client.pending().await.unwrap().requests {
        history.receive(p.client.base(), &view.pending, 1).unwrap();
    }
    let queued = outbox::approve_batch(
        &mut history,
        &ids,
        &p.issuer,
        &p.device,
        &mut p.authenticator,
        now(),
    )
    .unwrap();

    // Sent, and the first two answers recorded here ... then the process died.
    let approvals: Vec<(&str, &str)> = queued
        .iter()
        .map(|q| match &q.decision {
            Decision::Approve { grant } => (q.item.as_str(), grant.as_str()),
            Decision::Deny { .. } => panic!("an approval"),
        })
        .collect();
    let answers = p
        .client
        .decide_batch(&approvals, &queued[0].idempotency_key)
        .await
        .unwrap();
    for (id, answer) in ids.iter().zip(&answers).take(2) {
        outbox::acknowledge(&mut history, id, answer, now()).unwrap();
    }
    assert_eq!(history.unsent().unwrap().len(), 1);

    // The next flush sends the one left as the batch it belongs to (never as a single
    // decision) and records the broker's first answer.
    let sent = outbox::flush(&mut history, &p.client, now()).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, ids[2]);
    assert!(
        matches!(&sent[0].1, outbox::Sent::Acknowledged(o) if matches!(**o, DecisionOutcome::Recorded(_))),
        "{:?}",
        sent[0].1
    );
    assert!(history.unsent().unwrap().is_empty());
    for (id, (_, grant)) in ids.iter().zip(&approvals) {
        let status = agent.wait(id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.status, Status::Approved);
        assert_eq!(status.grant.as_deref(), Some(*grant));
    }
}
