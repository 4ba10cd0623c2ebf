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
    /// The stable machine-readable code of the refusal (for example `not_found` or `expired`).
    pub code: String,
    /// A sentence for people saying what went wrong; not meant to be parsed.
    pub message: String,
}

/// `POST /access/v1/evaluation`: an AuthZEN 1.0 evaluation request. `subject` must be the
/// agent's configured owner; `actor`, when present, must name the authenticated agent, and its
/// `act` chain is the agent's claim (shown to the owner as such).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// On whose behalf the agent acts: `type` must be `user` and `id` the agent's configured owner.
    pub subject: Subject,
    /// What is attempted (for MCP, `tools/call`).
    pub action: ActionName,
    /// What it is attempted on (for a tool, `type` `tool` and the tool name as `id`).
    pub resource: Resource,
    /// The agent's intent and the call's arguments, shown to the owner and hashed.
    pub context: Context,
    /// The agent and the delegation chain it claims; when present, `id` must be the authenticated
    /// agent. When absent, the broker uses the authenticated agent with no chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// AuthZEN 1.0 evaluation response, with Countersign's approval-required context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EvaluationResponse {
    /// `true` only when policy allows the call; `false` when it denies it or requires approval.
    pub decision: bool,
    /// Why, and for approval required, where to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<EvaluationContext>,
}

/// Why a decision is what it is, and for approval-required, where to wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EvaluationContext {
    /// `allow`, `deny` or `approval_required`.
    pub outcome: Outcome,
    /// The id of the policy that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The policy's reason for the decision, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Present when the outcome is approval required: the held request to wait on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalTicket>,
}

/// The three answers of policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Policy lets the call run.
    Allow,
    /// Policy refuses the call.
    Deny,
    /// The call is held until the owner approves or denies it.
    ApprovalRequired,
}

/// Where an agent waits for the owner's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalTicket {
    /// The held request's id; a grant for it carries it as `txn`.
    pub id: String,
    /// When the request expires if nobody decides, RFC 3339 UTC.
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
    /// The request's id.
    pub id: String,
    /// Where the request stands.
    pub status: Status,
    /// The grant (a compact JWS) for the gateway to redeem; present only while the status is
    /// `approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The reason the approver gave, when the request was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the request expires if nobody decides, RFC 3339 UTC.
    pub expires_at: String,
}

/// `POST /v1/grants/redeem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The grant, a compact JWS, as the agent passed it on.
    pub grant: String,
    /// The call the gateway is about to run; its action hash must be the grant's `action_hash`.
    pub action: ActionRequest,
    /// RFC 9449 JWK SHA-256 thumbprint of the key the agent proved it holds, if any; must equal the
    /// grant's `cnf.jkt` when the grant has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presenter_jkt: Option<String>,
}

/// A successful redemption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RedeemResponse {
    /// Always `consumed`.
    pub status: String,
    /// The id of the request the grant approved: its `txn` claim, or for a bounded grant the
    /// request released under it that this call is.
    pub txn: String,
    /// The id of the consumed grant (its `jti` claim).
    pub jti: String,
}

/// What became of a redeemed call, as the gateway that ran it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The tool ran and reported success.
    Succeeded,
    /// The tool ran (or was started) and reported an error, crashed or hung.
    Failed,
    /// The grant was spent but the call never reached the tool.
    NotRun,
}

impl RunOutcome {
    /// The wire name (`succeeded`, `failed`, `not_run`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::NotRun => "not_run",
        }
    }
}

/// The longest outcome detail a broker keeps, in bytes.
pub const MAX_OUTCOME_DETAIL: usize = 1024;

/// `POST /v1/grants/outcome`: the gateway that redeemed a grant says what became of the call.
/// Reported once; the first report stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OutcomeReport {
    /// The request the grant approved (its `txn` claim).
    pub txn: String,
    /// The redeemed grant's `jti`.
    pub jti: String,
    /// What became of the call.
    pub outcome: RunOutcome,
    /// A short explanation (the tool's error, say), at most [`MAX_OUTCOME_DETAIL`] bytes.
    /// Untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the gateway reported of a redeemed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReportedOutcome {
    /// What became of the call.
    pub outcome: RunOutcome,
    /// The gateway's short explanation. Untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `POST /v1/pair`: a new device proves possession of its key (request proof) and presents the
/// one-time code and its first authenticator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    /// The one-time pairing code the owner was given; case and separators do not matter.
    pub code: String,
    /// The device's Ed25519 public key; the request proof must be signed with it.
    pub device_key: DeviceJwk,
    /// The device's first WebAuthn credential.
    pub credential: RegisteredCredential,
    /// An optional name for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The paired identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PairResponse {
    /// The new approver's id, the `iss` of its grants.
    pub approver_id: String,
    /// The owner the pairing code was issued for, the `sub` of the approver's grants.
    pub owner: String,
}

