//! Storage. The broker talks to a [`Store`]; [`SqliteStore`] keeps everything in one SQLite file
//! in WAL mode, so pending items, event ids, consumed `jti`s and idempotency keys survive a
//! restart; [`PgStore`] keeps it in PostgreSQL, shared by several broker instances. Every state
//! change and the event that reports it are written in one transaction.

use std::fmt::Debug;

use countersign_protocol::PendingAction;
use countersign_protocol::action::Status;
use countersign_protocol::api::{
    ApproverEvent, BoundedGrantView, EventKind, ReportedOutcome, RequestView,
};
use countersign_protocol::registry::ApproverEntry;

use countersign_protocol::replay::{ReplayStore, SignCounterStore};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database cannot be reached now (down, restarting, out of connections); the API
    /// answers 503 `store_unavailable` and the next call tries again.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("store configuration: {0}")]
    Config(String),
    #[error(
        "the database's schema is version {database}, newer than this broker's ({broker}): \
         upgrade the broker before pointing it at this database"
    )]
    SchemaTooNew { database: i64, broker: i64 },
    #[error("the database is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the store lock is poisoned")]
    Poisoned,
}

/// A status as stored.
pub(crate) fn status_text(status: Status) -> Result<String> {
    match serde_json::to_value(status)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// An event kind as stored.
pub(crate) fn kind_text(kind: EventKind) -> Result<String> {
    match serde_json::to_value(kind)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a database's schema is, against what this broker writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaState {
    pub database: i64,
    pub broker: i64,
}

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

impl StoredRequest {
    /// Whether a decision can still be recorded: pending, and not past its expiry.
    pub(crate) fn decidable(&self, now: i64) -> bool {
        self.view.status == Status::Pending && self.view.pending.expires_at.unix() > now
    }

    /// Whether this item holds `grant` as approved: its `jti`, its owner, its gateway.
    pub(crate) fn accepts(&self, grant: &Redemption<'_>) -> bool {
        self.view.status == Status::Approved
            && self.grant_jti.as_deref() == Some(grant.jti)
            && self.owner == grant.sub
            && self.view.pending.audience == grant.aud
    }
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
    /// Approved with a bounded grant: the request becomes approved under it, and the grant is
    /// kept with its uses counted from zero.
    ApproveBounded(Box<NewBounded>),
}

/// A bounded grant the broker accepted, to store with the decision on the request it was made
/// from.
#[derive(Clone, Debug)]
pub struct NewBounded {
    pub jti: String,
    pub owner: String,
    /// The SPIFFE ID of the agent it covers.
    pub agent: String,
    pub audience: String,
    pub tool: String,
    /// The request the owner reviewed.
    pub txn: String,
    pub approver: String,
    /// The compact JWS, handed to the agent with each call it releases.
    pub token: String,
    /// Its claims without `webauthn`, as JSON (later calls are matched against them).
    pub claims: String,
    pub uses: u32,
    pub issued_at: i64,
    pub exp: i64,
}

/// A bounded grant as stored.
#[derive(Clone, Debug)]
pub struct StoredBounded {
    pub view: BoundedGrantView,
    pub token: String,
    /// Its claims without `webauthn`, as JSON.
    pub claims: String,
}

/// A bounded grant just revoked, with the released requests revoked with it.
#[derive(Debug)]
pub struct RevokedBounded {
    pub grant: StoredBounded,
    pub requests: Vec<(StoredRequest, ApproverEvent)>,
}

/// A bounded grant a gateway presents, as the verifier read it, with the call it is presented
/// for.
#[derive(Clone, Copy, Debug)]
pub struct BoundedRedemption<'a> {
    pub jti: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    /// The action hash of the presented call: a request released under the grant with this
    /// hash is the one redeemed.
    pub action_hash: &'a str,
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

/// What holding a new request did.
#[derive(Debug)]
pub enum HoldOutcome {
    /// Held as a new item, or merged into an identical pending one.
    Held(Box<StoredRequest>, Box<ApproverEvent>),
    /// The owner already has the most pending items the broker holds for one owner.
    OverCap,
}

/// What a redemption came to, decided in one transaction with the consumption.
#[derive(Debug)]
pub enum RedeemOutcome {
    /// Consumed; the item is now `redeemed`.
    Redeemed(Box<StoredRequest>, Box<ApproverEvent>),
    /// The `jti` was consumed before.
    Replayed,
    /// The grant was revoked.
    Revoked,
    /// A bounded grant whose every use is spent.
    Spent,
    /// No item `txn` holds this grant as approved for this owner and audience: the broker
    /// never accepted it.
    NotAccepted,
}

/// The grant a gateway presents, as the verifier read it.
#[derive(Clone, Copy, Debug)]
pub struct Redemption<'a> {
    pub txn: &'a str,
    pub jti: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: i64,
}

