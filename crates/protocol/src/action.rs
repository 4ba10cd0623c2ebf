//! The pending action: what an agent wants to do, as the broker routes it to the owner.
//!
//! Shapes follow AuthZEN Authorization API 1.0 (`subject`, `action`, `resource`, `context`)
//! plus `actor` (the authenticated agent and its RFC 8693 delegation chain), and RFC 9396
//! `authorization_details` for display and for the grant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ParseError;
use crate::hash::{ActionHash, canonical_sha256};
use crate::json::{self, Limits};
use crate::spiffe::SpiffeId;
pub use crate::timestamp::Timestamp;

/// The one RFC 9396 `authorization_details` type Countersign issues and accepts.
pub const TOOL_CALL_TYPE: &str = "https://countersign.dev/tool-call";

const MAX_ID: usize = 256;
const MAX_TEXT: usize = 4096;
/// Longest tool name (MCP's own limit).
const MAX_TOOL_NAME: usize = 128;
const MAX_CHAIN: usize = 8;
const MAX_DETAILS: usize = 8;

/// The human (or account) on whose behalf the agent acts. AuthZEN `subject`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The subject's type (`type` on the wire), not blank, at most 256 bytes; the broker accepts
    /// only `user`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The subject's id, not blank, at most 256 bytes; a grant covers the action only when this is
    /// the grant's `sub`.
    pub id: String,
    /// Further AuthZEN attributes of the subject, free-form; shown to the owner and hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// The agent that asked, authenticated by the broker, with who delegated to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The agent's SPIFFE ID; the broker requires it to be the authenticated agent.
    pub id: SpiffeId,
    /// The agent that delegated to this one, and so on (RFC 8693 `act`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActorChain>,
}

/// One link of an RFC 8693 `act` chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ActorChain {
    /// The SPIFFE ID of the agent at this link.
    pub sub: SpiffeId,
    /// The next link: the agent that delegated to this one, if any. A chain has at most 8 links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<ActorChain>>,
}

impl ActorChain {
    /// The chain as a list, nearest first.
    pub fn links(&self) -> Vec<&SpiffeId> {
        let mut out = vec![&self.sub];
        let mut next = self.act.as_deref();
        while let Some(link) = next {
            out.push(&link.sub);
            next = link.act.as_deref();
        }
        out
    }
}

impl Actor {
    /// The RFC 8693 `act` claim of a grant for this actor: the agent first, then its delegators.
    pub fn to_act_claim(&self) -> ActorChain {
        ActorChain {
            sub: self.id.clone(),
            act: self.act.clone().map(Box::new),
        }
    }
}

/// What is attempted. AuthZEN `action`; for MCP, `tools/call`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ActionName {
    /// The action's name, not blank, at most 256 bytes (for MCP, `tools/call`).
    pub name: String,
    /// Further AuthZEN attributes of the action, free-form; shown to the owner and hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// What it is attempted on. AuthZEN `resource`; for MCP, `{type: "tool", id: <tool name>}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The resource's type (`type` on the wire), not blank, at most 256 bytes; `tool` makes `id` a
    /// tool name.
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource's id, not blank, at most 256 bytes; for a `tool`, its name (see [`tool_name`]).
    pub id: String,
    /// Further AuthZEN attributes of the resource, free-form; shown to the owner and hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// Why and with what. Every member is shown to the owner, and every member is hashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The agent's own account of what it is doing. Untrusted text.
    pub intent: String,
    /// The tool call's arguments exactly as the tool will receive them.
    pub arguments: Map<String, Value>,
    /// The data the agent says the call touches: its own claim, not the broker's catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataTouched>,
    /// What the tool's server says about the tool (MCP tool annotations), passed on by the
    /// gateway: the server's own claims, which nothing verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// MCP tool annotations (`title`, `readOnlyHint`, `destructiveHint`, `idempotentHint`,
/// `openWorldHint`), as the tool's server declares them. Hints, never guarantees: a server may
/// call a destructive tool read-only. Shown to the owner as the server's unverified claims.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// The tool's display title, at most 256 bytes. Untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The server says the tool changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// The server says the tool may destroy or overwrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// The server says calling it twice with the same arguments does nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// The server says the tool reaches the world outside (the web, other people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

