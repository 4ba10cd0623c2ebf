//! Bounded grants: one approval for "this call and later calls like it", within limits.
//!
//! A bounded grant is a compact JWS like a single-use grant — EdDSA, the approver device's key,
//! a WebAuthn assertion over `SHA-256(JCS(claims without webauthn))` — with its own header
//! `typ: "countersign-bounded-grant+jwt"`, so neither kind can pass for the other. Its claims
//! are a single-use grant's, except:
//!
//! - `action_hash` and `txn` name the call the owner reviewed when approving (its first use);
//!   later calls are not compared with that hash but with `constraints`;
//! - `cnf` is required: only the gateway holding that key may present it;
//! - `exp - iat` may reach an hour by default ([`BOUNDED_DEFAULT_LIFETIME_SECS`]; a verifier may
//!   allow up to [`BOUNDED_MAX_LIFETIME_SECS`]);
//! - `constraints` says which later calls it covers. Every member is a constraint, and a verifier
//!   that meets a member it does not know refuses the grant (fail closed):
//!   - `uses` (required): how many calls it covers in all, the first one included;
//!   - `max`: `{argument: ceiling}` — the argument must be present, a decimal (JSON number or
//!     string) at most the ceiling (a decimal string);
//!   - `equal`: `{argument: value}` — the argument must be present and equal to the value;
//!   - `vary`: `[argument, …]` — the argument may take any value, or be absent.
//!
//!   A presented call with an argument named in none of them is refused, so every argument of a
//!   covered call is either held equal, capped, or explicitly left free by the owner. The agent
//!   (`act`), the tool (`authorization_details`), the owner (`sub`) and the gateway (`aud`) stay
//!   those of the reviewed call.
//!
//! The grant itself is checked here; its uses are counted by the broker that accepted it, in
//! the same transaction as each redemption.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::action::{ActorChain, AuthorizationDetail, PendingAction};
use crate::error::{MintError, ParseError, VerifyError};
use crate::grant::{AMR_HWK_USER, Confirmation, GrantSigner, Issuer};
use crate::hash::{ActionHash, canonical_sha256, random_b64url};
use crate::webauthn::WebAuthnAssertion;

/// The JOSE `typ` of a bounded grant.
pub const BOUNDED_GRANT_TYP: &str = "countersign-bounded-grant+jwt";
/// Default largest lifetime of a bounded grant, `exp - iat`, in seconds (one hour).
pub const BOUNDED_DEFAULT_LIFETIME_SECS: i64 = 3600;
/// The largest lifetime any verifier may allow for a bounded grant, in seconds (one day).
pub const BOUNDED_MAX_LIFETIME_SECS: i64 = 86_400;
/// The most uses one bounded grant may cover.
pub const MAX_USES: u32 = 1000;

/// Whether `token` says it is a bounded grant (its header's `typ`). Only a hint for choosing
/// the verification: the signature and everything else are checked by the verifier.
pub fn is_bounded(token: &str) -> bool {
    crate::jws::split(token, crate::verify::MAX_GRANT_BYTES).is_ok_and(|c| {
        c.check_header(BOUNDED_GRANT_TYP, crate::grant::GRANT_ALG)
            .is_ok()
    })
}

/// The constraint names this version knows.
pub const CONSTRAINTS: [&str; 4] = ["uses", "max", "equal", "vary"];

/// Which later calls a bounded grant covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Constraints {
    /// How many calls the grant covers, the reviewed one included (1 to [`MAX_USES`]).
    pub uses: u32,
    /// Ceilings on numeric arguments, as decimal strings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub max: BTreeMap<String, String>,
    /// Arguments that must keep these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub equal: BTreeMap<String, Value>,
    /// Arguments that may take any value.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub vary: BTreeSet<String>,
}

impl<'de> Deserialize<'de> for Constraints {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// Why a `constraints` claim is refused, before any call is compared with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintsError {
    /// A member this version does not know; holds its name.
    #[error("unknown constraint {0:?}")]
    Unknown(String),
    /// A member is missing, of the wrong shape, or out of range; holds why.
    #[error("constraints are malformed: {0}")]
    Malformed(String),
}

impl From<ConstraintsError> for VerifyError {
    fn from(e: ConstraintsError) -> Self {
        match e {
            ConstraintsError::Unknown(name) => Self::UnknownConstraint(name),
            ConstraintsError::Malformed(why) => {
                Self::Claims(ParseError::invalid("constraints", &why))
            }
        }
    }
}

