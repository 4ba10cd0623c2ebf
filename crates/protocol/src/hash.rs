//! RFC 8785 (JCS) canonical JSON and the hashes built on it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ParseError;

/// RFC 8785 canonical form of `value`: keys sorted by UTF-16 code units, ES6 number formatting,
/// minimal string escaping, no whitespace.
pub fn canonicalize<T: Serialize>(value: &T) -> Result<Vec<u8>, ParseError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| ParseError::NotCanonical(e.to_string()))
}

/// `SHA-256(JCS(value))`.
pub fn canonical_sha256<T: Serialize>(value: &T) -> Result<[u8; 32], ParseError> {
    Ok(Sha256::digest(canonicalize(value)?).into())
}

/// Base64url without padding (RFC 4648 §5), the encoding of every binary value on the wire.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding or the standard alphabet is an error.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
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
