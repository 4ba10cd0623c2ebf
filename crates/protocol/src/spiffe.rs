//! SPIFFE IDs, the names of agents (`spiffe://<trust domain>/<path>`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// A SPIFFE ID, checked against the SPIFFE-ID standard: scheme `spiffe`, a lowercase trust
/// domain of `[a-z0-9.-_]`, path segments of `[A-Za-z0-9.-_]` that are neither empty nor `.`
/// or `..`, no query, fragment, port or user info, at most 2048 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId(String);

const MAX_LEN: usize = 2048;

impl SpiffeId {
    /// Parses a SPIFFE ID.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = |reason: &str| ParseError::invalid("spiffe_id", format!("{text:?}: {reason}"));
        if text.len() > MAX_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("scheme is not spiffe://"))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain.is_empty() {
            return Err(bad("empty trust domain"));
        }
        if !domain
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        {
            return Err(bad(
                "trust domain must be lowercase letters, digits, '.', '-', '_'",
            ));
        }
        if !path.is_empty() || rest.ends_with('/') {
            for segment in path.split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(bad("empty, '.' or '..' path segment"));
                }
                let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
                if !segment.bytes().all(ok) {
                    return Err(bad("path segments are letters, digits, '.', '-', '_'"));
                }
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, ParseError> {
        Self::parse(&value)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> Self {
        id.0
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_ids() {
        for ok in [
            "spiffe://example.com/agent/billing",
            "spiffe://td",
            "spiffe://a-b_c.d/x.y/Z-1",
        ] {
            assert!(SpiffeId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_the_standard_forbids() {
        for bad in [
            "https://example.com/agent",
            "spiffe://Example.com/agent",
            "spiffe://example.com:443/agent",
            "spiffe://user@example.com/agent",
            "spiffe://example.com/agent?x=1",
            "spiffe://example.com/agent#frag",
            "spiffe://example.com/a//b",
            "spiffe://example.com/a/../b",
            "spiffe://example.com/",
            "spiffe:///agent",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("spiffe://example.com/{}", "a".repeat(2048));
        assert!(SpiffeId::parse(&long).is_err());
    }
}
