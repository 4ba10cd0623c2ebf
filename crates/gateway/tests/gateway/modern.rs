//! The 2026-07-28 era: the Python SDK 2.x client and server (stateless requests, `_meta` on
//! each), through the stdio gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, setup, text};

fn refund(order: &str, amount: &str) -> Value {
    json!({"call": "refunds.create", "args": {"order": order, "amount": amount}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_client_that_takes_url_elicitation_is_asked_and_its_retry_waits() {
    let mut s = setup("gw-modern", "[hold]\nmax_wait_secs = 60\n", |_| {}).await;
    let payout = json!({"call": "payouts.create", "args": {"amount": "10.00"}});
    let mut client = Client::modern(
        &s,
        json!([refund("1", "500.00"), refund("2", "5000.00"), payout]),
        Some("accept"),
    );
    let tools = client.started().await;
    assert!(tools.contains(&"await_approval".to_owned()), "{tools:?}");
    let allowed = client.next().await;
    assert_eq!(text(&allowed), "refunded 500.00 for order 1", "{allowed}");
    let id = s.next_pending().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(s.executions().len(), 1, "the held call ran before approval");
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(text(&ran), "refunded 5000.00 for order 2");
    let asked = &ran["elicitations"][0];
    assert_eq!(asked["mode"], "url", "{ran}");
    assert_eq!(
        asked["url"],
        format!("countersign://review?id={id}"),
        "{ran}"
    );
    let denied = client.next().await;
    assert_eq!(denied["structured"]["code"], "denied_by_policy", "{denied}");
    client.finish().await;
    assert_eq!(s.executions().len(), 2);
    let opened = s
        .paired
        .engine
        .open_item(&id, countersign_approver::engine::Via::App)
        .unwrap();
    assert!(
        opened
            .review
            .server_claims
            .contains(&"destructive: yes".to_owned())
    );
    let entries = s.entries(&id).await;
    let outcome = entries
        .iter()
        .find(|(k, _)| k == "outcome")
        .expect("an outcome entry");
    assert_eq!(outcome.1["outcome"], "succeeded", "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_elicitation_runs_nothing() {
    let mut s = setup("gw-modern-no", "", |_| {}).await;
    let mut client = Client::modern(&s, json!([refund("4", "5000.00")]), Some("decline"));
    client.started().await;
    let declined = client.next().await;
    assert_eq!(declined["isError"], true, "{declined}");
    assert_eq!(declined["structured"]["status"], "declined", "{declined}");
    client.finish().await;
    let id = s.next_pending().await;
    assert!(id.starts_with("pa_"));
    assert!(s.executions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_client_without_elicitation_gets_the_bounded_hold_and_await_approval() {
    let extra = "[hold]\nmax_wait_secs = 2\n\n[tools.await_approval]\nmax_wait_secs = 60\n";
    let mut s = setup("gw-modern-legacy", extra, |_| {}).await;
    let resume = json!({"call": "await_approval", "args": {"id": "$held"}});
    let mut client = Client::modern(&s, json!([refund("5", "5000.00"), resume]), None);
    client.started().await;
    let waiting = client.next().await;
    assert_eq!(waiting["structured"]["status"], "pending", "{waiting}");
    let id = waiting["structured"]["id"].as_str().unwrap().to_owned();
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(text(&ran), "refunded 5000.00 for order 5", "{ran}");
    client.finish().await;
    assert_eq!(s.executions().len(), 1);
}
