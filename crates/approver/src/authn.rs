//! Authenticators: enrolment by a WebAuthn registration that webauthn-rs verifies, and
//! user-verified assertions over a caller-chosen challenge (the hash of the grant claims, of an
//! enrolment, or of a pairing), each checked locally before it leaves the machine.
//!
//! Backends are CTAP2 security keys over USB (feature `usb`) and — only with the
//! `dev-authenticator` feature — a software CTAP2 token whose keys live in the OS keyring and
//! nowhere else. Countersign is the WebAuthn client: it writes `clientDataJSON` itself
//! ([`countersign_protocol::webauthn::client_data_get`]: the exact origin, no `tokenBinding`)
//! and the authenticator signs its hash, so any relying party that compares origins exactly
//! accepts the assertions. (Windows Hello's API writes the client data itself, with the origin
//! as a URL with a trailing slash; it is not offered until that can be fixed.) Every ceremony runs on the calling thread and may
//! block for as long as the user takes; PIN, touch and "working" prompts go through [`Prompt`],
//! which the command line and the desktop app each implement.
//!
//! The relying party is fixed: rp_id [`RP_ID`], origin
//! [`ORIGIN`]. Hardware keys scope their credentials to
//! the rp_id, so changing it would orphan every enrolment.

use std::fmt;
use std::time::Duration;

use countersign_protocol::hash::{b64url, b64url_decode};
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::{
    CredentialJwk, FLAG_UV, ORIGIN, RP_ID, RelyingParty, WebAuthnAssertion, client_data_create,
    client_data_get, verify_assertion,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use webauthn_authenticator_rs::AuthenticatorBackendHashedClientData as Backend;
use webauthn_authenticator_rs::prelude::{Url, WebauthnCError};
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AllowCredentials, COSEAlgorithm, COSEKeyType, ECDSACurve, PublicKeyCredentialRequestOptions,
    UserVerificationPolicy,
};

use crate::error::{Error, Result};
#[cfg(feature = "dev-authenticator")]
use crate::vault::Vault;

/// How long an authenticator is given for one ceremony.
pub const CEREMONY_TIMEOUT: Duration = Duration::from_secs(60);

/// The keyring name of the development authenticator's token.
pub const DEV_TOKEN_SECRET: &str = "dev-authenticator";

/// The kinds of authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A FIDO2 security key over USB (CTAP2).
    SecurityKey,
    /// Windows Hello (not offered yet: see the module docs).
    WindowsHello,
    /// The development software authenticator (feature `dev-authenticator` only).
    Dev,
}

impl Kind {
    pub const ALL: [Self; 3] = [Self::SecurityKey, Self::WindowsHello, Self::Dev];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecurityKey => "security-key",
            Self::WindowsHello => "windows-hello",
            Self::Dev => "dev",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                Error::authenticator(
                    AuthenticatorFailure::Failed,
                    format!("unknown authenticator kind {text:?}"),
                )
            })
    }

    /// Whether this build can run ceremonies with this kind.
    pub fn available(self) -> bool {
        match self {
            Self::SecurityKey => cfg!(feature = "usb"),
            // Its client data would carry an origin exact-origin relying parties refuse.
            Self::WindowsHello => false,
            Self::Dev => cfg!(feature = "dev-authenticator"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an authenticator asks of the person in front of it. Implemented by each front end.
pub trait Prompt: Send + Sync + fmt::Debug {
    /// The authenticator needs its PIN; `None` cancels the ceremony.
    fn pin(&self) -> Option<String>;
    /// The user should touch the key now (must not block).
    fn touch(&self);
    /// The authenticator is working (must not block).
    fn processing(&self) {}
}

/// A prompt that never gets an answer: for runs without a person (a PIN request cancels).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unattended;

impl Prompt for Unattended {
    fn pin(&self) -> Option<String> {
        None
    }
    fn touch(&self) {}
}

/// Carries [`Prompt`] into webauthn-authenticator-rs.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "usb"),
    expect(dead_code, reason = "used by the USB backend")
)]
struct Ui<'a>(&'a dyn Prompt);

impl webauthn_authenticator_rs::ui::UiCallback for Ui<'_> {
    fn request_pin(&self) -> Option<String> {
        self.0.pin()
    }
    fn request_touch(&self) {
        self.0.touch();
    }
    fn processing(&self) {
        self.0.processing();
    }
    fn fingerprint_enrollment_feedback(
        &self,
        _remaining_samples: u32,
        _feedback: Option<webauthn_authenticator_rs::types::EnrollSampleStatus>,
    ) {
    }
    fn cable_qr_code(
        &self,
        _request_type: webauthn_authenticator_rs::types::CableRequestType,
        _url: String,
    ) {
    }
    fn dismiss_qr_code(&self) {}
    fn cable_status_update(&self, _state: webauthn_authenticator_rs::types::CableState) {}
}

