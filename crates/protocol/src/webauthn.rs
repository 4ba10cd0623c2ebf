//! The WebAuthn assertion carried in a grant, and its verification (WebAuthn Level 3 §7.2,
//! the steps that apply to a relying party that chose the challenge itself).
//!
//! Keys are checked with RustCrypto's `p256`; signatures are verified with `ring` (its P-256 is
//! several times faster here). Nothing here is hand-written cryptography.

use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::{AssertionError, ParseError};
use crate::hash::{b64url, b64url_decode};

/// The WebAuthn relying party ID of every Countersign enrolment. Hardware keys scope their
/// credentials to it, so changing it orphans every enrolled authenticator.
pub const RP_ID: &str = "countersign.dev";
/// The origin the Countersign app, as WebAuthn client, writes into `clientDataJSON`.
pub const ORIGIN: &str = "https://countersign.dev";

/// Authenticator data flag: user present.
pub const FLAG_UP: u8 = 0x01;
/// Authenticator data flag: user verified.
pub const FLAG_UV: u8 = 0x04;

/// The relying party an assertion must have been made for.
#[derive(Clone, Debug)]
pub struct RelyingParty {
    rp_id: String,
    origin_text: String,
    rp_id_hash: [u8; 32],
}

impl RelyingParty {
    /// The fixed Countersign relying party ([`RP_ID`], [`ORIGIN`]).
    pub fn countersign() -> Self {
        // RP_ID and ORIGIN are constants that parse; a test pins this.
        Self::new(RP_ID, ORIGIN).unwrap_or_else(|_| unreachable_rp())
    }

    /// Another relying party, for deployments that run their own WebAuthn client.
    pub fn new(rp_id: &str, origin: &str) -> Result<Self, ParseError> {
        let url =
            url::Url::parse(origin).map_err(|e| ParseError::invalid("origin", e.to_string()))?;
        let host = url.host_str().unwrap_or_default();
        let registrable = host == rp_id || host.ends_with(&format!(".{rp_id}"));
        if url.scheme() != "https" || !registrable || rp_id.is_empty() {
            return Err(ParseError::invalid(
                "origin",
                "must be https on the rp_id or below it",
            ));
        }
        Ok(Self {
            rp_id: rp_id.to_owned(),
            origin_text: url.origin().ascii_serialization(),
            rp_id_hash: Sha256::digest(rp_id.as_bytes()).into(),
        })
    }

    /// The rp_id.
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// The origin, serialised (`https://host[:port]`).
    pub fn origin(&self) -> &str {
        &self.origin_text
    }
}

#[expect(
    clippy::panic,
    reason = "RP_ID and ORIGIN are constants; the unit test pins them"
)]
fn unreachable_rp() -> RelyingParty {
    panic!("the built-in relying party constants do not parse")
}

/// A WebAuthn assertion, in the member names of WebAuthn Level 3
/// `AuthenticationResponseJSON` / `AuthenticatorAssertionResponseJSON`; binary values are
/// base64url without padding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WebAuthnAssertion {
    /// The credential id.
    pub id: String,
    /// `authenticatorData`, base64url: the rpIdHash, flags and sign counter (at least 37 bytes).
    #[serde(rename = "authenticatorData")]
    pub authenticator_data: String,
    /// `clientDataJSON`, base64url: the client data whose SHA-256 the authenticator signed.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// ASN.1 DER ECDSA signature over `authenticatorData || SHA-256(clientDataJSON)`.
    pub signature: String,
    /// `userHandle`, base64url, when the authenticator returned one; verification does not use it.
    #[serde(
        rename = "userHandle",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_handle: Option<String>,
}

impl WebAuthnAssertion {
    /// Builds an assertion from raw bytes.
    pub fn from_parts(
        credential_id: &[u8],
        authenticator_data: &[u8],
        client_data_json: &[u8],
        signature: &[u8],
    ) -> Self {
        Self {
            id: b64url(credential_id),
            authenticator_data: b64url(authenticator_data),
            client_data_json: b64url(client_data_json),
            signature: b64url(signature),
            user_handle: None,
        }
    }

    /// The challenge in `clientDataJSON`, decoded, without verifying anything else.
    pub fn challenge(&self) -> Result<Vec<u8>, AssertionError> {
        let raw = b64url_decode(&self.client_data_json)
            .ok_or(AssertionError::Encoding("clientDataJSON"))?;
        let client = CollectedClientData::parse(&raw)?;
        b64url_decode(&client.challenge).ok_or(AssertionError::ClientData("challenge".into()))
    }
}

/// The members of `clientDataJSON` the relying party checks. Others are allowed (the standard
/// requires tolerance) but ignored.
#[derive(Deserialize)]
struct CollectedClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
    #[serde(rename = "topOrigin", default)]
    top_origin: Option<String>,
}

