//! Three instances, one database: every guarantee of one broker holds across them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use countersign_broker::simulate::SimulatedAgent;
use countersign_protocol::api::{ApproverEvent, EventKind, RedeemRequest};
use reqwest::StatusCode;

use crate::harness::{BILLING, Instances, OWNER, PAYMENTS, events_in_order, held};
use crate::postgres::{Cluster, cluster};
use crate::support::{TestApprover, big_refund, hold, pairing_code, post_raw_via};

/// 64 redemptions of one grant at once, spread over three instances: exactly one runs, every
/// round. `COUNTERSIGN_ROUNDS` sets the number of rounds (default 1000); [`LANES`] rounds run
/// side by side, each with its own approver and grant, so the machine stays busy while a
/// round waits on its slowest redemption.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_grant_is_spent_once_whichever_instances_the_redemptions_reach() {
    const LANES: usize = 3;
    let rounds: usize = std::env::var("COUNTERSIGN_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let instances = Instances::start(cluster().new_database(), |_| {}).await;
    let gateway = instances
        .secrets
        .gateways
        .iter()
        .find(|g| g.audience == PAYMENTS)
        .unwrap()
        .secret
        .clone();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let approver = instances.approver(lane % 3).await;
        let agent = instances.agent(lane % 3);
        let urls: Vec<String> = (0..3)
            .map(|i| format!("{}/v1/grants/redeem", instances.direct(i)))
            .collect();
        let (gateway, next) = (gateway.clone(), next.clone());
        lanes.push(tokio::spawn(async move {
            let mut approver = approver;
            // The gateways' connections stay open from round to round, as a gateway's would.
            let http = reqwest::Client::new();
            loop {
                let round = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if round >= rounds {
                    return;
                }
                race_one_grant(&agent, &mut approver, &http, &urls, &gateway, round).await;
            }
        }));
    }
    for lane in lanes {
        lane.await.unwrap();
    }
    assert!(next.load(std::sync::atomic::Ordering::Relaxed) >= rounds);
}

/// One round: a held item approved, then its grant redeemed 64 times at once through the three
/// instances; exactly one redemption runs and the others are told `replayed`.
async fn race_one_grant(
    agent: &SimulatedAgent,
    approver: &mut TestApprover,
    http: &reqwest::Client,
    urls: &[String],
    gateway: &str,
    round: usize,
) {
    let view = held(agent, approver, &format!("round {round}")).await;
    let grant = approver.grant(&view);
    let (status, body) = approver
        .decide(
            &view.pending.id,
            &serde_json::json!({"decision": "approve", "grant": grant}),
            &format!("k{round}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = serde_json::to_vec(&RedeemRequest {
        grant,
        action: view.pending.request(),
        presenter_jkt: None,
    })
    .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let url = urls[n % urls.len()].clone();
            let (http, secret, body, barrier) = (
                http.clone(),
                gateway.to_owned(),
                body.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                post_raw_via(&http, &url, &secret, "application/json", body).await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert!(
            status == StatusCode::OK
                || (status == StatusCode::CONFLICT && answer["code"] == "replayed"),
            "round {round}: {status} {answer}"
        );
        ok += usize::from(status == StatusCode::OK);
    }
    assert_eq!(ok, 1, "round {round}: {ok} redemptions ran");
}