impl Constraints {
    /// Reads a `constraints` claim strictly: an unknown member is refused by name.
    pub fn parse(value: &Value) -> Result<Self, ConstraintsError> {
        let malformed = |why: &str| ConstraintsError::Malformed(why.to_owned());
        let object = value
            .as_object()
            .ok_or_else(|| malformed("not a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !CONSTRAINTS.contains(&k.as_str())) {
            return Err(ConstraintsError::Unknown(unknown.clone()));
        }
        let uses = object
            .get("uses")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_USES).contains(n))
            .ok_or_else(|| ConstraintsError::Malformed(format!("uses must be 1 to {MAX_USES}")))?;
        let members = |name: &str| -> Result<Map<String, Value>, ConstraintsError> {
            match object.get(name) {
                None => Ok(Map::new()),
                Some(Value::Object(map)) => Ok(map.clone()),
                Some(_) => Err(ConstraintsError::Malformed(format!(
                    "{name} is not an object"
                ))),
            }
        };
        let mut max = BTreeMap::new();
        for (name, ceiling) in members("max")? {
            match ceiling {
                Value::String(s) if Decimal::parse(&s).is_some() => {
                    max.insert(name, s);
                }
                _ => {
                    return Err(ConstraintsError::Malformed(format!(
                        "the ceiling of {name:?} is not a decimal string"
                    )));
                }
            }
        }
        let equal: BTreeMap<String, Value> = members("equal")?.into_iter().collect();
        let mut vary = BTreeSet::new();
        match object.get("vary") {
            None => {}
            Some(Value::Array(names)) => {
                for name in names {
                    let name = name
                        .as_str()
                        .ok_or_else(|| malformed("vary holds a non-string"))?;
                    if !vary.insert(name.to_owned()) {
                        return Err(ConstraintsError::Malformed(format!(
                            "vary names {name:?} twice"
                        )));
                    }
                }
            }
            Some(_) => return Err(malformed("vary is not an array")),
        }
        let constraints = Self {
            uses,
            max,
            equal,
            vary,
        };
        if let Some(name) = constraints.named_twice() {
            return Err(ConstraintsError::Malformed(format!(
                "{name:?} is under more than one constraint"
            )));
        }
        Ok(constraints)
    }

    fn named_twice(&self) -> Option<&str> {
        let mut seen = BTreeSet::new();
        self.max
            .keys()
            .chain(self.equal.keys())
            .chain(&self.vary)
            .find(|name| !seen.insert(name.as_str()))
            .map(String::as_str)
    }

    /// Whether a call with these arguments is covered. The first refusal is returned.
    pub fn admit(&self, arguments: &Map<String, Value>) -> Result<(), VerifyError> {
        let refused = |constraint: &'static str, argument: &str| {
            Err(VerifyError::ConstraintViolated {
                constraint,
                argument: argument.to_owned(),
            })
        };
        for name in arguments.keys() {
            if !self.max.contains_key(name)
                && !self.equal.contains_key(name)
                && !self.vary.contains(name)
            {
                return refused("arguments", name);
            }
        }
        for (name, value) in &self.equal {
            if arguments.get(name) != Some(value) {
                return refused("equal", name);
            }
        }
        for (name, ceiling) in &self.max {
            let ceiling = Decimal::parse(ceiling);
            let presented = arguments.get(name).and_then(Decimal::of_value);
            match (presented, ceiling) {
                (Some(presented), Some(ceiling)) if presented <= ceiling => {}
                _ => return refused("max", name),
            }
        }
        Ok(())
    }
}

/// How the owner bounds a grant made from a review: every argument of the reviewed call that is
/// neither capped nor left free must stay equal to its reviewed value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// How many calls it covers, the reviewed one included.
    pub uses: u32,
    /// `exp - iat`, in seconds.
    pub lifetime_secs: i64,
    /// Ceilings on numeric arguments of the reviewed call, as decimal strings.
    pub max: BTreeMap<String, String>,
    /// Arguments of the reviewed call that may take any value later.
    pub vary: BTreeSet<String>,
}