/// `POST /v1/approver/credentials`: a further authenticator, vouched for by an assertion of an
/// enrolled one over [`enrollment_challenge`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The new WebAuthn credential to register for the calling approver.
    pub credential: RegisteredCredential,
    /// An assertion by a credential already enrolled for this approver, over `enrollment_challenge`
    /// of the new credential.
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
    /// Approve the request with a grant minted for it.
    Approve {
        /// The grant, a compact JWS whose `txn` is this request's id and whose `iss` is the
        /// deciding approver.
        grant: String,
    },
    /// Deny the request.
    Deny {
        /// Why, returned to the agent; 1 to 2000 bytes once surrounding whitespace is trimmed.
        reason: String,
        /// Also suspend the agent that asked (`false` when absent).
        #[serde(default)]
        suspend_agent: bool,
    },
}

/// `POST /v1/approver/decisions`: the grants of one batch ceremony (see
/// [`crate::grant::BatchDraft`]), each with the request it approves. The broker checks every
/// grant, and that they are exactly the batch the one assertion covers, before it records any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchDecision {
    /// Two to fifty approvals, one per request.
    pub approvals: Vec<BatchApproval>,
}

/// One request of a [`BatchDecision`] and its grant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchApproval {
    /// The request's id.
    pub id: String,
    /// Its grant, whose `txn` is `id`.
    pub grant: String,
}

/// The answer to a [`BatchDecision`]: each request in the order sent, as it now stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchDecided {
    /// One per approval sent, in its order.
    pub decided: Vec<BatchOutcome>,
}

/// What became of one approval of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchOutcome {
    /// `true`: this approval was recorded; `false`: another decision came first (or the
    /// request expired), and `request` shows it.
    pub recorded: bool,
    /// The request as it stands.
    pub request: RequestView,
}

/// A pending action as an approver sees it, with what happened to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestView {
    /// The pending action as the broker held it.
    pub pending: PendingAction,
    /// Current status (the embedded pending action keeps the status it was created with).
    pub status: Status,
    /// How many identical requests this one stands for, itself included.
    pub merged: u32,
    /// The reason the approver gave, when the request was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The id of the approver that approved or denied the request, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// What became of the call, once its gateway redeemed the grant and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ReportedOutcome>,
    /// The `jti` of the bounded grant that approved this request: the one the owner made from
    /// its review, or an earlier one that released it without a prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded_grant: Option<String>,
}

/// `GET /v1/approver/gateways`: the gateways, and the keys bounded grants are bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GatewayList {
    /// Every configured gateway, by audience.
    pub gateways: Vec<GatewayKey>,
}

/// A gateway as approvers need to know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GatewayKey {
    /// The audience it redeems for.
    pub audience: String,
    /// The RFC 7638 thumbprint of its Ed25519 key: a bounded grant for it carries this as
    /// `cnf.jkt`. Absent when the gateway has no key (it takes single-use grants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// A bounded grant as the broker holds it, with its uses counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BoundedGrantView {
    /// The grant's id (`jti`).
    pub jti: String,
    /// The request the owner reviewed when making it.
    pub txn: String,
    /// The agent it covers (SPIFFE ID).
    pub agent: String,
    /// The tool it covers.
    pub tool: String,
    /// The gateway that may redeem it.
    pub audience: String,
    /// The approver that made it.
    pub approver: String,
    /// How many calls it covers in all.
    pub uses: u32,
    /// How many it has covered so far (redeemed).
    pub used: u32,
    /// Calls released under it and not yet redeemed.
    pub released: u32,
    /// When it was made, Unix seconds.
    pub issued_at: i64,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// Whether the owner revoked it.
    pub revoked: bool,
    /// Its `constraints` claim, as signed.
    pub constraints: serde_json::Value,
}

/// `GET /v1/approver/bounded`: the owner's bounded grants that can still cover a call, newest
/// first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BoundedGrantList {
    /// Unexpired, unrevoked grants with uses left.
    pub grants: Vec<BoundedGrantView>,
}

/// `GET /v1/approver/requests`: one page of the owner's requests, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RequestList {
    /// The requests of this page, newest first.
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
    /// Always `already_decided`.
    pub code: String,
    /// A sentence naming the request's current status.
    pub message: String,
    /// The request as it stands.
    pub request: RequestView,
}

/// `{agent}` for `POST /v1/approver/agents/suspend` and `…/resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    /// The agent's id (its SPIFFE ID); it must be an agent of the calling approver's owner.
    pub agent: String,
}

/// One event on `GET /v1/approver/stream` (SSE `data:`; the SSE `id:` is [`Self::id`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApproverEvent {
    /// The event's id; ids increase, and a stream resumes after the last one seen.
    pub id: i64,
    /// What happened.
    pub kind: EventKind,
    /// The request the event is about, for request events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
    /// The agent the event is about, for agent events (quarantined, suspended, resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A short explanation, for agent events (for example `suspended by its owner`).
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
    /// An approver approved a pending request.
    Approved,
    /// An approver denied a pending request.
    Denied,
    /// A pending request expired before anyone decided.
    Expired,
    /// A request was cancelled.
    Cancelled,
    /// The gateway consumed the grant.
    Redeemed,
    /// The owner revoked an approved grant before it was redeemed.
    Revoked,
    /// The gateway reported what became of a redeemed call.
    Outcome,
    /// An agent was quarantined after repeated denials.
    AgentQuarantined,
    /// The owner suspended an agent.
    AgentSuspended,
    /// The owner released a suspended or quarantined agent.
    AgentResumed,
}
