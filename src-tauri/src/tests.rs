//! The commands through the real IPC path of the `tauri::test` mock runtime, against a real
//! broker on loopback, the real keyring (run inside `scripts/session.sh`) and the development
//! authenticator; and the generated TypeScript bindings checked for drift.

use std::sync::Arc;

use countersign_approver::engine::Engine;
use countersign_broker::simulate::scenarios;
use countersign_testkit::{OWNER, PairedEngine, fleet, paired_engine, pairing_code};
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, MockRuntime, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{WebviewWindow, WebviewWindowBuilder};
use ts_rs::TS;

use crate::ipc;
use crate::state::AppState;

fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    tauri::test::get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|body| body.deserialize::<Value>().unwrap())
}

/// A real broker on loopback, and an engine with the development authenticator paired to it.
fn paired(runtime: &tokio::runtime::Runtime, dir: &std::path::Path, profile: &str) -> PairedEngine {
    runtime.block_on(paired_engine(dir, profile))
}

#[test]
fn commands_review_approve_deny_and_report_through_ipc() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let PairedEngine {
        broker,
        engine,
        fleet,
        url,
    } = paired(&runtime, dir.path(), "desktop-test");
    let agent = fleet.agent(&url).unwrap();
    let (request, first, second) = runtime.block_on(async {
        let request = agent.request(&scenarios()[0]).unwrap();
        let first = agent
            .evaluate(&request)
            .await
            .unwrap()
            .context
            .unwrap()
            .approval
            .unwrap()
            .id;
        let other = agent.request(&scenarios()[2]).unwrap();
        let second = agent
            .evaluate(&other)
            .await
            .unwrap()
            .context
            .unwrap()
            .approval
            .unwrap()
            .id;
        (request, first, second)
    });

    let state = Arc::new(AppState::new(engine, false));
    let app = crate::app(mock_builder(), state.clone())
        .build(tauri::generate_context!())
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();

    // Nothing yet: the history fills from the broker.
    runtime.block_on(async { state.engine.lock().await.sync().await.unwrap() });
    let pending = invoke(&window, "pending", json!({})).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");

    let detail = invoke(&window, "item", json!({"id": first})).unwrap();
    assert_eq!(detail["tool"], "stripe/refunds.create");
    assert_eq!(detail["hash_matches"], true);
    assert_eq!(detail["delegation"][0], "alice@example.com");
    assert_eq!(detail["history"][1]["kind"], "viewed");
    // Looking again (the UI refreshes an open review) records nothing new.
    let again = invoke(&window, "item", json!({"id": first})).unwrap();
    assert_eq!(again["history"].as_array().unwrap().len(), 2);

    // Approve through the command: the ceremony, the grant, the broker has it.
    let approved = invoke(
        &window,
        "approve",
        json!({"request": {"id": first, "with": null}}),
    )
    .unwrap();
    assert_eq!(approved["delivered"], true, "{approved}");
    assert_eq!(approved["broker_status"], "approved");
    let status = runtime
        .block_on(agent.wait(&first, std::time::Duration::from_secs(5)))
        .unwrap();
    let redeemed = runtime
        .block_on(agent.redeem(
            "https://tools.example.com",
            &status.grant.unwrap(),
            &request,
        ))
        .unwrap();
    assert_eq!(redeemed, reqwest::StatusCode::OK);

    // A denial needs a reason; then deny and suspend.
    let refused = invoke(
        &window,
        "deny",
        json!({"request": {"id": second, "reason": " ", "suspend_agent": false}}),
    )
    .unwrap_err();
    assert_eq!(refused["code"], "reason_required");
    let denied = invoke(
        &window,
        "deny",
        json!({"request": {"id": second, "reason": "not now", "suspend_agent": true}}),
    )
    .unwrap();
    assert_eq!(denied["broker_status"], "denied");

    // History, integrity and settings.
    runtime.block_on(async { state.engine.lock().await.sync().await.unwrap() });
    let rows = invoke(&window, "history", json!({"query": {"search": "refund"}})).unwrap();
    assert_eq!(rows[0]["status"], "redeemed", "{rows}");
    let integrity = invoke(&window, "verify_history", json!({})).unwrap();
    assert_eq!(integrity["state"], "verified");
    let settings = invoke(&window, "settings", json!({})).unwrap();
    assert_eq!(settings["dev_authenticator"], true);
    assert_eq!(settings["brokers"][0]["url"], url.as_str());
    // No PIN is awaited outside a ceremony.
    let pin = invoke(&window, "submit_pin", json!({"pin": "1234"})).unwrap_err();
    assert_eq!(pin["code"], "no_ceremony");

    // Export: the whole chain, into the download folder, complete or not at all.
    let exported = invoke(&window, "export_history", json!({"format": "jsonl"})).unwrap();
    let text = std::fs::read_to_string(exported["path"].as_str().unwrap()).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        exported["entries"].as_u64().unwrap()
    );
    assert!(exported["entries"].as_u64().unwrap() >= 6, "{exported}");
    let csv = invoke(&window, "export_history", json!({"format": "csv"})).unwrap();
    assert!(csv["path"].as_str().unwrap().ends_with(".csv"));
    let bad = invoke(&window, "export_history", json!({"format": "../x"})).unwrap_err();
    assert_eq!(bad["code"], "bad_format");

    // Autostart: the login entry is written and removed.
    assert_eq!(settings["autostart"], false);
    assert_eq!(
        invoke(&window, "set_autostart", json!({"on": true})).unwrap(),
        true
    );
    assert_eq!(
        invoke(&window, "settings", json!({})).unwrap()["autostart"],
        true
    );
    assert_eq!(
        invoke(&window, "set_autostart", json!({"on": false})).unwrap(),
        false
    );

    // A pairing link is offered once; a bad one is reported with its reason.
    assert_eq!(
        invoke(&window, "take_pair_link", json!({})).unwrap(),
        Value::Null
    );
    crate::offer_link(
        app.handle(),
        "countersign://pair?broker=http%3A%2F%2F127.0.0.1%3A7300&code=abc-123",
    );
    let offer = invoke(&window, "take_pair_link", json!({})).unwrap();
    assert_eq!(
        offer,
        json!({"broker": "http://127.0.0.1:7300", "code": "abc-123", "fingerprint": null})
    );
    assert_eq!(
        invoke(&window, "take_pair_link", json!({})).unwrap(),
        Value::Null
    );
    crate::offer_link(app.handle(), "countersign://approve?id=x");
    let refused = invoke(&window, "take_pair_link", json!({})).unwrap_err();
    assert_eq!(refused["code"], "bad_link");
    broker.stop();
}

