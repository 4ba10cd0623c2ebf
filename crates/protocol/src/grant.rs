//! Grant claims and minting.
//!
//! A grant is a compact JWS (RFC 7515) with header `{"alg":"EdDSA","kid":…,"typ":
//! "countersign-grant+jwt"}`, signed with the approver device's Ed25519 key, whose payload holds
//! the claims below plus `webauthn`: an assertion over
//! `SHA-256(JCS(claims without webauthn))`.

use std::fmt;

use ed25519_dalek::Signer as _;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::action::{ActorChain, AuthorizationDetail, PendingAction};
use crate::error::{MintError, ParseError};
use crate::hash::{ActionHash, b64url, canonical_sha256, random_b64url};
use crate::registry::DeviceJwk;
use crate::webauthn::WebAuthnAssertion;

/// The JOSE `typ` of a grant (RFC 8725 §3.11 explicit typing).
pub const GRANT_TYP: &str = "countersign-grant+jwt";
/// The one JWS algorithm of a grant: EdDSA (RFC 8037) over Ed25519. RFC 9864 names the same
/// thing `Ed25519`; grants keep `EdDSA`, which every JOSE library reads.
pub const GRANT_ALG: &str = "EdDSA";
/// Default and largest grant lifetime, `exp - iat`, in seconds.
pub const MAX_LIFETIME_SECS: i64 = 120;
/// Largest clock difference a verifier tolerates, in seconds.
pub const MAX_SKEW_SECS: i64 = 60;
/// `amr` of a grant approved with a hardware-bound authenticator and user verification
/// (RFC 8176 `hwk`, `user`).
pub const AMR_HWK_USER: [&str; 2] = ["hwk", "user"];

/// RFC 7800 confirmation: the grant may be presented only by the holder of this key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// RFC 9449 JWK SHA-256 thumbprint of the presenter's key.
    pub jkt: String,
}

/// Every claim of a grant except `webauthn`: the object whose hash the authenticator signs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalClaims {
    /// The id of the approver that minted the grant; a verifier requires it to be the approver
    /// that owns the signing key.
    pub iss: String,
    /// The approver's owner; the approved action's `subject.id` must equal it.
    pub sub: String,
    /// The one gateway that may redeem the grant (the pending action's `audience`); a verifier
    /// requires its own audience exactly.
    pub aud: String,
    /// The broker that held the call and accepted this grant (its URL, as the approver paired
    /// with it). A verifier accepts only the grants of its own broker.
    pub broker: String,
    /// Issued at, in Unix seconds.
    pub iat: i64,
    /// Not before, in Unix seconds; at least `iat` and before `exp`.
    pub nbf: i64,
    /// Expiry, in Unix seconds; `exp - iat` is at most [`MAX_LIFETIME_SECS`].
    pub exp: i64,
    /// The grant's unique id (16 random bytes, base64url), consumed on redemption so the grant is
    /// used once.
    pub jti: String,
    /// The id of the pending action this grant approves.
    pub txn: String,
    /// The RFC 8693 `act` chain: the agent first, then those that delegated to it; it must match
    /// the presented actor.
    pub act: ActorChain,
    /// RFC 7800 confirmation, when the grant may be presented only by the holder of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The RFC 9396 details of the approved call: at least one, and each must name the presented
    /// tool, action name and this `aud`.
    pub authorization_details: Vec<AuthorizationDetail>,
    /// The action hash of the approved call; it must equal the hash of the presented call.
    pub action_hash: ActionHash,
    /// RFC 8176 authentication methods of the approval ([`AMR_HWK_USER`] by default).
    pub amr: Vec<String>,
}

impl ApprovalClaims {
    /// The WebAuthn challenge for these claims: `SHA-256(JCS(claims))`.
    pub fn challenge(&self) -> Result<[u8; 32], ParseError> {
        canonical_sha256(self)
    }
}

/// All claims of a grant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrantClaims {
    /// Every claim except `webauthn` (flattened into the same JSON object).
    #[serde(flatten)]
    pub approval: ApprovalClaims,
    /// The WebAuthn assertion over `SHA-256(JCS(approval))`, or, for a grant approved in a
    /// batch, over `SHA-256(JCS(batch))`.
    pub webauthn: WebAuthnAssertion,
    /// For a grant approved with others in one ceremony: the base64url SHA-256 of the JCS of
    /// every grant's claims (without `webauthn` and `batch`), this one's included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<String>>,
}

