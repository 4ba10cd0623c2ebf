//! Sealed request state for the 2026-07-28 `input_required` path: the gateway hands the client
//! an opaque token naming the pending item and the action it holds, and on the client's retry
//! takes back only a token it sealed itself, unexpired, for the same call.
//!
//! The token is `b64url(payload) "." b64url(HMAC-SHA256(key, payload))`, the key derived from
//! the gateway's own secret, so a gateway restarted with the same configuration still reads the
//! tokens it handed out, and nobody else can make one.

use ring::hmac;
use serde::{Deserialize, Serialize};

use countersign_protocol::hash::{b64url, b64url_decode};

/// What a token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestState {
    /// The pending item.
    pub id: String,
    /// The action hash of the held call.
    pub hash: String,
    /// Unix seconds after which the token is refused (the item's expiry).
    pub exp: i64,
}

/// Seals and opens request state with one key.
#[derive(Clone)]
pub struct Sealer {
    key: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// The longest token taken back, in bytes.
const MAX_TOKEN: usize = 4096;

impl Sealer {
    /// A sealer whose key is derived from `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, b"countersign-gateway request state v1");
        let key = hmac::sign(&derive, secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
        }
    }

    pub fn seal(&self, state: &RequestState) -> String {
        let payload = serde_json::to_vec(state).unwrap_or_default();
        let tag = hmac::sign(&self.key, &payload);
        format!("{}.{}", b64url(&payload), b64url(tag.as_ref()))
    }

    /// The state in `token`, if this sealer made it and it has not expired at `now`.
    pub fn open(&self, token: &str, now: i64) -> Result<RequestState, &'static str> {
        if token.len() > MAX_TOKEN {
            return Err("the request state is too long");
        }
        let (payload, tag) = token
            .split_once('.')
            .ok_or("the request state is not one this gateway made")?;
        let payload = b64url_decode(payload).ok_or("the request state is not base64url")?;
        let tag = b64url_decode(tag).ok_or("the request state is not base64url")?;
        hmac::verify(&self.key, &payload, &tag)
            .map_err(|_| "the request state is not one this gateway made")?;
        let state: RequestState =
            serde_json::from_slice(&payload).map_err(|_| "the request state is unreadable")?;
        if now > state.exp {
            return Err("the held request has expired");
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RequestState {
        RequestState {
            id: "pa_x".into(),
            hash: "h".into(),
            exp: 100,
        }
    }

    #[test]
    fn only_this_gateways_unexpired_tokens_open() {
        let sealer = Sealer::new(b"secret one");
        let token = sealer.seal(&state());
        assert_eq!(sealer.open(&token, 50).unwrap(), state());
        assert!(sealer.open(&token, 101).is_err(), "expired");
        assert!(
            Sealer::new(b"secret two").open(&token, 50).is_err(),
            "another key"
        );
        // Any changed byte of payload or tag is refused.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != token {
                assert!(sealer.open(&tampered, 50).is_err(), "tampered at {i}");
            }
        }
        assert!(sealer.open("", 50).is_err());
        assert!(sealer.open(&"a".repeat(5000), 50).is_err());
    }
}
