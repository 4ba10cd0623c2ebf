//! Policy with Cedar: allow, deny, or approval required.
//!
//! A permit annotated `@approval("required")` holds the call for its owner; a plain permit lets
//! it run; a forbid (or no permit) refuses it. Policies see `context.intent`, `context.tool`
//! (the tool's canonical name), `context.subject`, `context.arguments`, `context.numbers` (every
//! argument that is a number — an integer, or a decimal string with up to four decimals — as a
//! Cedar `decimal`, so thresholds compare numbers, not text) and `context.catalog`: what the
//! broker's tool catalog says of the tool (`listed`, `classification`, and `domain` and `risk`
//! when known). Never what the agent says about itself: its claimed data classes and delegation
//! chain are shown to the owner, not given to policy.
//!
//! Failing closed, in the right direction: a satisfied `forbid` denies whatever else fails to
//! evaluate, and a `forbid` that fails to evaluate denies too. A `permit` that fails to evaluate
//! (a malformed amount, say) never lets a call through unattended: the call is held for
//! approval, naming that policy.

use std::str::FromStr as _;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, Schema, ValidationMode, Validator,
};
use countersign_protocol::ActionRequest;
use countersign_protocol::action::{ToolFacts, canonical_tool_name};
use countersign_protocol::api::Outcome;

/// The demo policy set, built in (a `demo = true` broker without a policy file runs it).
pub const DEMO_POLICIES: &str = include_str!("../policies/demo.cedar");
/// A starting point for real deployments: default-deny, nothing permitted yet.
pub const TEMPLATE_POLICIES: &str = include_str!("../policies/template.cedar");
/// The schema policies are checked against.
pub const SCHEMA: &str = include_str!("../policies/schema.cedarschema");

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policies do not parse: {0}")]
    Parse(String),
    #[error("policies do not validate against the schema:\n{0}")]
    Invalid(String),
    #[error("request cannot be expressed for Cedar: {0}")]
    Request(String),
}

/// What policy decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub policy_id: String,
    pub reason: String,
}

/// A loaded, validated policy set.
#[derive(Debug)]
pub struct Policies {
    set: PolicySet,
    authorizer: Authorizer,
}

impl Policies {
    /// Parses and validates `text` against [`SCHEMA`].
    pub fn load(text: &str) -> Result<Self, PolicyError> {
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(format!("{e:?}")))?;
        check(&set)?;
        Ok(Self {
            set,
            authorizer: Authorizer::new(),
        })
    }

    /// The built-in demo policies.
    pub fn demo() -> Result<Self, PolicyError> {
        Self::load(DEMO_POLICIES)
    }

    /// Decides `request`, with the broker's catalog facts for its tool (`None`: not listed).
    /// A request policy cannot express is denied; see the module docs for evaluation errors.
    pub fn decide(&self, request: &ActionRequest, catalog: Option<&ToolFacts>) -> Verdict {
        self.evaluate(request, catalog).unwrap_or_else(|e| Verdict {
            outcome: Outcome::Deny,
            policy_id: "policy-error".into(),
            reason: format!("policy cannot evaluate this call, so it is refused: {e}"),
        })
    }

    fn evaluate(
        &self,
        request: &ActionRequest,
        catalog: Option<&ToolFacts>,
    ) -> Result<Verdict, PolicyError> {
        let cedar = to_cedar(request, catalog)?;
        let response = self
            .authorizer
            .is_authorized(&cedar, &self.set, &Entities::empty());
        let determining: Vec<&PolicyId> = response.diagnostics().reason().collect();
        let describe = |id: &PolicyId| {
            let name = self
                .set
                .annotation(id, "id")
                .unwrap_or(id.as_ref())
                .to_owned();
            let reason = self.set.annotation(id, "reason").unwrap_or("").to_owned();
            (name, reason)
        };
        let is_forbid = |id: &PolicyId| {
            self.set
                .policy(id)
                .is_none_or(|p| p.effect() == Effect::Forbid)
        };
        // 1. A satisfied forbid denies, whatever else failed to evaluate.
        if response.decision() == Decision::Deny
            && let Some(id) = determining.iter().find(|id| is_forbid(id))
        {
            let (policy_id, reason) = describe(id);
            return Ok(Verdict {
                outcome: Outcome::Deny,
                policy_id,
                reason,
            });
        }
        // 2. A forbid that failed to evaluate denies; 3. a permit that failed holds.
        let mut held_by_error = None;
        for error in response.diagnostics().errors() {
            let id = match error {
                AuthorizationError::PolicyEvaluationError(e) => e.policy_id(),
            };
            if is_forbid(id) {
                let (policy_id, _) = describe(id);
                return Ok(Verdict {
                    outcome: Outcome::Deny,
                    reason: format!(
                        "policy {policy_id} forbids calls like this and could not evaluate this \
                         one, so it is refused: {error}"
                    ),
                    policy_id,
                });
            }
            held_by_error.get_or_insert_with(|| error.to_string());
        }
        if let Some(error) = held_by_error {
            return Ok(Verdict {
                outcome: Outcome::ApprovalRequired,
                policy_id: "policy-error".into(),
                reason: format!("a policy could not evaluate this call, so it is held: {error}"),
            });
        }
        match response.decision() {
            Decision::Deny => {
                let (policy_id, reason) = determining
                    .first()
                    .map(|id| describe(id))
                    .unwrap_or_else(|| {
                        ("default-deny".into(), "no policy permits this call".into())
                    });
                Ok(Verdict {
                    outcome: Outcome::Deny,
                    policy_id,
                    reason,
                })
            }
            Decision::Allow => {
                let approval = determining
                    .iter()
                    .find(|id| self.set.annotation(id, "approval") == Some("required"));
                let (outcome, id) = match approval {
                    Some(id) => (Outcome::ApprovalRequired, *id),
                    None => (
                        Outcome::Allow,
                        determining.first().copied().ok_or_else(|| {
                            PolicyError::Request("allowed without a determining policy".into())
                        })?,
                    ),
                };
                let (policy_id, reason) = describe(id);
                Ok(Verdict {
                    outcome,
                    policy_id,
                    reason,
                })
            }
        }
    }
}

