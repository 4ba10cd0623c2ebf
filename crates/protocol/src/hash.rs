//! RFC 8785 (JCS) canonical JSON and the hashes built on it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ParseError;

/// RFC 8785 canonical form of `value`: keys sorted by UTF-16 code units, ES6 number formatting,
/// minimal string escaping, no whitespace.
pub fn canonicalize<T: Serialize>(value: &T) -> Result<Vec<u8>, ParseError> {
    let value = serde_json::to_value(value).map_err(|e| ParseError::NotCanonical(e.to_string()))?;
    canonicalize_value(&value)
}

/// RFC 8785 canonical form of a JSON value.
///
/// Structure, key order and strings are written here (serde_json's string escaping is exactly
/// JCS's: `\"`, `\\`, `\b \f \n \r \t`, other controls as lowercase `\u00xx`, everything
/// else literal); non-integer numbers go through `serde_json_canonicalizer` (ES6 formatting).
/// serde_json_canonicalizer alone re-parses every key to sort it, which costs more than the two
/// signature checks of a grant; tests pin this function to it and to the RFC's vectors.
pub fn canonicalize_value(value: &Value) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(512);
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), ParseError> {
    let fail = |e: serde_json::Error| ParseError::NotCanonical(e.to_string());
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                out.extend(serde_json_canonicalizer::to_vec(n).map_err(fail)?);
            }
        }
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(fail)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).map_err(fail)?;
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// `SHA-256(JCS(value))`.
pub fn canonical_sha256<T: Serialize>(value: &T) -> Result<[u8; 32], ParseError> {
    Ok(Sha256::digest(canonicalize(value)?).into())
}

/// `SHA-256(JCS(value))` of a JSON value.
pub fn canonical_value_sha256(value: &Value) -> Result<[u8; 32], ParseError> {
    Ok(Sha256::digest(canonicalize_value(value)?).into())
}

/// Base64url without padding (RFC 4648 §5), the encoding of every binary value on the wire.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding or the standard alphabet is an error.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// `N` bytes from the OS random source, base64url: ids, `jti`s, idempotency keys.
pub fn random_b64url<const N: usize>() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut bytes);
    b64url(&bytes)
}

/// Verifies a JWS Ed25519 signature (base64url) over `signing_input`, with the strict checks of
/// RFC 8032 (canonical S, no small-order keys or points).
pub fn verify_ed25519(
    key: &ed25519_dalek::VerifyingKey,
    signing_input: &[u8],
    signature_b64: &str,
) -> bool {
    let Some(bytes) = b64url_decode(signature_b64) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_strict(signing_input, &signature).is_ok()
}

/// An action hash: `b64url(SHA-256(JCS({subject, actor, action, resource, context})))`.
///
/// Comparison is constant-time.
#[derive(Clone, Debug, Eq, Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActionHash(String);

impl TryFrom<String> for ActionHash {
    type Error = ParseError;

    fn try_from(text: String) -> Result<Self, ParseError> {
        match b64url_decode(&text) {
            Some(bytes) if bytes.len() == 32 => Ok(Self(text)),
            _ => Err(ParseError::invalid(
                "action_hash",
                "not 32 bytes of base64url",
            )),
        }
    }
}

impl From<ActionHash> for String {
    fn from(h: ActionHash) -> Self {
        h.0
    }
}

impl ActionHash {
    /// Wraps a digest.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        Self(b64url(digest))
    }

    /// The base64url text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 bytes as four groups of four hex digits, for people comparing two screens.
    pub fn fingerprint(&self) -> String {
        let bytes = b64url_decode(&self.0).unwrap_or_default();
        let hex: Vec<String> = bytes
            .iter()
            .take(8)
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        hex.join("-")
    }
}

impl PartialEq for ActionHash {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl std::fmt::Display for ActionHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_is_by_utf16_code_units() {
        // U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16, after it in code points.
        let v = serde_json::json!({"\u{fb33}": 1, "\u{1f600}": 2});
        let out = String::from_utf8(canonicalize(&v).unwrap()).unwrap();
        assert_eq!(out, "{\"\u{1f600}\":2,\"\u{fb33}\":1}");
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let h = ActionHash::from_digest(&[0xab; 32]);
        assert_eq!(h.fingerprint(), "abab-abab-abab-abab");
    }
}