/// Where ceremonies of one kind run, and what they need (the keyring, for the dev token).
#[derive(Debug, Clone, Copy)]
pub struct Authenticators<'a> {
    #[cfg(feature = "dev-authenticator")]
    vault: &'a Vault,
    #[cfg_attr(
        not(any(feature = "dev-authenticator", feature = "usb")),
        expect(dead_code, reason = "read by the dev and USB backends")
    )]
    prompt: &'a dyn Prompt,
}

impl<'a> Authenticators<'a> {
    pub fn new(
        #[cfg(feature = "dev-authenticator")] vault: &'a Vault,
        prompt: &'a dyn Prompt,
    ) -> Self {
        Self {
            #[cfg(feature = "dev-authenticator")]
            vault,
            prompt,
        }
    }

    /// Registers a new credential on an authenticator of `kind` for `user` (the local user
    /// handle), verifies the registration with webauthn-rs (rp_id, origin, challenge, user
    /// verification, an ES256 key) and returns the credential.
    pub fn register(&self, kind: Kind, user: &str) -> Result<RegisteredCredential> {
        let core = relying_party_core()?;
        let builder = core
            .new_challenge_register_builder(user.as_bytes(), user, user)
            .map_err(webauthn)?
            .user_verification_policy(UserVerificationPolicy::Required)
            .credential_algorithms(vec![COSEAlgorithm::ES256]);
        let (options, state) = core
            .generate_challenge_register(builder)
            .map_err(webauthn)?;
        let client_data = client_data_create(
            &RelyingParty::countersign(),
            options.public_key.challenge.as_ref(),
        );
        let hash = Sha256::digest(&client_data).to_vec();
        let mut response = self.run(kind, |backend| {
            backend.perform_register(hash, options.public_key, timeout_ms())
        })?;
        response.response.client_data_json = client_data;
        let credential = core
            .register_credential(&response, &state, None)
            .map_err(webauthn)?;
        if !credential.user_verified {
            return Err(Error::authenticator(
                AuthenticatorFailure::NotVerified,
                "the authenticator did not verify the user (a PIN or biometric is required)",
            ));
        }
        let COSEKeyType::EC_EC2(key) = &credential.cred.key else {
            return Err(Error::authenticator(
                AuthenticatorFailure::Failed,
                "only P-256 (ES256) keys are supported",
            ));
        };
        if key.curve != ECDSACurve::SECP256R1 {
            return Err(Error::authenticator(
                AuthenticatorFailure::Failed,
                "only P-256 (ES256) keys are supported",
            ));
        }
        let public_key = CredentialJwk::p256_checked(&key.x, &key.y)?;
        Ok(RegisteredCredential {
            id: b64url(&credential.cred_id),
            public_key,
        })
    }

    /// A user-verified assertion by `credential` (an authenticator of `kind`) over `challenge`,
    /// verified here before it is returned.
    pub fn assert(
        &self,
        kind: Kind,
        credential: &RegisteredCredential,
        challenge: &[u8; 32],
    ) -> Result<WebAuthnAssertion> {
        let id = b64url_decode(&credential.id).ok_or_else(|| {
            Error::authenticator(
                AuthenticatorFailure::Failed,
                "credential id is not base64url",
            )
        })?;
        let options = PublicKeyCredentialRequestOptions {
            challenge: challenge.to_vec(),
            timeout: Some(timeout_ms()),
            rp_id: RP_ID.into(),
            allow_credentials: vec![AllowCredentials {
                type_: "public-key".into(),
                id,
                transports: None,
            }],
            user_verification: UserVerificationPolicy::Required,
            hints: None,
            extensions: None,
        };
        let client_data = client_data_get(&RelyingParty::countersign(), challenge);
        let hash = Sha256::digest(&client_data).to_vec();
        let response = self.run(kind, |backend| {
            backend.perform_auth(hash, options, timeout_ms())
        })?;
        let assertion = WebAuthnAssertion::from_parts(
            &response.raw_id,
            &response.response.authenticator_data,
            &client_data,
            &response.response.signature,
        );
        let key = credential.public_key.to_key()?;
        let verified =
            verify_assertion(&assertion, challenge, &RelyingParty::countersign(), |id| {
                (id == credential.id).then_some(&key)
            })
            .map_err(|e| {
                Error::authenticator(
                    AuthenticatorFailure::Failed,
                    format!("the assertion does not verify: {e}"),
                )
            })?;
        if verified.flags & FLAG_UV == 0 {
            return Err(Error::authenticator(
                AuthenticatorFailure::NotVerified,
                "the authenticator did not verify the user",
            ));
        }
        Ok(assertion)
    }

