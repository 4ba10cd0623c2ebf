//! Errors of the approver engine.

use crate::authn::AuthenticatorFailure;
use crate::history::ItemStatus;

/// An engine error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("CSV export: {0}")]
    Csv(#[from] csv::Error),
    #[error("no item {0:?} in the history")]
    UnknownItem(String),
    #[error("the history's hash chain is broken at entry {seq}: {reason}")]
    ChainBroken { seq: i64, reason: String },
    #[error(transparent)]
    Protocol(#[from] countersign_protocol::ParseError),
    #[error("item {item} is {status}, not pending")]
    NotPending { item: String, status: ItemStatus },
    #[error("item {0} shows something other than what its action_hash binds: refused")]
    HashMismatch(String),
    #[error(
        "item {item}: the grant the broker refused stays valid until {until} (Unix time); \
         approve again after that"
    )]
    GrantStillLive { item: String, until: i64 },
    #[error("these items cannot be approved in one batch: {0}")]
    BadBatch(String),
    #[error("these bounds cannot make a bounded grant: {0}")]
    BadBounds(String),
    #[error(
        "the gateway {0} has no key at its broker, so no bounded grant can be bound to it: \
         approve this call once instead"
    )]
    GatewayKeyMissing(String),
    #[error("a denial needs a reason")]
    ReasonRequired,
    #[error("the authenticator failed: {detail}")]
    Authenticator {
        failure: AuthenticatorFailure,
        detail: String,
    },
    #[error("cancelled at the authenticator")]
    Cancelled,
    #[error("no authenticator is enrolled: run `countersign authenticators add` first")]
    NoAuthenticator,
    #[error("no enrolled authenticator is called {0:?}")]
    UnknownAuthenticator(String),
    #[error("an authenticator called {0:?} is already enrolled")]
    DuplicateName(String),
    #[error("the last authenticator cannot be removed while brokers are paired")]
    LastAuthenticator,
    #[error("not a usable name: {0:?} (1 to 64 characters, no control characters)")]
    BadName(String),
    #[error("no broker {0} is paired")]
    UnknownBroker(String),
    #[error("broker {0} is already paired")]
    AlreadyPaired(String),
    #[error(
        "the broker answered with approver id {approver}, which {broker} already uses: a broker \
         claiming another's identity is refused"
    )]
    ApproverIdReused { approver: String, broker: String },
    #[error(
        "item {item} from {broker} has the id of an item from {other}: refused, so that no broker \
         can change another broker's item"
    )]
    ItemCollision {
        item: String,
        broker: String,
        other: String,
    },
    #[error(
        "the authenticator was not removed: {brokers} could not be told (it would still vouch \
         for grants there); try again when they are reachable"
    )]
    BrokersNotTold { brokers: String },
    #[error("no profile directory: set COUNTERSIGN_HOME (or --home), or HOME")]
    NoProfileDir,
    #[error("unknown export format {0:?}: jsonl or csv")]
    BadExportFormat(String),
    #[error(
        "unknown item status {0:?}: pending, approved, denied, expired, cancelled, redeemed, revoked or refused"
    )]
    BadStatus(String),
    #[error("not a usable broker address: {0}")]
    BadUrl(String),
    #[error("not a SHA-256 certificate fingerprint: {0:?} (64 hex digits, colons allowed)")]
    BadFingerprint(String),
    #[error("notification: {0}")]
    Notification(String),
    #[error("minting the grant failed: {0}")]
    Mint(#[from] countersign_protocol::MintError),
    #[error("the grant just made does not verify: {0}")]
    SelfCheck(String),
    #[error("broker unreachable: {0}")]
    Http(String),
    #[error("the broker refused ({status} {code}): {message}")]
    Broker {
        status: u16,
        code: String,
        message: String,
        body: String,
    },
    #[error("no usable keyring: {0}")]
    KeyringUnavailable(String),
    #[error("a keyring entry is damaged: {0}")]
    KeyringCorrupt(String),
}

impl Error {
    /// Stable code for the CLI's `--json` output and the app's IPC.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "history_database",
            Self::Json(_) => "history_json",
            Self::Io(_) | Self::Csv(_) => "io",
            Self::UnknownItem(_) => "unknown_item",
            Self::ChainBroken { .. } => "chain_broken",
            Self::Protocol(e) => e.code(),
            Self::NotPending { .. } => "not_pending",
            Self::HashMismatch(_) => "hash_mismatch",
            Self::GrantStillLive { .. } => "grant_still_live",
            Self::ReasonRequired => "reason_required",
            Self::BadBatch(_) => "bad_batch",
            Self::BadBounds(_) => "bad_bounds",
            Self::GatewayKeyMissing(_) => "gateway_key_missing",
            Self::Authenticator { failure, .. } => failure.code(),
            Self::Cancelled => "cancelled",
            Self::NoAuthenticator => "no_authenticator",
            Self::UnknownAuthenticator(_) => "unknown_authenticator",
            Self::DuplicateName(_) => "duplicate_name",
            Self::LastAuthenticator => "last_authenticator",
            Self::BadName(_) => "bad_name",
            Self::UnknownBroker(_) => "unknown_broker",
            Self::AlreadyPaired(_) => "already_paired",
            Self::ApproverIdReused { .. } => "approver_id_reused",
            Self::ItemCollision { .. } => "item_collision",
            Self::BrokersNotTold { .. } => "brokers_not_told",
            Self::NoProfileDir => "no_profile_dir",
            Self::BadExportFormat(_) => "bad_format",
            Self::BadStatus(_) => "bad_status",
            Self::BadUrl(_) => "bad_url",
            Self::BadFingerprint(_) => "bad_fingerprint",
            Self::Notification(_) => "notification",
            Self::Mint(_) => "mint",
            Self::SelfCheck(_) => "self_check",
            Self::Http(_) => "broker_unreachable",
            Self::Broker { .. } => "broker_refused",
            Self::KeyringUnavailable(_) => "keyring_unavailable",
            Self::KeyringCorrupt(_) => "keyring_corrupt",
        }
    }
}

impl Error {
    /// An authenticator ceremony that failed: `failure` says how (its code), `detail` in words.
    pub fn authenticator(failure: AuthenticatorFailure, detail: impl Into<String>) -> Self {
        Self::Authenticator {
            failure,
            detail: detail.into(),
        }
    }

    /// The same broker refusal again, for each decision of a batch it refused (other errors
    /// never reach a batch's decisions one by one, and are described in words).
    pub(crate) fn again(&self) -> Self {
        match self {
            Self::Broker {
                status,
                code,
                message,
                body,
            } => Self::Broker {
                status: *status,
                code: code.clone(),
                message: message.clone(),
                body: body.clone(),
            },
            other => Self::Http(other.to_string()),
        }
    }

    /// Whether trying again later may succeed: the broker could not be reached, was busy or
    /// failed itself. Other refusals are its final answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http(_) => true,
            Self::Broker { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Whether the broker refused one decision for good, for reasons of that decision or item
    /// (the grant expired or does not match, the counter went back, the item is unknown or
    /// gone). Refusals about the approver as a whole (401: a removed device key, a clock far
    /// off) are not: the queue stays as it is until they are fixed.
    pub fn refuses_item(&self) -> bool {
        matches!(
            self,
            Self::Broker {
                status: 400 | 403 | 404 | 409 | 410 | 413 | 422,
                ..
            }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
