//! Crashes and outages: kill -9 between the outbox write and the send, and a broker restarted
//! while items are pending under a live `countersign pending --live`.

use std::collections::HashMap;
use std::time::Duration;

use countersign_protocol::action::Status;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::support::{App, GATEWAY, agent, broker, broker_config, held, outcome, submit, url};

/// Several items approved in one ceremony: each shown first, refused whole when they cannot
/// go together, queued together, sent together after a crash, and each grant redeemed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_approved_in_one_ceremony_survive_a_crash_and_each_redeems_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let intents = [
        "Refund one of three",
        "Refund two of three",
        "Refund three of three",
    ];
    let mut held_calls = Vec::new();
    for intent in intents {
        held_calls.push(submit(&agent, &held(intent)).await);
    }
    let ids: Vec<&str> = held_calls.iter().map(|(_, id)| id.as_str()).collect();
    app.ok(&["sync"]).await;

    // Refused before any ceremony: an item twice, an unknown item.
    let twice = app.json(&["approve", ids[0], ids[1], ids[0]], 4).await;
    assert_eq!(twice["error"]["code"], "bad_batch", "{twice}");
    let unknown = app.json(&["approve", ids[0], "pa_nonexistent"], 3).await;
    assert_eq!(unknown["error"]["code"], "unknown_item", "{unknown}");
    let approved = app.ok(&["history", "--status", "approved"]).await;
    assert!(approved.as_array().unwrap().is_empty(), "{approved}");

    // All three in one ceremony, after each is shown; the process dies before sending.
    let mut child = app
        .command(&["approve", ids[0], ids[1], ids[2]])
        .env("COUNTERSIGN_HOLD_BEFORE_SEND", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let told = tokio::time::timeout(Duration::from_secs(30), async {
        let mut told = String::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("held before send") {
                return told;
            }
            told.push_str(&line);
            told.push('\n');
        }
        panic!("the approvals never reached the outbox: {told}");
    })
    .await
    .unwrap();
    child.kill().await.unwrap(); // SIGKILL
    child.wait().await.unwrap();
    assert!(
        intents.iter().all(|i| told.contains(i)) && told.contains("once, for all of them"),
        "{told}"
    );

    // Queued together under one key; nothing reached the broker.
    let db = rusqlite::Connection::open(app.home.join("history.sqlite")).unwrap();
    let keys: Vec<String> = db
        .prepare("SELECT DISTINCT idempotency_key FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys.len(), 1);
    let mut stored = HashMap::new();
    for id in &ids {
        let decision: String = db
            .query_row("SELECT decision FROM outbox WHERE item = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        let decision: Value = serde_json::from_str(&decision).unwrap();
        stored.insert(
            id.to_string(),
            decision["grant"].as_str().unwrap().to_owned(),
        );
        let status = agent.wait(id, Duration::ZERO).await.unwrap();
        assert_eq!(status.status, Status::Pending);
    }
    drop(db);

    // The next sync sends them together: each request gets the grant made before the crash,
    // which its gateway redeems once, for its own call only.
    app.ok(&["sync"]).await;
    for (request, id) in &held_calls {
        let status = outcome(&agent, id).await;
        assert_eq!(status.status, Status::Approved);
        let grant = status.grant.unwrap();
        assert_eq!(grant, stored[id]);
        let other = &held_calls.iter().find(|(_, o)| o != id).unwrap().0;
        assert_ne!(
            agent.redeem(GATEWAY, &grant, other).await.unwrap(),
            StatusCode::OK,
            "another request's call"
        );
        assert_eq!(
            agent.redeem(GATEWAY, &grant, request).await.unwrap(),
            StatusCode::OK
        );
        assert_ne!(
            agent.redeem(GATEWAY, &grant, request).await.unwrap(),
            StatusCode::OK,
            "a replay"
        );
    }
    let again = app.ok(&["approve", ids[0], ids[1], ids[2]]).await;
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["delivered"] == true),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_outbox_write_and_send_yields_exactly_one_grant() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let (request, id) = submit(&agent, &held("Refund during a crash")).await;
    app.ok(&["sync"]).await;

    // The approval is written, then the process dies before sending.
    let mut child = app
        .command(&["approve", &id])
        .env("COUNTERSIGN_HOLD_BEFORE_SEND", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("held before send") {
                return;
            }
        }
        panic!("the approval never reached the outbox");
    })
    .await
    .unwrap();
    child.kill().await.unwrap(); // SIGKILL
    child.wait().await.unwrap();

    // Nothing reached the broker, and the outbox holds exactly one grant.
    let status = agent.wait(&id, Duration::ZERO).await.unwrap();
    assert_eq!(status.status, Status::Pending);
    let db = rusqlite::Connection::open(app.home.join("history.sqlite")).unwrap();
    let stored: String = db
        .query_row("SELECT decision FROM outbox WHERE item = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    drop(db);

    // Restart: approving again sends the stored grant (no second ceremony, no second grant).
    let again = app.ok(&["approve", &id]).await;
    assert_eq!(again["delivered"], true);
    app.ok(&["sync"]).await;
    let status = outcome(&agent, &id).await;
    assert_eq!(status.status, Status::Approved);
    let grant = status.grant.unwrap();
    assert_eq!(
        stored["grant"].as_str().unwrap(),
        grant,
        "the one grant made before the crash"
    );
    assert_eq!(
        agent.redeem(GATEWAY, &grant, &request).await.unwrap(),
        StatusCode::OK
    );
    let approvals = app.ok(&["show", &id]).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1);
    assert_eq!(app.ok(&["verify-history"]).await["verified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_while_pending_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let addr = broker.addr;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));

    let mut live = app
        .command(&["--json", "pending", "--live"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    let mut received: HashMap<String, usize> = HashMap::new();
    let mut next = async |want: &dyn Fn(&Value) -> bool, received: &mut HashMap<String, usize>| {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = lines.next_line().await.unwrap().expect("the feed goes on");
                let event: Value = serde_json::from_str(&line).unwrap();
                if event["event"] == "received" {
                    *received
                        .entry(event["item"]["id"].as_str().unwrap().to_owned())
                        .or_default() += 1;
                }
                if want(&event) {
                    return event;
                }
            }
        })
        .await
        .expect("the expected event")
    };
    next(&|e| e["event"] == "listing", &mut received).await;

    let (_, before) = submit(&agent, &held("Refund before the restart")).await;
    let id = before.clone();
    next(
        &|e| e["event"] == "received" && e["item"]["id"] == id.as_str(),
        &mut received,
    )
    .await;

    broker.shut_down().await;
    next(&|e| e["event"] == "disconnected", &mut received).await;
    let broker = countersign_broker::spawn(broker_config(dir.path(), &addr.to_string()))
        .await
        .unwrap();
    let (_, after) = submit(&agent, &held("Refund after the restart")).await;
    let id = after.clone();
    next(
        &|e| e["event"] == "received" && e["item"]["id"] == id.as_str(),
        &mut received,
    )
    .await;
    live.kill().await.unwrap();

    assert_eq!(received.get(&before), Some(&1), "{received:?}");
    assert_eq!(received.get(&after), Some(&1), "{received:?}");
    let pending = app.ok(&["pending"]).await;
    assert_eq!(pending.as_array().unwrap().len(), 2);
    // Two items, one `received` entry each: nothing doubled in the chain.
    assert_eq!(app.ok(&["verify-history"]).await["entries"], 2);
    broker.stop();
}
