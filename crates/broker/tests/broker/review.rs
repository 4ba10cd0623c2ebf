//! The attacks of security review 2 (`shared/reviews/security-2.md`), run against the real
//! broker: each reproduces a finding and checks it is closed.

use std::time::Duration;

use countersign_broker::store::Retention;
use countersign_protocol::action::{Delegation, PendingParts, PolicyRef, Status, Timestamp};
use countersign_protocol::api::{EnrollRequest, PairRequest, RedeemRequest, enrollment_challenge};
use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::grant::{GrantDraft, GrantOptions};
use countersign_protocol::registry::RegistryDocument;
use countersign_protocol::webauthn::RelyingParty;
use countersign_protocol::{ActionRequest, PendingAction};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    BILLING, BOB, BOBS, OWNER, PAYMENTS, SqlValue, TestApprover, TestBroker, big_refund,
    broker_command, hold, post_raw,
};

fn now() -> i64 {
    countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock)
}

/// Redeems `grant` for `action` at the payments gateway: the status and the refusal code.
async fn redeem(broker: &TestBroker, grant: &str, action: &ActionRequest) -> (StatusCode, Value) {
    post_raw(
        &format!("{}/v1/grants/redeem", broker.url),
        &broker.gateway_secret(PAYMENTS),
        "application/json",
        serde_json::to_vec(&RedeemRequest {
            grant: grant.into(),
            action: action.clone(),
            presenter_jkt: None,
        })
        .unwrap(),
    )
    .await
}

/// Submits `request` as the billing agent: the status and body, refusals included.
async fn evaluate_raw(broker: &TestBroker, request: &ActionRequest) -> (StatusCode, Value) {
    post_raw(
        &format!("{}/access/v1/evaluation", broker.url),
        &broker.agent_secret(BILLING),
        "application/json",
        serde_json::to_vec(&json!({
            "subject": request.subject, "action": request.action, "resource": request.resource,
            "context": request.context, "actor": request.actor,
        }))
        .unwrap(),
    )
    .await
}

/// A pairing request from a fresh device of `owner`, with `edit` applied to its body.
async fn pair_with(
    broker: &TestBroker,
    code: &str,
    owner: &str,
    edit: impl FnOnce(&mut Value),
) -> (StatusCode, Value) {
    let approver = TestApprover::new(&broker.url, owner);
    let mut body = serde_json::to_value(PairRequest {
        code: code.into(),
        device_key: approver.dev.device.public_jwk(),
        credential: approver.dev.credential.clone(),
        name: None,
    })
    .unwrap();
    edit(&mut body);
    let response = approver
        .send(Method::POST, "/v1/pair", Some(&body), &[])
        .await;
    (response.status(), response.json().await.unwrap())
}

