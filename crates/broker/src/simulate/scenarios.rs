//! The scripted calls the demo cycles through, and what became of each.

use countersign_protocol::action::Status;
use serde_json::{Value, json};

/// What happened to one simulated call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Allowed,
    Denied {
        policy: String,
    },
    Approved {
        redeemed: bool,
        replay_refused: bool,
    },
    Refused {
        status: Status,
        reason: Option<String>,
    },
    TimedOut,
}

/// One scripted call.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub tool: &'static str,
    pub intent: String,
    pub arguments: Value,
    pub data: Option<(&'static str, Vec<&'static str>)>,
}

/// The realistic mix the demo cycles through.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            tool: "stripe/refunds.create",
            intent: "Refund order 1234 after a complaint about a damaged parcel".into(),
            arguments: json!({"order": "1234", "amount": "5000.00", "currency": "EUR"}),
            data: Some(("payments", vec!["financial", "pii"])),
        },
        Scenario {
            tool: "stripe/refunds.create",
            intent: "Refund a duplicate charge on order 981".into(),
            arguments: json!({"order": "981", "amount": "19.99", "currency": "EUR"}),
            data: Some(("payments", vec!["financial"])),
        },
        Scenario {
            tool: "github/repos.delete",
            intent: "Delete the abandoned prototype repository after archiving it".into(),
            arguments: json!({"repository": "acme/prototype-2023"}),
            data: Some(("source", vec!["internal"])),
        },
        Scenario {
            tool: "postgres/query",
            intent: "Count customers per country for the quarterly report".into(),
            arguments: json!({"table": "customers", "query": "SELECT country, count(*) FROM customers GROUP BY 1"}),
            data: Some(("crm", vec!["pii"])),
        },
        Scenario {
            tool: "gmail/send",
            intent: "Send the signed contract to the supplier".into(),
            arguments: json!({"to": "orders@supplier.example.net", "subject": "Signed contract", "attachments": ["contract.pdf"]}),
            data: Some(("mail", vec!["confidential"])),
        },
        Scenario {
            tool: "gmail/send",
            intent: "Remind the team about Friday's retro".into(),
            arguments: json!({"to": "team@example.com", "subject": "Retro on Friday"}),
            data: None,
        },
        Scenario {
            tool: "postgres/drop_database",
            intent: "Free disk space by dropping the production database".into(),
            arguments: json!({"database": "prod"}),
            data: Some(("crm", vec!["pii"])),
        },
        Scenario {
            tool: "calendar/events.list",
            intent: "Check tomorrow's meetings".into(),
            arguments: json!({"day": "tomorrow"}),
            data: None,
        },
    ]
}