/// The broker merges an agent's repeats of a pending request; the list shows one item and
/// how many it stands for.
#[test]
fn repeated_requests_are_listed_once_with_their_count() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let PairedEngine {
        broker,
        mut engine,
        fleet,
        url,
    } = paired(&runtime, dir.path(), "desktop-merge-test");
    runtime.block_on(async {
        let agent = fleet.agent(&url).unwrap();
        let request = agent.request(&scenarios()[0]).unwrap();
        for _ in 0..3 {
            agent.evaluate(&request).await.unwrap();
        }
        engine.sync().await.unwrap();
    });
    let state = Arc::new(AppState::new(engine, false));
    let app = crate::app(mock_builder(), state)
        .build(tauri::generate_context!())
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    let pending = invoke(&window, "pending", json!({})).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["merged"], 3);
    broker.stop();
}

/// Several requests approved in one ceremony and several denied with one reason, through the
/// commands; each approved request's grant is redeemed once, for its own call.
#[test]
fn several_requests_are_decided_together_through_ipc() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let PairedEngine {
        broker,
        mut engine,
        fleet,
        url,
    } = paired(&runtime, dir.path(), "desktop-batch-test");
    let agent = fleet.agent(&url).unwrap();
    let held = runtime.block_on(async {
        let mut held = Vec::new();
        for order in ["B-1", "B-2", "B-3", "B-4"] {
            let mut refund = scenarios()[0].clone();
            refund.arguments["order"] = json!(order);
            let request = agent.request(&refund).unwrap();
            let answer = agent.evaluate(&request).await.unwrap();
            held.push((request, answer.context.unwrap().approval.unwrap().id));
        }
        engine.sync().await.unwrap();
        held
    });
    let ids: Vec<&str> = held.iter().map(|(_, id)| id.as_str()).collect();
    let state = Arc::new(AppState::new(engine, false));
    let app = crate::app(mock_builder(), state)
        .build(tauri::generate_context!())
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();

    let one = invoke(
        &window,
        "approve_all",
        json!({"request": {"ids": [ids[0]], "with": null}}),
    )
    .unwrap_err();
    assert_eq!(one["code"], "bad_batch", "{one}");
    let approved = invoke(
        &window,
        "approve_all",
        json!({"request": {"ids": [ids[0], ids[1]], "with": null}}),
    )
    .unwrap();
    let approved = approved.as_array().unwrap();
    assert_eq!(approved.len(), 2);
    for ((request, id), result) in held.iter().zip(approved) {
        assert_eq!(result["item"], id.as_str());
        assert_eq!(result["broker_status"], "approved", "{result}");
        let grant = runtime
            .block_on(agent.wait(id, std::time::Duration::from_secs(5)))
            .unwrap()
            .grant
            .unwrap();
        for expected in [reqwest::StatusCode::OK, reqwest::StatusCode::CONFLICT] {
            let redeemed = runtime
                .block_on(agent.redeem("https://tools.example.com", &grant, request))
                .unwrap();
            assert_eq!(redeemed, expected);
        }
    }
    let denied = invoke(
        &window,
        "deny_all",
        json!({"request": {"ids": [ids[2], ids[3]], "reason": "not now", "suspend_agent": false}}),
    )
    .unwrap();
    assert!(
        denied
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["broker_status"] == "denied"),
        "{denied}"
    );
    let pending = invoke(&window, "pending", json!({})).unwrap();
    assert!(pending.as_array().unwrap().is_empty(), "{pending}");
    broker.stop();
}