/// Finding 1: a pairing or enrolment with a malformed or already registered credential id is
/// refused before anything is stored; the code stays usable, other owners keep pairing, and
/// the broker restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pairing_cannot_break_the_broker() {
    let mut broker = TestBroker::start().await;
    let alice = broker.approver(OWNER).await;

    let code = broker.pairing_code(BOB);
    let (status, body) = pair_with(&broker, &code, BOB, |b| {
        b["credential"]["id"] = json!("not base64url!");
    })
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = pair_with(&broker, &code, BOB, |b| {
        b["credential"]["id"] = json!(alice.dev.credential.id);
    })
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_enrolled")),
        "alice's credential id, public in the registry: {body}"
    );
    let (status, body) = pair_with(&broker, &code, BOB, |b| {
        b["credential"]["id"] = json!("");
    })
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The refusals used nothing: the same code pairs bob's real device.
    let mut bob = TestApprover::new(&broker.url, BOB);
    bob.pair(&code).await.unwrap();

    // Enrolment: a malformed id, and alice's credential vouched for by bob's.
    let mut stranger = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
    let mut fresh = stranger.register(BOB).unwrap();
    fresh.id = "bad id!".into();
    let mut reused = alice.dev.credential.clone();
    reused.public_key = fresh.public_key.clone();
    for (credential, expected) in [(fresh, "invalid_field"), (reused, "already_enrolled")] {
        let challenge = enrollment_challenge(&bob.id, &credential).unwrap();
        let body = serde_json::to_value(EnrollRequest {
            credential,
            assertion: bob.dev.assert(&challenge).unwrap(),
        })
        .unwrap();
        let response = bob
            .send(Method::POST, "/v1/approver/credentials", Some(&body), &[])
            .await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], expected, "{body}");
    }

    // Another owner still pairs, and the broker starts again with everyone intact.
    let carol = broker.approver("carol@example.com").await;
    broker.restart().await;
    let registry: RegistryDocument = reqwest::get(format!("{}/v1/registry", broker.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = registry.approvers.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in [&alice.id, &bob.id, &carol.id] {
        assert!(ids.contains(&id.as_str()));
    }
    assert_eq!(alice.list(None).await.requests.len(), 0);
}

/// Finding 1, the other half: a bad row an older broker stored is reported and skipped at
/// start, never fatal, and the administrator can list and remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stored_approver_is_skipped_and_can_be_removed() {
    let mut broker = TestBroker::start().await;
    let alice = broker.approver(OWNER).await;
    let mut bad = alice.dev.registry_entry();
    bad.id = "apr_bad".into();
    bad.owner = BOB.into();
    bad.credentials[0].id = "not base64url!".into();
    bad.device_keys = vec![countersign_protocol::DeviceSigningKey::generate().public_jwk()];
    {
        broker
            .db()
            .await
            .execute(
                "INSERT INTO approvers (id, owner, entry, updated_at) VALUES ($1, $2, $3, 0)",
                vec![
                    SqlValue::Text(bad.id.clone()),
                    SqlValue::Text(bad.owner.clone()),
                    SqlValue::Text(serde_json::to_string(&bad).unwrap()),
                ],
            )
            .await;
    }
    broker.restart().await;
    let registry: RegistryDocument = reqwest::get(format!("{}/v1/registry", broker.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registry.approvers.len(), 1, "the good one serves");
    assert_eq!(alice.list(None).await.requests.len(), 0);

    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign-broker"))
            .args(broker.store_args())
            .args(["approvers"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, listing) = admin(&["list"]);
    assert!(ok);
    assert!(
        listing.contains("apr_bad") && listing.contains("INVALID"),
        "{listing}"
    );
    assert!(listing.contains(&alice.id));
    assert!(admin(&["remove", "apr_bad"]).0);
    assert!(!admin(&["list"]).1.contains("apr_bad"));
    assert!(!admin(&["remove", "apr_bad"]).0, "removing nothing fails");
}

/// Finding 2: a grant is spent only against the broker's own record of an approved request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redemption_is_bound_to_what_the_broker_recorded() {
    let broker = TestBroker::start().await;
    let mut alice = broker.approver(OWNER).await;
    let mut bob = broker.approver(BOB).await;
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    hold(&agent, &request).await;
    let view = alice.list(Some("pending")).await.requests.remove(0);

    // (a) A grant that never went through a decision, for an item that does not exist: every
    // signature valid, refused with its own code.
    let mut ghost = view.pending.clone();
    ghost.id = "pa_does_not_exist".into();
    let offline = alice.grant_for(&ghost);
    let (status, body) = redeem(&broker, &offline, &request).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("grant_not_accepted")),
        "{body}"
    );
    // … nor for the real, still pending item (a cloned authenticator skipping the decision).
    let offline = alice.grant_for(&view.pending);
    let (status, body) = redeem(&broker, &offline, &request).await;
    assert_eq!(body["code"], "grant_not_accepted", "{status} {body}");

    // (b) Bob's approved item, and alice's approver minting a grant that names it.
    let bobs_agent = broker.agent(BOBS);
    let bobs_request = bobs_agent.request(&big_refund()).unwrap();
    let ticket = hold(&bobs_agent, &bobs_request).await;
    let bobs_view = bob.list(Some("pending")).await.requests.remove(0);
    assert_eq!(bob.approve(&bobs_view, "bob-1").await.0, StatusCode::OK);
    let mut claims = GrantDraft::new(&view.pending, &alice.dev.issuer, GrantOptions::at(now()))
        .unwrap()
        .claims()
        .clone();
    claims.txn = ticket.id.clone();
    let forged = alice
        .dev
        .sign(GrantDraft::from_claims(claims).unwrap())
        .unwrap();
    let (status, body) = redeem(&broker, forged.token(), &request).await;
    assert_eq!(body["code"], "grant_not_accepted", "{status} {body}");
    // Bob's item is untouched: still approved, his grant delivered and redeemable once.
    let status = bobs_agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.status, Status::Approved);
    let bobs_grant = status.grant.unwrap();
    assert_eq!(
        redeem(&broker, &bobs_grant, &bobs_request).await.0,
        StatusCode::OK
    );
    assert_eq!(
        redeem(&broker, &bobs_grant, &bobs_request).await.1["code"],
        "replayed"
    );

    // Alice's real grant, accepted by the broker, redeems.
    assert_eq!(alice.approve(&view, "alice-1").await.0, StatusCode::OK);
    let grant = agent
        .wait(&view.pending.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(redeem(&broker, &grant, &request).await.0, StatusCode::OK);
}

