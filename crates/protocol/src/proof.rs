//! Request proofs: every approver request to a broker carries a fresh JWS signed by the device
//! key, shaped after DPoP (RFC 9449) — never a static bearer secret.
//!
//! Header `{"alg":"EdDSA","kid":…,"typ":"countersign-proof+jwt"}`; claims `iss` (approver id),
//! `htm` (method), `htu` (URL without query and fragment), `iat`, `jti` (unique), and `bh`:
//! `b64url(SHA-256(body))`, binding the request body as DPoP's `ath` binds a token. The broker
//! checks method, URL, time (±60 s), body hash and signature here, and remembers `jti`s to refuse
//! replays.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::grant::{DeviceSigningKey, GRANT_ALG, GrantSigner as _, MAX_SKEW_SECS};
use crate::hash::{b64url, random_b64url};
use crate::json;
use crate::jws;
use crate::registry::{ApproverRegistry, DeviceJwk};

/// The JOSE `typ` of a request proof.
pub const PROOF_TYP: &str = "countersign-proof+jwt";
/// The HTTP header that carries it.
pub const PROOF_HEADER: &str = "countersign-proof";

/// Why a request proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The request carries no proof (no [`PROOF_HEADER`] header).
    #[error("no request proof")]
    Missing,
    /// The proof is over 8192 bytes, not a compact JWS, or its payload is not valid proof claims.
    #[error("malformed request proof: {0}")]
    Malformed(String),
    /// The header's `typ` is not `countersign-proof+jwt`, its `alg` is not `EdDSA`, or it names
    /// `crit`.
    #[error("request proof typ or alg is not countersign-proof+jwt / EdDSA")]
    WrongType,
    /// The `kid` names no registered key (when pairing: not the presented key, or that key is
    /// invalid), or `iss` is not the approver that owns the key.
    #[error("request proof is signed by an unknown key")]
    UnknownKey,
    /// The Ed25519 signature does not verify.
    #[error("request proof signature does not verify")]
    BadSignature,
    /// `htm` or `htu` is not the request's method or URL (query and fragment aside).
    #[error("request proof is for another method or URL")]
    WrongRequest,
    /// `bh` is not `b64url(SHA-256(body))` of the body received.
    #[error("request proof body hash does not match the body")]
    WrongBody,
    /// `iat` is more than 60 s away from the verifier's clock.
    #[error("request proof is outside the allowed time window")]
    Stale,
    /// The proof's `jti` was seen before.
    #[error("request proof was already used")]
    Replayed,
}

impl ProofError {
    /// Stable code for APIs.
    /// Every code [`Self::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "proof_missing",
        "proof_malformed",
        "proof_wrong_type",
        "proof_unknown_key",
        "proof_bad_signature",
        "proof_wrong_request",
        "proof_wrong_body",
        "proof_stale",
        "proof_replayed",
    ];

    /// The stable code of this refusal, one of [`Self::CODES`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "proof_missing",
            Self::Malformed(_) => "proof_malformed",
            Self::WrongType => "proof_wrong_type",
            Self::UnknownKey => "proof_unknown_key",
            Self::BadSignature => "proof_bad_signature",
            Self::WrongRequest => "proof_wrong_request",
            Self::WrongBody => "proof_wrong_body",
            Self::Stale => "proof_stale",
            Self::Replayed => "proof_replayed",
        }
    }
}

/// The claims of a request proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofClaims {
    /// The approver id of the sender; it must be the approver that owns the signing key.
    pub iss: String,
    /// The HTTP method, upper case when signed; compared without regard to case.
    pub htm: String,
    /// The request URL without query and fragment (see [`target_uri`]).
    pub htu: String,
    /// When the proof was made, in Unix seconds; it must be within 60 s of the verifier's clock.
    pub iat: i64,
    /// A unique id (16 random bytes, base64url); the verifier refuses one it has seen.
    pub jti: String,
    /// `b64url(SHA-256(body))` of the request body (see [`body_hash`]).
    pub bh: String,
}

impl ProofClaims {
    /// Until when a verifier must remember this proof's `jti` to refuse a replay: past it, the
    /// time check refuses the proof anyway.
    pub fn keep_until(&self) -> i64 {
        self.iat + 2 * MAX_SKEW_SECS
    }
}