    /// Runs one ceremony on a backend of `kind`.
    fn run<T: Send>(
        &self,
        kind: Kind,
        ceremony: impl FnOnce(&mut dyn Backend) -> Result<T, WebauthnCError> + Send,
    ) -> Result<T> {
        if !kind.available() {
            drop(ceremony);
            return Err(Error::authenticator(
                AuthenticatorFailure::Failed,
                format!(
                    "this build has no {kind} backend (see `countersign authenticators add --help`)"
                ),
            ));
        }
        match kind {
            #[cfg(feature = "dev-authenticator")]
            Kind::Dev => self.run_dev(ceremony),
            #[cfg(feature = "usb")]
            Kind::SecurityKey => self.run_usb(ceremony),
            // `available()` ruled out the kinds this build lacks.
            _ => Err(Error::authenticator(
                AuthenticatorFailure::Failed,
                format!("no {kind} backend"),
            )),
        }
    }

    /// The development token: loaded from the keyring, used, and written back (its signature
    /// counter moves with every ceremony, and a counter that goes back is refused by brokers).
    #[cfg(feature = "dev-authenticator")]
    fn run_dev<T>(
        &self,
        ceremony: impl FnOnce(&mut dyn Backend) -> Result<T, WebauthnCError>,
    ) -> Result<T> {
        use webauthn_authenticator_rs::softtoken::SoftToken;
        let mut token = match self.vault.get(DEV_TOKEN_SECRET)? {
            Some(bytes) => SoftToken::from_cbor(&bytes)
                .map_err(|e| Error::KeyringCorrupt(format!("{DEV_TOKEN_SECRET}: {e:?}")))?,
            // User verification is reported as done, as a platform authenticator unlocked by
            // the user would; this is exactly why the dev authenticator is for demos only.
            None => SoftToken::new(true).map_err(ceremony_failed)?.0,
        };
        self.prompt.touch();
        let result = ceremony(&mut token).map_err(ceremony_failed)?;
        let bytes = zeroize::Zeroizing::new(token.to_cbor().map_err(ceremony_failed)?);
        self.vault.put(DEV_TOKEN_SECRET, &bytes)?;
        Ok(result)
    }

    /// The first FIDO2 key on USB. The CTAP2 layer blocks on its own futures and needs a
    /// runtime's reactor, so the whole ceremony runs on a thread of its own with a private
    /// runtime (callable from async code and from plain threads alike).
    #[cfg(feature = "usb")]
    fn run_usb<T: Send>(
        &self,
        ceremony: impl FnOnce(&mut dyn Backend) -> Result<T, WebauthnCError> + Send,
    ) -> Result<T> {
        use webauthn_authenticator_rs::ctap2::CtapAuthenticator;
        use webauthn_authenticator_rs::transport::Transport as _;
        use webauthn_authenticator_rs::usb::USBTransport;

        let prompt = self.prompt;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()?;
                    let ui = Ui(prompt);
                    let token = runtime.block_on(async {
                        let transport = USBTransport::new().await.map_err(no_key)?;
                        let mut tokens = transport.tokens().await.map_err(no_key)?;
                        if tokens.is_empty() {
                            return Err(Error::authenticator(
                                AuthenticatorFailure::NoKey,
                                "no security key is connected: plug one in and try again",
                            ));
                        }
                        Ok(tokens.swap_remove(0))
                    })?;
                    let mut authenticator = runtime
                        .block_on(CtapAuthenticator::new(token, &ui))
                        .ok_or_else(|| {
                            Error::authenticator(
                                AuthenticatorFailure::Failed,
                                "the security key does not speak CTAP2",
                            )
                        })?;
                    let _context = runtime.enter();
                    ceremony(&mut authenticator).map_err(ceremony_failed)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::authenticator(
                        AuthenticatorFailure::Failed,
                        "the security key ceremony crashed",
                    ))
                })
        })
    }
}

#[cfg(feature = "usb")]
fn no_key(e: WebauthnCError) -> Error {
    Error::authenticator(
        AuthenticatorFailure::NoKey,
        format!("cannot reach USB security keys: {e:?}"),
    )
}