/// Validates `set` against [`SCHEMA`] in strict mode.
pub fn check(set: &PolicySet) -> Result<(), PolicyError> {
    let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA)
        .map_err(|e| PolicyError::Parse(format!("schema: {e:?}")))?;
    let result = Validator::new(schema).validate(set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let messages: Vec<String> = result
        .validation_errors()
        .map(|e| format!("  - {e}"))
        .collect();
    Err(PolicyError::Invalid(messages.join("\n")))
}

/// The Cedar `decimal` spelling of an argument that is a number: an integer, or a string of
/// digits with at most four decimals ("5000", "5000.00"). Anything else is not a number to
/// policy (and policies should treat a missing number as needing approval).
fn decimal_literal(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
        _ => return None,
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, "0"));
    let digits = int.strip_prefix('-').unwrap_or(int);
    let ok = !digits.is_empty()
        && digits.len() <= 14
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !frac.is_empty()
        && frac.len() <= 4
        && frac.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| format!("{int}.{frac}"))
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| PolicyError::Request(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn to_cedar(request: &ActionRequest, catalog: Option<&ToolFacts>) -> Result<Request, PolicyError> {
    let numbers: serde_json::Map<String, serde_json::Value> = request
        .context
        .arguments
        .iter()
        .filter_map(|(name, value)| {
            decimal_literal(value).map(|d| {
                (
                    name.clone(),
                    serde_json::json!({"__extn": {"fn": "decimal", "arg": d}}),
                )
            })
        })
        .collect();
    let tool = canonical_tool_name(&request.resource.id);
    let mut facts = serde_json::json!({
        "listed": catalog.is_some(),
        "classification": catalog.map(|c| c.classification.clone()).unwrap_or_default(),
    });
    if let Some(domain) = catalog.and_then(|c| c.domain.as_ref()) {
        facts["domain"] = serde_json::Value::String(domain.clone());
    }
    if let Some(risk) = catalog.and_then(|c| c.risk) {
        facts["risk"] = serde_json::Value::String(risk.as_str().to_owned());
    }
    let context = serde_json::json!({
        "intent": request.context.intent,
        "tool": tool,
        "subject": request.subject.id,
        "arguments": request.context.arguments,
        "numbers": numbers,
        "catalog": facts,
    });
    let context =
        Context::from_json_value(context, None).map_err(|e| PolicyError::Request(e.to_string()))?;
    Request::new(
        uid("Agent", request.actor.id.as_str())?,
        uid("Action", &request.action.name)?,
        uid("Tool", &tool)?,
        context,
        None,
    )
    .map_err(|e| PolicyError::Request(e.to_string()))
}