/// The request a proof must match.
#[derive(Clone, Copy, Debug)]
pub struct ProofRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The full URL as the client addressed it; query and fragment are ignored.
    pub url: &'a str,
    /// The request body, exactly as sent.
    pub body: &'a [u8],
    /// The current time, in Unix seconds: the proof's `iat` when signing, the clock checked against
    /// `iat` when verifying.
    pub now: i64,
}

/// Signs a proof for one request.
pub fn sign_proof(key: &DeviceSigningKey, approver_id: &str, request: &ProofRequest<'_>) -> String {
    let claims = ProofClaims {
        iss: approver_id.to_owned(),
        htm: request.method.to_ascii_uppercase(),
        htu: target_uri(request.url),
        iat: request.now,
        jti: random_b64url::<16>(),
        bh: body_hash(request.body),
    };
    let header = serde_json::json!({"alg": GRANT_ALG, "kid": key.kid(), "typ": PROOF_TYP});
    // A struct of strings and integers always serialises.
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    let signed = jws::compose(&header, &payload, |input| {
        Ok::<_, std::convert::Infallible>(key.sign_bytes(input))
    });
    match signed {
        Ok(token) => token,
        Err(never) => match never {},
    }
}

/// The largest request proof accepted, in bytes.
const MAX_PROOF_BYTES: usize = 8192;

/// A proof that verified: who sent it, and the `jti` to remember until `iat` + skew passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The id of the registered approver that signed the proof.
    pub approver_id: String,
    /// That approver's owner.
    pub owner: String,
    /// The proof's claims (remember its `jti` until [`ProofClaims::keep_until`]).
    pub claims: ProofClaims,
}

impl ApproverRegistry {
    /// Verifies a proof from a registered approver. The caller must still refuse a `jti` it has
    /// seen within the time window.
    pub fn verify_proof(
        &self,
        token: &str,
        request: &ProofRequest<'_>,
    ) -> Result<VerifiedProof, ProofError> {
        let (kid, claims) =
            split_checked(token, request, |kid| self.key(kid).map(|(_, key)| *key))?;
        let (approver, _) = self.key(&kid).ok_or(ProofError::UnknownKey)?;
        if claims.iss != approver.id {
            return Err(ProofError::UnknownKey);
        }
        Ok(VerifiedProof {
            approver_id: approver.id.clone(),
            owner: approver.owner.clone(),
            claims,
        })
    }
}

/// Verifies a proof made with `key`, a key not yet registered (pairing proves possession of the
/// device key this way).
pub fn verify_proof_with_key(
    token: &str,
    request: &ProofRequest<'_>,
    key: &DeviceJwk,
) -> Result<ProofClaims, ProofError> {
    let decoding = key.decode().map_err(|_| ProofError::UnknownKey)?;
    let (_, claims) = split_checked(token, request, |kid| (kid == key.kid).then_some(decoding))?;
    Ok(claims)
}

fn split_checked(
    token: &str,
    request: &ProofRequest<'_>,
    key_for: impl FnOnce(&str) -> Option<ed25519_dalek::VerifyingKey>,
) -> Result<(String, ProofClaims), ProofError> {
    let compact =
        jws::split(token, MAX_PROOF_BYTES).map_err(|e| ProofError::Malformed(e.to_string()))?;
    compact
        .check_header(PROOF_TYP, GRANT_ALG)
        .map_err(|_| ProofError::WrongType)?;
    let kid = compact.kid().to_owned();
    let key = key_for(&kid).ok_or(ProofError::UnknownKey)?;
    if !compact.verify_ed25519(&key) {
        return Err(ProofError::BadSignature);
    }
    let claims: ProofClaims = compact
        .payload()
        .ok_or_else(|| ProofError::Malformed("payload".into()))
        .and_then(|raw| {
            json::from_slice(&raw, jws::HEADER_LIMITS)
                .map_err(|e| ProofError::Malformed(e.to_string()))
        })?;
    if !claims.htm.eq_ignore_ascii_case(request.method) || claims.htu != target_uri(request.url) {
        return Err(ProofError::WrongRequest);
    }
    if !bool::from(
        claims
            .bh
            .as_bytes()
            .ct_eq(body_hash(request.body).as_bytes()),
    ) {
        return Err(ProofError::WrongBody);
    }
    if (claims.iat - request.now).abs() > MAX_SKEW_SECS {
        return Err(ProofError::Stale);
    }
    Ok((kid, claims))
}

