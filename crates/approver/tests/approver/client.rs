//! The broker client against the real broker on loopback: pairing, reconciliation, the event
//! stream into the history, decisions (idempotent, first wins), and reconnection after the
//! broker restarts, with nothing lost.

use std::time::Duration;

use countersign_approver::client::{BrokerClient, DecisionOutcome, Delivery};
use countersign_approver::history::{EntryKind, History};
use countersign_broker::simulate::scenarios;
use countersign_protocol::api::{Decision, EventKind};
use countersign_protocol::dev_authenticator::DevApprover;
use tokio::sync::mpsc;

use crate::support::{OWNER, broker_config as config, code, sim as agent};

async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("a delivery")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_follow_decide_and_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = countersign_broker::spawn(config(dir.path(), "127.0.0.1:0"))
        .await
        .unwrap();
    let url = format!("http://{}", broker.addr);
    let code = code(&broker);

    let dev = DevApprover::new("unpaired", OWNER, "http://unpaired.invalid").unwrap();
    let key = countersign_protocol::DeviceSigningKey::from_secret(&dev.device.secret());
    let (client, paired) = BrokerClient::pair(
        &url,
        &code,
        key,
        dev.credential.clone(),
        Some("laptop".into()),
    )
    .await
    .unwrap();
    assert_eq!(paired.owner, OWNER);
    // A code works once (and a device or credential pairs once: another device is used).
    let other = DevApprover::new("unpaired", OWNER, "http://unpaired.invalid").unwrap();
    let again = BrokerClient::pair(
        &url,
        &code,
        countersign_protocol::DeviceSigningKey::generate(),
        other.credential.clone(),
        None,
    )
    .await;
    assert!(
        matches!(again, Err(countersign_approver::Error::Broker { status: 403, ref code, .. }) if code == "pairing_code_invalid"),
        "{again:?}"
    );

    let client = std::sync::Arc::new(client);
    let (tx, mut rx) = mpsc::channel(64);
    let follower = {
        let c = client.clone();
        tokio::spawn(async move { c.follow(tx).await })
    };
    assert_eq!(
        next(&mut rx).await,
        Delivery::Reconciled(countersign_approver::client::Listing::default())
    );

    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    let sim = agent(&url);
    let ticket = sim
        .evaluate(&sim.request(&scenarios()[0]).unwrap())
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    let Delivery::Event(event) = next(&mut rx).await else {
        panic!("expected an event")
    };
    assert_eq!(event.kind, EventKind::Pending);
    let view = event.request.unwrap();
    assert_eq!(view.pending.id, ticket.id);
    history.receive(client.base(), &view.pending, 1).unwrap();

    let deny = Decision::Deny {
        reason: "not today".into(),
        suspend_agent: false,
    };
    let first = client.decide(&ticket.id, &deny, "key-1").await.unwrap();
    let repeat = client.decide(&ticket.id, &deny, "key-1").await.unwrap();
    assert_eq!(first, repeat, "same key, same answer");
    let DecisionOutcome::Recorded(decided) = first else {
        panic!("recorded")
    };
    assert_eq!(decided.status, countersign_protocol::action::Status::Denied);
    let late = client.decide(&ticket.id, &deny, "key-2").await.unwrap();
    assert!(matches!(late, DecisionOutcome::AlreadyDecided(_)));
    history
        .record(
            &ticket.id,
            EntryKind::Denied,
            serde_json::json!({"reason": "not today"}),
            2,
        )
        .unwrap();

    // The broker goes away; items arrive while the follower is disconnected.
    let addr = broker.addr;
    broker.shut_down().await;
    loop {
        match next(&mut rx).await {
            Delivery::Disconnected { retry_in, .. } => {
                assert!(retry_in <= Duration::from_secs(30));
                break;
            }
            Delivery::Event(e) => assert_eq!(e.kind, EventKind::Denied),
            other => panic!("{other:?}"),
        }
    }
    let broker = countersign_broker::spawn(config(dir.path(), &addr.to_string()))
        .await
        .unwrap();
    let sim = agent(&url);
    let missed = sim
        .evaluate(&sim.request(&scenarios()[2]).unwrap())
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    // After reconnecting, the listing brings what was there; an item submitted while the
    // follower was reconnecting comes either in that listing or as the next event, never
    // both and never neither.
    let reconciled = loop {
        match next(&mut rx).await {
            Delivery::Reconciled(views) => break views,
            Delivery::Disconnected { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    let ids: Vec<&str> = reconciled
        .requests
        .iter()
        .map(|v| v.pending.id.as_str())
        .collect();
    // The listing holds what is pending; a decided item is asked for by its id.
    assert!(!ids.contains(&ticket.id.as_str()), "{ids:?}");
    let Some(Ok(decided)) = client.request(&ticket.id).await.unwrap() else {
        panic!("the decided item, by its id")
    };
    assert_eq!(decided.status, countersign_protocol::action::Status::Denied);
    assert_eq!(client.request("pa_unknown").await.unwrap(), None);
    let mut views: Vec<_> = reconciled
        .requests
        .iter()
        .map(|v| v.pending.clone())
        .collect();
    if !ids.contains(&missed.id.as_str()) {
        let Delivery::Event(event) = next(&mut rx).await else {
            panic!("the missed item as an event")
        };
        assert_eq!(event.kind, EventKind::Pending);
        let view = event.request.unwrap();
        assert_eq!(view.pending.id, missed.id);
        views.push(view.pending);
    }
    for pending in &views {
        history.receive(client.base(), pending, 3).unwrap();
    }
    assert!(history.item(&missed.id).unwrap().is_some());
    assert_eq!(
        history.verify().unwrap().entries,
        3,
        "received, denied, received: nothing doubled"
    );
    follower.abort();
    broker.stop();
}
