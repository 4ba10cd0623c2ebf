//! The engine against a hostile broker: it accepts and shows in full what a broker could
//! legitimately pass on (a 1 MB argument), refuses what no broker should (nesting deeper than
//! its limit) with a clear error, and keeps working.

use countersign_approver::display::Review;
use countersign_approver::engine::{Change, Engine};
use countersign_broker::simulate::{Scenario, scenarios};
use countersign_protocol::PendingAction;
use countersign_protocol::action::{PendingParts, PolicyRef, Status, Timestamp};
use countersign_protocol::api::RequestView;
use serde_json::json;

use crate::support::sim;

fn view(id: &str, arguments: serde_json::Value) -> RequestView {
    let request = sim("http://127.0.0.1:9")
        .request(&Scenario {
            arguments,
            ..scenarios()[0].clone()
        })
        .unwrap();
    let now = crate::support::now();
    let pending = PendingAction::new(
        PendingParts {
            id: id.into(),
            created_at: Timestamp::from_unix(now).unwrap(),
            expires_at: Timestamp::from_unix(now + 300).unwrap(),
            audience: "https://tools.example.com".into(),
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
            policy: PolicyRef {
                id: "refunds".into(),
                reason: "<b>big</b> refund".into(),
            },
        },
        request,
    )
    .unwrap();
    RequestView {
        pending,
        status: Status::Pending,
        merged: 0,
        reason: None,
        decided_by: None,
        outcome: None,
        bounded_grant: None,
    }
}

#[test]
fn a_hostile_broker_is_shown_in_full_or_refused_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let profile = format!("engine-test-{}", std::process::id());
    let mut engine = Engine::open(dir.path(), &profile).unwrap();
    let broker = "http://127.0.0.1:9";

    // A 1 MB argument: stored and shown whole, never cut.
    let blob = "\u{202E}".to_owned() + &"A".repeat(1 << 20);
    let big = view(
        "pa_big",
        json!({"order": "1", "amount": "5000.00", "blob": blob}),
    );
    assert_eq!(
        engine.apply(broker, &big).unwrap(),
        Some(Change::Received("pa_big".into()))
    );
    let (pending, status) = engine.history().item("pa_big").unwrap().unwrap();
    let review = Review::of(&pending, status);
    let shown = review.arguments["blob"].as_str().unwrap();
    assert_eq!(shown.len(), "[U+202E RLO]".len() + (1 << 20));
    assert!(review.hidden_characters);
    assert_eq!(
        review.policy_reason, "<b>big</b> refund",
        "markup stays text"
    );

    // Nesting deeper than any broker allows: refused with a clear error, nothing stored.
    let mut deep = json!("bottom");
    for _ in 0..80 {
        deep = json!({ "n": deep });
    }
    let nested = view(
        "pa_deep",
        json!({"order": "1", "amount": "5000.00", "deep": deep}),
    );
    let error = engine.apply(broker, &nested).unwrap_err();
    assert!(error.to_string().contains("deep"), "{error}");
    assert!(engine.history().item("pa_deep").unwrap().is_none());

    // A view whose contents disagree with its hash is recorded as refused, not shown as pending.
    let mut forged = view("pa_forged", json!({"order": "2", "amount": "5000.00"}));
    forged.pending.context.intent = "Refund a tiny amount".into();
    assert_eq!(
        engine.apply(broker, &forged).unwrap(),
        Some(Change::Refused("pa_forged".into()))
    );

    // And the engine goes on.
    let fine = view("pa_fine", json!({"order": "3", "amount": "5000.00"}));
    assert_eq!(
        engine.apply(broker, &fine).unwrap(),
        Some(Change::Received("pa_fine".into()))
    );
    assert_eq!(engine.history().verify().unwrap().entries, 3);
}

/// What the broker reports wins over a local decision it never took: another approver of the
/// same owner denied first, so the history must not keep saying "approved".
#[test]
fn the_brokers_decision_wins_over_one_it_never_took() {
    let dir = tempfile::tempdir().unwrap();
    let profile = format!("engine-test-wins-{}", std::process::id());
    let mut engine = Engine::open(dir.path(), &profile).unwrap();
    let broker = "http://127.0.0.1:9";
    let mut item = view("pa_1", json!({"order": "1", "amount": "5000.00"}));
    engine.apply(broker, &item).unwrap();
    let now = engine.now();
    engine
        .history_mut()
        .record(
            "pa_1",
            countersign_approver::EntryKind::Approved,
            json!({"jti": "j", "exp": now + 120}),
            now,
        )
        .unwrap();

    // Still pending at the broker: our decision is on its way, nothing changes.
    assert_eq!(engine.apply(broker, &item).unwrap(), None);
    item.status = Status::Denied;
    item.decided_by = Some("approver-2".into());
    assert_eq!(
        engine.apply(broker, &item).unwrap(),
        Some(Change::Updated("pa_1".into()))
    );
    assert_eq!(engine.history().item("pa_1").unwrap().unwrap().1, "denied");
    let last = engine.history().entries("pa_1").unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), &last.detail["decided_by"]),
        ("denied", &json!("approver-2"))
    );

    // A view from an earlier stage (a replayed event, a cached answer) never moves it back.
    item.status = Status::Redeemed;
    assert_eq!(
        engine.apply(broker, &item).unwrap(),
        Some(Change::Updated("pa_1".into()))
    );
    item.status = Status::Approved;
    assert_eq!(engine.apply(broker, &item).unwrap(), None);
    assert_eq!(
        engine.history().item("pa_1").unwrap().unwrap().1,
        "redeemed"
    );
    engine.history().verify().unwrap();
}

/// An agent repeating a pending request is merged by the broker; the engine shows one item
/// with the count, and a count that did not grow changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_show_as_one_item_with_their_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::support::paired(dir.path()).await;
    let profile = format!("engine-merge-test-{}", std::process::id());
    let mut engine = Engine::open(dir.path(), &profile).unwrap();
    let agent = sim(&p.url);
    let request = agent.request(&scenarios()[0]).unwrap();
    let first = agent.evaluate(&request).await.unwrap();
    let listing = p.client.pending().await.unwrap();
    assert_eq!(listing.requests.len(), 1);
    let id = listing.requests[0].pending.id.clone();
    assert_eq!(
        engine.apply(&p.url, &listing.requests[0]).unwrap(),
        Some(Change::Received(id.clone()))
    );

    for _ in 0..2 {
        let again = agent.evaluate(&request).await.unwrap();
        assert_eq!(
            again.context.unwrap().approval.unwrap().id,
            first.context.clone().unwrap().approval.unwrap().id,
            "merged into the held request"
        );
    }
    let view = p.client.pending().await.unwrap().requests.remove(0);
    assert_eq!(view.merged, 3);
    assert_eq!(
        engine.apply(&p.url, &view).unwrap(),
        Some(Change::Updated(id.clone()))
    );
    assert_eq!(engine.apply(&p.url, &view).unwrap(), None);
    let listed = engine
        .history()
        .list(&countersign_approver::Filter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((listed.len(), listed[0].merged), (1, 3));
    // The count is not a state change: the chain holds only the arrival.
    assert_eq!(engine.history().entries(&id).unwrap().len(), 1);
    p.broker.stop();
}