/// Two approvers decide one item through different instances: one decision stands and both
/// are told the same; retries with the same key through a third get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_decision_wins_across_instances_and_retries_are_idempotent() {
    let instances = Instances::start(cluster().new_database(), |_| {}).await;
    let mut first = instances.approver(0).await;
    let mut second = instances.approver(1).await;
    let agent = instances.agent(2);
    for round in 0..20 {
        let view = held(&agent, &first, &format!("decide {round}")).await;
        let grant_a = first.grant(&view);
        let grant_b = second.grant(&view);
        let body_a = serde_json::json!({"decision": "approve", "grant": grant_a});
        let body_b = serde_json::json!({"decision": "approve", "grant": grant_b});
        let id = view.pending.id.clone();
        let (key_a, key_b) = (format!("a{round}"), format!("b{round}"));
        let (a, b) = tokio::join!(
            first.decide(&id, &body_a, &key_a),
            second.decide(&id, &body_b, &key_b)
        );
        let statuses = [a.0, b.0];
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "round {round}: {a:?} {b:?}"
        );
        assert!(statuses.contains(&StatusCode::CONFLICT), "{a:?} {b:?}");
        let winner = if a.0 == StatusCode::OK { &a.1 } else { &b.1 };
        let loser = if a.0 == StatusCode::OK { &b.1 } else { &a.1 };
        // Both are told the one decision that stands.
        assert_eq!(loser["request"]["decided_by"], winner["decided_by"]);
        assert_eq!(loser["request"]["status"], "approved");
        // Retries through the third instance, same keys: the same answers, nothing new.
        first.http = instances.client(2);
        second.http = instances.client(2);
        let again = first.decide(&id, &body_a, &key_a).await;
        assert_eq!(again, a, "round {round}");
        let again = second.decide(&id, &body_b, &key_b).await;
        assert_eq!(again, b, "round {round}");
        first.http = instances.client(0);
        second.http = instances.client(1);
    }
}

/// An approver streams from instance A; A is killed mid-stream; it reconnects to B with
/// `Last-Event-ID`: every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumes_on_another_instance_without_gap_or_duplicate() {
    let mut instances = Instances::start(cluster().new_database(), |_| {}).await;
    let mut approver = instances.approver(0).await;
    let writer = instances.agent(2);
    let mut stream = approver.stream(None).await;
    // Events keep coming from the third instance while A serves the stream and then dies.
    let writing = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..200 {
            let mut request = writer.request(&big_refund()).unwrap();
            request.context.intent = format!("stream {n}");
            ids.push(hold(&writer, &request).await.id);
        }
        ids
    });
    let mut seen: Vec<ApproverEvent> = Vec::new();
    while seen.len() < 50 {
        seen.push(stream.next().await);
    }
    instances.kill(0);
    // What A had sent before it died, then the rest from B.
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), stream.rx.recv()).await
    {
        seen.push(event);
    }
    // The same approver, the same URL; the address now leads to B.
    approver.http = instances.client(1);
    let last = seen.last().unwrap().id;
    let mut resumed = approver.stream(Some(last)).await;
    let ids = writing.await.unwrap();
    while seen.iter().filter(|e| e.kind == EventKind::Pending).count() < ids.len() {
        seen.push(resumed.next().await);
    }
    events_in_order(&seen);
    let pending: Vec<&str> = seen
        .iter()
        .filter(|e| e.kind == EventKind::Pending)
        .map(|e| e.request.as_ref().unwrap().pending.id.as_str())
        .collect();
    assert_eq!(pending, ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Nothing more is owed.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), resumed.rx.recv())
            .await
            .is_err(),
        "a duplicate arrived"
    );
}

/// The listener's connection is cut (its backend terminated): nothing is lost; the re-read
/// after it reconnects, or the periodic catch-up, delivers what its notifications missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_reach_other_instances_when_the_listener_connection_is_cut() {
    let database = cluster().new_database();
    let name = Cluster::database_of(&database);
    let instances = Instances::start(database, |_| {}).await;
    let approver = instances.approver(1).await;
    let agent = instances.agent(0);
    let mut stream = approver.stream(None).await;
    let mut expected = Vec::new();
    for round in 0..10 {
        // Once every instance listens again, cut all three listeners.
        let listening = "FROM pg_stat_activity WHERE datname = current_database() \
                         AND query = 'LISTEN countersign_events'";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while cluster().psql(&name, &format!("SELECT COUNT(*) {listening}")) != "3" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "listeners did not come back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cut = cluster().psql(
            &name,
            &format!("SELECT COUNT(pg_terminate_backend(pid)) {listening}"),
        );
        assert_eq!(cut, "3", "round {round}");
        // Written at once on A, while B's listener is down.
        for n in 0..5 {
            let mut request = agent.request(&big_refund()).unwrap();
            request.context.intent = format!("cut {round}.{n}");
            expected.push(hold(&agent, &request).await.id);
        }
        let mut got = Vec::new();
        while got.len() < 5 {
            let event = stream.next().await;
            if event.kind == EventKind::Pending {
                got.push(event.request.unwrap().pending.id);
            }
        }
        assert_eq!(got, expected[expected.len() - 5..], "round {round}");
    }
}

