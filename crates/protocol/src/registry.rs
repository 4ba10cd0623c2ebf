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
#[serde(deny_unknown_fields)]
pub struct DeviceJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
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
#[serde(deny_unknown_fields)]
pub struct RegisteredCredential {
    /// Credential id, base64url.
    pub id: String,
    pub public_key: CredentialJwk,
}

/// One paired approver device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverEntry {
    /// The approver id, the `iss` of its grants.
    pub id: String,
    /// The human who owns it, the `sub` of its grants.
    pub owner: String,
    pub device_keys: Vec<DeviceJwk>,
    pub credentials: Vec<RegisteredCredential>,
}

/// The registry document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryDocument {
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

impl ApproverRegistry {
    /// Checks and indexes a registry document. Duplicate approver ids, kids or credential ids
    /// are refused, since each must name exactly one thing.
    pub fn new(document: RegistryDocument) -> Result<Self, ParseError> {
        let mut approvers = Vec::with_capacity(document.approvers.len());
        let mut keys = HashMap::new();
        let mut ids = HashMap::new();
        let mut credential_ids = HashMap::new();
        for (index, entry) in document.approvers.iter().enumerate() {
            if entry.id.is_empty() || entry.owner.is_empty() {
                return Err(ParseError::invalid("approvers", "empty id or owner"));
            }
            if ids.insert(entry.id.as_str(), ()).is_some() {
                return Err(ParseError::invalid(
                    "approvers",
                    format!("{:?} twice", entry.id),
                ));
            }
            for jwk in &entry.device_keys {
                let key = jwk.decode()?;
                if keys
                    .insert(
                        jwk.kid.clone(),
                        IndexedKey {
                            approver: index,
                            key,
                        },
                    )
                    .is_some()
                {
                    return Err(ParseError::invalid(
                        "device_keys",
                        format!("kid {} twice", jwk.kid),
                    ));
                }
            }
            let mut credentials = HashMap::new();
            for cred in &entry.credentials {
                b64url_decode(&cred.id)
                    .ok_or_else(|| ParseError::invalid("credentials", "id is not base64url"))?;
                if credential_ids.insert(cred.id.as_str(), ()).is_some() {
                    return Err(ParseError::invalid(
                        "credentials",
                        format!("{} twice", cred.id),
                    ));
                }
                credentials.insert(cred.id.clone(), cred.public_key.to_key()?);
            }
            approvers.push(Approver {
                id: entry.id.clone(),
                owner: entry.owner.clone(),
                credentials,
            });
        }
        Ok(Self {
            document,
            approvers,
            keys,
        })
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
