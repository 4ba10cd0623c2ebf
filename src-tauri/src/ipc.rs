//! The IPC contract: every type a command returns or an event carries, generated into
//! TypeScript (`ui/src/lib/bindings/`) by ts-rs. The files are committed; a test fails when
//! they drift from these definitions.

use serde::Serialize;
use ts_rs::TS;

/// One pending item in the list.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]

pub struct PendingItem {
    pub id: String,
    pub agent: String,
    pub tool: String,
    pub intent: String,
    /// The data classes the broker's tool catalog says the tool touches (empty when the tool
    /// is not in the catalog); the agent's own claim is shown in the review.
    pub classification: Vec<String>,
    pub policy_id: String,
    /// How many identical requests of the agent it stands for (1: itself alone); the broker
    /// merges repeats of a pending request instead of asking again.
    pub merged: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub fingerprint: String,
    pub hidden_characters: bool,
}

/// Everything the review shows. Strings are already made visible (see
/// `countersign_approver::display`); the UI renders them as text only.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]

pub struct ItemDetail {
    pub id: String,
    pub status: String,
    /// The human the call is made for (the agent's configured owner, checked by the broker).
    pub subject: String,
    pub subject_type: String,
    /// What the agent put into `subject.properties` (its claims), made visible.
    #[ts(type = "unknown")]
    pub subject_properties: Option<serde_json::Value>,
    pub agent: String,
    pub delegation: Vec<String>,
    /// Whether the broker verified the delegation chain (otherwise it is the agent's claim).
    pub delegation_verified: bool,
    pub tool: String,
    pub resource_type: String,
    #[ts(type = "unknown")]
    pub resource_properties: Option<serde_json::Value>,
    pub action: String,
    #[ts(type = "unknown")]
    pub action_properties: Option<serde_json::Value>,
    pub intent: String,
    #[ts(type = "unknown")]
    pub arguments: serde_json::Value,
    /// The data the agent says the call touches (its claim).
    pub data_domain: Option<String>,
    pub classification: Vec<String>,
    /// What the broker's tool catalog says of the tool, when listed.
    pub catalog: Option<CatalogInfo>,
    pub policy_id: String,
    pub policy_reason: String,
    pub audience: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Unix seconds, for the countdown.
    pub expires_at_unix: i64,
    pub fingerprint: String,
    pub hash_matches: bool,
    pub hidden_characters: bool,
    /// Whether any value held a line break (shown as a marker, inside its field).
    pub line_breaks: bool,
    pub history: Vec<HistoryEntry>,
}

/// The broker's tool-catalog facts about a tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
pub struct CatalogInfo {
    pub domain: Option<String>,
    pub classification: Vec<String>,
    pub risk: Option<String>,
}

/// One state change of an item.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]

pub struct HistoryEntry {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    #[ts(type = "unknown")]
    pub detail: serde_json::Value,
}

/// One row of the history list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct HistoryRow {
    pub id: String,
    pub status: String,
    pub agent: String,
    pub tool: String,
    pub intent: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The history's integrity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Integrity {
    Verified { entries: u64 },
    Broken { entry: i64, reason: String },
}

/// What a decision came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct DecisionResult {
    pub item: String,
    pub decision: String,
    /// Whether the broker has it (otherwise it waits in the outbox and is sent on reconnect).
    pub delivered: bool,
    pub broker_status: Option<String>,
}

/// The settings page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct Settings {
    pub brokers: Vec<BrokerInfo>,
    pub authenticators: Vec<AuthenticatorInfo>,
    pub privacy: bool,
    /// Unix seconds until which notifications are paused (0: not paused).
    pub paused_until: i64,
    /// Whether the development authenticator is enrolled or in use (the UI shows a banner).
    pub dev_authenticator: bool,
    pub demo: bool,
    /// Whether the app starts (in the tray) when the owner logs in.
    pub autostart: bool,
}

/// A history export written to disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct Exported {
    pub path: String,
    pub entries: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct BrokerInfo {
    pub url: String,
    pub approver_id: String,
    pub owner: String,
    pub fingerprint: Option<String>,
    pub connected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct AuthenticatorInfo {
    pub name: String,
    pub kind: String,
    pub credential: String,
    pub added_at: i64,
}

/// A failed command: a stable code and a sentence for the person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl From<crate::link::LinkError> for CommandError {
    fn from(e: crate::link::LinkError) -> Self {
        Self {
            code: "bad_link".into(),
            message: e.to_string(),
        }
    }
}

impl CommandError {
    pub fn new(code: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: code.into(),
            message: message.to_string(),
        }
    }
}

impl From<countersign_approver::Error> for CommandError {
    fn from(e: countersign_approver::Error) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
        }
    }
}

/// Sent on the `changed` event whenever items or connections change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct Changed {
    pub pending: u32,
}