/// `b64url(SHA-256(body))`.
pub fn body_hash(body: &[u8]) -> String {
    b64url(&Sha256::digest(body))
}

/// RFC 9449 `htu`: the URL without query and fragment.
pub fn target_uri(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ApproverEntry, RegistryDocument};

    fn setup() -> (DeviceSigningKey, ApproverRegistry) {
        let key = DeviceSigningKey::generate();
        let entry = ApproverEntry {
            id: "apr_1".into(),
            owner: "alice@example.com".into(),
            device_keys: vec![key.public_jwk()],
            credentials: vec![],
        };
        (
            key,
            ApproverRegistry::new(RegistryDocument {
                approvers: vec![entry],
            })
            .unwrap(),
        )
    }

    const URL: &str = "http://127.0.0.1:8080/v1/approver/requests/pa_1/decision";

    fn req<'a>(body: &'a [u8], now: i64) -> ProofRequest<'a> {
        ProofRequest {
            method: "POST",
            url: URL,
            body,
            now,
        }
    }

    #[test]
    fn a_proof_verifies_for_its_request_only() {
        let (key, registry) = setup();
        let proof = sign_proof(&key, "apr_1", &req(b"{}", 1000));
        let ok = registry.verify_proof(&proof, &req(b"{}", 1010)).unwrap();
        assert_eq!(ok.approver_id, "apr_1");
        assert_eq!(ok.owner, "alice@example.com");
        let with_query = format!("{URL}?x=1");
        let q = ProofRequest {
            url: &with_query,
            ..req(b"{}", 1000)
        };
        assert!(
            registry.verify_proof(&proof, &q).is_ok(),
            "query is not part of htu"
        );

        let get = ProofRequest {
            method: "GET",
            ..req(b"{}", 1000)
        };
        assert_eq!(
            registry.verify_proof(&proof, &get),
            Err(ProofError::WrongRequest)
        );
        let other = ProofRequest {
            url: "http://127.0.0.1:8080/v1/approver/requests/pa_2/decision",
            ..req(b"{}", 1000)
        };
        assert_eq!(
            registry.verify_proof(&proof, &other),
            Err(ProofError::WrongRequest)
        );
        assert_eq!(
            registry.verify_proof(&proof, &req(b"{\"x\":1}", 1000)),
            Err(ProofError::WrongBody)
        );
        assert_eq!(
            registry.verify_proof(&proof, &req(b"{}", 1061)),
            Err(ProofError::Stale)
        );
        assert_eq!(
            registry.verify_proof(&proof, &req(b"{}", 939)),
            Err(ProofError::Stale)
        );
    }

    #[test]
    fn unknown_keys_and_forged_issuers_are_refused() {
        let (_, registry) = setup();
        let stranger = DeviceSigningKey::generate();
        let proof = sign_proof(&stranger, "apr_1", &req(b"", 1000));
        assert_eq!(
            registry.verify_proof(&proof, &req(b"", 1000)),
            Err(ProofError::UnknownKey)
        );
        let (key, registry) = setup();
        let proof = sign_proof(&key, "apr_other", &req(b"", 1000));
        assert_eq!(
            registry.verify_proof(&proof, &req(b"", 1000)),
            Err(ProofError::UnknownKey)
        );
        let mut tampered = sign_proof(&key, "apr_1", &req(b"", 1000));
        let last = tampered.pop();
        tampered.push(if last == Some('A') { 'Q' } else { 'A' });
        assert!(registry.verify_proof(&tampered, &req(b"", 1000)).is_err());
    }

    #[test]
    fn possession_of_an_unregistered_key_is_proved() {
        let key = DeviceSigningKey::generate();
        let proof = sign_proof(&key, "new", &req(b"pair", 1000));
        assert!(verify_proof_with_key(&proof, &req(b"pair", 1000), &key.public_jwk()).is_ok());
        let other = DeviceSigningKey::generate();
        assert_eq!(
            verify_proof_with_key(&proof, &req(b"pair", 1000), &other.public_jwk()),
            Err(ProofError::UnknownKey)
        );
    }
}
