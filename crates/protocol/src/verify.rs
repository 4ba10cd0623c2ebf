//! Grant verification, in the order of the crate docs, failing closed at the first refusal.

use std::sync::Arc;

use serde_json::Value;
use subtle::ConstantTimeEq as _;

use crate::action::{ActionRequest, TOOL_CALL_TYPE};
use crate::bounded::{
    BOUNDED_DEFAULT_LIFETIME_SECS, BOUNDED_GRANT_TYP, BOUNDED_MAX_LIFETIME_SECS, BoundedClaims,
    BoundedGrantClaims, Constraints,
};
use crate::clock::Clock;
use crate::error::{AssertionError, ParseError, VerifyError};
use crate::grant::{
    ApprovalClaims, Confirmation, GRANT_ALG, GRANT_TYP, GrantClaims, MAX_LIFETIME_SECS,
    MAX_SKEW_SECS,
};
use crate::hash::{b64url, canonical_sha256, canonical_value_sha256};
use crate::json::{self, Limits};
use crate::jws::{self, HeaderRefusal, JwsError};
use crate::registry::{Approver, ApproverRegistry};
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
    /// Largest `exp - iat` of a bounded grant; at most [`BOUNDED_MAX_LIFETIME_SECS`].
    pub max_bounded_lifetime_secs: i64,
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
            max_bounded_lifetime_secs: BOUNDED_DEFAULT_LIFETIME_SECS,
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

impl<'a> Presentation<'a> {
    /// A grant and its action before any presenter exists (an approver's decision arriving).
    pub fn unpresented(grant: &'a str, action: &'a ActionRequest) -> Self {
        Self {
            grant,
            action,
            presenter_jkt: None,
        }
    }
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

/// A bounded grant that passed every check (its uses are the broker's to count).
#[derive(Clone, Debug)]
pub struct VerifiedBoundedGrant {
    /// The grant's claims, with its assertion.
    pub claims: BoundedGrantClaims,
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
        config.max_bounded_lifetime_secs = config
            .max_bounded_lifetime_secs
            .clamp(1, BOUNDED_MAX_LIFETIME_SECS);
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
        self.not_revoked(&verified.claims.approval.jti)?;
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
        let presentation = Presentation::unpresented(grant, action);
        let verified = self.verify_at(&presentation, self.clock.now(), false)?;
        self.not_revoked(&verified.claims.approval.jti)?;
        self.advance_counter(&verified.credential_id, verified.sign_count)?;
        Ok(verified)
    }

    /// For the broker accepting the grants of one batch ceremony from its approver, each with
    /// the action it approves: every check of [`Self::accept_issued`] on each grant; all of
    /// them carry the same assertion and the same `batch`, which lists exactly these grants;
    /// then the authenticator's sign counter is advanced once for the ceremony. All or none:
    /// the first refusal is returned and nothing is advanced.
    pub fn accept_batch(
        &self,
        grants: &[(&str, &ActionRequest)],
    ) -> Result<Vec<VerifiedGrant>, VerifyError> {
        let now = self.clock.now();
        let mut verified = Vec::with_capacity(grants.len());
        for (grant, action) in grants {
            let presentation = Presentation::unpresented(grant, action);
            let one = self.verify_at(&presentation, now, false)?;
            self.not_revoked(&one.claims.approval.jti)?;
            verified.push(one);
        }
        let first = verified.first().ok_or(VerifyError::NotInBatch)?;
        let batch = first.claims.batch.as_ref().ok_or(VerifyError::NotInBatch)?;
        let same_ceremony = verified.iter().all(|v| {
            v.claims.batch.as_ref() == Some(batch) && v.claims.webauthn == first.claims.webauthn
        });
        // Each grant's own hash is in the list (checked when it was opened), the grants are
        // distinct actions, and there are as many as the list holds: exactly these grants.
        let txns: std::collections::BTreeSet<&str> = verified
            .iter()
            .map(|v| v.claims.approval.txn.as_str())
            .collect();
        if !same_ceremony || txns.len() != verified.len() || batch.len() != verified.len() {
            return Err(VerifyError::NotInBatch);
        }
        self.advance_counter(&first.credential_id, first.sign_count)?;
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
        let opened = self.open(presentation.grant, GRANT_TYP)?;
        // The challenge is over the claims as received, so the schema check suffices here.
        let claims: ApprovalClaims =
            json::schema_only(&opened.payload).map_err(VerifyError::Claims)?;
        let common = common_of!(claims);
        self.check_parties(opened.approver, &common)?;
        check_times(
            &common,
            now,
            self.config.max_skew_secs,
            self.config.max_lifetime_secs,
        )?;

        // 7. The call presented is the call approved.
        let presented = presentation
            .action
            .action_hash()
            .map_err(VerifyError::Action)?;
        if presented != claims.action_hash {
            return Err(VerifyError::ActionHashMismatch);
        }
        check_call(&common, presentation.action)?;

        // 8–9. The human, then the sender constraint.
        let asserted = self.check_assertion(&opened)?;
        if let Some(cnf) = claims.cnf.as_ref().filter(|_| sender_constraint) {
            check_confirmation(cnf, presentation.presenter_jkt)?;
        }
        Ok(VerifiedGrant {
            claims: GrantClaims {
                approval: claims,
                webauthn: opened.webauthn,
                batch: opened.batch,
            },
            credential_id: asserted.credential_id,
            sign_count: asserted.sign_count,
        })
    }