/// How many event streams a broker serves now.
fn streams(runtime: &tokio::runtime::Runtime, url: &str) -> u64 {
    runtime.block_on(async {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("countersign_approver_streams "))
            .unwrap()
            .parse()
            .unwrap()
    })
}

/// Waits up to 10 s until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Security review 2, findings 13 and 14: notification privacy survives a restart, and pairing
/// another broker leaves exactly one stream per broker.
#[test]
fn privacy_is_kept_and_each_broker_has_one_stream() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = "desktop-privacy-test";
    let PairedEngine {
        broker,
        engine,
        url,
        ..
    } = paired(&runtime, dir.path(), profile);
    let state = Arc::new(AppState::new(engine, false));
    let app = crate::app(mock_builder(), state)
        .build(tauri::generate_context!())
        .unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    invoke(&window, "set_privacy", json!({"on": true})).unwrap();
    assert_eq!(
        invoke(&window, "settings", json!({})).unwrap()["privacy"],
        true
    );

    crate::state::start_following(app.handle().clone());
    eventually("a stream to the first broker", || {
        streams(&runtime, &url) == 1
    });

    // Pair a second broker through the command, which follows again.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let fleet = fleet("desktop-privacy-other");
    let (other, code) = runtime.block_on(async {
        let other = countersign_broker::spawn(
            fleet.config(other_dir.join("broker.db"), "127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let code = pairing_code(&other, OWNER);
        (other, code)
    });
    let other_url = format!("http://{}", other.addr);
    invoke(
        &window,
        "pair",
        json!({"request": {"url": other_url, "code": code, "fingerprint": null}}),
    )
    .unwrap();
    eventually("a stream to the second broker", || {
        streams(&runtime, &other_url) == 1
    });
    // The first follower was replaced, not doubled: one stream per broker, and it stays so.
    eventually("one stream to the first broker", || {
        streams(&runtime, &url) == 1
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(streams(&runtime, &url), 1);
    assert_eq!(streams(&runtime, &other_url), 1);

    // A restart (a new app state over the same profile) keeps privacy on.
    let reopened = Engine::open(
        &dir.path().join("app"),
        &format!("{profile}-{}", std::process::id()),
    )
    .unwrap();
    let restarted = AppState::new(reopened, false);
    assert!(restarted.privacy.load(std::sync::atomic::Ordering::Relaxed));
    broker.stop();
    other.stop();
}

/// Every IPC type, with the file it is generated into.
fn bindings() -> Vec<(&'static str, String)> {
    use countersign_approver::authn::{AuthenticatorFailure, CeremonyStep};
    use countersign_approver::display::CatalogFacts;
    use countersign_approver::history::{
        Amount, Difference, EntryKind, ItemStatus, RiskContext, Similar,
    };

    let cfg = ts_rs::Config::new().with_large_int("number");
    let one = |name: &'static str, text: Result<String, ts_rs::ExportError>| {
        (name, text.unwrap_or_else(|e| panic!("{name}: {e}")))
    };
    vec![
        one("PendingItem", ipc::PendingItem::export_to_string(&cfg)),
        one("ItemDetail", ipc::ItemDetail::export_to_string(&cfg)),
        one("CatalogFacts", CatalogFacts::export_to_string(&cfg)),
        one("RiskContext", RiskContext::export_to_string(&cfg)),
        one("Amount", Amount::export_to_string(&cfg)),
        one("Similar", Similar::export_to_string(&cfg)),
        one("Difference", Difference::export_to_string(&cfg)),
        one("ItemStatus", ItemStatus::export_to_string(&cfg)),
        one("EntryKind", EntryKind::export_to_string(&cfg)),
        one(
            "AuthenticatorFailure",
            AuthenticatorFailure::export_to_string(&cfg),
        ),
        one("CeremonyStep", CeremonyStep::export_to_string(&cfg)),
        one(
            "ApproveRequest",
            ipc::ApproveRequest::export_to_string(&cfg),
        ),
        one("DenyRequest", ipc::DenyRequest::export_to_string(&cfg)),
        one(
            "ApproveAllRequest",
            ipc::ApproveAllRequest::export_to_string(&cfg),
        ),
        one(
            "DenyAllRequest",
            ipc::DenyAllRequest::export_to_string(&cfg),
        ),
        one(
            "ApproveBoundedRequest",
            ipc::ApproveBoundedRequest::export_to_string(&cfg),
        ),
        one(
            "BoundedGrantInfo",
            ipc::BoundedGrantInfo::export_to_string(&cfg),
        ),
        one("HistoryQuery", ipc::HistoryQuery::export_to_string(&cfg)),
        one("PairRequest", ipc::PairRequest::export_to_string(&cfg)),
        one("EnrollRequest", ipc::EnrollRequest::export_to_string(&cfg)),
        one("RenameRequest", ipc::RenameRequest::export_to_string(&cfg)),
        one("HistoryEntry", ipc::HistoryEntry::export_to_string(&cfg)),
        one("HistoryRow", ipc::HistoryRow::export_to_string(&cfg)),
        one("Integrity", ipc::Integrity::export_to_string(&cfg)),
        one(
            "DecisionResult",
            ipc::DecisionResult::export_to_string(&cfg),
        ),
        one("Settings", ipc::Settings::export_to_string(&cfg)),
        one("BrokerInfo", ipc::BrokerInfo::export_to_string(&cfg)),
        one(
            "AuthenticatorInfo",
            ipc::AuthenticatorInfo::export_to_string(&cfg),
        ),
        one("CommandError", ipc::CommandError::export_to_string(&cfg)),
        one("Changed", ipc::Changed::export_to_string(&cfg)),
        one("Exported", ipc::Exported::export_to_string(&cfg)),
        one(
            "PairLink",
            countersign_protocol::link::PairLink::export_to_string(&cfg),
        ),
        // Not a type: one of every marker the engine writes, for the UI's marker test.
        (
            "markers.json",
            format!(
                "{}\n",
                serde_json::to_string_pretty(&countersign_approver::display::marker_examples())
                    .unwrap()
            ),
        ),
    ]
}

/// The committed TypeScript bindings match the Rust types. `UPDATE_BINDINGS=1` rewrites them.
#[test]
fn typescript_bindings_do_not_drift() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings");
    let update = std::env::var_os("UPDATE_BINDINGS").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    for (name, text) in bindings() {
        let file = if name.contains('.') {
            name.to_owned()
        } else {
            format!("{name}.ts")
        };
        let path = dir.join(file);
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "ui/src/lib/bindings is stale for {stale:?}: run `UPDATE_BINDINGS=1 cargo test -p countersign-desktop bindings` and commit"
    );
}

/// The capability grants the main window exactly the declared commands (and listening to the
/// app's events): a command added without its permission would be denied at run time, one
/// granted but not declared would be a door nobody watches.
#[test]
fn the_capability_grants_exactly_the_declared_commands() {
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/capabilities/default.json"
    ))
    .unwrap();
    let capability: Value = serde_json::from_str(&file).unwrap();
    let mut granted: Vec<String> = capability["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    granted.sort();
    let mut expected: Vec<String> = crate::commands::COMMANDS
        .iter()
        .map(|name| format!("allow-{}", name.replace('_', "-")))
        .chain([
            "core:event:allow-listen".into(),
            "core:event:allow-unlisten".into(),
        ])
        .collect();
    expected.sort();
    assert_eq!(granted, expected);
    assert_eq!(capability["windows"], json!(["main"]));
}