/// An event id held by a transaction that has not committed yet: nothing after it is
/// delivered before it, and nothing is skipped when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uncommitted_event_holds_back_later_ones_and_none_is_skipped() {
    let database = cluster().new_database();
    let instances = Instances::start(database.clone(), |_| {}).await;
    let approver = instances.approver(1).await;
    let agent = Arc::new(instances.agent(0));
    let mut stream = approver.stream(None).await;
    let plain = cluster().plain_url(&Cluster::database_of(&database));
    let (client, connection) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // A slow writer: it has taken the next event id and not committed.
    client.batch_execute("BEGIN").await.unwrap();
    let held_id: i64 = client
        .query_one("UPDATE event_seq SET last = last + 1 RETURNING last", &[])
        .await
        .unwrap()
        .get(0);
    let writer = agent.clone();
    let later = tokio::spawn(async move {
        let mut request = writer.request(&big_refund()).unwrap();
        request.context.intent = "after the slow one".into();
        hold(&writer, &request).await.id
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stream.rx.recv())
            .await
            .is_err(),
        "an event past an uncommitted id was delivered"
    );
    assert!(
        !later.is_finished(),
        "the later write waits for the id before it"
    );
    // The slow writer commits its event.
    client
        .execute(
            "INSERT INTO events (id, owner, kind, agent, detail, at) VALUES ($1, $2, 'agent_suspended', $3, 'slow', 0)",
            &[&held_id, &OWNER, &BILLING],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    let later = later.await.unwrap();
    let first = stream.next().await;
    let second = stream.next().await;
    assert_eq!(first.id, held_id);
    assert_eq!(first.kind, EventKind::AgentSuspended);
    assert_eq!(second.id, held_id + 1);
    assert_eq!(second.request.unwrap().pending.id, later);
}

