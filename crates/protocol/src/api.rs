//! The broker's HTTP API bodies, shared by the broker, the approver and gateways.

use serde::{Deserialize, Serialize};

use crate::action::{
    ActionName, ActionRequest, Actor, Context, PendingAction, Resource, Status, Subject,
};
use crate::hash::canonical_sha256;
use crate::registry::{DeviceJwk, RegisteredCredential};
use crate::webauthn::WebAuthnAssertion;

/// Every error response: a stable machine code and a human sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// `POST /access/v1/evaluation`: an AuthZEN 1.0 evaluation request. `subject` must be the
/// agent's configured owner; `actor`, when present, must name the authenticated agent, and its
/// `act` chain is the agent's claim (shown to the owner as such).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    pub subject: Subject,
    pub action: ActionName,
    pub resource: Resource,
    pub context: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// AuthZEN 1.0 evaluation response, with Countersign's approval-required context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EvaluationResponse {
    pub decision: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<EvaluationContext>,
}

/// Why a decision is what it is, and for approval-required, where to wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EvaluationContext {
    /// `allow`, `deny` or `approval_required`.
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTicket>,
}

/// The three answers of policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    ApprovalRequired,
}

/// Where an agent waits for the owner's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalTicket {
    pub id: String,
    pub expires_at: String,
    /// Relative URL of the long-poll status endpoint.
    pub status_url: String,
    /// How many identical requests are merged into this one.
    pub merged: u32,
}

/// `GET /v1/requests/{id}`: where a held call stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestStatus {
    pub id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub expires_at: String,
}

/// `POST /v1/grants/redeem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    pub grant: String,
    pub action: ActionRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presenter_jkt: Option<String>,
}

/// A successful redemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RedeemResponse {
    pub status: String,
    pub txn: String,
    pub jti: String,
}

/// `POST /v1/pair`: a new device proves possession of its key (request proof) and presents the
/// one-time code and its first authenticator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub code: String,
    pub device_key: DeviceJwk,
    pub credential: RegisteredCredential,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The paired identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PairResponse {
    pub approver_id: String,
    pub owner: String,
}

/// `POST /v1/approver/credentials`: a further authenticator, vouched for by an assertion of an
/// enrolled one over [`enrollment_challenge`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub credential: RegisteredCredential,
    pub assertion: WebAuthnAssertion,
}

/// The challenge an enrolled authenticator signs to vouch for `credential` on `approver_id`:
/// `SHA-256(JCS({"approver", "credential", "type": "countersign-enroll"}))`.
pub fn enrollment_challenge(
    approver_id: &str,
    credential: &RegisteredCredential,
) -> Result<[u8; 32], crate::ParseError> {
    canonical_sha256(&serde_json::json!({
        "type": "countersign-enroll",
        "approver": approver_id,
        "credential": credential,
    }))
}

/// `POST /v1/approver/requests/{id}/decision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    Approve {
        grant: String,
    },
    Deny {
        reason: String,
        #[serde(default)]
        suspend_agent: bool,
    },
}

/// A pending action as an approver sees it, with what happened to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestView {
    pub pending: PendingAction,
    /// Current status (the embedded pending action keeps the status it was created with).
    pub status: Status,
    pub merged: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// `GET /v1/approver/requests`: one page of the owner's requests, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestList {
    pub requests: Vec<RequestView>,
    /// The newest event id at the time of listing: resume the stream after it.
    pub last_event_id: i64,
    /// The cursor of the next (older) page, when there is one: pass it as `before`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The most requests one listing page holds, and the default page size.
pub const MAX_PAGE: usize = 500;
/// The page size when the caller names none.
pub const DEFAULT_PAGE: usize = 100;

/// A 409 for a decision that came second: the error fields plus the request as it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Conflict {
    pub code: String,
    pub message: String,
    pub request: RequestView,
}

/// `{agent}` for `POST /v1/approver/agents/suspend` and `…/resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    pub agent: String,
}

/// One event on `GET /v1/approver/stream` (SSE `data:`; the SSE `id:` is [`Self::id`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApproverEvent {
    pub id: i64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new pending action.
    Pending,
    /// An identical request was merged into a pending one.
    Merged,
    Approved,
    Denied,
    Expired,
    Cancelled,
    /// The gateway consumed the grant.
    Redeemed,
    Revoked,
    AgentQuarantined,
    AgentSuspended,
    AgentResumed,
}
