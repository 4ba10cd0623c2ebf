//! The IPC contract: every type a command returns or an event carries, generated into
//! TypeScript (`ui/src/lib/bindings/`) by ts-rs. The files are committed; a test fails when
//! they drift from these definitions.

use countersign_approver::display::Review;
use countersign_approver::history::{EntryKind, ItemStatus, RiskContext};
use serde::{Deserialize, Serialize};
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

/// Everything the review shows: the engine's [`Review`] (strings already made visible, see
/// `countersign_approver::display`; the UI renders them as text only), the expiry for the
/// countdown, and the item's entries.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct ItemDetail {
    #[serde(flatten)]
    #[ts(flatten)]
    pub review: Review,
    /// Unix seconds, for the countdown.
    pub expires_at_unix: i64,
    /// What is unusual about it, from this machine's history.
    pub context: RiskContext,
    pub history: Vec<HistoryEntry>,
}

/// One state change of an item.
#[derive(Clone, Debug, PartialEq, Serialize, TS)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: i64,
    pub kind: EntryKind,
    #[ts(type = "unknown")]
    pub detail: serde_json::Value,
}

/// One row of the history list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct HistoryRow {
    pub id: String,
    pub status: ItemStatus,
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

/// What `approve` is asked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct ApproveRequest {
    pub id: String,
    /// The enrolled authenticator to use (by name); the first enrolled when absent.
    #[ts(optional = nullable)]
    pub with: Option<String>,
}

/// What `approve_all` is asked: 2 to 50 items approved in one ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct ApproveAllRequest {
    pub ids: Vec<String>,
    /// The enrolled authenticator to use (by name); the first enrolled when absent.
    #[ts(optional = nullable)]
    pub with: Option<String>,
}

/// What `approve_bounded` is asked: one item approved with a bounded grant — it and later
/// calls like it, within these limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct ApproveBoundedRequest {
    pub id: String,
    /// The enrolled authenticator to use (by name); the first enrolled when absent.
    #[ts(optional = nullable)]
    pub with: Option<String>,
    /// How many calls in all, this one included.
    pub uses: u32,
    /// How long the grant lasts, in seconds.
    pub lifetime_secs: u32,
    /// Ceilings on numeric arguments, as decimals.
    pub max: std::collections::BTreeMap<String, String>,
    /// Arguments later calls may change freely; every other one must stay as reviewed.
    pub vary: Vec<String>,
}

/// A bounded grant that can still release calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
pub struct BoundedGrantInfo {
    pub broker: String,
    pub jti: String,
    /// The request it was made from.
    pub txn: String,
    pub agent: String,
    pub tool: String,
    pub uses: u32,
    /// Calls it has covered (redeemed).
    pub used: u32,
    /// Calls released under it that have not run yet.
    pub released: u32,
    pub expires_at: i64,
    /// Its `constraints`, as signed (JSON).
    pub constraints: String,
}

/// What `deny_all` is asked: several items denied with one reason, all or none.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct DenyAllRequest {
    pub ids: Vec<String>,
    /// Required: the agents and their operators read it.
    pub reason: String,
    /// Also suspend the agents until an administrator lifts it.
    pub suspend_agent: bool,
}

/// What `deny` is asked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct DenyRequest {
    pub id: String,
    /// Required: the agent and its operators read it.
    pub reason: String,
    /// Also suspend the agent until an administrator lifts it.
    pub suspend_agent: bool,
}

/// What `history` is asked: every filter is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, TS)]
#[serde(default)]
pub struct HistoryQuery {
    /// Full-text search over intent, tool, agent and arguments.
    #[ts(optional = nullable)]
    pub search: Option<String>,
    #[ts(optional = nullable)]
    pub status: Option<ItemStatus>,
    #[ts(optional = nullable)]
    pub agent: Option<String>,
    #[ts(optional = nullable)]
    pub tool: Option<String>,
    /// At most this many rows (200 when absent, 10 000 at most).
    #[ts(optional = nullable)]
    pub limit: Option<u32>,
}

/// What `pair` is asked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct PairRequest {
    pub url: String,
    /// The one-time code `countersign-broker pair` printed.
    pub code: String,
    /// The broker certificate's SHA-256 fingerprint, for a self-signed certificate.
    #[ts(optional = nullable)]
    pub fingerprint: Option<String>,
}

/// What `add_authenticator` is asked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct EnrollRequest {
    /// `security-key`, `windows-hello` or (demo builds) `dev`.
    pub kind: String,
    pub name: String,
}

/// What `rename_authenticator` is asked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, TS)]
pub struct RenameRequest {
    pub name: String,
    pub new_name: String,
}

/// A failed command: a stable code and a sentence for the person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]

pub struct CommandError {
    pub code: String,
    pub message: String,
}

impl From<countersign_protocol::link::LinkError> for CommandError {
    fn from(e: countersign_protocol::link::LinkError) -> Self {
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