impl CollectedClientData {
    /// Parses directly into the checked members: serde refuses a duplicated known member, and
    /// unknown members are skipped as the standard requires.
    fn parse(raw: &[u8]) -> Result<Self, AssertionError> {
        if raw.len() > 4096 {
            return Err(AssertionError::ClientData("longer than 4096 bytes".into()));
        }
        serde_json::from_slice(raw).map_err(|e| AssertionError::ClientData(e.to_string()))
    }
}

/// A registered WebAuthn credential's public key, as an RFC 7517 EC JWK (`kty` EC, `crv`
/// P-256, COSE algorithm ES256).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialJwk {
    /// Key type; must be `EC`.
    pub kty: String,
    /// Curve; must be `P-256`.
    pub crv: String,
    /// The point's x coordinate, 32 bytes, base64url.
    pub x: String,
    /// The point's y coordinate, 32 bytes, base64url.
    pub y: String,
    /// When present, must be `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl CredentialJwk {
    /// The JWK of a P-256 public key.
    pub fn from_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        Self::p256(
            point.x().map(|x| &x[..]).unwrap_or_default(),
            point.y().map(|y| &y[..]).unwrap_or_default(),
        )
    }

    /// The ES256 JWK of the P-256 point (`x`, `y`), checked to lie on the curve: the one
    /// place a credential key is built, whatever it was read from (a COSE key, a registration).
    pub fn p256_checked(x: &[u8], y: &[u8]) -> Result<Self, ParseError> {
        let jwk = Self::p256(x, y);
        jwk.to_key()?;
        Ok(jwk)
    }

    fn p256(x: &[u8], y: &[u8]) -> Self {
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: b64url(x),
            y: b64url(y),
            alg: Some("ES256".into()),
        }
    }

    /// The key, if this is a valid P-256 point.
    pub fn to_key(&self) -> Result<CredentialKey, ParseError> {
        let bad = |r: &str| ParseError::invalid("credential public_key", r.to_owned());
        if self.kty != "EC"
            || self.crv != "P-256"
            || self.alg.as_deref().is_some_and(|a| a != "ES256")
        {
            return Err(bad("only EC P-256 (ES256) credentials are supported"));
        }
        let x = b64url_decode(&self.x)
            .filter(|x| x.len() == 32)
            .ok_or_else(|| bad("bad x"))?;
        let y = b64url_decode(&self.y)
            .filter(|y| y.len() == 32)
            .ok_or_else(|| bad("bad y"))?;
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| bad("not a point on P-256"))?;
        let sec1: [u8; 65] = sec1.try_into().map_err(|_| bad("not a point on P-256"))?;
        Ok(CredentialKey { sec1 })
    }
}

/// A registered credential's P-256 public key, checked to lie on the curve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialKey {
    sec1: [u8; 65],
}

impl CredentialKey {
    /// Whether `der_signature` is a valid ES256 signature of `message` (SHA-256, ASN.1 DER).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.sec1,
        )
        .verify(message, der_signature)
        .is_ok()
    }
}

/// What a verified assertion tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The id (base64url) of the credential that made the assertion.
    pub credential_id: String,
    /// The authenticator data flags byte (see [`FLAG_UP`], [`FLAG_UV`]).
    pub flags: u8,
    /// The authenticator's sign counter; not judged here: the caller compares it with what it
    /// stored.
    pub sign_count: u32,
}