/// What reporting a call's outcome came to.
#[derive(Debug)]
pub enum ReportOutcome {
    /// Recorded; the event tells the owner's approvers.
    Recorded(Box<StoredRequest>, Box<ApproverEvent>),
    /// No redeemed item `txn` of this audience spent this `jti`, or its outcome is reported
    /// already (nothing was written).
    Refused,
}

/// What pairing came to.
#[derive(Debug)]
pub enum PairOutcome {
    Paired(ApproverEntry),
    /// The code is unknown, used or expired (nothing was written).
    CodeInvalid,
    /// The device key or a credential is registered already (nothing was written; the code
    /// stays unused).
    Conflict,
}

/// What changing an approver's entry came to.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    Updated,
    /// A device key or credential of the new entry belongs to another approver.
    Conflict,
    NotFound,
}

/// One page of an owner's requests, newest first.
#[derive(Debug)]
pub struct Page {
    pub requests: Vec<RequestView>,
    /// Where the next (older) page starts, when there is one.
    pub next: Option<i64>,
}

/// How long decided things are kept, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Decided, expired, redeemed and revoked items (approvers keep their own history).
    pub items_secs: i64,
    /// Events (the stream's replay window).
    pub events_secs: i64,
    /// Idempotency keys of decisions.
    pub idempotency_secs: i64,
}

/// What one retention sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub items: usize,
    pub events: usize,
    pub idempotency_keys: usize,
}

/// An agent's standing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentState {
    pub suspended: bool,
    pub quarantined: bool,
}