/// Finding 3: the agent cannot choose the human, and its delegation chain is its claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_come_from_credentials_only() {
    let broker = TestBroker::start().await;
    let mut alice = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let mut spoofed = agent.request(&big_refund()).unwrap();
    spoofed.subject.id = BOB.into();
    let (status, body) = evaluate_raw(&broker, &spoofed).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("subject_mismatch")),
        "{body}"
    );

    // The honest request: the chain it states is stored and shown as its claim.
    let request = agent.request(&big_refund()).unwrap();
    assert!(request.actor.act.is_some());
    hold(&agent, &request).await;
    let view = alice.list(Some("pending")).await.requests.remove(0);
    assert_eq!(view.pending.subject.id, OWNER);
    assert_eq!(view.pending.delegation, Delegation::ClaimedByAgent);

    // A gateway presenting the approved call on someone else's behalf is refused.
    assert_eq!(alice.approve(&view, "k").await.0, StatusCode::OK);
    let grant = agent
        .wait(&view.pending.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();
    let mut for_bob = request.clone();
    for_bob.subject.id = BOB.into();
    let (status, body) = redeem(&broker, &grant, &for_bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(redeem(&broker, &grant, &request).await.0, StatusCode::OK);
}

/// Finding 5: the listing is newest first and paged, so after any amount of history an app
/// that reconnects sees the newest items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_is_newest_first_and_paged() {
    let broker = TestBroker::start_with(|c| c.max_pending_per_owner = 100_000).await;
    let alice = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let base = agent.request(&big_refund()).unwrap();
    let t = now();
    // 10,101 older items, written straight into the broker's database in one transaction (as
    // an hour and a half of an agent at its rate limit would have written them).
    let mut rows = Vec::new();
    for i in 0..10_101 {
        let mut request = base.clone();
        request.context.intent = format!("old request {i}");
        let pending = PendingAction::new(
            PendingParts {
                id: format!("pa_old_{i:05}"),
                created_at: Timestamp::from_unix(t - 100).unwrap(),
                expires_at: Timestamp::from_unix(t + 3600).unwrap(),
                audience: PAYMENTS.into(),
                policy: PolicyRef {
                    id: "p".into(),
                    reason: "r".into(),
                },
                delegation: Delegation::ClaimedByAgent,
                catalog: None,
            },
            request,
        )
        .unwrap();
        rows.push(vec![
            SqlValue::Text(pending.id.clone()),
            SqlValue::Text(OWNER.into()),
            SqlValue::Text(BILLING.into()),
            SqlValue::Text(pending.action_hash.as_str().into()),
            SqlValue::Text(serde_json::to_string(&pending).unwrap()),
            SqlValue::Int(t - 100),
            SqlValue::Int(t + 3600),
        ]);
    }
    broker
        .db()
        .await
        .execute_many(
            "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)",
            &rows,
        )
        .await;
    let mut newest = Vec::new();
    for i in 0..100 {
        let mut request = base.clone();
        request.context.intent = format!("new request {i}");
        newest.push(hold(&agent, &request).await.id);
    }
    let first = alice.list(Some("pending")).await;
    let ids: Vec<String> = first
        .requests
        .iter()
        .map(|v| v.pending.id.clone())
        .collect();
    newest.reverse();
    assert_eq!(
        ids, newest,
        "the first page is the 100 newest, newest first"
    );
    assert!(first.next.is_some());

    // Every page, once: nothing missed or repeated.
    let mut seen = std::collections::HashSet::new();
    let mut path = "/v1/approver/requests?status=pending&limit=500".to_owned();
    loop {
        let response = alice.send(Method::GET, &path, None, &[]).await;
        let page: countersign_protocol::api::RequestList = response.json().await.unwrap();
        for view in &page.requests {
            assert!(
                seen.insert(view.pending.id.clone()),
                "twice: {}",
                view.pending.id
            );
        }
        match page.next {
            Some(next) => {
                path = format!("/v1/approver/requests?status=pending&limit=500&before={next}");
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 10_201);
}

/// Finding 6: a per-owner cap on pending items, events that reference their item, retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cannot_grow_broker_storage_without_bound() {
    let broker = TestBroker::start_with(|c| c.max_pending_per_owner = 5).await;
    let alice = broker.approver(OWNER).await;
    let agent = broker.agent(BILLING);
    let big = "x".repeat(200 * 1024);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = agent.request(&big_refund()).unwrap();
        request.context.intent = format!("refund {i}");
        request
            .context
            .arguments
            .insert("note".into(), json!(big.clone()));
        ids.push(hold(&agent, &request).await.id);
    }
    let mut sixth = agent.request(&big_refund()).unwrap();
    sixth.context.intent = "one more".into();
    let (status, body) = evaluate_raw(&broker, &sixth).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("pending_cap_reached")),
        "{body}"
    );

    // 30 identical 200 KiB calls merge into one item, stored once: events carry no copy.
    let mut again = agent.request(&big_refund()).unwrap();
    again.context.intent = "refund 0".into();
    again.context.arguments.insert("note".into(), json!(big));
    for _ in 0..30 {
        assert_eq!(hold(&agent, &again).await.id, ids[0]);
    }
    let counted = broker
        .db()
        .await
        .integers(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(SUM(LENGTH(kind) + LENGTH(COALESCE(request, '')) \
             + LENGTH(COALESCE(detail, ''))) AS BIGINT) FROM events",
        )
        .await;
    let (events, event_bytes) = (counted[0], counted[1]);
    assert_eq!(events, 35);
    assert!(
        event_bytes < 2_000,
        "events hold ids, not items: {event_bytes} bytes"
    );

    // Once decided, an item makes room; retention then removes it, its events and keys.
    let (status, _) = alice.deny(&ids[1], "no", false, "deny-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hold(&agent, &sixth).await.id.len(), ids[0].len());
    let purged = broker
        .state()
        .store
        .purge(
            &Retention {
                items_secs: 0,
                events_secs: 3600,
                idempotency_secs: 0,
            },
            now() + 10,
        )
        .unwrap();
    assert_eq!((purged.items, purged.idempotency_keys), (1, 1));
    let left = broker
        .db()
        .await
        .integers(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE request = '{}'",
            ids[1]
        ))
        .await[0];
    assert_eq!(left, 0);
    let listed = alice.list(None).await;
    assert_eq!(listed.requests.len(), 5, "the pending ones stay");
    let purged = broker
        .state()
        .store
        .purge(
            &Retention {
                items_secs: 0,
                events_secs: 0,
                idempotency_secs: 0,
            },
            now() + 10,
        )
        .unwrap();
    assert!(purged.events > 0);
}

