//! Grant verification, in the order of the crate docs, failing closed at the first refusal.

use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq as _;

use crate::action::{ActionRequest, TOOL_CALL_TYPE};
use crate::clock::Clock;
use crate::error::{AssertionError, ParseError, VerifyError};
use crate::grant::{
    ApprovalClaims, GRANT_ALG, GRANT_TYP, GrantClaims, MAX_LIFETIME_SECS, MAX_SKEW_SECS,
};
use crate::hash::canonical_value_sha256;
use crate::json::{self, Limits};
use crate::jws::{self, HeaderRefusal, JwsError};
use crate::registry::ApproverRegistry;
use crate::replay::{ConsumeError, ReplayStore, SignCounterStore};
use crate::webauthn::{RelyingParty, WebAuthnAssertion, verify_assertion};

/// Largest accepted compact grant, in bytes.
pub const MAX_GRANT_BYTES: usize = 96 * 1024;

/// What a verifier is and tolerates.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// This verifier's identity; a grant's `aud` must equal it exactly.
    pub audience: String,
    /// The broker whose grants this verifier accepts (its URL); a grant's `broker` must equal
    /// it exactly.
    pub broker: String,
    /// The WebAuthn relying party assertions must be made for.
    pub relying_party: RelyingParty,
    /// Clock skew tolerated on `nbf`, `iat` and `exp`; at most [`MAX_SKEW_SECS`].
    pub max_skew_secs: i64,
    /// Largest `exp - iat`; at most [`MAX_LIFETIME_SECS`].
    pub max_lifetime_secs: i64,
}

impl VerifierConfig {
    /// The defaults for a verifier named `audience` that accepts the grants of `broker`.
    pub fn new(audience: impl Into<String>, broker: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            broker: broker.into(),
            relying_party: RelyingParty::countersign(),
            max_skew_secs: MAX_SKEW_SECS,
            max_lifetime_secs: MAX_LIFETIME_SECS,
        }
    }
}

/// What a gateway presents: the grant, the call it is about to run, and (when the agent proved
/// possession of a key) that key's RFC 9449 thumbprint.
#[derive(Clone, Copy, Debug)]
pub struct Presentation<'a> {
    /// The grant, a compact JWS.
    pub grant: &'a str,
    /// The call about to run: `{subject, actor, action, resource, context}`.
    pub action: &'a ActionRequest,
    /// The RFC 9449 JWK thumbprint of the key the presenter proved it holds, if any; it must equal
    /// `cnf.jkt` when the grant has one.
    pub presenter_jkt: Option<&'a str>,
}

/// A grant that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedGrant {
    /// The grant's claims, with its assertion.
    pub claims: GrantClaims,
    /// The id (base64url) of the registered credential that made the assertion.
    pub credential_id: String,
    /// The authenticator's sign counter from the assertion.
    pub sign_count: u32,
}

/// Verifies grants against a pinned registry, and redeems them once.
#[derive(Debug, Clone)]
pub struct GrantVerifier {
    config: VerifierConfig,
    registry: Arc<ApproverRegistry>,
    replay: Arc<dyn ReplayStore>,
    counters: Arc<dyn SignCounterStore>,
    clock: Arc<dyn Clock>,
}

impl GrantVerifier {
    /// A verifier. Skew and lifetime are clamped to the protocol's caps.
    pub fn new(
        mut config: VerifierConfig,
        registry: Arc<ApproverRegistry>,
        replay: Arc<dyn ReplayStore>,
        counters: Arc<dyn SignCounterStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        config.max_skew_secs = config.max_skew_secs.clamp(0, MAX_SKEW_SECS);
        config.max_lifetime_secs = config.max_lifetime_secs.clamp(1, MAX_LIFETIME_SECS);
        Self {
            config,
            registry,
            replay,
            counters,
            clock,
        }
    }

    /// Every check except consumption: for a dry run by a gateway.
    pub fn check(&self, presentation: &Presentation<'_>) -> Result<VerifiedGrant, VerifyError> {
        let verified = self.verify_at(presentation, self.clock.now(), true)?;
        if self.replay.is_revoked(&verified.claims.approval.jti)? {
            return Err(VerifyError::Revoked);
        }
        Ok(verified)
    }

