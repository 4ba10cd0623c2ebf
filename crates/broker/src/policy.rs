//! Policy with Cedar: allow, deny, or approval required.
//!
//! A permit annotated `@approval("required")` holds the call for its owner; a plain permit lets
//! it run; a forbid (or no permit) refuses it. Policies see `context.intent`, `context.tool`,
//! `context.subject`, `context.arguments`, `context.data`, and `context.numbers`: every argument
//! that is a number (an integer, or a decimal string with up to four decimals) as a Cedar
//! `decimal`, so thresholds compare numbers, not text. When several permits apply, approval wins. A
//! policy that fails to evaluate (a malformed amount, say) never lets a call through unattended:
//! the call is held for approval, naming that policy.

use std::str::FromStr as _;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, Schema, ValidationMode, Validator,
};
use countersign_protocol::ActionRequest;
use countersign_protocol::api::Outcome;

/// The demo policy set, built in.
pub const DEMO_POLICIES: &str = include_str!("../policies/demo.cedar");
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

    /// Decides `request`. A request policy cannot express or evaluate is held for approval,
    /// never allowed.
    pub fn decide(&self, request: &ActionRequest) -> Verdict {
        self.evaluate(request).unwrap_or_else(|e| Verdict {
            outcome: Outcome::ApprovalRequired,
            policy_id: "policy-error".into(),
            reason: format!("policy could not evaluate this call, so it is held: {e}"),
        })
    }

    fn evaluate(&self, request: &ActionRequest) -> Result<Verdict, PolicyError> {
        let cedar = to_cedar(request)?;
        let response = self
            .authorizer
            .is_authorized(&cedar, &self.set, &Entities::empty());
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        let determining: Vec<&PolicyId> = response.diagnostics().reason().collect();
        if let Some(error) = errors.first() {
            return Ok(Verdict {
                outcome: Outcome::ApprovalRequired,
                policy_id: "policy-error".into(),
                reason: format!("a policy could not evaluate this call, so it is held: {error}"),
            });
        }
        let describe = |id: &PolicyId| {
            let name = self
                .set
                .annotation(id, "id")
                .unwrap_or(id.as_ref())
                .to_owned();
            let reason = self.set.annotation(id, "reason").unwrap_or("").to_owned();
            (name, reason)
        };
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

fn to_cedar(request: &ActionRequest) -> Result<Request, PolicyError> {
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
    let mut context = serde_json::json!({
        "intent": request.context.intent,
        "tool": request.resource.id,
        "subject": request.subject.id,
        "arguments": request.context.arguments,
        "numbers": numbers,
    });
    if let Some(data) = &request.context.data {
        context["data"] =
            serde_json::to_value(data).map_err(|e| PolicyError::Request(e.to_string()))?;
    }
    let context =
        Context::from_json_value(context, None).map_err(|e| PolicyError::Request(e.to_string()))?;
    Request::new(
        uid("Agent", request.actor.id.as_str())?,
        uid("Action", &request.action.name)?,
        uid("Tool", &request.resource.id)?,
        context,
        None,
    )
    .map_err(|e| PolicyError::Request(e.to_string()))
}