/// Requests and their state changes, each written with the event that reports it.
pub trait Requests {
    /// Holds `new`, or merges it into a pending item of the same agent with the same action
    /// hash; refuses a new item when its owner has `max_pending` unexpired pending items.
    fn hold(&self, new: &NewPending, max_pending: u32, now: i64) -> Result<HoldOutcome>;
    fn request(&self, id: &str) -> Result<Option<StoredRequest>>;
    /// A page of `owner`'s requests (of one status, or all), newest first, starting below the
    /// cursor `before`.
    fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page>;
    /// Records the first decision on a pending, unexpired item.
    fn decide(
        &self,
        id: &str,
        owner: &str,
        approver: &str,
        decision: &StoredDecision,
        now: i64,
    ) -> Result<DecideOutcome>;
    /// Redeems a verified grant against the broker's own record, in one transaction: the item
    /// `txn` must be `approved` with this `jti`, owned by `sub`, for audience `aud`; then the
    /// `jti` is consumed and the item becomes `redeemed`.
    fn redeem(&self, grant: &Redemption<'_>, now: i64) -> Result<RedeemOutcome>;
    /// Records what became of the call of a redeemed item `txn` whose grant `jti` was for
    /// audience `aud`; the first report stands.
    fn report_outcome(
        &self,
        txn: &str,
        jti: &str,
        aud: &str,
        outcome: &ReportedOutcome,
        now: i64,
    ) -> Result<ReportOutcome>;
    /// Revokes an approved, unredeemed grant.
    fn revoke(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>>;
    /// Expires every pending item whose time has passed.
    fn expire_due(&self, now: i64) -> Result<Vec<(StoredRequest, ApproverEvent)>>;
    /// How many unexpired pending items `owner` has.
    fn pending_count(&self, owner: &str, now: i64) -> Result<u32>;
    /// Removes what retention no longer keeps.
    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged>;
}

/// Bounded grants: standing approvals with limits, their uses counted here.
pub trait BoundedGrants {
    /// The owner's bounded grants that can still cover a call (unrevoked, unexpired, uses
    /// left), of one agent or all, newest first.
    fn bounded_grants(
        &self,
        owner: &str,
        agent: Option<&str>,
        now: i64,
    ) -> Result<Vec<StoredBounded>>;
    /// Holds `new` as approved under the bounded grant `jti`, without a prompt, when the grant
    /// is still unrevoked, unexpired and has a use left that no other released request holds;
    /// `None` (nothing written) otherwise. Whether the call fits the grant's constraints is the
    /// caller's to check first.
    fn release(
        &self,
        new: &NewPending,
        jti: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>>;
    /// Redeems a verified bounded grant for one call, in one transaction: the grant must be
    /// unrevoked with a use left, owned by `sub` for audience `aud`, and a request released
    /// under it must have the call's action hash; then one use is counted and that request
    /// becomes `redeemed`.
    fn redeem_bounded(&self, grant: &BoundedRedemption<'_>, now: i64) -> Result<RedeemOutcome>;
    /// Revokes the owner's bounded grant `jti` at once: no redemption succeeds after this
    /// commits, and the requests released under it and not yet redeemed become `revoked`.
    /// `None` when the owner has no such grant, or it is revoked already.
    fn revoke_bounded(&self, jti: &str, owner: &str, now: i64) -> Result<Option<RevokedBounded>>;
}

/// The approvers' event streams (the event id is the stream's id).
pub trait Events {
    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>>;
    /// Every owner's events after `after`, in id order, each with its owner (what the fan-out
    /// reads once for all streams).
    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, ApproverEvent)>>;
    fn last_event_id(&self, owner: &str) -> Result<i64>;
    /// The last event id of any owner.
    fn last_event_id_overall(&self) -> Result<i64>;
    /// Calls `wake` whenever another writer (another broker instance) may have added events,
    /// and after any gap in hearing of them. A store with one writer needs nothing here.
    fn watch(&self, _wake: std::sync::Arc<dyn Fn() + Send + Sync>) {}
    /// An event about an agent rather than a request (suspended, quarantined, …).
    fn agent_event(
        &self,
        owner: &str,
        agent: &str,
        kind: EventKind,
        detail: &str,
        now: i64,
    ) -> Result<ApproverEvent>;
}

/// Pairing codes and the approver registry.
pub trait Registry {
    fn add_pairing_code(&self, code_hash: &str, owner: &str, expires_at: i64) -> Result<()>;
    /// Whether a pairing code is known, unused and unexpired (nothing is written).
    fn pairing_code_valid(&self, code_hash: &str, now: i64) -> Result<bool>;
    /// Uses the pairing code and stores the approver (with `owner` set from the code) in one
    /// transaction; a device key or credential already registered leaves everything as it was.
    fn pair(&self, code_hash: &str, entry: &ApproverEntry, now: i64) -> Result<PairOutcome>;
    /// Replaces an approver's entry (enrolment, credential removal), keeping every device key
    /// and credential unique across approvers.
    fn update_approver(&self, entry: &ApproverEntry, now: i64) -> Result<UpdateOutcome>;
    /// Removes an approver and its keys and credentials; false if there was none.
    fn remove_approver(&self, id: &str) -> Result<bool>;
    fn approvers(&self) -> Result<Vec<ApproverEntry>>;
    /// A number that changes whenever any approver changes (so every instance reloads).
    fn registry_version(&self) -> Result<i64>;
}

/// What guards approver calls: request-proof ids seen, and the answers to idempotency keys.
pub trait Calls {
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
}

/// Agents' standing: suspension, and quarantine after repeated denials.
pub trait Agents {
    fn agent_state(&self, agent: &str) -> Result<AgentState>;
    fn set_suspended(&self, agent: &str, suspended: bool) -> Result<()>;
    /// Releases suspension and quarantine, and forgets past denials.
    fn release_agent(&self, agent: &str) -> Result<()>;
    /// Records a denial; quarantines the agent when `threshold` denials fall in `window`.
    /// Returns whether it was quarantined now.
    fn record_denial(&self, agent: &str, now: i64, window: i64, threshold: u32) -> Result<bool>;
}

/// Rate limits every instance shares.
pub trait Limits {
    /// Takes one token from the bucket `key` (refilled at `per_minute`, holding at most
    /// `burst`): `Some(Ok(()))` when taken, `Some(Err(seconds))` when empty, and `None` when
    /// this store keeps no shared buckets (one instance counts in memory).
    fn take_shared(
        &self,
        _key: &str,
        _burst: u32,
        _per_minute: u32,
    ) -> Result<Option<std::result::Result<(), u64>>> {
        Ok(None)
    }
}

/// The broker's storage: every part, from one backend.
pub trait Store:
    Requests
    + BoundedGrants
    + Events
    + Registry
    + Calls
    + Agents
    + Limits
    + ReplayStore
    + SignCounterStore
    + Send
    + Sync
    + Debug
{
}

impl<T> Store for T where
    T: Requests
        + BoundedGrants
        + Events
        + Registry
        + Calls
        + Agents
        + Limits
        + ReplayStore
        + SignCounterStore
        + Send
        + Sync
        + Debug
{
}

mod postgres;
mod sqlite;

pub use postgres::{CHANNEL, PgStore, SCHEMA_VERSION};
pub use sqlite::SqliteStore;