impl ToolAnnotations {
    /// Each claim as a line the owner reads, in a fixed order.
    pub fn claims(&self) -> Vec<String> {
        let hint = |name: &str, value: Option<bool>| {
            value.map(|v| format!("{name}: {}", if v { "yes" } else { "no" }))
        };
        self.title
            .as_ref()
            .map(|t| format!("title: {t}"))
            .into_iter()
            .chain(hint("read-only", self.read_only_hint))
            .chain(hint("destructive", self.destructive_hint))
            .chain(hint("idempotent", self.idempotent_hint))
            .chain(hint("open world", self.open_world_hint))
            .collect()
    }
}

/// The data the call touches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DataTouched {
    /// The data domain, not blank, at most 256 bytes.
    pub domain: String,
    /// The data classes, each not blank, at most 256 bytes.
    pub classification: Vec<String>,
}

/// The part of a pending action that a grant binds: `{subject, actor, action, resource,
/// context}`. A gateway presents exactly this for the call it is about to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// On whose behalf the agent acts.
    pub subject: Subject,
    /// The agent that asked, with its delegation chain.
    pub actor: Actor,
    /// What is attempted.
    pub action: ActionName,
    /// What it is attempted on.
    pub resource: Resource,
    /// Why and with what.
    pub context: Context,
}

impl ActionRequest {
    /// Parses a presented action strictly (see [`crate::json`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let request: Self = json::from_slice(bytes, Limits::ACTION)?;
        request.validate()?;
        Ok(request)
    }

    /// `b64url(SHA-256(JCS({subject, actor, action, resource, context})))`.
    pub fn action_hash(&self) -> Result<ActionHash, ParseError> {
        Ok(ActionHash::from_digest(&canonical_sha256(self)?))
    }

    /// Checks every field rule (lengths, chain depth) of a request built in code.
    pub fn validate(&self) -> Result<(), ParseError> {
        text("subject.type", &self.subject.kind, MAX_ID)?;
        text("subject.id", &self.subject.id, MAX_ID)?;
        text("action.name", &self.action.name, MAX_ID)?;
        text("resource.type", &self.resource.kind, MAX_ID)?;
        text("resource.id", &self.resource.id, MAX_ID)?;
        if self.resource.kind == "tool" {
            tool_name(&self.resource.id)?;
        }
        text("context.intent", &self.context.intent, MAX_TEXT)?;
        if let Some(title) = self
            .context
            .annotations
            .as_ref()
            .and_then(|a| a.title.as_ref())
        {
            text("context.annotations.title", title, MAX_ID)?;
        }
        if let Some(data) = &self.context.data {
            text("context.data.domain", &data.domain, MAX_ID)?;
            for class in &data.classification {
                text("context.data.classification", class, MAX_ID)?;
            }
        }
        if let Some(chain) = &self.actor.act
            && chain.links().len() > MAX_CHAIN
        {
            return Err(ParseError::invalid(
                "actor.act",
                "delegation chain longer than 8",
            ));
        }
        Ok(())
    }
}

/// Where a pending action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Waiting for the owner's decision.
    Pending,
    /// Approved: the broker accepted a grant for it, not yet redeemed.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Nobody decided before `expires_at`.
    Expired,
    /// Cancelled; no further decision can be taken.
    Cancelled,
    /// The gateway redeemed the grant.
    Redeemed,
    /// The owner revoked the grant before it was redeemed.
    Revoked,
}

impl Status {
    /// The wire name (`"pending"`, `"approved"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Redeemed => "redeemed",
            Self::Revoked => "revoked",
        }
    }

    /// Whether no further decision can be taken.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved)
    }
}

/// An RFC 9396 authorization details object of type [`TOOL_CALL_TYPE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthorizationDetail {
    /// Always [`TOOL_CALL_TYPE`] (`type` on the wire).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the call may run: the pending action's audience, which a verifier requires to be its
    /// own.
    pub locations: Vec<String>,
    /// The action names allowed: the request's `action.name`.
    pub actions: Vec<String>,
    /// The tool's data classes as the broker's catalog lists them, when it lists any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatypes: Option<Vec<String>>,
    /// The tool: the request's `resource.id` (not blank, at most 256 bytes).
    pub identifier: String,
}

impl AuthorizationDetail {
    /// The details object for a tool call at `audience`. Its `datatypes` are the broker's
    /// catalog classification of the tool, never what the agent claims.
    pub fn tool_call(audience: &str, request: &ActionRequest, catalog: Option<&ToolFacts>) -> Self {
        Self {
            kind: TOOL_CALL_TYPE.to_owned(),
            locations: vec![audience.to_owned()],
            actions: vec![request.action.name.clone()],
            datatypes: catalog
                .filter(|c| !c.classification.is_empty())
                .map(|c| c.classification.clone()),
            identifier: request.resource.id.clone(),
        }
    }