    /// For the broker accepting a grant from its approver — the moment of the WebAuthn
    /// authentication, before any presenter exists: every check except consumption and the
    /// sender constraint, then the authenticator's sign counter is advanced atomically and must
    /// exceed the stored one (WebAuthn §7.2 step 22), or the grant is refused as coming from a
    /// possibly cloned authenticator.
    pub fn accept_issued(
        &self,
        grant: &str,
        action: &ActionRequest,
    ) -> Result<VerifiedGrant, VerifyError> {
        let presentation = Presentation {
            grant,
            action,
            presenter_jkt: None,
        };
        let verified = self.verify_at(&presentation, self.clock.now(), false)?;
        if self.replay.is_revoked(&verified.claims.approval.jti)? {
            return Err(VerifyError::Revoked);
        }
        let stored = self
            .counters
            .advance(&verified.credential_id, verified.sign_count)?;
        counter_advances(stored, verified.sign_count)?;
        Ok(verified)
    }

    /// Every check, then consumes the `jti` atomically: of concurrent redemptions of one grant,
    /// exactly one succeeds; the others get [`VerifyError::Replayed`]. Grants may be redeemed in
    /// any order: the sign counter was judged when the grant was accepted.
    pub fn redeem(&self, presentation: &Presentation<'_>) -> Result<VerifiedGrant, VerifyError> {
        let now = self.clock.now();
        let verified = self.verify_at(presentation, now, true)?;
        let claims = &verified.claims.approval;
        self.replay.consume(&claims.jti, claims.exp, now)?;
        Ok(verified)
    }

    fn verify_at(
        &self,
        presentation: &Presentation<'_>,
        now: i64,
        sender_constraint: bool,
    ) -> Result<VerifiedGrant, VerifyError> {
        let compact = jws::split(presentation.grant, MAX_GRANT_BYTES).map_err(|e| match e {
            JwsError::TooLarge(n) => VerifyError::Malformed(format!("over {n} bytes")),
            JwsError::NotCompact => VerifyError::Malformed("not three dot-separated parts".into()),
            other => VerifyError::Malformed(other.to_string()),
        })?;

        // 1–3. Header: exact typ, alg from the allowlist, key by kid from the pinned registry.
        // jku, x5u, jwk and x5c are never read.
        compact
            .check_header(GRANT_TYP, GRANT_ALG)
            .map_err(|refusal| match refusal {
                HeaderRefusal::WrongType => VerifyError::WrongType,
                HeaderRefusal::Algorithm(alg) => VerifyError::AlgorithmNotAllowed(alg),
                _ => VerifyError::Malformed("header has crit parameters".into()),
            })?;
        let kid = compact.kid();
        let (approver, key) = self
            .registry
            .key(kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_owned()))?;

        // 4. Signature over the JWS signing input.
        if !compact.verify_ed25519(key) {
            return Err(VerifyError::BadSignature);
        }

        // The payload, parsed strictly; the challenge is the hash of it without `webauthn`.
        let mut payload =
            payload_object(compact.payload(), Limits::GRANT).map_err(VerifyError::Claims)?;
        let webauthn = payload
            .remove("webauthn")
            .ok_or_else(|| VerifyError::Claims(ParseError::invalid("webauthn", "missing")))?;
        let payload = Value::Object(payload);
        let challenge = canonical_value_sha256(&payload).map_err(VerifyError::Claims)?;
        // The challenge is over the claims as received, so the schema check suffices here.
        let claims: ApprovalClaims = json::schema_only(&payload).map_err(VerifyError::Claims)?;
        let webauthn: WebAuthnAssertion =
            json::schema_only(&webauthn).map_err(VerifyError::Claims)?;

        // 5. Issuer is the approver that owns the key; subject its owner; audience this verifier.
        if claims.iss != approver.id {
            return Err(VerifyError::UnknownIssuer(claims.iss));
        }
        if claims.sub != approver.owner {
            return Err(VerifyError::WrongSubject);
        }
        if claims.aud != self.config.audience {
            return Err(VerifyError::WrongAudience(claims.aud));
        }
        if claims.broker != self.config.broker {
            return Err(VerifyError::WrongBroker(claims.broker));
        }

        // 6. Lifetime: iat ≤ nbf < exp, exp − iat within the cap, now within skew.
        self.check_times(&claims, now)?;

        // 7. The call presented is the call approved.
        let presented = presentation
            .action
            .action_hash()
            .map_err(VerifyError::Action)?;
        if presented != claims.action_hash {
            return Err(VerifyError::ActionHashMismatch);
        }
        if presentation.action.subject.id != claims.sub {
            return Err(VerifyError::SubjectMismatch);
        }
        if claims.act != presentation.action.actor.to_act_claim() {
            return Err(VerifyError::ActorMismatch);
        }
        let action = presentation.action;
        let describes_call = |d: &crate::action::AuthorizationDetail| {
            d.kind == TOOL_CALL_TYPE
                && d.identifier == action.resource.id
                && d.actions.contains(&action.action.name)
                && d.locations.contains(&claims.aud)
        };
        if claims.authorization_details.is_empty()
            || !claims.authorization_details.iter().all(describes_call)
        {
            return Err(VerifyError::DetailsMismatch);
        }

