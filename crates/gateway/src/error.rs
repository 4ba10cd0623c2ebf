//! Why the gateway refused or could not run a call. Every refusal fails closed and says why.

use thiserror::Error;

/// The gateway's errors, each with a stable code.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The broker could not be reached, or answered with something unreadable.
    #[error("the broker is unreachable: {0}")]
    BrokerUnreachable(String),
    /// The broker refused a request of the gateway's (`code` is the broker's).
    #[error("the broker refused ({code}): {message}")]
    BrokerRefused { code: String, message: String },
    /// Policy denied the call.
    #[error("denied by policy {policy}: {reason}")]
    Denied { policy: String, reason: String },
    /// The owner denied the call.
    #[error("the owner denied it: {0}")]
    OwnerDenied(String),
    /// Nobody decided before the request expired (or it was cancelled, or the grant revoked).
    #[error("{0}")]
    NotApproved(String),
    /// The owner has not decided yet.
    #[error("still waiting for the owner's approval of {id} (expires {expires_at})")]
    StillPending { id: String, expires_at: String },
    /// The grant failed local verification (`code` is the protocol's).
    #[error("the grant failed verification ({code}): {message}")]
    GrantRefused { code: &'static str, message: String },
    /// The input (an MCP message, a hook payload) is malformed or too large.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The upstream tool server failed, exited or did not answer in time.
    #[error("the tool server failed: {0}")]
    Upstream(String),
}

impl GatewayError {
    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            Self::Config(_) => "config",
            Self::BrokerUnreachable(_) => "broker_unreachable",
            Self::BrokerRefused { code, .. } => code,
            Self::Denied { .. } => "denied_by_policy",
            Self::OwnerDenied(_) => "denied_by_owner",
            Self::NotApproved(_) => "not_approved",
            Self::StillPending { .. } => "pending",
            Self::GrantRefused { code, .. } => code,
            Self::Malformed(_) => "malformed",
            Self::Upstream(_) => "upstream_failed",
        }
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