    pub(crate) fn validate(details: &[Self]) -> Result<(), ParseError> {
        if details.is_empty() || details.len() > MAX_DETAILS {
            return Err(ParseError::invalid(
                "authorization_details",
                "1 to 8 objects",
            ));
        }
        for d in details {
            if d.kind != TOOL_CALL_TYPE {
                return Err(ParseError::invalid(
                    "authorization_details.type",
                    format!("unknown type {:?}", d.kind),
                ));
            }
            text("authorization_details.identifier", &d.identifier, MAX_ID)?;
        }
        Ok(())
    }
}

/// How the broker knows the delegation chain in `actor.act`. The broker's own statement, not
/// bound by `action_hash` (the chain itself is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Delegation {
    /// The agent wrote the chain into its request and nothing verified it: shown to the owner
    /// as the agent's claim. Every chain is this today.
    #[default]
    ClaimedByAgent,
    /// The broker verified the chain from a credential of its own (an RFC 8693 actor token).
    VerifiedByBroker,
}

/// How much harm a tool can do, as the broker's tool catalog rates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Low risk.
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
    /// Critical risk.
    Critical,
}

impl Risk {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// What the broker's tool catalog (its configuration, not the agent) says of a tool: the data
/// it touches and how risky it is. Policy decides on these, never on the agent's own claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolFacts {
    /// The data domain the tool touches, not blank, at most 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The data classes the tool touches: at most 8, each not blank, at most 256 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classification: Vec<String>,
    /// How much harm the tool can do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

impl ToolFacts {
    fn validate(&self) -> Result<(), ParseError> {
        if let Some(domain) = &self.domain {
            text("catalog.domain", domain, MAX_ID)?;
        }
        if self.classification.len() > MAX_DETAILS {
            return Err(ParseError::invalid("catalog.classification", "more than 8"));
        }
        for class in &self.classification {
            text("catalog.classification", class, MAX_ID)?;
        }
        Ok(())
    }
}

/// The policy that held the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// The policy's id, not blank, at most 256 bytes.
    pub id: String,
    /// Why the policy held the call, in words; not blank, at most 4096 bytes.
    pub reason: String,
}

/// A held tool call, as the broker sends it to the owner's approvers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PendingAction {
    /// The pending action's id, not blank, at most 256 bytes; a grant for it carries it as `txn`.
    pub id: String,
    /// When the broker held the call.
    pub created_at: Timestamp,
    /// When the pending action expires if nobody decides; after `created_at`.
    pub expires_at: Timestamp,
    /// The status when the pending action was created (`pending` when the broker builds it).
    pub status: Status,
    /// The one gateway that may redeem a grant for this action.
    pub audience: String,
    /// On whose behalf the agent acts (bound by `action_hash`).
    pub subject: Subject,
    /// The agent that asked, with its delegation chain (bound by `action_hash`).
    pub actor: Actor,
    /// What is attempted (bound by `action_hash`).
    pub action: ActionName,
    /// What it is attempted on (bound by `action_hash`).
    pub resource: Resource,
    /// Why and with what (bound by `action_hash`).
    pub context: Context,
    /// The RFC 9396 details a grant for this action carries: 1 to 8 objects of type
    /// [`TOOL_CALL_TYPE`].
    pub authorization_details: Vec<AuthorizationDetail>,
    /// `b64url(SHA-256(JCS({subject, actor, action, resource, context})))` of the fields above; no
    /// grant is minted for an item whose hash does not match what it shows.
    pub action_hash: ActionHash,
    /// The policy that held the call.
    pub policy: PolicyRef,
    /// How the broker knows `actor.act`: claimed by the agent (the default) or verified.
    #[serde(default)]
    pub delegation: Delegation,
    /// The broker's catalog entry for the tool, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<ToolFacts>,
}

/// The fields of a new pending action that the broker chooses.
#[derive(Clone, Debug)]
pub struct PendingParts {
    /// The pending action's id, not blank, at most 256 bytes.
    pub id: String,
    /// When the broker held the call.
    pub created_at: Timestamp,
    /// When the pending action expires if nobody decides; must be after `created_at`.
    pub expires_at: Timestamp,
    /// The one gateway that may redeem a grant: an absolute http(s) URL without user info or
    /// fragment, at most 256 bytes.
    pub audience: String,
    /// The policy that held the call.
    pub policy: PolicyRef,
    /// How the broker knows the delegation chain.
    pub delegation: Delegation,
    /// The broker's catalog entry for the tool, if any; its classification becomes the details'
    /// `datatypes`.
    pub catalog: Option<ToolFacts>,
}