/// The fewest and most grants one ceremony may approve together.
pub const BATCH_SIZES: std::ops::RangeInclusive<usize> = 2..=50;

/// Several drafts approved in one ceremony: the assertion is over `SHA-256(JCS(batch))`, where
/// `batch` lists the base64url `SHA-256(JCS(claims))` of each draft in order. Each grant carries
/// the list, so a gateway verifies it alone: its own claims' hash must be in the list the
/// human's assertion covers.
#[derive(Clone, Debug)]
pub struct BatchDraft {
    drafts: Vec<GrantDraft>,
    batch: Vec<String>,
    challenge: [u8; 32],
}

impl BatchDraft {
    /// Puts `drafts` (two to fifty, each approving another action) under one challenge.
    pub fn new(drafts: Vec<GrantDraft>) -> Result<Self, MintError> {
        if !BATCH_SIZES.contains(&drafts.len()) {
            return Err(MintError::BatchSize(drafts.len()));
        }
        let batch: Vec<String> = drafts.iter().map(|d| b64url(&d.challenge)).collect();
        let distinct: std::collections::BTreeSet<&str> =
            drafts.iter().map(|d| d.claims.txn.as_str()).collect();
        if distinct.len() != drafts.len() {
            return Err(MintError::BatchRepeats);
        }
        let challenge = canonical_sha256(&batch)?;
        Ok(Self {
            drafts,
            batch,
            challenge,
        })
    }

    /// The drafts, in order.
    pub fn drafts(&self) -> &[GrantDraft] {
        &self.drafts
    }

    /// The challenge the authenticator must sign, once for all.
    pub fn challenge(&self) -> &[u8; 32] {
        &self.challenge
    }

    /// Embeds the one assertion in every grant and signs each JWS with the device key. Refuses
    /// an assertion made over another challenge.
    pub fn sign(
        self,
        assertion: WebAuthnAssertion,
        signer: &dyn GrantSigner,
    ) -> Result<Vec<Grant>, MintError> {
        self.drafts
            .into_iter()
            .map(|draft| {
                let claims = GrantClaims {
                    approval: draft.claims,
                    webauthn: assertion.clone(),
                    batch: Some(self.batch.clone()),
                };
                let token = sign_claims(
                    GRANT_TYP,
                    &self.challenge,
                    &claims.webauthn,
                    &claims,
                    signer,
                )?;
                Ok(Grant { token, claims })
            })
            .collect()
    }
}

/// The approver that mints: its registered id, its owner, and the broker it is paired with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    /// The approver's registered id, written as `iss`.
    pub approver_id: String,
    /// The approver's owner, written as `sub`; only actions whose `subject.id` is this owner can be
    /// approved.
    pub owner: String,
    /// The broker's URL, as the approver reaches it (request proofs are bound to the same URL).
    pub broker: String,
}

/// Choices for one grant.
#[derive(Clone, Debug)]
pub struct GrantOptions {
    /// Unix seconds at approval.
    pub now: i64,
    /// `exp - iat`; at most [`MAX_LIFETIME_SECS`].
    pub lifetime_secs: i64,
    /// Bind the grant to the agent's key (RFC 9449 thumbprint), when it has one.
    pub confirmation: Option<Confirmation>,
    /// The `amr` claim (RFC 8176 method names).
    pub amr: Vec<String>,
}