    /// Every check of a bounded grant against a call it is presented for, in the order of a
    /// single-use grant's, except that the call is held to the grant's `constraints` instead of
    /// its `action_hash`, and `cnf` is required and must match the presenter. Uses are not
    /// counted here: the broker that accepted the grant counts them at redemption.
    pub fn check_bounded(
        &self,
        presentation: &Presentation<'_>,
    ) -> Result<VerifiedBoundedGrant, VerifyError> {
        let verified = self.verify_bounded(presentation, self.clock.now(), true)?;
        self.not_revoked(&verified.claims.approval.jti)?;
        Ok(verified)
    }

    /// For the broker accepting a bounded grant from its approver with the call the owner
    /// reviewed: every check but the sender constraint (no presenter exists yet), the reviewed
    /// call's hash equal to `action_hash`, then the sign counter advanced as for
    /// [`Self::accept_issued`].
    pub fn accept_bounded(
        &self,
        grant: &str,
        action: &ActionRequest,
    ) -> Result<VerifiedBoundedGrant, VerifyError> {
        let presentation = Presentation::unpresented(grant, action);
        let verified = self.verify_bounded(&presentation, self.clock.now(), false)?;
        let presented = action.action_hash().map_err(VerifyError::Action)?;
        if presented != verified.claims.approval.action_hash {
            return Err(VerifyError::ActionHashMismatch);
        }
        self.not_revoked(&verified.claims.approval.jti)?;
        self.advance_counter(&verified.credential_id, verified.sign_count)?;
        Ok(verified)
    }

    fn verify_bounded(
        &self,
        presentation: &Presentation<'_>,
        now: i64,
        sender_constraint: bool,
    ) -> Result<VerifiedBoundedGrant, VerifyError> {
        let opened = self.open(presentation.grant, BOUNDED_GRANT_TYP)?;
        // Fail closed on a constraint this verifier does not know, by name, before anything
        // else is read from the claims.
        let constraints = opened
            .payload
            .get("constraints")
            .ok_or_else(|| VerifyError::Claims(ParseError::invalid("constraints", "missing")))?;
        Constraints::parse(constraints)?;
        let claims: BoundedClaims =
            json::schema_only(&opened.payload).map_err(VerifyError::Claims)?;
        let common = common_of!(claims);
        self.check_parties(opened.approver, &common)?;
        check_times(
            &common,
            now,
            self.config.max_skew_secs,
            self.config.max_bounded_lifetime_secs,
        )?;
        presentation
            .action
            .action_hash()
            .map_err(VerifyError::Action)?;
        check_call(&common, presentation.action)?;
        claims
            .constraints
            .admit(&presentation.action.context.arguments)?;
        let asserted = self.check_assertion(&opened)?;
        if sender_constraint {
            check_confirmation(&claims.cnf, presentation.presenter_jkt)?;
        }
        Ok(VerifiedBoundedGrant {
            claims: BoundedGrantClaims {
                approval: claims,
                webauthn: opened.webauthn,
            },
            credential_id: asserted.credential_id,
            sign_count: asserted.sign_count,
        })
    }

    /// Steps 1–4, for a grant of type `typ`: header, key, signature; then the payload read
    /// strictly and split into the claims and the assertion over their hash.
    fn open(&self, token: &str, typ: &str) -> Result<Opened<'_>, VerifyError> {
        let compact = jws::split(token, MAX_GRANT_BYTES).map_err(|e| match e {
            JwsError::TooLarge(n) => VerifyError::Malformed(format!("over {n} bytes")),
            JwsError::NotCompact => VerifyError::Malformed("not three dot-separated parts".into()),
            other => VerifyError::Malformed(other.to_string()),
        })?;

