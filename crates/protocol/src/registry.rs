//! The approver registry: which paired devices may issue grants, for which owner, with which
//! device keys (Ed25519 JWKs by `kid`) and which WebAuthn credentials.
//!
//! A verifier pins this document (the broker serves it at `GET /v1/registry`); keys are never
//! taken from a token's own headers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::hash::{b64url, b64url_decode, canonical_sha256};
use crate::json::{self, Limits};
use crate::webauthn::{CredentialJwk, CredentialKey};

/// An approver device's public signing key: an RFC 8037 OKP JWK. `kid` is its RFC 7638
/// thumbprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceJwk {
    /// Key type; must be `OKP`.
    pub kty: String,
    /// Curve; must be `Ed25519`.
    pub crv: String,
    /// The 32-byte Ed25519 public key, base64url; a small-order (weak) key is refused.
    pub x: String,
    /// The RFC 7638 thumbprint of the key, base64url, checked against `x`; grants and request
    /// proofs name their key by it.
    pub kid: String,
    /// When present, must be `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// The JWK `use` (`use` on the wire); when present, must be `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl DeviceJwk {
    /// The JWK of an Ed25519 public key.
    pub fn from_public_key(public: &[u8; 32]) -> Self {
        let x = b64url(public);
        let kid = okp_thumbprint(&x);
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            kid,
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    pub(crate) fn decode(&self) -> Result<ed25519_dalek::VerifyingKey, ParseError> {
        let bad = |r: &str| ParseError::invalid("device key", format!("{}: {r}", self.kid));
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(bad("only OKP Ed25519 device keys are supported"));
        }
        if self.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return Err(bad("alg must be EdDSA"));
        }
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(bad("use must be sig"));
        }
        let raw = b64url_decode(&self.x)
            .filter(|x| x.len() == 32)
            .ok_or_else(|| bad("bad x"))?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| bad("bad x"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("not an Ed25519 point"))?;
        if key.is_weak() {
            return Err(bad("a weak (small-order) Ed25519 key"));
        }
        if self.kid != okp_thumbprint(&self.x) {
            return Err(bad("kid is not the key's RFC 7638 thumbprint"));
        }
        Ok(key)
    }
}

/// RFC 7638 thumbprint of an Ed25519 OKP JWK with public value `x`.
fn okp_thumbprint(x: &str) -> String {
    let members = serde_json::json!({"crv": "Ed25519", "kty": "OKP", "x": x});
    // Serialising a map of strings cannot fail.
    canonical_sha256(&members)
        .map(|d| b64url(&d))
        .unwrap_or_default()
}

/// A WebAuthn credential registered to an approver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisteredCredential {
    /// Credential id, base64url.
    pub id: String,
    /// The credential's P-256 public key.
    pub public_key: CredentialJwk,
}

/// One paired approver device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproverEntry {
    /// The approver id, the `iss` of its grants.
    pub id: String,
    /// The human who owns it, the `sub` of its grants.
    pub owner: String,
    /// The device's Ed25519 keys, which sign its grants and request proofs.
    pub device_keys: Vec<DeviceJwk>,
    /// The WebAuthn credentials whose assertions this approver's grants may carry.
    pub credentials: Vec<RegisteredCredential>,
}

/// The registry document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegistryDocument {
    /// Every paired approver; approver ids, `kid`s and credential ids must each be unique.
    pub approvers: Vec<ApproverEntry>,
}

#[derive(Debug)]
pub(crate) struct Approver {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) credentials: HashMap<String, CredentialKey>,
}

#[derive(Debug)]
pub(crate) struct IndexedKey {
    pub(crate) approver: usize,
    pub(crate) key: ed25519_dalek::VerifyingKey,
}

/// The registry, with every key decoded once and indexed.
#[derive(Debug)]
pub struct ApproverRegistry {
    document: RegistryDocument,
    approvers: Vec<Approver>,
    keys: HashMap<String, IndexedKey>,
}

/// The largest credential id WebAuthn allows, in bytes.
const MAX_CREDENTIAL_ID: usize = 1023;

impl RegisteredCredential {
    /// Checks the credential as a registry must before storing it: an id of 1 to 1023 bytes in
    /// base64url without padding, and an ES256 key on P-256.
    pub fn validate(&self) -> Result<CredentialKey, ParseError> {
        let raw = b64url_decode(&self.id)
            .ok_or_else(|| ParseError::invalid("credential.id", "not base64url"))?;
        if raw.is_empty() || raw.len() > MAX_CREDENTIAL_ID {
            return Err(ParseError::invalid("credential.id", "not 1 to 1023 bytes"));
        }
        self.public_key.to_key()
    }
}

impl DeviceJwk {
    /// Checks the key as a registry must before storing it (see [`ApproverRegistry::new`]).
    pub fn validate(&self) -> Result<(), ParseError> {
        self.decode().map(drop)
    }
}

/// Indexes entries one at a time, each checked whole before anything of it is kept.
#[derive(Default)]
struct Builder {
    entries: Vec<ApproverEntry>,
    approvers: Vec<Approver>,
    keys: HashMap<String, IndexedKey>,
    ids: HashMap<String, ()>,
    credential_ids: HashMap<String, ()>,
}