        // 8. A registered authenticator verified the human over exactly these claims.
        let asserted = verify_assertion(&webauthn, &challenge, &self.config.relying_party, |id| {
            approver.credentials.get(id)
        })?;

        // 9. Sender constraint.
        if let Some(cnf) = claims.cnf.as_ref().filter(|_| sender_constraint) {
            let matches = presentation
                .presenter_jkt
                .is_some_and(|jkt| bool::from(jkt.as_bytes().ct_eq(cnf.jkt.as_bytes())));
            if !matches {
                return Err(VerifyError::ConfirmationMismatch);
            }
        }

        Ok(VerifiedGrant {
            claims: GrantClaims {
                approval: claims,
                webauthn,
            },
            credential_id: asserted.credential_id,
            sign_count: asserted.sign_count,
        })
    }

    fn check_times(&self, claims: &ApprovalClaims, now: i64) -> Result<(), VerifyError> {
        let skew = self.config.max_skew_secs;
        if claims.nbf < claims.iat
            || claims.exp <= claims.nbf
            || claims.exp - claims.iat > self.config.max_lifetime_secs
        {
            return Err(VerifyError::BadLifetime);
        }
        if now < claims.nbf - skew || now < claims.iat - skew {
            return Err(VerifyError::NotYetValid);
        }
        if now >= claims.exp + skew {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }
}

fn payload_object(
    bytes: Option<Vec<u8>>,
    limits: Limits,
) -> Result<serde_json::Map<String, Value>, ParseError> {
    let bytes = bytes.ok_or_else(|| ParseError::Json("not base64url".into()))?;
    match json::parse_value(&bytes, limits)? {
        Value::Object(map) => Ok(map),
        _ => Err(ParseError::Schema("not a JSON object".into())),
    }
}

/// WebAuthn §7.2 step 22: when either counter is non-zero, the presented one must be greater.
/// (The one place this rule lives: the broker's enrolment uses it too.)
pub fn counter_advances(stored: u32, presented: u32) -> Result<(), VerifyError> {
    if (stored != 0 || presented != 0) && presented <= stored {
        return Err(AssertionError::CounterRegressed { stored, presented }.into());
    }
    Ok(())
}

impl From<ConsumeError> for VerifyError {
    fn from(e: ConsumeError) -> Self {
        match e {
            ConsumeError::AlreadyConsumed => Self::Replayed,
            ConsumeError::Revoked => Self::Revoked,
            ConsumeError::Unavailable(reason) => Self::StoreUnavailable(reason),
        }
    }
}

/// Why a grant the approver just minted failed its own check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintCheckError {
    /// The approver's own device key and credential do not form a registry entry.
    #[error("the approver's own keys do not form a registry entry: {0}")]
    Registry(ParseError),
    /// A gateway would refuse the grant.
    #[error("a gateway would refuse it: {0}")]
    Refused(VerifyError),
}

/// Checks a grant an approver just minted exactly as a gateway will: the whole verification
/// order, against a registry holding this approver alone (`device` and `credential`), with
/// nothing spent and no counter seen, at `now`, for the pending action's audience and the
/// issuer's broker. An approver runs it before sending anything, so a grant that would be
/// refused (a clock or encoding fault, a credential the registry would not take) never leaves.
pub fn check_minted(
    grant: &crate::Grant,
    pending: &crate::PendingAction,
    issuer: &crate::grant::Issuer,
    device: crate::registry::DeviceJwk,
    credential: crate::registry::RegisteredCredential,
    now: i64,
) -> Result<VerifiedGrant, MintCheckError> {
    let registry = ApproverRegistry::new(crate::registry::RegistryDocument {
        approvers: vec![crate::registry::ApproverEntry {
            id: issuer.approver_id.clone(),
            owner: issuer.owner.clone(),
            device_keys: vec![device],
            credentials: vec![credential],
        }],
    })
    .map_err(MintCheckError::Registry)?;
    GrantVerifier::new(
        VerifierConfig::new(pending.audience.clone(), issuer.broker.clone()),
        Arc::new(registry),
        Arc::new(crate::replay::MemoryReplayStore::new()),
        Arc::new(crate::replay::MemoryCounterStore::new()),
        Arc::new(crate::clock::ManualClock::new(now)),
    )
    .check(&Presentation {
        grant: grant.token(),
        action: &pending.request(),
        presenter_jkt: None,
    })
    .map_err(MintCheckError::Refused)
}