        // 1–3. Header: exact typ, alg from the allowlist, key by kid from the pinned registry.
        // jku, x5u, jwk and x5c are never read.
        compact
            .check_header(typ, GRANT_ALG)
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
        // A grant approved in a batch: the assertion is over the list of every grant's claims
        // hash, and this grant's must be in it.
        let batch = match payload.remove("batch") {
            None => None,
            Some(_) if typ != GRANT_TYP => {
                return Err(VerifyError::Claims(ParseError::invalid(
                    "batch",
                    "only single-use grants are approved in batches",
                )));
            }
            Some(batch) => Some(batch_members(&batch).ok_or(VerifyError::NotInBatch)?),
        };
        let payload = Value::Object(payload);
        let claims_hash = canonical_value_sha256(&payload).map_err(VerifyError::Claims)?;
        let challenge = match &batch {
            None => claims_hash,
            Some(members) => {
                if !members.contains(&b64url(&claims_hash)) {
                    return Err(VerifyError::NotInBatch);
                }
                canonical_sha256(members).map_err(VerifyError::Claims)?
            }
        };
        let webauthn: WebAuthnAssertion =
            json::schema_only(&webauthn).map_err(VerifyError::Claims)?;
        Ok(Opened {
            approver,
            payload,
            challenge,
            webauthn,
            batch,
        })
    }

    fn not_revoked(&self, jti: &str) -> Result<(), VerifyError> {
        if self.replay.is_revoked(jti)? {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }

    /// WebAuthn §7.2 step 22, atomically: the stored counter moves to `sign_count`, which must
    /// exceed it.
    fn advance_counter(&self, credential_id: &str, sign_count: u32) -> Result<(), VerifyError> {
        let stored = self.counters.advance(credential_id, sign_count)?;
        counter_advances(stored, sign_count)
    }

    /// Step 5: the issuer is the approver that owns the key, the subject its owner, the audience
    /// this verifier and the broker this verifier's.
    fn check_parties(&self, approver: &Approver, claims: &Common<'_>) -> Result<(), VerifyError> {
        if claims.iss != approver.id {
            return Err(VerifyError::UnknownIssuer(claims.iss.to_owned()));
        }
        if claims.sub != approver.owner {
            return Err(VerifyError::WrongSubject);
        }
        if claims.aud != self.config.audience {
            return Err(VerifyError::WrongAudience(claims.aud.to_owned()));
        }
        if claims.broker != self.config.broker {
            return Err(VerifyError::WrongBroker(claims.broker.to_owned()));
        }
        Ok(())
    }

    /// Step 8: a registered authenticator verified the human over exactly these claims.
    fn check_assertion(
        &self,
        opened: &Opened<'_>,
    ) -> Result<crate::webauthn::VerifiedAssertion, VerifyError> {
        let approver = opened.approver;
        Ok(verify_assertion(
            &opened.webauthn,
            &opened.challenge,
            &self.config.relying_party,
            |id| approver.credentials.get(id),
        )?)
    }
}

/// A grant's JWS after steps 1–4: its approver, its claims without `webauthn` (as received), the
/// hash of those, and the assertion.
struct Opened<'r> {
    approver: &'r Approver,
    payload: Value,
    challenge: [u8; 32],
    webauthn: WebAuthnAssertion,
    batch: Option<Vec<String>>,
}

/// A `batch` member: 2 to 50 distinct base64url SHA-256 hashes, or `None`.
fn batch_members(batch: &Value) -> Option<Vec<String>> {
    let members = batch.as_array()?;
    if !crate::grant::BATCH_SIZES.contains(&members.len()) {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    members
        .iter()
        .map(|m| {
            let m = m.as_str()?;
            let decoded = crate::hash::b64url_decode(m)?;
            (decoded.len() == 32 && seen.insert(m)).then(|| m.to_owned())
        })
        .collect()
}

/// The shared claims of either kind of grant (their fields have the same names).
macro_rules! common_of {
    ($claims:expr) => {
        Common {
            iss: &$claims.iss,
            sub: &$claims.sub,
            aud: &$claims.aud,
            broker: &$claims.broker,
            iat: $claims.iat,
            nbf: $claims.nbf,
            exp: $claims.exp,
            act: &$claims.act,
            details: &$claims.authorization_details,
        }
    };
}
use common_of;

/// The claims both kinds of grant share, as the shared checks read them.
struct Common<'c> {
    iss: &'c str,
    sub: &'c str,
    aud: &'c str,
    broker: &'c str,
    iat: i64,
    nbf: i64,
    exp: i64,
    act: &'c crate::action::ActorChain,
    details: &'c [crate::action::AuthorizationDetail],
}