/// PostgreSQL restarted under load: the instances answer 503 `store_unavailable` (never a
/// 500), recover without a restart, and lose nothing they had confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_is_unavailable_then_recovered_with_nothing_lost() {
    let own = Cluster::start();
    let instances = Instances::start(own.new_database(), |_| {}).await;
    let approver = instances.approver(0).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|i| {
            let agent = instances.agent(i);
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut confirmed, mut unavailable) = (Vec::new(), 0);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let mut request = agent.request(&big_refund()).unwrap();
                    request.context.intent = format!("load {i}.{n}");
                    match agent.evaluate(&request).await {
                        Ok(answer) => confirmed.push(answer.context.unwrap().approval.unwrap().id),
                        Err(e) => {
                            let text = e.to_string();
                            assert!(
                                text.contains("503") && text.contains("store_unavailable"),
                                "{text}"
                            );
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (confirmed, unavailable)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    own.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    own.pg_ctl_start();
    // Recovered: every instance answers again within seconds, without a restart.
    for i in 0..3 {
        let agent = instances.agent(i);
        let mut ok = false;
        for _ in 0..100 {
            let request = agent.request(&big_refund()).unwrap();
            if agent.evaluate(&request).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "instance {i} did not recover");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut confirmed = HashSet::new();
    let mut unavailable = 0;
    for task in load {
        let (ids, refused) = task.await.unwrap();
        unavailable += refused;
        confirmed.extend(ids);
    }
    assert!(unavailable > 0, "the restart was not noticed");
    // Everything confirmed is there.
    let mut listed = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let path = match before {
            Some(b) => format!("/v1/approver/requests?status=pending&limit=100&before={b}"),
            None => "/v1/approver/requests?status=pending&limit=100".into(),
        };
        let response = approver.send(reqwest::Method::GET, &path, None, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: countersign_protocol::api::RequestList = response.json().await.unwrap();
        listed.extend(page.requests.into_iter().map(|r| r.pending.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let lost: Vec<_> = confirmed.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed items lost: {lost:?}",
        lost.len()
    );
}

/// Three sweepers on one database: every item expires once, with one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sweepers_expire_each_item_once() {
    let instances = Instances::start(cluster().new_database(), |config| {
        *config = config.replace("pending_ttl_secs = 300", "pending_ttl_secs = 2");
    })
    .await;
    let approver = instances.approver(0).await;
    let mut stream = approver.stream(None).await;
    let mut ids = Vec::new();
    for n in 0..150 {
        let agent = instances.agent(n % 3);
        let mut request = agent.request(&big_refund()).unwrap();
        request.context.intent = format!("expire {n}");
        ids.push(hold(&agent, &request).await.id);
    }
    let mut expired = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while expired.len() < ids.len() && tokio::time::Instant::now() < deadline {
        let event = stream.next().await;
        if event.kind == EventKind::Expired {
            expired.push(event.request.unwrap().pending.id);
        }
    }
    // A little longer: a second expiry of anything would show now.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), stream.rx.recv()).await
    {
        if event.kind == EventKind::Expired {
            expired.push(event.request.unwrap().pending.id);
        }
    }
    let unique: HashSet<&String> = expired.iter().collect();
    assert_eq!(expired.len(), ids.len(), "one expiry event per item");
    assert_eq!(unique.len(), ids.len());
    assert!(ids.iter().all(|id| unique.contains(id)));
}

/// An agent's rate limit holds across instances: its bucket is shared, not one per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_shared_by_the_instances() {
    let instances = Instances::start(cluster().new_database(), |config| {
        *config = config.replace(
            "[rate_limit]\nper_minute = 1000000\nburst = 100000",
            "[rate_limit]\nper_minute = 1\nburst = 5",
        );
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..15 {
        let agent = instances.agent(n % 3);
        let mut request = agent.request(&big_refund()).unwrap();
        request.context.intent = format!("limited {n}");
        statuses.push(match agent.evaluate(&request).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        });
    }
    let ok = statuses.iter().filter(|s| *s == "ok").count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .filter(|s| *s != "ok")
            .all(|s| s.contains("429") && s.contains("rate_limited")),
        "{statuses:?}"
    );
}

/// One pairing code, used at two instances at once: one device is paired, the other refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pairing_code_is_used_once_across_instances() {
    let instances = Instances::start(cluster().new_database(), |_| {}).await;
    for round in 0..10 {
        let code = pairing_code(&instances.store_args(), OWNER);
        let mut first = TestApprover::new(&instances.url(), OWNER);
        first.http = instances.client(0);
        let mut second = TestApprover::new(&instances.url(), OWNER);
        second.http = instances.client(1);
        let (a, b) = tokio::join!(first.pair(&code), second.pair(&code));
        let refused = match (&a, &b) {
            (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => refused,
            _ => panic!("round {round}: {a:?} {b:?}"),
        };
        assert_eq!(refused.1["code"], "pairing_code_invalid", "round {round}");
    }
}

/// Denials reaching different instances count together: the third quarantines the agent
/// everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denials_through_different_instances_quarantine_the_agent() {
    let instances = Instances::start(cluster().new_database(), |_| {}).await;
    let mut approver = instances.approver(0).await;
    for i in 0..3 {
        let agent = instances.agent(i);
        let view = held(&agent, &approver, &format!("deny {i}")).await;
        approver.http = instances.client(i);
        let (status, body) = approver
            .deny(&view.pending.id, "not allowed", false, &format!("d{i}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for i in 0..3 {
        let agent = instances.agent(i);
        let refused = agent
            .evaluate(&agent.request(&big_refund()).unwrap())
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("agent_quarantined"),
            "instance {i}: {refused}"
        );
    }
}
