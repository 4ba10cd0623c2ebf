//! The MCP proxy over Streamable HTTP (the Python SDK 1.x client and FastMCP server, session
//! era).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, HttpGateway, setup, text};

fn refund(order: &str, amount: &str) -> Value {
    json!({"call": "refunds.create", "args": {"order": order, "amount": amount}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_calls_are_allowed_held_and_denied_and_run_at_most_once() {
    let mut s = setup(
        "gw-http",
        "[hold]\nmax_wait_secs = 60\nprogress_every_secs = 1\n",
        |_| {},
    )
    .await;
    let gateway = HttpGateway::start(&s).await;
    let mut held = refund("2", "5000.00");
    held["progress"] = json!(true);
    let payout = json!({"call": "payouts.create", "args": {"amount": "10.00"}});
    let mut client = Client::http(
        &s,
        &gateway.url,
        json!([refund("1", "500.00"), held, payout]),
    );
    let tools = client.started().await;
    assert!(tools.contains(&"await_approval".to_owned()), "{tools:?}");
    let allowed = client.next().await;
    assert_eq!(text(&allowed), "refunded 500.00 for order 1", "{allowed}");
    let id = s.next_pending().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.executions().len(), 1, "the held call ran before approval");
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(text(&ran), "refunded 5000.00 for order 2");
    assert!(
        !ran["progress"].as_array().unwrap().is_empty(),
        "progress over SSE: {ran}"
    );
    let denied = client.next().await;
    assert_eq!(denied["structured"]["code"], "denied_by_policy", "{denied}");
    client.finish().await;
    assert_eq!(s.executions().len(), 2);
    assert_eq!(s.outcome(&id).await["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_client_that_leaves_while_held_and_comes_back_runs_it_once() {
    let extra = "[hold]\nmax_wait_secs = 2\n\n[tools.await_approval]\nmax_wait_secs = 60\n";
    let mut s = setup("gw-http-back", extra, |_| {}).await;
    let gateway = HttpGateway::start(&s).await;
    // The first client is told to wait, and goes away.
    let mut first = Client::http(&s, &gateway.url, json!([refund("3", "5000.00")]));
    first.started().await;
    let waiting = first.next().await;
    assert_eq!(waiting["structured"]["status"], "pending", "{waiting}");
    let id = waiting["structured"]["id"].as_str().unwrap().to_owned();
    first.finish().await;
    // A new session resumes the wait; the owner approves; it runs once.
    let resume = json!({"call": "await_approval", "args": {"id": id}});
    let mut second = Client::http(&s, &gateway.url, json!([resume.clone(), resume]));
    second.started().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.approve(&id).await;
    let ran = second.next().await;
    assert_eq!(text(&ran), "refunded 5000.00 for order 3", "{ran}");
    let again = second.next().await;
    assert_eq!(text(&again), "refunded 5000.00 for order 3", "{again}");
    second.finish().await;
    assert_eq!(s.executions().len(), 1);
}
