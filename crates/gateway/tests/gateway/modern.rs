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
    assert_eq!(s.outcome(&id).await["outcome"], "succeeded");
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

/// The 2026-07-28 Tasks extension, from a raw peer (the SDK 2.x client has no tasks yet): a
/// client that declares it gets `resultType: "task"`, polls `tasks/get`, and finds the result
/// inline; a finished task cannot be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_declares_the_tasks_extension_gets_a_task_with_the_result_inline() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut s = setup("gw-ext-tasks", "[hold]\nmax_wait_secs = 2\n", |_| {}).await;
    let command = s.gateway_command();
    let env = s.env().into_iter().map(|(k, v)| match k {
        "PYTHONPATH" => (k, crate::support::python2_path().display().to_string()),
        _ => (k, v),
    });
    let mut gateway = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = gateway.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(gateway.stdout.take().unwrap()).lines();
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        },
    });
    let mut ask = async |frame: Value| -> Value {
        let id = frame["id"].clone();
        stdin
            .write_all(format!("{frame}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let answer: Value = serde_json::from_str(&line).unwrap();
            if answer["id"] == id {
                return answer;
            }
        }
    };
    let created = ask(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "refunds.create", "arguments": {"order": "8", "amount": "5000.00"}, "_meta": meta}}))
    .await;
    let task = &created["result"];
    assert_eq!(task["resultType"], "task", "{created}");
    assert_eq!(task["status"], "working", "{created}");
    let task_id = task["taskId"].as_str().unwrap().to_owned();
    let id = s.next_pending().await;
    // Past the hold limit, still working: a task is not cut off.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let get = |n: u64| json!({"jsonrpc": "2.0", "id": n, "method": "tasks/get", "params": {"taskId": task_id}});
    assert_eq!(ask(get(2)).await["result"]["status"], "working");
    assert!(s.executions().is_empty());
    s.approve(&id).await;
    let mut n = 3;
    let done = loop {
        let polled = ask(get(n)).await;
        if polled["result"]["status"] != "working" {
            break polled;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["result"]["content"][0]["text"], "refunded 5000.00 for order 8",
        "{done}"
    );
    let cancel = ask(json!({"jsonrpc": "2.0", "id": 999, "method": "tasks/cancel", "params": {"taskId": task_id}})).await;
    assert!(cancel.get("error").is_some(), "{cancel}");
    drop(stdin);
    let _ = gateway.wait().await;
    assert_eq!(s.executions().len(), 1);
}