/// Finding 9: a stream's task ends with its connection, not at its owner's next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_tasks_end_with_their_connections() {
    let broker = TestBroker::start().await;
    let alice = broker.approver(OWNER).await;
    let streams = || async {
        let metrics = reqwest::get(format!("{}/metrics", broker.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("countersign_approver_streams "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut open = Vec::new();
    for _ in 0..50 {
        open.push(alice.stream(None).await);
    }
    // Each stream's task starts as its response goes out: wait until all 50 run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while streams().await < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "50 streams never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(streams().await, 50);
    for stream in open {
        stream.drop_connection();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while streams().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} stream tasks outlived their connections",
            streams().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 11: approvers and credentials can be retired: by the owner through the API, or by
/// the administrator's command while the broker runs; their grants stop verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_and_credentials_can_be_removed() {
    let broker = TestBroker::start().await;
    let mut alice = broker.approver(OWNER).await;
    // A second credential, vouched for by the first.
    let mut spare = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
    let second = spare.register(OWNER).unwrap();
    let challenge = enrollment_challenge(&alice.id, &second).unwrap();
    let body = serde_json::to_value(EnrollRequest {
        credential: second.clone(),
        assertion: alice.dev.assert(&challenge).unwrap(),
    })
    .unwrap();
    let response = alice
        .send(Method::POST, "/v1/approver/credentials", Some(&body), &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // The owner removes the first; the last cannot go.
    let path = format!("/v1/approver/credentials/{}", alice.dev.credential.id);
    let response = alice.send(Method::DELETE, &path, None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let path = format!("/v1/approver/credentials/{}", second.id);
    let response = alice.send(Method::DELETE, &path, None, &[]).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "last_credential");
    // A grant made with the removed credential is refused at acceptance.
    let agent = broker.agent(BILLING);
    let request = agent.request(&big_refund()).unwrap();
    hold(&agent, &request).await;
    let view = alice.list(Some("pending")).await.requests.remove(0);
    let (status, body) = alice.approve(&view, "removed").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("assertion_unknown_credential")),
        "{body}"
    );
    // With the remaining one it goes through.
    alice.dev.authenticator = spare;
    alice.dev.credential = second;
    assert_eq!(alice.approve(&view, "kept").await.0, StatusCode::OK);
    let grant = agent
        .wait(&view.pending.id, Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .unwrap();

    // The administrator removes the approver while the broker runs: within a second, its
    // proofs and its grants are refused.
    let mut args: Vec<String> = broker.store_args();
    args.extend(["approvers".into(), "remove".into(), alice.id.clone()]);
    broker_command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = alice
            .send(Method::GET, "/v1/approver/requests", None, &[])
            .await;
        if response.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = redeem(&broker, &grant, &request).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("unknown_key")),
        "{body}"
    );
}

/// Finding 12: guessing pairing codes is throttled per address, and a wrong guess writes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_is_throttled_and_wrong_codes_write_nothing() {
    let broker = TestBroker::start_with(|c| {
        c.pairing_rate_limit = countersign_broker::Config::default().pairing_rate_limit;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..300 {
        let (status, _) = pair_with(&broker, &format!("WRONG-{i:05}"), OWNER, |_| {}).await;
        statuses.push(status);
    }
    let forbidden = statuses
        .iter()
        .filter(|s| **s == StatusCode::FORBIDDEN)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(forbidden <= 10, "{forbidden} guesses got through");
    assert_eq!(forbidden + limited, 300);
    let proofs = broker
        .db()
        .await
        .integers("SELECT CAST(COUNT(*) AS BIGINT) FROM proof_ids")
        .await[0];
    assert_eq!(proofs, 0, "no row for a wrong code");
}