impl Bounds {
    /// The constraints these bounds put on later calls like `pending`'s. Refuses a ceiling or a
    /// free argument the call does not have, a ceiling that is not a decimal or that the
    /// reviewed call itself exceeds, and a use count out of range.
    pub fn constraints(&self, pending: &PendingAction) -> Result<Constraints, MintError> {
        let arguments = &pending.context.arguments;
        fn bad<T>(why: String) -> Result<T, MintError> {
            Err(MintError::Bounds(why))
        }
        if !(1..=MAX_USES).contains(&self.uses) {
            return bad(format!("uses must be 1 to {MAX_USES}"));
        }
        for name in self.max.keys().chain(&self.vary) {
            if !arguments.contains_key(name) {
                return bad(format!("the call has no argument {name:?}"));
            }
        }
        let constraints = Constraints {
            uses: self.uses,
            max: self.max.clone(),
            equal: arguments
                .iter()
                .filter(|(name, _)| !self.max.contains_key(*name) && !self.vary.contains(*name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            vary: self.vary.clone(),
        };
        if let Some(name) = constraints.named_twice() {
            return bad(format!("{name:?} is both capped and free"));
        }
        for (name, ceiling) in &self.max {
            if Decimal::parse(ceiling).is_none() {
                return bad(format!("the ceiling of {name:?} is not a decimal"));
            }
            if arguments.get(name).and_then(Decimal::of_value).is_none() {
                return bad(format!("{name:?} is not a number in the reviewed call"));
            }
        }
        // The reviewed call is the grant's first use: it must be covered itself.
        constraints.admit(arguments).map_err(|e| {
            MintError::Bounds(format!("the reviewed call itself is not covered: {e}"))
        })?;
        Ok(constraints)
    }
}

/// Every claim of a bounded grant except `webauthn`: the object whose hash the authenticator
/// signs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundedClaims {
    /// The approver that minted it.
    pub iss: String,
    /// The approver's owner.
    pub sub: String,
    /// The one gateway that may redeem it.
    pub aud: String,
    /// The broker that accepted it.
    pub broker: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The grant's unique id; its uses are counted under it.
    pub jti: String,
    /// The id of the pending action the owner reviewed when approving.
    pub txn: String,
    /// The agent and its delegation chain; every covered call must come from exactly these.
    pub act: ActorChain,
    /// The gateway key that alone may present it.
    pub cnf: Confirmation,
    /// The tool, action name and gateway, as in a single-use grant.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// The action hash of the reviewed call.
    pub action_hash: ActionHash,
    /// Which later calls it covers.
    pub constraints: Constraints,
    /// RFC 8176 authentication methods of the approval.
    pub amr: Vec<String>,
}

/// All claims of a bounded grant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoundedGrantClaims {
    /// Every claim except `webauthn` (flattened into the same JSON object).
    #[serde(flatten)]
    pub approval: BoundedClaims,
    /// The WebAuthn assertion over `SHA-256(JCS(approval))`.
    pub webauthn: WebAuthnAssertion,
}

/// Claims ready for the authenticator: the first half of minting a bounded grant.
#[derive(Clone, Debug)]
pub struct BoundedDraft {
    claims: BoundedClaims,
    challenge: [u8; 32],
}

