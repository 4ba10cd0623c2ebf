//! Storage. The broker talks to a [`Store`]; [`SqliteStore`] keeps everything in one SQLite file
//! in WAL mode, so pending items, event ids, consumed `jti`s and idempotency keys survive a
//! restart. Every state change and the event that reports it are written in one transaction.

use std::fmt::Debug;

use countersign_protocol::PendingAction;
use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, EventKind, RequestView};
use countersign_protocol::registry::ApproverEntry;
use countersign_protocol::replay::{ReplayStore, SignCounterStore};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store lock is poisoned")]
    Poisoned,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A pending action to hold.
#[derive(Clone, Debug)]
pub struct NewPending {
    pub pending: PendingAction,
    pub owner: String,
    pub agent: String,
}

/// The stored state of one request.
#[derive(Clone, Debug)]
pub struct StoredRequest {
    pub view: RequestView,
    pub owner: String,
    pub agent: String,
    pub grant: Option<String>,
    pub grant_jti: Option<String>,
    pub grant_exp: Option<i64>,
}

/// A decision to record.
#[derive(Clone, Debug)]
pub enum StoredDecision {
    Approve {
        grant: String,
        jti: String,
        exp: i64,
    },
    Deny {
        reason: String,
    },
}

/// What recording a decision did.
#[derive(Debug)]
pub enum DecideOutcome {
    Recorded {
        request: Box<StoredRequest>,
        event: Box<ApproverEvent>,
    },
    /// Another decision came first, or the item expired.
    AlreadyFinal(Box<StoredRequest>),
    NotFound,
}

/// An agent's standing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentState {
    pub suspended: bool,
    pub quarantined: bool,
}

/// The broker's storage.
pub trait Store: ReplayStore + SignCounterStore + Send + Sync + Debug {
    /// Holds `new`, or merges it into a pending item of the same agent with the same action
    /// hash. Returns the item and the event to publish.
    fn hold(&self, new: &NewPending, now: i64) -> Result<(StoredRequest, ApproverEvent)>;
    fn request(&self, id: &str) -> Result<Option<StoredRequest>>;
    fn list(&self, owner: &str, status: Option<Status>) -> Result<Vec<RequestView>>;
    /// Records the first decision on a pending, unexpired item.
    fn decide(
        &self,
        id: &str,
        owner: &str,
        approver: &str,
        decision: &StoredDecision,
        now: i64,
    ) -> Result<DecideOutcome>;
    /// Marks the item whose grant was redeemed.
    fn redeemed(&self, txn: &str, now: i64) -> Result<Option<(StoredRequest, ApproverEvent)>>;
    /// Revokes an approved, unredeemed grant.
    fn revoke(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>>;
    /// Expires every pending item whose time has passed.
    fn expire_due(&self, now: i64) -> Result<Vec<(StoredRequest, ApproverEvent)>>;
    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>>;
    fn last_event_id(&self, owner: &str) -> Result<i64>;
    fn agent_event(
        &self,
        owner: &str,
        agent: &str,
        kind: EventKind,
        detail: &str,
        now: i64,
    ) -> Result<ApproverEvent>;

    fn add_pairing_code(&self, code_hash: &str, owner: &str, expires_at: i64) -> Result<()>;
    /// Uses a pairing code once; the owner it was made for, if valid.
    fn use_pairing_code(&self, code_hash: &str, now: i64) -> Result<Option<String>>;
    fn save_approver(&self, entry: &ApproverEntry, now: i64) -> Result<()>;
    fn approvers(&self) -> Result<Vec<ApproverEntry>>;

    /// Remembers a request-proof `jti`; false if it was seen.
    fn fresh_proof(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool>;
    fn idempotent(&self, approver: &str, key: &str) -> Result<Option<(u16, String)>>;
    fn save_idempotent(
        &self,
        approver: &str,
        key: &str,
        status: u16,
        body: &str,
        now: i64,
    ) -> Result<()>;

    fn agent_state(&self, agent: &str) -> Result<AgentState>;
    fn set_suspended(&self, agent: &str, suspended: bool) -> Result<()>;
    /// Releases suspension and quarantine, and forgets past denials.
    fn release_agent(&self, agent: &str) -> Result<()>;
    /// Records a denial; quarantines the agent when `threshold` denials fall in `window`.
    /// Returns whether it was quarantined now.
    fn record_denial(&self, agent: &str, now: i64, window: i64, threshold: u32) -> Result<bool>;
}

mod sqlite;

pub use sqlite::SqliteStore;
