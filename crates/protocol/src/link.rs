//! `countersign://pair?broker=…&code=…[&fingerprint=…]` links, as a broker's admin hands them
//! out. A link only fills in the pairing form: the owner reads the address, and pairing still
//! needs a user-verified assertion. Links come from anywhere, so they are parsed strictly (and
//! fuzzed: `fuzz/fuzz_targets/pair_link.rs`).

use serde::Serialize;
use url::Url;

/// The scheme the app registers.
pub const SCHEME: &str = "countersign";

/// A pairing offer from a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PairLink {
    /// The broker's base URL (http only on loopback is checked when pairing).
    pub broker: String,
    /// The one-time pairing code.
    pub code: String,
    /// The broker certificate's SHA-256 fingerprint, when the link carries one.
    pub fingerprint: Option<String>,
}

/// Why a link was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a `countersign:` URL at all.
    #[error("not a countersign:// link")]
    Scheme,
    /// A `countersign:` URL for something other than pairing.
    #[error("countersign://{0} is not a link the app knows (only countersign://pair)")]
    Unknown(String),
    /// A required parameter is absent.
    #[error("the pairing link has no {0}")]
    Missing(&'static str),
    /// A parameter is given twice.
    #[error("the pairing link gives {0} more than once")]
    Repeated(String),
    /// A parameter the link format does not have.
    #[error("the pairing link has an unknown parameter {0:?}")]
    Parameter(String),
    /// The broker is not an http(s) address without user information.
    #[error(
        "the pairing link's broker must be an http(s) address without a user name, query or \
         fragment, and at most a plain path: {0}"
    )]
    Broker(String),
    /// The code has characters or a length a pairing code never has.
    #[error("the pairing link's code is not a pairing code")]
    Code,
    /// Longer than any real link.
    #[error("the link is longer than 4096 characters")]
    TooLong,
}

impl PairLink {
    /// Parses a `countersign://pair?…` link.
    pub fn parse(link: &str) -> Result<Self, LinkError> {
        if link.len() > 4096 {
            return Err(LinkError::TooLong);
        }
        let url = Url::parse(link).map_err(|_| LinkError::Scheme)?;
        if url.scheme() != SCHEME {
            return Err(LinkError::Scheme);
        }
        let what = url.host_str().unwrap_or_default();
        if what != "pair" || !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(LinkError::Unknown(format!("{what}{}", url.path())));
        }
        let (mut broker, mut code, mut fingerprint) = (None, None, None);
        for (key, value) in url.query_pairs() {
            let slot = match key.as_ref() {
                "broker" => &mut broker,
                "code" => &mut code,
                "fingerprint" => &mut fingerprint,
                other => return Err(LinkError::Parameter(other.chars().take(40).collect())),
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(LinkError::Repeated(key.into_owned()));
            }
        }
        let broker = broker.ok_or(LinkError::Missing("broker"))?;
        let code = code.ok_or(LinkError::Missing("code"))?;
        let parsed = Url::parse(&broker).map_err(|_| LinkError::Broker(broker.clone()))?;
        // The address the owner reads must be the one paired with: no user information, and
        // nothing after the host that could read as another host (`https://a//x@b.example`):
        // a path of plain segments at most, no query, no fragment.
        let plain_path = parsed.path() == "/"
            || parsed.path().split('/').skip(1).all(|segment| {
                !segment.is_empty()
                    && segment.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
                    })
            });
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || !plain_path
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(LinkError::Broker(broker));
        }
        if code.is_empty()
            || code.len() > 128
            || !code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(LinkError::Code);
        }
        Ok(Self {
            broker: parsed.as_str().trim_end_matches('/').to_owned(),
            code,
            fingerprint: fingerprint.filter(|f| !f.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pairing_link_fills_in_broker_code_and_fingerprint() {
        let link = PairLink::parse(
            "countersign://pair?broker=https%3A%2F%2Fbroker.example%3A8443&code=K7-x_9&fingerprint=AB%3ACD",
        )
        .unwrap();
        assert_eq!(
            link,
            PairLink {
                broker: "https://broker.example:8443".into(),
                code: "K7-x_9".into(),
                fingerprint: Some("AB:CD".into()),
            }
        );
        let plain =
            PairLink::parse("countersign://pair/?code=abc&broker=http://127.0.0.1:7300/").unwrap();
        assert_eq!(
            (plain.broker.as_str(), plain.fingerprint),
            ("http://127.0.0.1:7300", None)
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let refused = |link: &str| PairLink::parse(link).unwrap_err();
        assert_eq!(refused("https://pair?broker=x&code=y"), LinkError::Scheme);
        assert_eq!(refused("not a link"), LinkError::Scheme);
        assert!(matches!(
            refused("countersign://approve?id=pa_1"),
            LinkError::Unknown(_)
        ));
        assert!(matches!(
            refused("countersign://pair/extra?broker=http://a&code=b"),
            LinkError::Unknown(_)
        ));
        assert_eq!(
            refused("countersign://pair?code=abc"),
            LinkError::Missing("broker")
        );
        assert_eq!(
            refused("countersign://pair?broker=http://a"),
            LinkError::Missing("code")
        );
        assert_eq!(
            refused("countersign://pair?broker=http://a&broker=http://b&code=c"),
            LinkError::Repeated("broker".into())
        );
        assert_eq!(
            refused("countersign://pair?broker=http://a&code=c&then=approve"),
            LinkError::Parameter("then".into())
        );
        for broker in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@broker.example",
            "broker.example",
            // Found by the fuzz target: a host, then a path that reads like another address.
            "https://user2F//user::pw@broker.example~",
            "https://a.example/x@broker.example",
            "https://broker.example/?next=x",
            "https://broker.example/#x",
            "https://broker.example//x",
        ] {
            let link = format!(
                "countersign://pair?code=c&broker={}",
                broker
                    .replace(':', "%3A")
                    .replace('/', "%2F")
                    .replace('?', "%3F")
                    .replace('#', "%23")
            );
            assert!(matches!(refused(&link), LinkError::Broker(_)), "{broker}");
        }
        for code in ["", "a%20b", "%3Cscript%3E", &"x".repeat(129)] {
            let link = format!("countersign://pair?broker=http://a&code={code}");
            assert_eq!(refused(&link), LinkError::Code, "{code}");
        }
        let long = format!(
            "countersign://pair?broker=http://a&code={}",
            "x".repeat(5000)
        );
        assert_eq!(refused(&long), LinkError::TooLong);
    }
}