impl BoundedDraft {
    /// Builds the claims for approving `pending` and later calls like it within `bounds`, for
    /// the gateway key `cnf`, at `now`. `max_lifetime_secs` is the broker's cap: a longer
    /// lifetime is refused, never shortened.
    pub fn new(
        pending: &PendingAction,
        issuer: &Issuer,
        bounds: &Bounds,
        cnf: Confirmation,
        now: i64,
        max_lifetime_secs: i64,
    ) -> Result<Self, MintError> {
        if !pending.verify_hash() {
            return Err(MintError::ActionHashMismatch);
        }
        if pending.subject.id != issuer.owner {
            return Err(MintError::SubjectNotOwner);
        }
        let cap = max_lifetime_secs.min(BOUNDED_MAX_LIFETIME_SECS);
        if bounds.lifetime_secs <= 0 || bounds.lifetime_secs > cap {
            return Err(MintError::LifetimeTooLong {
                requested: bounds.lifetime_secs,
                cap,
            });
        }
        let constraints = bounds.constraints(pending)?;
        Self::from_claims(BoundedClaims {
            iss: issuer.approver_id.clone(),
            sub: issuer.owner.clone(),
            aud: pending.audience.clone(),
            broker: issuer.broker.clone(),
            iat: now,
            nbf: now,
            exp: now + bounds.lifetime_secs,
            jti: random_b64url::<16>(),
            txn: pending.id.clone(),
            act: pending.actor.to_act_claim(),
            cnf,
            authorization_details: pending.authorization_details.clone(),
            action_hash: pending.action_hash.clone(),
            constraints,
            amr: AMR_HWK_USER.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Wraps claims built elsewhere (the approver's outbox restores drafts this way).
    pub fn from_claims(claims: BoundedClaims) -> Result<Self, MintError> {
        let challenge = canonical_sha256(&claims)?;
        Ok(Self { claims, challenge })
    }

    /// The claims.
    pub fn claims(&self) -> &BoundedClaims {
        &self.claims
    }

    /// The challenge the authenticator must sign.
    pub fn challenge(&self) -> &[u8; 32] {
        &self.challenge
    }

    /// Embeds the assertion and signs the JWS with the device key. Refuses an assertion made
    /// over another challenge.
    pub fn sign(
        self,
        assertion: WebAuthnAssertion,
        signer: &dyn GrantSigner,
    ) -> Result<BoundedGrant, MintError> {
        let claims = BoundedGrantClaims {
            approval: self.claims,
            webauthn: assertion,
        };
        let token = crate::grant::sign_claims(
            BOUNDED_GRANT_TYP,
            &self.challenge,
            &claims.webauthn,
            &claims,
            signer,
        )?;
        Ok(BoundedGrant { token, claims })
    }
}

/// A minted bounded grant: the compact JWS and its claims.
#[derive(Clone, Debug)]
pub struct BoundedGrant {
    token: String,
    claims: BoundedGrantClaims,
}

impl BoundedGrant {
    /// The compact JWS.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The claims it carries.
    pub fn claims(&self) -> &BoundedGrantClaims {
        &self.claims
    }
}

/// An exact decimal: sign, integer digits without leading zeros, fraction digits without
/// trailing zeros. Exponents are not read (such a value is not admitted under a ceiling).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    int: String,
    frac: String,
}

impl Decimal {
    fn parse(s: &str) -> Option<Self> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || !all_digits(int)
            || !all_digits(frac)
            || (digits.contains('.') && frac.is_empty())
            || s.len() > 64
        {
            return None;
        }
        let int = int.trim_start_matches('0').to_owned();
        let frac = frac.trim_end_matches('0').to_owned();
        // -0 is 0.
        let negative = negative && !(int.is_empty() && frac.is_empty());
        Some(Self {
            negative,
            int,
            frac,
        })
    }

    fn of_value(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => Self::parse(&n.to_string()),
            Value::String(s) => Self::parse(s),
            _ => None,
        }
    }

    fn magnitude(&self, other: &Self) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.magnitude(other),
            (true, true) => other.magnitude(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_compare_exactly() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert!(d("5000.00") == d("5000"));
        assert!(d("4999.999") < d("5000"));
        assert!(d("10") > d("9.99"));
        assert!(d("-1") < d("0"));
        assert!(d("-10") < d("-9"));
        assert!(d("-0.0") == d("0"));
        assert!(d("007.50") == d("7.5"));
        for bad in ["", "-", "1.", ".5", "1e3", "+1", "1,0", " 1", "0x10", "NaN"] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Decimal::of_value(&json!(12.5)), Some(d("12.5")));
        assert_eq!(Decimal::of_value(&json!(1e300)), None);
        assert_eq!(Decimal::of_value(&json!(true)), None);
    }

    #[test]
    fn unknown_and_malformed_constraints_are_refused() {
        let unknown = Constraints::parse(&json!({"uses": 2, "not_after_5pm": true}));
        assert_eq!(
            unknown,
            Err(ConstraintsError::Unknown("not_after_5pm".into()))
        );
        for bad in [
            json!({}),
            json!({"uses": 0}),
            json!({"uses": MAX_USES + 1}),
            json!({"uses": "2"}),
            json!({"uses": 2, "max": {"amount": 5000}}),
            json!({"uses": 2, "max": {"amount": "5e3"}}),
            json!({"uses": 2, "vary": ["a", "a"]}),
            json!({"uses": 2, "vary": ["a"], "equal": {"a": 1}}),
            json!({"uses": 2, "equal": []}),
            json!([]),
        ] {
            assert!(
                matches!(
                    Constraints::parse(&bad),
                    Err(ConstraintsError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn calls_are_admitted_only_within_every_constraint() {
        let constraints = Constraints::parse(&json!({
            "uses": 3,
            "max": {"amount": "5000.00"},
            "equal": {"currency": "EUR"},
            "vary": ["order"]
        }))
        .unwrap();
        let args = |v: Value| v.as_object().unwrap().clone();
        let ok = |v: Value| constraints.admit(&args(v));
        assert!(ok(json!({"amount": "5000", "currency": "EUR", "order": "1"})).is_ok());
        assert!(ok(json!({"amount": 12.5, "currency": "EUR"})).is_ok());
        let violated = |v: Value, constraint, argument: &str| {
            assert_eq!(
                ok(v),
                Err(VerifyError::ConstraintViolated {
                    constraint,
                    argument: argument.into()
                })
            );
        };
        violated(
            json!({"amount": "5000.01", "currency": "EUR"}),
            "max",
            "amount",
        );
        violated(json!({"currency": "EUR"}), "max", "amount");
        violated(json!({"amount": "1e2", "currency": "EUR"}), "max", "amount");
        violated(
            json!({"amount": "10", "currency": "USD"}),
            "equal",
            "currency",
        );
        violated(json!({"amount": "10"}), "equal", "currency");
        violated(
            json!({"amount": "10", "currency": "EUR", "to": "x"}),
            "arguments",
            "to",
        );
    }
}