/// Verifies `assertion` as a WebAuthn `get` ceremony for `rp` over `challenge`, signed by the
/// credential that `lookup` returns for its id. The sign counter is returned, not judged: the
/// caller compares it with what it stored.
pub fn verify_assertion<'k>(
    assertion: &WebAuthnAssertion,
    challenge: &[u8; 32],
    rp: &RelyingParty,
    lookup: impl FnOnce(&str) -> Option<&'k CredentialKey>,
) -> Result<VerifiedAssertion, AssertionError> {
    let client_raw = b64url_decode(&assertion.client_data_json)
        .ok_or(AssertionError::Encoding("clientDataJSON"))?;
    let auth_data = b64url_decode(&assertion.authenticator_data)
        .ok_or(AssertionError::Encoding("authenticatorData"))?;
    let signature =
        b64url_decode(&assertion.signature).ok_or(AssertionError::Encoding("signature"))?;
    b64url_decode(&assertion.id).ok_or(AssertionError::Encoding("id"))?;

    // §7.2 steps 11–14: the client data.
    let client = CollectedClientData::parse(&client_raw)?;
    if client.kind != "webauthn.get" {
        return Err(AssertionError::WrongCeremony);
    }
    let presented = b64url_decode(&client.challenge).unwrap_or_default();
    if !bool::from(presented.ct_eq(challenge)) {
        return Err(AssertionError::ChallengeMismatch);
    }
    if !same_origin(&client.origin, &rp.origin_text) {
        return Err(AssertionError::OriginMismatch(client.origin));
    }
    if client.cross_origin == Some(true) || client.top_origin.is_some() {
        return Err(AssertionError::CrossOrigin);
    }

    // Steps 15–17: the authenticator data.
    if auth_data.len() < 37 {
        return Err(AssertionError::AuthenticatorDataTooShort);
    }
    if !bool::from(auth_data[..32].ct_eq(&rp.rp_id_hash)) {
        return Err(AssertionError::RpIdMismatch);
    }
    let flags = auth_data[32];
    if flags & FLAG_UP == 0 {
        return Err(AssertionError::UserNotPresent);
    }
    if flags & FLAG_UV == 0 {
        return Err(AssertionError::UserNotVerified);
    }

    // Steps 19–20: the signature over authData || SHA-256(clientDataJSON).
    let key = lookup(&assertion.id)
        .ok_or_else(|| AssertionError::UnknownCredential(assertion.id.clone()))?;
    let mut signed = auth_data.clone();
    signed.extend_from_slice(&Sha256::digest(&client_raw));
    if !key.verify(&signed, &signature) {
        return Err(AssertionError::BadSignature);
    }

    let sign_count =
        u32::from_be_bytes([auth_data[33], auth_data[34], auth_data[35], auth_data[36]]);
    Ok(VerifiedAssertion {
        credential_id: assertion.id.clone(),
        flags,
        sign_count,
    })
}

/// Whether the `origin` member is exactly the relying party's origin, serialised as WebAuthn
/// and HTML serialise an origin (`https://host[:port]`, no trailing slash). Relying parties that
/// compare origins as strings refuse anything else, so Countersign never writes anything else
/// and refuses anything else.
fn same_origin(origin: &str, expected: &str) -> bool {
    bool::from(origin.as_bytes().ct_eq(expected.as_bytes()))
}

/// The `clientDataJSON` of a `get` ceremony over `challenge` for `rp`, as Countersign (the
/// WebAuthn client) writes it: `{"type":"webauthn.get","challenge":…,"origin":…,
/// "crossOrigin":false}` with the origin serialised exactly and no `tokenBinding` member.
pub fn client_data_get(rp: &RelyingParty, challenge: &[u8]) -> Vec<u8> {
    client_data("webauthn.get", rp, challenge)
}

/// The `clientDataJSON` of a `create` (registration) ceremony; see [`client_data_get`].
pub fn client_data_create(rp: &RelyingParty, challenge: &[u8]) -> Vec<u8> {
    client_data("webauthn.create", rp, challenge)
}

fn client_data(kind: &str, rp: &RelyingParty, challenge: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    struct ClientData<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        challenge: String,
        origin: &'a str,
        #[serde(rename = "crossOrigin")]
        cross_origin: bool,
    }
    // Serialising a struct of strings and a bool cannot fail.
    serde_json::to_vec(&ClientData {
        kind,
        challenge: b64url(challenge),
        origin: rp.origin(),
        cross_origin: false,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_relying_party_parses() {
        let rp = RelyingParty::countersign();
        assert_eq!(rp.rp_id(), "countersign.dev");
        assert_eq!(rp.origin(), "https://countersign.dev");
    }

    #[test]
    fn origins_compare_exactly() {
        let rp = RelyingParty::countersign();
        assert!(same_origin("https://countersign.dev", rp.origin()));
        // A URL serialiser's trailing slash is not the origin's serialisation.
        assert!(!same_origin("https://countersign.dev/", rp.origin()));
        assert!(!same_origin("https://countersign.dev/x", rp.origin()));
        assert!(!same_origin("http://countersign.dev", rp.origin()));
        assert!(!same_origin("https://COUNTERSIGN.dev", rp.origin()));
        assert!(!same_origin(
            "https://countersign.dev.evil.example",
            rp.origin()
        ));
        assert!(!same_origin("https://countersign.dev:8443", rp.origin()));
    }

    #[test]
    fn client_data_is_exact() {
        let rp = RelyingParty::countersign();
        let text = String::from_utf8(client_data_get(&rp, &[1, 2, 3])).unwrap();
        assert_eq!(
            text,
            r#"{"type":"webauthn.get","challenge":"AQID","origin":"https://countersign.dev","crossOrigin":false}"#
        );
    }

    #[test]
    fn relying_party_must_be_https_on_its_domain() {
        assert!(RelyingParty::new("countersign.dev", "https://app.countersign.dev").is_ok());
        assert!(RelyingParty::new("countersign.dev", "http://countersign.dev").is_err());
        assert!(RelyingParty::new("countersign.dev", "https://evilcountersign.dev").is_err());
    }
}
