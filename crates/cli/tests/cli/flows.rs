//! The approve and deny flows end to end through the binary, the gateway redeeming the grant;
//! the enrolment and pairing rules; the history's integrity check.

use countersign_approver::client::BrokerClient;
use countersign_protocol::action::Status;
use countersign_protocol::api::enrollment_challenge;
use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::webauthn::RelyingParty;
use reqwest::StatusCode;

use crate::support::{App, GATEWAY, agent, broker, code, held, outcome, submit, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_end_to_end_and_the_gateway_redeems_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let (request, id) = submit(&agent, &held("Refund order 1234 after a complaint")).await;

    let pending = app.ok(&["pending"]).await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["tool"], "stripe/refunds.create");

    let shown = app.ok(&["show", &id]).await;
    let review = &shown["review"];
    assert_eq!(review["intent"], "Refund order 1234 after a complaint");
    assert_eq!(review["arguments"]["amount"], "5000.00");
    assert_eq!(review["delegation"][0], "alice@example.com");
    assert_eq!(review["hash_matches"], true);
    assert_eq!(review["data_domain"], "payments");
    assert!(review["policy_reason"].as_str().unwrap().len() > 5);

    // Approving shows first what is signed (on standard error, beside the JSON result).
    let output = app.run(&["--json", "approve", &id]).await;
    assert_eq!(output.status.code(), Some(0));
    let told = String::from_utf8_lossy(&output.stderr);
    let fingerprint = review["fingerprint"].as_str().unwrap();
    assert!(
        told.contains("Refund order 1234 after a complaint") && told.contains(fingerprint),
        "{told}"
    );
    let approved: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(approved["delivered"], true);
    assert_eq!(approved["broker_status"], "approved");

    // The agent gets the grant; its gateway redeems it once, and a replay is refused.
    let status = outcome(&agent, &id).await;
    assert_eq!(status.status, Status::Approved);
    let grant = status.grant.unwrap();
    assert_eq!(
        agent.redeem(GATEWAY, &grant, &request).await.unwrap(),
        StatusCode::OK
    );
    assert_ne!(
        agent.redeem(GATEWAY, &grant, &request).await.unwrap(),
        StatusCode::OK
    );

    // Approving again changes nothing and mints nothing.
    let again = app.json(&["approve", &id], 0).await;
    assert_eq!(again["delivered"], true);

    // The history follows the item to its redemption, and the chain verifies.
    app.ok(&["sync"]).await;
    let history = app.ok(&["history"]).await;
    assert_eq!(history[0]["status"], "redeemed");
    let kinds: Vec<String> = app.ok(&["show", &id]).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["received", "viewed", "approved", "redeemed"]);
    let verified = app.ok(&["verify-history"]).await;
    assert_eq!(verified["verified"], true);

    // Export, and the readable form.
    let export = app.run(&["history", "--export", "jsonl"]).await;
    assert!(export.status.success());
    let lines = String::from_utf8(export.stdout).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let readable = app.run(&["show", &id]).await;
    let text = String::from_utf8(readable.stdout).unwrap();
    assert!(text.contains("Fingerprint"), "{text}");
    assert!(
        text.contains("alice@example.com → spiffe://example.com/agent/billing"),
        "{text}"
    );

    // The next request of the kind is shown against this one: the engine's risk context.
    let (_, next) = submit(&agent, &held("Refund order 1235 after a complaint")).await;
    app.ok(&["sync"]).await;
    let context = app.ok(&["show", &next]).await["context"].clone();
    assert_eq!(context["first_for_agent"], false);
    assert_eq!(context["amounts"][0]["name"], "amount");
    assert_eq!(context["amounts"][0]["approved"], 1);
    assert_eq!(context["amounts"][0]["largest"], 5000.0);
    assert_eq!(context["similar"]["id"], id.as_str());
    assert_eq!(context["similar"]["status"], "redeemed");
    let text = String::from_utf8(app.run(&["show", &next]).await.stdout).unwrap();
    assert!(
        text.contains("amount = 5000.00: you approved this tool 1 time with it; largest 5000")
            && text.contains(&format!("most like {id} (redeemed"))
            && text.contains("this agent: 1 other request in the hour before, 0 denied"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_deny_with_suspension() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));

    let (_, first) = submit(&agent, &held("Refund one")).await;
    app.ok(&["sync"]).await;
    // A denial needs a reason.
    let refused = app.json(&["deny", &first, "--reason", "  "], 4).await;
    assert_eq!(refused["error"]["code"], "reason_required");
    let denied = app
        .ok(&["deny", &first, "--reason", "not this order"])
        .await;
    assert_eq!(denied["broker_status"], "denied");
    assert_eq!(outcome(&agent, &first).await.status, Status::Denied);
    // Once denied, approving is refused here, before any ceremony.
    let late = app.json(&["approve", &first], 4).await;
    assert_eq!(late["error"]["code"], "not_pending");

    let (_, second) = submit(&agent, &held("Refund two")).await;
    app.ok(&["sync"]).await;
    app.ok(&["deny", &second, "--reason", "stop", "--suspend-agent"])
        .await;
    assert_eq!(outcome(&agent, &second).await.status, Status::Denied);
    // The agent is suspended: its next held call is refused outright.
    let request = agent.request(&held("Refund three")).unwrap();
    let response = agent.evaluate(&request).await;
    let refused = match response {
        Err(_) => true,
        Ok(r) => !r.decision && r.context.and_then(|c| c.approval).is_none(),
    };
    assert!(refused, "a suspended agent's call is not held for approval");
    let history = app.ok(&["history", "--status", "denied"]).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_denied_with_one_reason_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let mut ids = Vec::new();
    for intent in ["Refund one", "Refund two", "Refund three"] {
        ids.push(submit(&agent, &held(intent)).await.1);
    }
    app.ok(&["sync"]).await;

    // One of them unknown: none is denied, and the error names it.
    let unknown = app
        .json(
            &[
                "deny",
                &ids[0],
                "pa_nonexistent",
                &ids[1],
                "--reason",
                "batch",
            ],
            3,
        )
        .await;
    assert_eq!(unknown["error"]["code"], "unknown_item", "{unknown}");
    let denied = app.ok(&["history", "--status", "denied"]).await;
    assert!(denied.as_array().unwrap().is_empty(), "{denied}");

    // All three with one reason, in one command.
    let denied = app
        .ok(&["deny", &ids[0], &ids[1], &ids[2], "--reason", "not today"])
        .await;
    let denied = denied.as_array().unwrap();
    assert_eq!(denied.len(), 3);
    for (report, id) in denied.iter().zip(&ids) {
        assert_eq!(report["item"], id.as_str());
        assert_eq!(report["broker_status"], "denied");
        let status = outcome(&agent, id).await;
        assert_eq!(status.status, Status::Denied);
        assert_eq!(status.reason.as_deref(), Some("not today"));
    }
    // Again: already decided here and delivered, nothing changes.
    let again = app
        .ok(&["deny", &ids[0], &ids[1], "--reason", "not today"])
        .await;
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["delivered"] == true)
    );
    let text = String::from_utf8(
        app.run(&["deny", &ids[1], &ids[2], "--reason", "not today"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_and_pairing_need_an_enrolled_authenticator() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::new(dir.path());

    // Pairing without an authenticator is refused before anything is sent; the code survives.
    let code = code(&broker);
    let none = app.json(&["pair", &url(&broker), &code], 3).await;
    assert_eq!(none["error"]["code"], "no_authenticator");
    app.ok(&["authenticators", "add", "--kind", "dev", "--name", "laptop"])
        .await;
    // Names are unique, and a voucher must exist.
    let dup = app
        .json(
            &["authenticators", "add", "--kind", "dev", "--name", "laptop"],
            4,
        )
        .await;
    assert_eq!(dup["error"]["code"], "duplicate_name");
    let unknown = app
        .json(
            &[
                "authenticators",
                "add",
                "--kind",
                "dev",
                "--name",
                "spare",
                "--with",
                "ghost",
            ],
            3,
        )
        .await;
    assert_eq!(unknown["error"]["code"], "unknown_authenticator");
    // Plain http is refused for anything but loopback.
    let remote = app
        .json(&["pair", "http://broker.example.com", &code], 4)
        .await;
    assert_eq!(remote["error"]["code"], "bad_url");

    let paired = app.ok(&["pair", &url(&broker), &code]).await;
    let approver = paired["approver_id"].as_str().unwrap().to_owned();
    // Pairing twice with one broker is refused here; a used code is refused by the broker.
    let twice = app.json(&["pair", &url(&broker), &code], 4).await;
    assert_eq!(twice["error"]["code"], "already_paired");

    // A second authenticator, vouched for by the first, is enrolled here and at the broker.
    app.ok(&[
        "authenticators",
        "add",
        "--kind",
        "dev",
        "--name",
        "spare",
        "--with",
        "laptop",
    ])
    .await;
    let listed = app.ok(&["authenticators", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let registry: serde_json::Value = reqwest::get(format!("{}/v1/registry", url(&broker)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = registry["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == approver.as_str())
        .unwrap();
    assert_eq!(entry["credentials"].as_array().unwrap().len(), 2);

    // Rename and remove; the last one stays while a broker is paired.
    app.ok(&["authenticators", "rename", "spare", "backup"])
        .await;
    app.ok(&["authenticators", "remove", "backup"]).await;
    let last = app.json(&["authenticators", "remove", "laptop"], 4).await;
    assert_eq!(last["error"]["code"], "last_authenticator");

    // At the broker, a new credential that vouches for itself (not an enrolled one) is refused.
    let mut stranger = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
    let credential = stranger.register("mallory").unwrap();
    let challenge = enrollment_challenge(&approver, &credential).unwrap();
    let assertion = stranger.assert(&credential.id, &challenge, true).unwrap();
    let engine = countersign_approver::engine::Engine::open(&app.home, &app.profile).unwrap();
    let key = engine.brokers().unwrap()[0].key.clone();
    let device = engine.vault().device_key(&key).unwrap();
    let client = BrokerClient::new(&url(&broker), &approver, device).unwrap();
    let refused = client.enroll(credential, assertion).await.unwrap_err();
    assert_eq!(refused.code(), "broker_refused", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_history_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));
    let (_, id) = submit(&agent, &held("Refund to audit")).await;
    app.ok(&["sync"]).await;
    app.ok(&["deny", &id, "--reason", "audit"]).await;
    assert_eq!(app.ok(&["verify-history"]).await["entries"], 2);

    // Someone rewrites the reason of the denial in the file.
    let db = rusqlite::Connection::open(app.home.join("history.sqlite")).unwrap();
    let seq: i64 = db
        .query_row("SELECT seq FROM entries WHERE kind = 'denied'", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE entries SET detail = '{\"reason\":\"approved by phone\"}' WHERE seq = ?1",
        [seq],
    )
    .unwrap();
    drop(db);
    let broken = app.json(&["verify-history"], 7).await;
    assert_eq!(broken["error"]["code"], "chain_broken");
    let message = broken["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("entry {seq}")), "{message}");
    let text = app.run(&["verify-history"]).await;
    assert_eq!(text.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&text.stderr).contains(&format!("entry {seq}")));

    // Cutting off the newest entry leaves a valid, shorter chain; the keyring's anchor tells.
    let db = rusqlite::Connection::open(app.home.join("history.sqlite")).unwrap();
    db.execute("DELETE FROM entries WHERE seq = ?1", [seq])
        .unwrap();
    drop(db);
    let cut = app.json(&["verify-history"], 7).await;
    let message = cut["error"]["message"].as_str().unwrap();
    assert!(message.contains("newest entries were removed"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_backends_fail_clearly_without_hardware() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(dir.path());
    // The USB backend really enumerates FIDO HID devices; this machine has none.
    let usb = app
        .json(
            &[
                "authenticators",
                "add",
                "--kind",
                "security-key",
                "--name",
                "key",
            ],
            5,
        )
        .await;
    // No key to reach is its own failure, with its own code (the UI says "plug one in").
    assert_eq!(usb["error"]["code"], "no_key");
    let message = usb["error"]["message"].as_str().unwrap();
    assert!(message.contains("security key"), "{message}");
    // Windows Hello exists only on Windows.
    let hello = app
        .json(
            &[
                "authenticators",
                "add",
                "--kind",
                "windows-hello",
                "--name",
                "hello",
            ],
            5,
        )
        .await;
    let message = hello["error"]["message"].as_str().unwrap();
    assert!(message.contains("no windows-hello backend"), "{message}");
    // Nothing was enrolled by the failures.
    assert_eq!(
        app.ok(&["authenticators", "list"]).await,
        serde_json::json!([])
    );
}
