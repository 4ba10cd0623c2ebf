//! Compact JWS (RFC 7515) as grants and request proofs use it: the one place a token is split,
//! its header read within limits and checked (exact `typ`, `alg` from the caller, no `crit`),
//! and a signing input composed. Keys never come from the token: callers look them up by
//! [`Compact::kid`] in a pinned registry.

use serde_json::{Map, Value};

use crate::hash::{b64url, b64url_decode};
use crate::json::{self, Limits};

/// Limits of a JOSE header: a few short members, nothing nested.
pub const HEADER_LIMITS: Limits = Limits {
    max_bytes: 4096,
    max_depth: 4,
};

/// Why a token is not a usable compact JWS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// The token is longer than the limit held here, in bytes.
    #[error("over {0} bytes")]
    TooLarge(usize),
    /// The token is not three dot-separated parts.
    #[error("not three dot-separated parts")]
    NotCompact,
    /// The header is not base64url, not strict JSON within [`HEADER_LIMITS`], or not an object.
    #[error("header: {0}")]
    Header(String),
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderRefusal {
    /// `typ` is not the one expected.
    WrongType,
    /// `alg` is not the one allowed (what it said, if anything).
    Algorithm(String),
    /// The header names critical extensions, which no verifier here understands.
    Critical,
}

/// A compact JWS split into its parts. Nothing is verified yet.
#[derive(Debug)]
pub struct Compact<'a> {
    header: Map<String, Value>,
    payload: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

/// Splits `token` (at most `max_bytes`) and reads its header strictly.
pub fn split(token: &str, max_bytes: usize) -> Result<Compact<'_>, JwsError> {
    if token.len() > max_bytes {
        return Err(JwsError::TooLarge(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::NotCompact);
    };
    let raw = b64url_decode(header).ok_or_else(|| JwsError::Header("not base64url".into()))?;
    let Value::Object(map) =
        json::parse_value(&raw, HEADER_LIMITS).map_err(|e| JwsError::Header(e.to_string()))?
    else {
        return Err(JwsError::Header("not a JSON object".into()));
    };
    Ok(Compact {
        header: map,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

impl Compact<'_> {
    /// Checks the header: `typ` exactly `typ`, `alg` exactly `alg` (an allowlist of one; never
    /// taken from the token), and no `crit`. `jku`, `x5u`, `jwk` and `x5c` are never read.
    pub fn check_header(&self, typ: &str, alg: &str) -> Result<(), HeaderRefusal> {
        if self.member("typ") != Some(typ) {
            return Err(HeaderRefusal::WrongType);
        }
        if self.member("alg") != Some(alg) {
            return Err(HeaderRefusal::Algorithm(
                self.member("alg").unwrap_or_default().to_owned(),
            ));
        }
        if self.header.contains_key("crit") {
            return Err(HeaderRefusal::Critical);
        }
        Ok(())
    }

    /// The `kid` the header names (empty when none).
    pub fn kid(&self) -> &str {
        self.member("kid").unwrap_or_default()
    }

    /// The payload, base64url-decoded (not parsed).
    pub fn payload(&self) -> Option<Vec<u8>> {
        b64url_decode(self.payload)
    }

    /// Whether the signature is a strict (RFC 8032) Ed25519 signature of the signing input.
    pub fn verify_ed25519(&self, key: &ed25519_dalek::VerifyingKey) -> bool {
        crate::hash::verify_ed25519(key, self.signing_input.as_bytes(), self.signature)
    }

    fn member(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }
}

/// Composes a compact JWS of `header` and `payload`, signed by `sign` over the signing input.
pub fn compose<E>(
    header: &Value,
    payload: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<[u8; 64], E>,
) -> Result<String, E> {
    // Serialising a JSON value cannot fail.
    let header = serde_json::to_vec(header).unwrap_or_default();
    let signing_input = format!("{}.{}", b64url(&header), b64url(payload));
    let signature = sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64url(&signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceSigningKey;

    #[test]
    fn a_composed_token_splits_and_verifies_and_headers_are_checked() {
        let key = DeviceSigningKey::generate();
        let header = serde_json::json!({"alg": "EdDSA", "typ": "x+jwt", "kid": "k1"});
        let token = compose(&header, b"{}", |m| {
            Ok::<_, std::convert::Infallible>(key.sign_bytes(m))
        })
        .unwrap();
        let compact = split(&token, 1024).unwrap();
        assert_eq!(compact.check_header("x+jwt", "EdDSA"), Ok(()));
        assert_eq!(compact.kid(), "k1");
        assert_eq!(compact.payload().unwrap(), b"{}");
        let public = ed25519_dalek::VerifyingKey::from_bytes(
            &b64url_decode(&key.public_jwk().x)
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        assert!(compact.verify_ed25519(&public));
        assert_eq!(
            compact.check_header("y+jwt", "EdDSA"),
            Err(HeaderRefusal::WrongType)
        );
        assert_eq!(
            compact.check_header("x+jwt", "none"),
            Err(HeaderRefusal::Algorithm("EdDSA".into()))
        );
        let crit = serde_json::json!({"alg": "EdDSA", "typ": "x+jwt", "crit": ["b64"]});
        let token = compose(&crit, b"{}", |m| {
            Ok::<_, std::convert::Infallible>(key.sign_bytes(m))
        })
        .unwrap();
        assert_eq!(
            split(&token, 1024).unwrap().check_header("x+jwt", "EdDSA"),
            Err(HeaderRefusal::Critical)
        );
        assert_eq!(split("a.b", 10).unwrap_err(), JwsError::NotCompact);
        assert_eq!(split(&token, 10).unwrap_err(), JwsError::TooLarge(10));
    }
}