impl GrantOptions {
    /// Default options at `now`: the full lifetime, no key binding, `amr` hwk + user.
    pub fn at(now: i64) -> Self {
        Self {
            now,
            lifetime_secs: MAX_LIFETIME_SECS,
            confirmation: None,
            amr: AMR_HWK_USER.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Claims ready for the authenticator: the first half of minting.
#[derive(Clone, Debug)]
pub struct GrantDraft {
    claims: ApprovalClaims,
    challenge: [u8; 32],
}

impl GrantDraft {
    /// Builds the claims for approving `pending`. Refuses an item whose `action_hash` is not
    /// the hash of what it shows, since approving it would sign something unseen.
    pub fn new(
        pending: &PendingAction,
        issuer: &Issuer,
        options: GrantOptions,
    ) -> Result<Self, MintError> {
        if !pending.verify_hash() {
            return Err(MintError::ActionHashMismatch);
        }
        // A grant is never made for an action on someone else's behalf.
        if pending.subject.id != issuer.owner {
            return Err(MintError::SubjectNotOwner);
        }
        if options.lifetime_secs <= 0 || options.lifetime_secs > MAX_LIFETIME_SECS {
            return Err(MintError::LifetimeTooLong {
                requested: options.lifetime_secs,
                cap: MAX_LIFETIME_SECS,
            });
        }
        Self::from_claims(ApprovalClaims {
            iss: issuer.approver_id.clone(),
            sub: issuer.owner.clone(),
            aud: pending.audience.clone(),
            broker: issuer.broker.clone(),
            iat: options.now,
            nbf: options.now,
            exp: options.now + options.lifetime_secs,
            jti: random_b64url::<16>(),
            txn: pending.id.clone(),
            act: pending.actor.to_act_claim(),
            cnf: options.confirmation,
            authorization_details: pending.authorization_details.clone(),
            action_hash: pending.action_hash.clone(),
            amr: options.amr,
        })
    }

    /// Wraps claims built elsewhere (the approver's outbox restores drafts this way).
    pub fn from_claims(claims: ApprovalClaims) -> Result<Self, MintError> {
        let challenge = claims.challenge()?;
        Ok(Self { claims, challenge })
    }

    /// The claims.
    pub fn claims(&self) -> &ApprovalClaims {
        &self.claims
    }

    /// The challenge the authenticator must sign.
    pub fn challenge(&self) -> &[u8; 32] {
        &self.challenge
    }

    /// Second half of minting: embeds the assertion and signs the JWS with the device key.
    /// Refuses an assertion made over another challenge.
    pub fn sign(
        self,
        assertion: WebAuthnAssertion,
        signer: &dyn GrantSigner,
    ) -> Result<Grant, MintError> {
        let claims = GrantClaims {
            approval: self.claims,
            webauthn: assertion,
            batch: None,
        };
        let token = sign_claims(
            GRANT_TYP,
            &self.challenge,
            &claims.webauthn,
            &claims,
            signer,
        )?;
        Ok(Grant { token, claims })
    }
}

/// The JWS of a grant of type `typ` carrying `claims`, signed by `signer`, once `assertion` is
/// known to be over `challenge` (the hash of the claims without it).
pub(crate) fn sign_claims(
    typ: &str,
    challenge: &[u8; 32],
    assertion: &WebAuthnAssertion,
    claims: &impl Serialize,
    signer: &dyn GrantSigner,
) -> Result<String, MintError> {
    let asserted = assertion
        .challenge()
        .map_err(|_| MintError::AssertionForOtherClaims)?;
    if asserted != *challenge {
        return Err(MintError::AssertionForOtherClaims);
    }
    let header = serde_json::json!({"alg": GRANT_ALG, "kid": signer.kid(), "typ": typ});
    let payload = serde_json::to_vec(claims).map_err(|e| MintError::Signer(e.to_string()))?;
    crate::jws::compose(&header, &payload, |input| signer.sign(input))
}

/// A minted grant: the compact JWS and its claims.
#[derive(Clone, Debug)]
pub struct Grant {
    token: String,
    claims: GrantClaims,
}

impl Grant {
    /// The compact JWS.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The claims it carries.
    pub fn claims(&self) -> &GrantClaims {
        &self.claims
    }
}

/// Signs grants for an approver device. Implementations may keep the key anywhere (the OS
/// keyring, a TPM); the signature is Ed25519 over the JWS signing input.
pub trait GrantSigner {
    /// The `kid` of the signing key as registered.
    fn kid(&self) -> &str;
    /// The 64-byte Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], MintError>;
}

/// An Ed25519 device key held in memory (load it from the keyring, drop it after use).
pub struct DeviceSigningKey {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl DeviceSigningKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        Self::from_key(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    /// The key with this 32-byte secret seed.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self::from_key(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    fn from_key(key: ed25519_dalek::SigningKey) -> Self {
        let kid = DeviceJwk::from_public_key(key.verifying_key().as_bytes()).kid;
        Self { key, kid }
    }

    /// The secret seed, for storage in the keyring.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public key as a registry JWK.
    pub fn public_jwk(&self) -> DeviceJwk {
        DeviceJwk::from_public_key(self.key.verifying_key().as_bytes())
    }

    /// Signs arbitrary bytes (request proofs use the same key).
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl GrantSigner for DeviceSigningKey {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], MintError> {
        Ok(self.sign_bytes(message))
    }
}

impl fmt::Debug for DeviceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