/// webauthn-rs configured for the fixed Countersign relying party.
///
/// `new_unsafe_experts_only` is the constructor that takes every setting as given, without the
/// facade's defaults; it is safe here because nothing is left open: the RP id and origin are
/// this crate's constants, subdomains and other ports are refused (the two `Some(false)`), and
/// the core only checks the registration the authenticator returned to this process.
fn relying_party_core() -> Result<WebauthnCore> {
    Ok(WebauthnCore::new_unsafe_experts_only(
        "Countersign",
        RP_ID,
        vec![origin()?],
        CEREMONY_TIMEOUT,
        Some(false),
        Some(false),
    ))
}

fn origin() -> Result<Url> {
    Url::parse(ORIGIN)
        .map_err(|e| Error::authenticator(AuthenticatorFailure::Failed, format!("origin: {e}")))
}

fn timeout_ms() -> u32 {
    u32::try_from(CEREMONY_TIMEOUT.as_millis()).unwrap_or(u32::MAX)
}

fn webauthn(e: webauthn_rs_core::error::WebauthnError) -> Error {
    Error::authenticator(
        AuthenticatorFailure::Failed,
        format!("the registration does not verify: {e:?}"),
    )
}

#[cfg_attr(
    not(any(feature = "dev-authenticator", feature = "usb")),
    expect(dead_code, reason = "used by every backend")
)]
fn ceremony_failed(e: WebauthnCError) -> Error {
    use webauthn_authenticator_rs::error::CtapError as C;
    let (failure, text) = match e {
        WebauthnCError::Cancelled
        | WebauthnCError::Ctap(C::Ctap2KeepAliveCancel | C::Ctap2OperationDenied) => {
            return Error::Cancelled;
        }
        WebauthnCError::Ctap(C::Ctap2UserActionTimeout | C::Ctap1Timeout) => (
            AuthenticatorFailure::Timeout,
            "the authenticator timed out waiting for a touch".into(),
        ),
        WebauthnCError::Ctap(C::Ctap2PinInvalid | C::Ctap2PinAuthInvalid) => {
            (AuthenticatorFailure::WrongPin, "wrong PIN".into())
        }
        WebauthnCError::Ctap(C::Ctap2PinBlocked | C::Ctap2PinAuthBlocked) => (
            AuthenticatorFailure::PinBlocked,
            "the PIN is blocked: too many wrong attempts".into(),
        ),
        WebauthnCError::Ctap(C::Ctap2NoCredentials) => (
            AuthenticatorFailure::WrongKey,
            "this authenticator does not hold the enrolled credential (wrong key?)".into(),
        ),
        other => (AuthenticatorFailure::Failed, format!("{other:?}")),
    };
    Error::authenticator(failure, text)
}

/// How a ceremony failed, each with its own error code: the front ends say what to do next
/// from the code, never from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum AuthenticatorFailure {
    /// Nobody touched the authenticator in time.
    #[serde(rename = "authenticator_timeout")]
    Timeout,
    /// The PIN was wrong (the authenticator counts the attempts).
    #[serde(rename = "wrong_pin")]
    WrongPin,
    /// Too many wrong PINs: the authenticator refuses until it is reset or unblocked.
    #[serde(rename = "pin_blocked")]
    PinBlocked,
    /// No authenticator of that kind is connected or reachable.
    #[serde(rename = "no_key")]
    NoKey,
    /// The authenticator does not hold the enrolled credential.
    #[serde(rename = "wrong_key")]
    WrongKey,
    /// It did not verify the person (no PIN or biometric): never accepted.
    #[serde(rename = "not_verified")]
    NotVerified,
    /// Anything else: an answer that does not verify, an unsupported key, a build without
    /// that kind of authenticator.
    #[serde(rename = "authenticator")]
    Failed,
}

impl AuthenticatorFailure {
    /// The error code (the serialized name).
    pub fn code(self) -> &'static str {
        match self {
            Self::Timeout => "authenticator_timeout",
            Self::WrongPin => "wrong_pin",
            Self::PinBlocked => "pin_blocked",
            Self::NoKey => "no_key",
            Self::WrongKey => "wrong_key",
            Self::NotVerified => "not_verified",
            Self::Failed => "authenticator",
        }
    }
}

/// Where a ceremony stands, as a front end shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum CeremonyStep {
    /// The authenticator asks for its PIN.
    Pin,
    /// Touch the authenticator now.
    Touch,
    /// The authenticator is working.
    Processing,
}