impl Builder {
    fn add(&mut self, entry: &ApproverEntry) -> Result<(), ParseError> {
        if entry.id.trim().is_empty() || entry.owner.trim().is_empty() {
            return Err(ParseError::invalid("approvers", "empty id or owner"));
        }
        if self.ids.contains_key(&entry.id) {
            return Err(ParseError::invalid(
                "approvers",
                format!("{:?} twice", entry.id),
            ));
        }
        let index = self.approvers.len();
        let mut keys = Vec::with_capacity(entry.device_keys.len());
        for jwk in &entry.device_keys {
            let key = jwk.decode()?;
            if self.keys.contains_key(&jwk.kid) || keys.iter().any(|(kid, _)| kid == &jwk.kid) {
                return Err(ParseError::invalid(
                    "device_keys",
                    format!("kid {} twice", jwk.kid),
                ));
            }
            keys.push((jwk.kid.clone(), key));
        }
        let mut credentials = HashMap::new();
        for cred in &entry.credentials {
            let key = cred.validate()?;
            if self.credential_ids.contains_key(&cred.id)
                || credentials.insert(cred.id.clone(), key).is_some()
            {
                return Err(ParseError::invalid(
                    "credentials",
                    format!("{} twice", cred.id),
                ));
            }
        }
        // Every check passed: keep it all.
        self.ids.insert(entry.id.clone(), ());
        for (kid, key) in keys {
            self.keys.insert(
                kid,
                IndexedKey {
                    approver: index,
                    key,
                },
            );
        }
        for id in credentials.keys() {
            self.credential_ids.insert(id.clone(), ());
        }
        self.approvers.push(Approver {
            id: entry.id.clone(),
            owner: entry.owner.clone(),
            credentials,
        });
        self.entries.push(entry.clone());
        Ok(())
    }

    fn build(self) -> ApproverRegistry {
        ApproverRegistry {
            document: RegistryDocument {
                approvers: self.entries,
            },
            approvers: self.approvers,
            keys: self.keys,
        }
    }
}

impl ApproverRegistry {
    /// Checks and indexes a registry document. Duplicate approver ids, kids or credential ids
    /// are refused, since each must name exactly one thing.
    pub fn new(document: RegistryDocument) -> Result<Self, ParseError> {
        let mut builder = Builder::default();
        for entry in &document.approvers {
            builder.add(entry)?;
        }
        Ok(builder.build())
    }

    /// Indexes every entry that passes the checks of [`Self::new`] and skips the others,
    /// naming each skipped approver and why: one bad entry never takes the others down.
    pub fn lenient(document: RegistryDocument) -> (Self, Vec<(String, ParseError)>) {
        let mut builder = Builder::default();
        let mut skipped = Vec::new();
        for entry in &document.approvers {
            if let Err(e) = builder.add(entry) {
                skipped.push((entry.id.clone(), e));
            }
        }
        (builder.build(), skipped)
    }

    /// Whether `entry` could join this registry: it is valid and reuses no approver id, device
    /// key or credential id already registered.
    pub fn admits(&self, entry: &ApproverEntry) -> Result<(), ParseError> {
        let mut document = self.document.clone();
        document.approvers.retain(|a| a.id != entry.id);
        document.approvers.push(entry.clone());
        Self::new(document).map(drop)
    }

    /// Parses and indexes a registry document (strict JSON).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::new(json::from_slice(bytes, Limits::REGISTRY)?)
    }

    /// The document this registry was built from.
    pub fn document(&self) -> &RegistryDocument {
        &self.document
    }

    /// The registered P-256 key of `credential_id`, if it belongs to `approver_id`.
    pub fn credential_key(&self, approver_id: &str, credential_id: &str) -> Option<&CredentialKey> {
        self.approvers
            .iter()
            .find(|a| a.id == approver_id)?
            .credentials
            .get(credential_id)
    }

    /// The approver entry with this id.
    pub fn approver(&self, approver_id: &str) -> Option<&ApproverEntry> {
        self.document.approvers.iter().find(|a| a.id == approver_id)
    }

    pub(crate) fn key(&self, kid: &str) -> Option<(&Approver, &ed25519_dalek::VerifyingKey)> {
        let key = self.keys.get(kid)?;
        Some((self.approvers.get(key.approver)?, &key.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceSigningKey;

    fn entry(id: &str, credential: &str) -> ApproverEntry {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        ApproverEntry {
            id: id.into(),
            owner: "alice@example.com".into(),
            device_keys: vec![DeviceSigningKey::generate().public_jwk()],
            credentials: vec![RegisteredCredential {
                id: credential.into(),
                public_key: CredentialJwk::from_key(key.verifying_key()),
            }],
        }
    }

    #[test]
    fn a_bad_or_duplicate_entry_is_skipped_and_named_the_others_stay() {
        let good = entry("apr_good", "Y3JlZC1h");
        let bad_id = entry("apr_bad", "not base64url!");
        let reused = entry("apr_reuse", "Y3JlZC1h");
        let empty = entry("apr_empty", "");
        let document = RegistryDocument {
            approvers: vec![good.clone(), bad_id, reused, empty],
        };
        assert!(ApproverRegistry::new(document.clone()).is_err());
        let (registry, skipped) = ApproverRegistry::lenient(document);
        assert_eq!(registry.document().approvers, vec![good.clone()]);
        let names: Vec<&str> = skipped.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(names, ["apr_bad", "apr_reuse", "apr_empty"]);
        // What pairing asks before it stores anything.
        assert!(registry.admits(&entry("apr_new", "Y3JlZC1i")).is_ok());
        assert!(registry.admits(&entry("apr_new", "Y3JlZC1h")).is_err());
        let mut same_key = entry("apr_new", "Y3JlZC1j");
        same_key.device_keys = good.device_keys;
        assert!(registry.admits(&same_key).is_err());
    }
}