impl PendingAction {
    /// Builds a pending action for `request`, computing its details and hash.
    pub fn new(parts: PendingParts, request: ActionRequest) -> Result<Self, ParseError> {
        let action_hash = request.action_hash()?;
        let authorization_details = vec![AuthorizationDetail::tool_call(
            &parts.audience,
            &request,
            parts.catalog.as_ref(),
        )];
        let ActionRequest {
            subject,
            actor,
            action,
            resource,
            context,
        } = request;
        let pending = Self {
            id: parts.id,
            created_at: parts.created_at,
            expires_at: parts.expires_at,
            status: Status::Pending,
            audience: parts.audience,
            subject,
            actor,
            action,
            resource,
            context,
            authorization_details,
            action_hash,
            policy: parts.policy,
            delegation: parts.delegation,
            catalog: parts.catalog,
        };
        pending.validate()?;
        Ok(pending)
    }

    /// Parses a pending action strictly and checks every field; the hash is not checked here
    /// (see [`Self::verify_hash`]) so that a mismatching item can still be shown as refused.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let pending: Self = json::from_slice(bytes, Limits::ACTION)?;
        pending.validate()?;
        Ok(pending)
    }

    /// The bound part, `{subject, actor, action, resource, context}`.
    pub fn request(&self) -> ActionRequest {
        ActionRequest {
            subject: self.subject.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context: self.context.clone(),
        }
    }

    /// Recomputes the action hash from the displayed fields.
    pub fn computed_hash(&self) -> Result<ActionHash, ParseError> {
        #[derive(Serialize)]
        struct Bound<'a> {
            subject: &'a Subject,
            actor: &'a Actor,
            action: &'a ActionName,
            resource: &'a Resource,
            context: &'a Context,
        }
        let bound = Bound {
            subject: &self.subject,
            actor: &self.actor,
            action: &self.action,
            resource: &self.resource,
            context: &self.context,
        };
        Ok(ActionHash::from_digest(&canonical_sha256(&bound)?))
    }

    /// Whether `action_hash` is the hash of what this item shows.
    pub fn verify_hash(&self) -> bool {
        self.computed_hash().is_ok_and(|h| h == self.action_hash)
    }

    fn validate(&self) -> Result<(), ParseError> {
        text("id", &self.id, MAX_ID)?;
        if self.expires_at.unix() <= self.created_at.unix() {
            return Err(ParseError::invalid("expires_at", "not after created_at"));
        }
        audience(&self.audience)?;
        text("policy.id", &self.policy.id, MAX_ID)?;
        text("policy.reason", &self.policy.reason, MAX_TEXT)?;
        AuthorizationDetail::validate(&self.authorization_details)?;
        if let Some(catalog) = &self.catalog {
            catalog.validate()?;
        }
        self.request().validate()
    }
}

/// Checks that `aud` is an absolute http(s) URL without fragment or user info.
pub(crate) fn audience(aud: &str) -> Result<(), ParseError> {
    let url = url::Url::parse(aud).map_err(|e| ParseError::invalid("audience", e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http")
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.host().is_none()
        || aud.len() > MAX_ID
    {
        return Err(ParseError::invalid(
            "audience",
            format!("{aud:?} is not an http(s) URL"),
        ));
    }
    Ok(())
}

/// Checks a tool name: 1 to 128 characters of `A–Z a–z 0–9 _ . / -` (MCP's tool-name
/// alphabet, plus `/` between a server and its tool). Nothing else, so that no two spellings
/// that look alike, or that a tool server might treat alike, can slip past a policy.
pub fn tool_name(name: &str) -> Result<(), ParseError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-');
    if name.is_empty() || name.len() > MAX_TOOL_NAME || !name.bytes().all(ok) {
        return Err(ParseError::invalid(
            "resource.id",
            format!("{name:?} is not a tool name (1 to 128 of A-Z a-z 0-9 _ . / -)"),
        ));
    }
    Ok(())
}

/// The one form tool names are matched in (policy, the tool catalog, gateway routing): ASCII
/// lowercase, so `github/Repos.delete` is `github/repos.delete` to every rule.
pub fn canonical_tool_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), ParseError> {
    if value.trim().is_empty() {
        return Err(ParseError::invalid(field, "empty"));
    }
    if value.len() > max {
        return Err(ParseError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(())
}
