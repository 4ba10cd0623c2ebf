//! Timestamps on the wire: RFC 3339 in UTC, kept exactly as written.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ParseError;

/// An RFC 3339 UTC timestamp that keeps its exact text, so re-encoding never changes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp {
    text: String,
    unix: i64,
}

impl Timestamp {
    /// The timestamp for `unix` seconds.
    pub fn from_unix(unix: i64) -> Result<Self, ParseError> {
        let at = OffsetDateTime::from_unix_timestamp(unix)
            .map_err(|e| ParseError::invalid("timestamp", e.to_string()))?;
        let text = at
            .format(&Rfc3339)
            .map_err(|e| ParseError::invalid("timestamp", e.to_string()))?;
        Ok(Self { text, unix })
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        self.unix
    }

    /// The RFC 3339 text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Timestamp {
    type Error = ParseError;

    fn try_from(text: String) -> Result<Self, ParseError> {
        let at = OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| ParseError::invalid("timestamp", format!("{text:?}: {e}")))?;
        if !text.ends_with('Z') {
            return Err(ParseError::invalid(
                "timestamp",
                format!("{text:?}: not UTC (Z)"),
            ));
        }
        Ok(Self {
            unix: at.unix_timestamp(),
            text,
        })
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> Self {
        t.text
    }
}