/// Step 6, the lifetime: iat ≤ nbf < exp, exp − iat within `cap`, now within `skew`.
fn check_times(claims: &Common<'_>, now: i64, skew: i64, cap: i64) -> Result<(), VerifyError> {
    if claims.nbf < claims.iat || claims.exp <= claims.nbf || claims.exp - claims.iat > cap {
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

/// Step 7: the presented call is for the grant's owner, from its agent chain, of the tool,
/// action and gateway its `authorization_details` name.
fn check_call(claims: &Common<'_>, action: &ActionRequest) -> Result<(), VerifyError> {
    if action.subject.id != claims.sub {
        return Err(VerifyError::SubjectMismatch);
    }
    if *claims.act != action.actor.to_act_claim() {
        return Err(VerifyError::ActorMismatch);
    }
    let describes_call = |d: &crate::action::AuthorizationDetail| {
        d.kind == TOOL_CALL_TYPE
            && d.identifier == action.resource.id
            && d.actions.contains(&action.action.name)
            && d.locations.iter().any(|l| l == claims.aud)
    };
    if claims.details.is_empty() || !claims.details.iter().all(describes_call) {
        return Err(VerifyError::DetailsMismatch);
    }
    Ok(())
}

/// Step 9, the sender constraint: the presenter proved it holds the key `cnf` names.
fn check_confirmation(cnf: &Confirmation, presenter_jkt: Option<&str>) -> Result<(), VerifyError> {
    let matches =
        presenter_jkt.is_some_and(|jkt| bool::from(jkt.as_bytes().ct_eq(cnf.jkt.as_bytes())));
    if matches {
        Ok(())
    } else {
        Err(VerifyError::ConfirmationMismatch)
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
    minted_verifier(pending, issuer, device, credential, now)?
        .check(&Presentation {
            grant: grant.token(),
            action: &pending.request(),
            presenter_jkt: None,
        })
        .map_err(MintCheckError::Refused)
}

/// [`check_minted`] for a bounded grant: checked against the reviewed call as its gateway will
/// check it (the gateway presenting the key the grant names), with the largest lifetime any
/// verifier allows — the broker holds it to its own maximum when it accepts it.
pub fn check_minted_bounded(
    grant: &crate::BoundedGrant,
    pending: &crate::PendingAction,
    issuer: &crate::grant::Issuer,
    device: crate::registry::DeviceJwk,
    credential: crate::registry::RegisteredCredential,
    now: i64,
) -> Result<VerifiedBoundedGrant, MintCheckError> {
    let mut verifier = minted_verifier(pending, issuer, device, credential, now)?;
    verifier.config.max_bounded_lifetime_secs = BOUNDED_MAX_LIFETIME_SECS;
    verifier
        .check_bounded(&Presentation {
            grant: grant.token(),
            action: &pending.request(),
            presenter_jkt: Some(&grant.claims().approval.cnf.jkt),
        })
        .map_err(MintCheckError::Refused)
}

/// A verifier for `pending`'s audience and the issuer's broker that knows this approver alone,
/// has spent nothing and seen no counter, at `now`.
fn minted_verifier(
    pending: &crate::PendingAction,
    issuer: &crate::grant::Issuer,
    device: crate::registry::DeviceJwk,
    credential: crate::registry::RegisteredCredential,
    now: i64,
) -> Result<GrantVerifier, MintCheckError> {
    let registry = ApproverRegistry::new(crate::registry::RegistryDocument {
        approvers: vec![crate::registry::ApproverEntry {
            id: issuer.approver_id.clone(),
            owner: issuer.owner.clone(),
            device_keys: vec![device],
            credentials: vec![credential],
        }],
    })
    .map_err(MintCheckError::Registry)?;
    Ok(GrantVerifier::new(
        VerifierConfig::new(pending.audience.clone(), issuer.broker.clone()),
        Arc::new(registry),
        Arc::new(crate::replay::MemoryReplayStore::new()),
        Arc::new(crate::replay::MemoryCounterStore::new()),
        Arc::new(crate::clock::ManualClock::new(now)),
    ))
}
