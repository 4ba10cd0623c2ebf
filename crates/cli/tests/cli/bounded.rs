//! Bounded grants from the command line: made from one review with typed bounds (bad bounds
//! refused before any ceremony), a later call that fits released without a prompt and recorded
//! under the grant, the active grants listed with their uses, and revocation at once.

use std::time::Duration;

use countersign_broker::config::RateLimit;
use countersign_protocol::action::Status;
use countersign_protocol::api::MAX_PAGE;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    App, GATEWAY, agent, broker, broker_config, held, outcome, submit, submit_request, url,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_grant_releases_a_later_call_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let (first, id) = submit(&agent, &held("Refund the first damaged parcel")).await;
    let (_, other) = submit(&agent, &held("Refund another damaged parcel, order 99")).await;
    app.ok(&["sync"]).await;

    // Refused before any ceremony: a ceiling on an argument the call does not have, a ceiling
    // below the call itself, no uses, two items.
    for (args, code) in [
        (vec!["--uses", "3", "--max", "nosuch=5"], "bad_bounds"),
        (vec!["--uses", "3", "--max", "amount=100"], "bad_bounds"),
        (vec!["--uses", "0"], "bad_bounds"),
    ] {
        let mut command = vec!["approve", id.as_str()];
        command.extend(args);
        let refused = app.json(&command, 4).await;
        assert_eq!(refused["error"]["code"], code, "{refused}");
    }
    let two = app.json(&["approve", &id, &other, "--uses", "2"], 4).await;
    assert_eq!(two["error"]["code"], "bad_bounds", "{two}");
    let unknown = app
        .run(&["approve", &id, "--uses", "2", "--for", "2d"])
        .await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("the unit is s, m or h"));
    assert_eq!(outcome(&agent, &id).await.status, Status::Pending);

    // Three refunds of any order, at most 6000 EUR, for twenty minutes.
    let approved = app
        .ok(&[
            "approve",
            &id,
            "--uses",
            "3",
            "--for",
            "20m",
            "--max",
            "amount=6000",
            "--vary",
            "order",
        ])
        .await;
    assert_eq!(approved["delivered"], true, "{approved}");
    let grant = outcome(&agent, &id).await.grant.unwrap();
    assert_eq!(
        agent.redeem(GATEWAY, &grant, &first).await.unwrap(),
        StatusCode::OK
    );

    // A later refund of another order under the ceiling: released, no prompt, and recorded in
    // the owner's history under the grant.
    let mut later = first.clone();
    later
        .context
        .arguments
        .insert("order".into(), json!("7001"));
    later
        .context
        .arguments
        .insert("amount".into(), json!("5500.00"));
    let (mut later, later_id) = submit_request(&agent, &later).await;
    let status = agent.wait(&later_id, Duration::ZERO).await.unwrap();
    assert_eq!(status.status, Status::Approved, "released at once");
    assert_eq!(
        agent.redeem(GATEWAY, &grant, &later).await.unwrap(),
        StatusCode::OK
    );
    app.ok(&["sync"]).await;
    let listed = app.ok(&["grants", "list"]).await;
    let grants = listed.as_array().unwrap();
    assert_eq!(grants.len(), 1, "{listed}");
    let jti = grants[0]["grant"]["jti"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            grants[0]["grant"]["used"].as_u64(),
            grants[0]["grant"]["uses"].as_u64()
        ),
        (Some(2), Some(3))
    );
    let shown = app.ok(&["show", &later_id]).await;
    let under: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"]["bounded_grant"].as_str())
        .collect();
    assert!(under.contains(&jti.as_str()), "{shown}");
    let human = app.run(&["grants", "list"]).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("uses left: 1 of 3"));

    // Revoked: the next call that fits goes to the owner.
    let revoked = app.ok(&["grants", "revoke", &jti]).await;
    assert_eq!(revoked["revoked"], true, "{revoked}");
    later
        .context
        .arguments
        .insert("order".into(), json!("7002"));
    let (_, held_id) = submit_request(&agent, &later).await;
    assert_eq!(
        agent.wait(&held_id, Duration::ZERO).await.unwrap().status,
        Status::Pending
    );
    assert!(
        app.ok(&["grants", "list"])
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let again = app.json(&["grants", "revoke", &jti], 4).await;
    assert_eq!(again["error"]["code"], "broker_refused", "{again}");
}

/// An app away while a grant released more calls than one page of the broker's listing holds:
/// its next sync reads page after page and records every released call under the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_records_every_released_call_past_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = broker_config(dir.path(), "127.0.0.1:0");
    // One agent sends more calls than the default bucket lets through in a test's time.
    config.rate_limit = RateLimit {
        per_minute: 600_000,
        burst: 10_000,
    };
    let broker = countersign_broker::spawn(config).await.unwrap();
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let (first, id) = submit(&agent, &held("Refund the first of many damaged parcels")).await;
    app.ok(&["sync"]).await;
    let calls = MAX_PAGE + 40;
    let later = 10;
    let uses = (1 + calls + later).to_string();
    let approved = app
        .ok(&[
            "approve", &id, "--uses", &uses, "--for", "30m", "--vary", "order",
        ])
        .await;
    assert_eq!(approved["delivered"], true, "{approved}");
    let jti = app.ok(&["grants", "list"]).await[0]["grant"]["jti"]
        .as_str()
        .unwrap()
        .to_owned();

    // Released while the app is away; the first few are run, so both listings hold some.
    let mut released = Vec::with_capacity(calls + later);
    let release = async |n: usize| {
        let mut call = first.clone();
        call.context
            .arguments
            .insert("order".into(), json!(format!("9{n:04}")));
        let (call, call_id) = submit_request(&agent, &call).await;
        if n < 10 {
            let status = outcome(&agent, &call_id).await;
            assert_eq!(status.status, Status::Approved, "released at once");
            assert_eq!(
                agent
                    .redeem(GATEWAY, &status.grant.unwrap(), &call)
                    .await
                    .unwrap(),
                StatusCode::OK
            );
        }
        call_id
    };
    for n in 0..calls {
        released.push(release(n).await);
    }
    app.ok(&["sync"]).await;
    // Back in touch, away again: the next sync stops at the calls it has, and misses none.
    for n in calls..calls + later {
        released.push(release(n).await);
    }
    app.ok(&["sync"]).await;

    let export = app.run(&["history", "--export", "jsonl"]).await;
    assert!(export.status.success());
    let under: std::collections::HashSet<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|entry| entry["detail"]["bounded_grant"] == json!(jti))
        .filter_map(|entry| entry["item"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = released.iter().filter(|id| !under.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} released calls missing",
        missing.len(),
        released.len()
    );
    let verified = app.ok(&["verify-history"]).await;
    assert_eq!(verified["verified"], true, "{verified}");
}
