//! The MCP proxy over stdio, session era (the Python SDK 1.x client, protocol 2025-11-25).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Client, setup, text};

fn refund(amount: &str) -> Value {
    json!({"call": "refunds.create", "args": {"order": "1234", "amount": amount}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_call_passes_unchanged() {
    let s = setup("gw-allow", "", |_| {}).await;
    let mut client = Client::start(&s, json!([refund("500.00")]));
    let tools = client.started().await;
    assert!(tools.contains(&"await_approval".to_owned()), "{tools:?}");
    assert!(tools.contains(&"refunds.create".to_owned()), "{tools:?}");
    let step = client.next().await;
    assert_eq!(step["isError"], false, "{step}");
    assert_eq!(text(&step), "refunded 500.00 for order 1234");
    client.finish().await;
    assert_eq!(
        s.executions(),
        vec![json!({"tool": "refunds.create", "arguments": {"order": "1234", "amount": "500.00"}})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_runs_once_after_approval_and_never_before() {
    let mut s = setup(
        "gw-held",
        "[hold]\nmax_wait_secs = 60\nprogress_every_secs = 1\n",
        |_| {},
    )
    .await;
    let mut step = refund("5000.00");
    step["progress"] = json!(true);
    let again = json!({"call": "refunds.create", "args": {"order": "1234", "amount": "5000.00"}});
    let mut client = Client::start(&s, json!([step, again]));
    client.started().await;
    let id = s.next_pending().await;
    // Held: the owner sees it, with the server's annotations as its unverified claims.
    let opened = s
        .paired
        .engine
        .open_item(&id, countersign_approver::engine::Via::App)
        .unwrap();
    assert_eq!(opened.review.tool, "stripe/refunds.create");
    assert!(
        opened
            .review
            .server_claims
            .contains(&"destructive: yes".to_owned()),
        "{:?}",
        opened.review.server_claims
    );
    assert!(
        opened
            .review
            .server_claims
            .contains(&"title: Refund an order".to_owned())
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.executions().is_empty(), "ran before approval");
    s.approve(&id).await;
    let done = client.next().await;
    assert_eq!(done["isError"], false, "{done}");
    assert_eq!(text(&done), "refunded 5000.00 for order 1234");
    assert!(
        !done["progress"].as_array().unwrap().is_empty(),
        "progress was sent: {done}"
    );
    // The same call again is a new request (the first was spent): held again, not run.
    let second_id = s.next_pending().await;
    assert_ne!(second_id, id);
    assert_eq!(s.executions().len(), 1);
    s.paired
        .engine
        .deny(&second_id, "once is enough", false)
        .await
        .unwrap();
    let refused = client.next().await;
    assert_eq!(refused["isError"], true);
    assert!(text(&refused).contains("once is enough"), "{refused}");
    client.finish().await;
    assert_eq!(s.executions().len(), 1, "ran exactly once");
    // The owner's history says what happened: redeemed, then the gateway's outcome.
    assert_eq!(s.outcome(&id).await["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_expired_calls_never_reach_the_server() {
    let mut s = setup("gw-deny", "[hold]\nmax_wait_secs = 30\n", |c| {
        c.pending_ttl_secs = 3;
    })
    .await;
    let payout = json!({"call": "payouts.create", "args": {"amount": "10.00"}});
    let mut client = Client::start(&s, json!([payout, refund("5000.00"), refund("6000.00")]));
    client.started().await;
    // Policy: no permit matches stripe/payouts.create.
    let denied = client.next().await;
    assert_eq!(denied["isError"], true, "{denied}");
    assert_eq!(denied["structured"]["code"], "denied_by_policy", "{denied}");
    // The owner denies.
    let id = s.next_pending().await;
    s.paired
        .engine
        .deny(&id, "not this customer", false)
        .await
        .unwrap();
    let owner = client.next().await;
    assert_eq!(owner["structured"]["code"], "denied_by_owner", "{owner}");
    assert!(text(&owner).contains("not this customer"));
    // Nobody decides: it expires (3 s) and never runs.
    let expired = client.next().await;
    assert_eq!(expired["structured"]["code"], "not_approved", "{expired}");
    assert!(text(&expired).contains("expired"), "{expired}");
    client.finish().await;
    assert!(s.executions().is_empty(), "{:?}", s.executions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_is_held_for_a_bounded_time_then_awaits_approval() {
    let extra = "[hold]\nmax_wait_secs = 2\nprogress_every_secs = 1\n\n[tools.await_approval]\nmax_wait_secs = 60\n";
    let mut s = setup("gw-await", extra, |_| {}).await;
    let mut step = refund("5000.00");
    step["progress"] = json!(true);
    let resume = json!({"call": "await_approval", "args": {"id": "$held"}});
    let mut client = Client::start(&s, json!([step, resume.clone(), resume]));
    client.started().await;
    let waiting = client.next().await;
    assert_eq!(waiting["isError"], true, "{waiting}");
    assert_eq!(waiting["structured"]["status"], "pending", "{waiting}");
    assert!(text(&waiting).contains("await_approval"), "{waiting}");
    assert!(
        !waiting["progress"].as_array().unwrap().is_empty(),
        "{waiting}"
    );
    let id = waiting["structured"]["id"].as_str().unwrap().to_owned();
    assert!(s.executions().is_empty());
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(text(&ran), "refunded 5000.00 for order 1234");
    // Waiting again on a call that ran gives its result; it does not run again.
    let again = client.next().await;
    assert_eq!(text(&again), "refunded 5000.00 for order 1234", "{again}");
    client.finish().await;
    assert_eq!(s.executions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_while_held_runs_the_call_at_most_once() {
    let mut s = setup("gw-restart", "[hold]\nmax_wait_secs = 2\n\n[tools.await_approval]\nmax_wait_secs = 2\n[tools.\"refunds.create\"]\nmax_wait_secs = 60\n", |_| {}).await;
    // The first gateway holds the call, then goes away with its client.
    let mut first = Client::start(&s, json!([refund("5000.00")]));
    first.started().await;
    let id = s.next_pending().await;
    first.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new gateway: an await on the old id finds nothing held, and runs nothing; the same
    // call again joins the same pending request.
    let resume = json!({"call": "await_approval", "args": {"id": id}});
    let mut second = Client::start(&s, json!([resume, refund("5000.00")]));
    second.started().await;
    let unknown = second.next().await;
    assert_eq!(unknown["structured"]["status"], "unknown", "{unknown}");
    // The retry merges into the item (same agent, same action).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        s.paired.engine.sync().await.unwrap();
        let pending = s.paired.engine.pending().unwrap();
        if pending.first().is_some_and(|p| p.merged >= 2) {
            assert_eq!(pending[0].review.id, id);
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the retry never merged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.approve(&id).await;
    let ran = second.next().await;
    assert_eq!(text(&ran), "refunded 5000.00 for order 1234", "{ran}");
    second.finish().await;
    assert_eq!(s.executions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_crashes_or_hangs_gives_a_clean_error_and_the_outcome_says_so() {
    let extra = r#"[hold]
max_wait_secs = 60
run_timeout_secs = 2

[tools."refunds.crash"]
resource = "stripe/refunds.create"

[tools."refunds.hang"]
resource = "stripe/refunds.create"
"#;
    let mut s = setup("gw-upstream", extra, |_| {}).await;
    for (tool, words) in [
        ("refunds.hang", "did not answer within 2 s"),
        ("refunds.crash", "exited"),
    ] {
        let call = json!({"call": tool, "args": {"order": "1234", "amount": "5000.00"}});
        let mut client = Client::start(&s, json!([call]));
        client.started().await;
        let id = s.next_pending().await;
        s.approve(&id).await;
        let failed = client.next().await;
        assert_eq!(failed["isError"], true, "{failed}");
        assert!(text(&failed).contains(words), "{tool}: {failed}");
        client.kill().await;
        let outcome = s.outcome(&id).await;
        assert_eq!(outcome["outcome"], "failed", "{outcome}");
        assert!(
            outcome["detail"].as_str().unwrap().contains(words),
            "{outcome}"
        );
    }
    let tools: Vec<Value> = s.executions().iter().map(|e| e["tool"].clone()).collect();
    assert_eq!(tools, vec![json!("refunds.hang"), json!("refunds.crash")]);
}

/// A raw JSON-RPC peer, for what no SDK client sends: the same request id twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_sent_twice_runs_at_most_once() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut s = setup("gw-dup", "[hold]\nmax_wait_secs = 60\n", |_| {}).await;
    let command = s.gateway_command();
    let mut gateway = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(s.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = gateway.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(gateway.stdout.take().unwrap()).lines();
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "refunds.create", "arguments": {"order": "9", "amount": "5000.00"}}});
    for frame in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        call.clone(),
    ] {
        stdin
            .write_all(format!("{frame}\n").as_bytes())
            .await
            .unwrap();
    }
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await["id"], 1);
    let id = s.next_pending().await;
    stdin
        .write_all(format!("{call}\n").as_bytes())
        .await
        .unwrap();
    let duplicate = next().await;
    assert_eq!(duplicate["id"], 7);
    assert_eq!(duplicate["error"]["code"], -32600, "{duplicate}");
    s.approve(&id).await;
    let ran = next().await;
    assert_eq!(ran["id"], 7);
    assert_eq!(
        ran["result"]["content"][0]["text"], "refunded 5000.00 for order 9",
        "{ran}"
    );
    drop(stdin);
    let _ = gateway.wait().await;
    assert_eq!(s.executions().len(), 1);
}

/// A bounded grant made from the review of the first refund releases the second — another
/// order, under the ceiling — without a prompt; the server runs each once, and the owner's
/// history records the second under the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_grant_releases_a_later_call_through_the_gateway() {
    let mut s = setup("gw-bounded", "[hold]\nmax_wait_secs = 60\n", |_| {}).await;
    let later = json!({"call": "refunds.create", "args": {"order": "5678", "amount": "4000.00"}});
    let over = json!({"call": "refunds.create", "args": {"order": "9", "amount": "9000.00"}});
    let mut client = Client::start(&s, json!([refund("5000.00"), later, over]));
    client.started().await;
    let id = s.next_pending().await;
    let bounds = countersign_protocol::bounded::Bounds {
        uses: 3,
        lifetime_secs: 600,
        max: [("amount".to_owned(), "6000.00".to_owned())].into(),
        vary: ["order".to_owned()].into(),
    };
    s.paired
        .engine
        .approve_bounded(&id, bounds, None, &countersign_approver::authn::Unattended)
        .await
        .unwrap();
    let first = client.next().await;
    assert_eq!(text(&first), "refunded 5000.00 for order 1234");
    let second = client.next().await;
    assert_eq!(second["isError"], false, "{second}");
    assert_eq!(text(&second), "refunded 4000.00 for order 5678");
    assert_eq!(s.executions().len(), 2, "each ran once");
    // Over the ceiling: held for the owner, not run.
    let held = s.next_pending().await;
    assert_ne!(held, id);
    s.paired
        .engine
        .deny(&held, "too much", false)
        .await
        .unwrap();
    assert_eq!(client.next().await["isError"], true);
    client.finish().await;
    assert_eq!(s.executions().len(), 2);
    s.paired.engine.sync().await.unwrap();
    let grants = s.paired.engine.bounded_grants().await.unwrap();
    assert_eq!((grants[0].1.used, grants[0].1.uses), (2, 3));
    let jti = grants[0].1.jti.clone();
    let items = s
        .paired
        .engine
        .history()
        .list(&countersign_approver::Filter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let released = items
        .iter()
        .find(|i| i.id != id && i.id != held)
        .expect("the released call is in the history");
    let entries = s.entries(&released.id).await;
    assert!(
        entries
            .iter()
            .any(|(_, detail)| detail["bounded_grant"] == json!(jti)),
        "{entries:?}"
    );
}

/// The core refuses a grant presented for another call, or by a gateway it was not for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_another_call_or_audience_is_refused() {
    let mut s = setup("gw-bound", "", |_| {}).await;
    let secrets = s.paired.fleet.secrets.clone();
    let with = |config| {
        countersign_gateway::Pep::with_secrets(
            config,
            secrets.agents[0].secret.clone().into(),
            secrets.gateways[0].secret.clone().into(),
        )
        .unwrap()
    };
    let config = countersign_gateway::Config::load(&s.config).unwrap();
    let pep = with(config.clone());
    let args = |amount: &str| {
        json!({"order": "5", "amount": amount})
            .as_object()
            .unwrap()
            .clone()
    };
    let action = pep
        .action(
            "stripe/refunds.create",
            args("5000.00"),
            "refund".into(),
            None,
        )
        .unwrap();
    let countersign_gateway::pep::Verdict::Held { id, .. } = pep.evaluate(&action).await.unwrap()
    else {
        panic!("not held")
    };
    s.approve(&id).await;
    let grant = pep.wait(&id, Duration::from_secs(10)).await.unwrap();
    // Another call: the amount differs from what the owner approved.
    let other = pep
        .action(
            "stripe/refunds.create",
            args("50000.00"),
            "refund".into(),
            None,
        )
        .unwrap();
    let e = pep.release(&grant, &other).await.unwrap_err();
    assert_eq!(e.code(), "action_hash_mismatch", "{e}");
    // Another audience: a gateway configured as someone else.
    let mut elsewhere = config.clone();
    elsewhere.gateway.audience = "https://other.example.com".into();
    let e = with(elsewhere).release(&grant, &action).await.unwrap_err();
    assert_eq!(e.code(), "wrong_audience", "{e}");
    // The right one, once.
    pep.release(&grant, &action).await.unwrap();
    let e = pep.release(&grant, &action).await.unwrap_err();
    assert_eq!(e.code(), "replayed", "{e}");
}

/// 2025-11-25 tasks (the SDK 1.x client's experimental tasks): a held call is a task the client
/// polls; a task cancelled before the owner decides never runs, whatever the owner does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_tasks_gets_one_and_a_cancelled_task_never_runs() {
    let mut s = setup("gw-tasks", "[hold]\nmax_wait_secs = 2\n", |_| {}).await;
    let mut held = refund("5000.00");
    held["task"] = json!(true);
    let mut cancel =
        json!({"call": "refunds.create", "args": {"order": "77", "amount": "9000.00"}});
    cancel["task"] = json!(true);
    cancel["cancel"] = json!(true);
    let mut client = Client::start(&s, json!([held, cancel]));
    client.started().await;
    let created = client.next().await;
    assert_eq!(created["status"], "working", "{created}");
    let id = s.next_pending().await;
    // Longer than the hold limit: a task is not cut off.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(s.executions().is_empty());
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(text(&ran), "refunded 5000.00 for order 1234");
    assert_eq!(
        ran["statuses"].as_array().unwrap().last().unwrap(),
        "completed",
        "{ran}"
    );
    // The second is cancelled at once; its item stays pending, and approving it runs nothing.
    let _created = client.next().await;
    let cancelled = client.next().await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let second = s.next_pending().await;
    s.approve(&second).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.finish().await;
    assert_eq!(s.executions().len(), 1, "{:?}", s.executions());
}

/// The official TypeScript SDK's client: allowed, held then approved (with progress), denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_client_is_allowed_held_and_denied_through_the_gateway() {
    let mut s = setup(
        "gw-ts",
        "[hold]\nmax_wait_secs = 60\nprogress_every_secs = 1\n",
        |_| {},
    )
    .await;
    let payout = json!({"call": "payouts.create", "args": {"amount": "10.00"}});
    let mut client = Client::typescript(&s, json!([refund("500.00"), refund("5000.00"), payout]));
    let tools = client.started().await;
    assert!(tools.contains(&"await_approval".to_owned()), "{tools:?}");
    let allowed = client.next().await;
    assert_eq!(
        text(&allowed),
        "refunded 500.00 for order 1234",
        "{allowed}"
    );
    let id = s.next_pending().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.executions().len(), 1, "the held call ran before approval");
    s.approve(&id).await;
    let ran = client.next().await;
    assert_eq!(ran["isError"], false, "{ran}");
    assert_eq!(text(&ran), "refunded 5000.00 for order 1234");
    let denied = client.next().await;
    assert_eq!(denied["structured"]["code"], "denied_by_policy", "{denied}");
    client.finish().await;
    assert_eq!(s.executions().len(), 2);
}

/// What a server might read otherwise than the gateway never reaches it: duplicate keys, a
/// `NaN`, an integer beyond 2^53, a batch with a call in it, a call without an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_batched_or_anonymous_calls_are_refused_never_passed_on() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let s = setup("gw-strict", "", |_| {}).await;
    let command = s.gateway_command();
    let mut gateway = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(s.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = gateway.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(gateway.stdout.take().unwrap()).lines();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    stdin
        .write_all(format!("{init}\n").as_bytes())
        .await
        .unwrap();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next().await["id"], 1);
    // Each an allowed call (amount 10.00) but for how it is written.
    let call = r#"{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"refunds.create","arguments":ARGS}}"#;
    let refused = [
        call.replace("ID", "2").replace("ARGS", r#"{"order":"1","amount":"10.00","amount":"9999.00"}"#),
        call.replace("ID", "3").replace("ARGS", r#"{"order":"1","amount":"10.00","n":NaN}"#),
        call.replace("ID", "4").replace("ARGS", r#"{"order":"1","amount":"10.00","n":9007199254740993}"#),
        format!("[{}]", call.replace("ID", "5").replace("ARGS", r#"{"order":"1","amount":"10.00"}"#)),
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"refunds.create","arguments":{"order":"1","amount":"10.00"}}}"#.to_owned(),
    ];
    for line in &refused {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    for expected in [-32700, -32700, -32700, -32600] {
        let answer = next().await;
        let error = if answer.is_array() {
            &answer[0]["error"]
        } else {
            &answer["error"]
        };
        assert_eq!(error["code"], expected, "{answer}");
    }
    // The server is alive and answers a well-formed call; nothing else ran.
    let good = call
        .replace("ID", "6")
        .replace("ARGS", r#"{"order":"1","amount":"10.00"}"#);
    stdin
        .write_all(format!("{good}\n").as_bytes())
        .await
        .unwrap();
    let ran = next().await;
    assert_eq!(ran["id"], 6, "{ran}");
    assert_eq!(
        ran["result"]["content"][0]["text"], "refunded 10.00 for order 1",
        "{ran}"
    );
    drop(stdin);
    let _ = gateway.wait().await;
    assert_eq!(s.executions().len(), 1, "{:?}", s.executions());
}
