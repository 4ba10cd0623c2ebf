//! Cedar policy: allow, deny and approval required, with the policy id and reason carried into
//! the pending action; the policy check command; and the committed OpenAPI document.

use countersign_broker::policy::Policies;
use countersign_protocol::api::Outcome;
use serde_json::json;

use crate::support::{BILLING, TestBroker, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_policies_allow_hold_and_deny() {
    let broker = TestBroker::start().await;
    let agent = broker.agent(BILLING);
    let cases = [
        ("calendar/events.list", Outcome::Allow, "default-allow"),
        (
            "github/repos.delete",
            Outcome::ApprovalRequired,
            "delete-repository",
        ),
        ("postgres/query", Outcome::ApprovalRequired, "pii-tables"),
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
}

#[test]
fn thresholds_compare_numbers_and_unreadable_amounts_are_held() {
    let policies = Policies::demo().unwrap();
    let mut request = {
        let secrets = countersign_broker::simulate::FleetSecrets {
            owner: "alice@example.com".into(),
            agents: vec![countersign_broker::simulate::AgentSecret {
                id: BILLING.into(),
                secret: "s".into(),
                delegated_by: None,
            }],
            gateways: vec![],
        };
        countersign_broker::simulate::SimulatedAgent::new(
            "http://127.0.0.1:1",
            &secrets,
            &secrets.agents[0],
        )
        .unwrap()
        .request(&scenario("stripe/refunds.create"))
        .unwrap()
    };
    let mut decide = |amount: serde_json::Value| {
        request.context.arguments.insert("amount".into(), amount);
        policies.decide(&request).outcome
    };
    assert_eq!(decide(json!("999.99")), Outcome::Allow);
    assert_eq!(decide(json!("1000")), Outcome::Allow);
    assert_eq!(decide(json!("1000.01")), Outcome::ApprovalRequired);
    assert_eq!(
        decide(json!("20000")),
        Outcome::ApprovalRequired,
        "not compared as text"
    );
    assert_eq!(decide(json!(5000)), Outcome::ApprovalRequired);
    assert_eq!(
        decide(json!("5,000.00")),
        Outcome::ApprovalRequired,
        "unreadable: held"
    );
    assert_eq!(
        decide(json!("1e9")),
        Outcome::ApprovalRequired,
        "unreadable: held"
    );
    assert_eq!(
        decide(json!(12.5)),
        Outcome::ApprovalRequired,
        "Cedar has no floats: held"
    );
}

#[test]
fn policy_check_accepts_the_demo_and_rejects_invalid_policies() {
    let binary = env!("CARGO_BIN_EXE_countersign-broker");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/demo.cedar");
    let ok = std::process::Command::new(binary)
        .args(["policy", "check", demo])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
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

#[test]
fn the_committed_openapi_document_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert!(
        committed == countersign_broker::openapi::render(),
        "crates/broker/openapi.json is stale: run `cargo run -p countersign-broker -- openapi > crates/broker/openapi.json`"
    );
    let document: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}
