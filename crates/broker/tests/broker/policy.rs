//! Cedar policy: allow, deny and approval required, with the policy id and reason carried into
//! the pending action; failing closed in the right direction; the demo policies against the
//! bypasses security review 2 found (finding 7 and 8); the policy check command; and the
//! committed OpenAPI document.

use countersign_broker::policy::Policies;
use countersign_protocol::ActionRequest;
use countersign_protocol::action::ToolFacts;
use countersign_protocol::api::Outcome;
use serde_json::{Value, json};

use crate::support::{BILLING, TestBroker, scenario};

/// What the broker answers a call of `tool` with `arguments`, over HTTP.
async fn outcome(broker: &TestBroker, tool: &str, arguments: Value) -> (Outcome, String) {
    let agent = broker.agent(BILLING);
    let mut request = agent.request(&scenario("calendar/events.list")).unwrap();
    request.resource.id = tool.into();
    request.context.arguments = arguments.as_object().unwrap().clone();
    let answer = agent.evaluate(&request).await.unwrap();
    let context = answer.context.unwrap();
    assert_eq!(answer.decision, context.outcome == Outcome::Allow);
    (context.outcome, context.policy_id.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_policies_allow_hold_and_deny() {
    let broker = TestBroker::start().await;
    let agent = broker.agent(BILLING);
    let cases = [
        ("calendar/events.list", Outcome::Allow, "calendar-read"),
        (
            "github/repos.delete",
            Outcome::ApprovalRequired,
            "delete-repository",
        ),
        ("postgres/query", Outcome::ApprovalRequired, "personal-data"),
        ("gmail/send", Outcome::ApprovalRequired, "external-email"),
        (
            "postgres/drop_database",
            Outcome::Deny,
            "no-production-drops",
        ),
    ];
    for (tool, outcome, policy) in cases {
        let answer = agent
            .evaluate(&agent.request(&scenario(tool)).unwrap())
            .await
            .unwrap();
        let context = answer.context.unwrap();
        assert_eq!(
            (context.outcome, context.policy_id.as_deref()),
            (outcome, Some(policy)),
            "{tool}"
        );
        assert_eq!(answer.decision, outcome == Outcome::Allow);
    }
    // Default deny: a tool no policy permits is refused.
    assert_eq!(
        outcome(&broker, "slack/messages.post", json!({"text": "hi"})).await,
        (Outcome::Deny, "default-deny".into())
    );
}

/// Finding 8: every bypass of the old default-allow demo policy, against the real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_policies_cannot_be_talked_around() {
    let broker = TestBroker::start().await;
    let held = |(outcome, _): (Outcome, String)| outcome == Outcome::ApprovalRequired;
    // A second recipient hidden in `to`, one in `cc`, a display name: held, not sent.
    for arguments in [
        json!({"to": "attacker@evil.example,bob@example.com", "subject": "x"}),
        json!({"to": "attacker@evil.example;bob@example.com", "subject": "x"}),
        json!({"to": "bob@example.com", "cc": "attacker@evil.example"}),
        json!({"to": "bob@example.com", "bcc": "attacker@evil.example"}),
        json!({"to": "Bob <attacker@evil.example> bob@example.com"}),
        json!({"to": "attacker@evil.example@example.com"}),
        json!({"subject": "no recipient stated"}),
    ] {
        assert!(
            held(outcome(&broker, "gmail/send", arguments.clone()).await),
            "{arguments}"
        );
    }
    assert_eq!(
        outcome(&broker, "gmail/send", json!({"to": "team@example.com"})).await,
        (Outcome::Allow, "internal-email".into())
    );
    // Personal data comes from the catalog: a query that declares nothing is still held.
    let agent = broker.agent(BILLING);
    let mut quiet = agent.request(&scenario("postgres/query")).unwrap();
    quiet.context.data = None;
    let answer = agent.evaluate(&quiet).await.unwrap().context.unwrap();
    assert_eq!(answer.outcome, Outcome::ApprovalRequired);
    // A negative or zero refund matches no permit: refused, never run unattended.
    for amount in ["-50000.00", "0", "0.00"] {
        assert_eq!(
            outcome(
                &broker,
                "stripe/refunds.create",
                json!({"order": "1", "amount": amount, "currency": "EUR"})
            )
            .await,
            (Outcome::Deny, "default-deny".into()),
            "{amount}"
        );
    }
    // Another spelling of a tool is the same tool to policy.
    assert_eq!(
        outcome(
            &broker,
            "github/Repos.delete",
            json!({"repository": "acme/x"})
        )
        .await,
        (Outcome::ApprovalRequired, "delete-repository".into())
    );
    assert_eq!(
        outcome(
            &broker,
            "POSTGRES/DROP_DATABASE",
            json!({"database": "prod"})
        )
        .await,
        (Outcome::Deny, "no-production-drops".into())
    );
}

fn refund(amount: Value) -> ActionRequest {
    let secrets = countersign_broker::simulate::FleetSecrets {
        owner: "alice@example.com".into(),
        agents: vec![countersign_broker::simulate::AgentSecret {
            id: BILLING.into(),
            secret: "s".into(),
            delegated_by: None,
        }],
        gateways: vec![],
    };
    let mut request = countersign_broker::simulate::SimulatedAgent::new(
        "http://127.0.0.1:1",
        &secrets,
        &secrets.agents[0],
    )
    .unwrap()
    .request(&scenario("stripe/refunds.create"))
    .unwrap();
    request.context.arguments.insert("amount".into(), amount);
    request
}

#[test]
fn thresholds_compare_numbers_and_unreadable_amounts_never_run() {
    let policies = Policies::demo().unwrap();
    let decide = |amount: Value| policies.decide(&refund(amount), None).outcome;
    assert_eq!(decide(json!("999.99")), Outcome::Allow);
    assert_eq!(decide(json!("1000")), Outcome::Allow);
    assert_eq!(decide(json!("1000.01")), Outcome::ApprovalRequired);
    assert_eq!(
        decide(json!("20000")),
        Outcome::ApprovalRequired,
        "not compared as text"
    );
    assert_eq!(decide(json!(5000)), Outcome::ApprovalRequired);
    // An amount policy cannot read as a number matches no permit: refused.
    assert_eq!(decide(json!("5,000.00")), Outcome::Deny, "unreadable");
    assert_eq!(decide(json!("1e9")), Outcome::Deny, "unreadable");
    assert_eq!(decide(json!(12.5)), Outcome::Deny, "Cedar has no floats");
}

/// Finding 7: a policy error never turns a `forbid` into "approval required".
#[test]
fn a_forbid_wins_whatever_else_fails_to_evaluate() {
    let policies = Policies::demo().unwrap();
    let mut drop = refund(json!("1"));
    drop.resource.id = "postgres/drop_database".into();
    drop.context.arguments = json!({"database": "prod"}).as_object().unwrap().clone();
    assert_eq!(
        policies.decide(&drop, None).policy_id,
        "no-production-drops"
    );
    // `to` as a number makes the mail policies fail to evaluate; the forbid still denies.
    drop.context.arguments.insert("to".into(), json!(5));
    let verdict = policies.decide(&drop, None);
    assert_eq!(
        (verdict.outcome, verdict.policy_id.as_str()),
        (Outcome::Deny, "no-production-drops")
    );

    // A forbid that itself fails to evaluate denies too; a permit that fails holds.
    let text = r#"
        @id("small-things") permit (principal, action == Action::"tools/call", resource);
        @id("no-big-orders") forbid (principal, action == Action::"tools/call", resource)
        when { context.arguments has order && context.arguments.order like "9*" };
    "#;
    let policies = Policies::load(text).unwrap();
    let mut call = refund(json!("1"));
    call.context.arguments.insert("order".into(), json!(9001));
    let verdict = policies.decide(&call, None);
    assert_eq!(
        (verdict.outcome, verdict.policy_id.as_str()),
        (Outcome::Deny, "no-big-orders"),
        "{}",
        verdict.reason
    );
    let text = r#"
        @id("orders") permit (principal, action == Action::"tools/call", resource)
        when { context.arguments has order && context.arguments.order like "1*" };
    "#;
    let verdict = Policies::load(text).unwrap().decide(&call, None);
    assert_eq!(verdict.outcome, Outcome::ApprovalRequired);
}

/// Policy decides on the broker's catalog, never on what the agent declares.
#[test]
fn data_classes_come_from_the_catalog_not_the_agent() {
    let policies = Policies::demo().unwrap();
    let mut query = refund(json!("1"));
    query.resource.id = "postgres/query".into();
    query.context.arguments = json!({"table": "customers"}).as_object().unwrap().clone();
    query.context.data = Some(countersign_protocol::action::DataTouched {
        domain: "crm".into(),
        classification: vec!["public".into()],
    });
    let pii = ToolFacts {
        domain: Some("crm".into()),
        classification: vec!["pii".into()],
        risk: None,
    };
    let public = ToolFacts {
        classification: vec!["public".into()],
        ..pii.clone()
    };
    assert_eq!(
        policies.decide(&query, Some(&pii)).outcome,
        Outcome::ApprovalRequired
    );
    // The agent's claim of "pii" changes nothing when the catalog says otherwise.
    query.context.data = Some(countersign_protocol::action::DataTouched {
        domain: "crm".into(),
        classification: vec!["pii".into()],
    });
    assert_eq!(
        policies.decide(&query, Some(&public)).outcome,
        Outcome::Allow
    );
}

#[test]
fn policy_check_accepts_the_shipped_files_and_rejects_invalid_policies() {
    let binary = env!("CARGO_BIN_EXE_countersign-broker");
    for shipped in ["demo.cedar", "template.cedar"] {
        let path = format!("{}/policies/{shipped}", env!("CARGO_MANIFEST_DIR"));
        let ok = std::process::Command::new(binary)
            .args(["policy", "check", &path])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{shipped}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("syntax.cedar", "permit (principal, action, resource"),
        (
            "schema.cedar",
            "permit (principal, action == Action::\"tools/call\", resource) when { context.nonexistent == 1 };",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(binary)
            .args(["policy", "check", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} should fail");
    }
}

/// Finding 8: outside demo mode, a broker without a policy file refuses to start.
#[test]
fn a_broker_without_a_policy_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{}\"\n",
            dir.path().join("b.db").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign-broker"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no policy file"), "{stderr}");
    assert!(!dir.path().join("b.db").exists(), "nothing written");
}

#[test]
fn the_committed_openapi_document_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert!(
        committed == countersign_broker::openapi::render(),
        "crates/broker/openapi.json is stale: run `cargo run -p countersign-broker -- openapi > crates/broker/openapi.json`"
    );
    let document: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}
