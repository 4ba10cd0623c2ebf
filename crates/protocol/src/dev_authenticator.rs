//! A software WebAuthn authenticator (webauthn-authenticator-rs `SoftToken`, a CTAP2 token)
//! driven the way a USB security key is: Countersign writes the `clientDataJSON` itself
//! ([`crate::webauthn::client_data_get`]) and the token signs its hash with a real P-256 key. For tests and the demo only; it exists only with the `dev-authenticator`
//! feature, and anything that uses it must say so loudly.

use std::fmt;

use serde_cbor_2::Value as Cbor;
use sha2::{Digest as _, Sha256};
use webauthn_authenticator_rs::AuthenticatorBackendHashedClientData;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_rs_proto::{
    AllowCredentials, AuthenticatorSelectionCriteria, PubKeyCredParams,
    PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    RelyingParty as ProtoRelyingParty, User, UserVerificationPolicy,
};

use crate::hash::{b64url, b64url_decode};
use crate::registry::RegisteredCredential;
use crate::webauthn::{
    CredentialJwk, RelyingParty, WebAuthnAssertion, client_data_create, client_data_get,
};

/// Why the software authenticator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevAuthenticatorError {
    /// The software token failed a registration or authentication ceremony.
    #[error("authenticator: {0:?}")]
    Ceremony(webauthn_authenticator_rs::error::WebauthnCError),
    /// The attestation object could not be read, or a credential id is not base64url.
    #[error("attestation object: {0}")]
    Attestation(String),
}

/// A software authenticator holding any number of credentials for one relying party.
pub struct SoftAuthenticator {
    token: SoftToken,
    rp: RelyingParty,
}

/// How long a ceremony may take, in milliseconds (the token answers at once).
const TIMEOUT_MS: u32 = 60_000;

impl SoftAuthenticator {
    /// A new authenticator for `rp`. It reports user verification, as a platform
    /// authenticator that unlocked with the user's PIN would.
    pub fn new(rp: RelyingParty) -> Result<Self, DevAuthenticatorError> {
        let (token, _attestation) =
            SoftToken::new(true).map_err(DevAuthenticatorError::Ceremony)?;
        Ok(Self { token, rp })
    }

    /// Runs a registration ceremony and returns the new credential as the registry holds it.
    pub fn register(&mut self, user: &str) -> Result<RegisteredCredential, DevAuthenticatorError> {
        let options = PublicKeyCredentialCreationOptions {
            rp: ProtoRelyingParty {
                name: "Countersign".into(),
                id: self.rp.rp_id().into(),
            },
            user: User {
                id: user.as_bytes().to_vec(),
                name: user.into(),
                display_name: user.into(),
            },
            challenge: Vec::new(),
            pub_key_cred_params: vec![PubKeyCredParams {
                type_: "public-key".into(),
                alg: -7,
            }],
            timeout: Some(60_000),
            exclude_credentials: None,
            authenticator_selection: Some(AuthenticatorSelectionCriteria {
                authenticator_attachment: None,
                resident_key: None,
                require_resident_key: false,
                user_verification: UserVerificationPolicy::Required,
            }),
            hints: None,
            attestation: None,
            attestation_formats: None,
            extensions: None,
        };
        let client_data = client_data_create(&self.rp, &random_challenge());
        let credential = AuthenticatorBackendHashedClientData::perform_register(
            &mut self.token,
            Sha256::digest(&client_data).to_vec(),
            options,
            TIMEOUT_MS,
        )
        .map_err(DevAuthenticatorError::Ceremony)?;
        let public_key = credential_key(&credential.response.attestation_object)?;
        Ok(RegisteredCredential {
            id: b64url(&credential.raw_id),
            public_key,
        })
    }

    /// Runs an authentication ceremony over `challenge` with credential `credential_id`,
    /// requiring user verification when `user_verification` is set.
    pub fn assert(
        &mut self,
        credential_id: &str,
        challenge: &[u8; 32],
        user_verification: bool,
    ) -> Result<WebAuthnAssertion, DevAuthenticatorError> {
        let id = b64url_decode(credential_id)
            .ok_or_else(|| DevAuthenticatorError::Attestation("credential id".into()))?;
        let options = PublicKeyCredentialRequestOptions {
            challenge: Vec::new(),
            timeout: Some(60_000),
            rp_id: self.rp.rp_id().into(),
            allow_credentials: vec![AllowCredentials {
                type_: "public-key".into(),
                id,
                transports: None,
            }],
            user_verification: if user_verification {
                UserVerificationPolicy::Required
            } else {
                UserVerificationPolicy::Discouraged_DO_NOT_USE
            },
            hints: None,
            extensions: None,
        };
        let client_data = client_data_get(&self.rp, challenge);
        let credential = AuthenticatorBackendHashedClientData::perform_auth(
            &mut self.token,
            Sha256::digest(&client_data).to_vec(),
            options,
            TIMEOUT_MS,
        )
        .map_err(DevAuthenticatorError::Ceremony)?;
        let response = credential.response;
        Ok(WebAuthnAssertion::from_parts(
            &credential.raw_id,
            &response.authenticator_data,
            &client_data,
            &response.signature,
        ))
    }
}

impl fmt::Debug for SoftAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftAuthenticator")
            .field("rp", &self.rp.rp_id())
            .finish_non_exhaustive()
    }
}

fn random_challenge() -> Vec<u8> {
    use rand_core::RngCore as _;
    let mut challenge = vec![0u8; 32];
    rand_core::OsRng.fill_bytes(&mut challenge);
    challenge
}

/// Extracts the ES256 public key from a packed attestation object's attested credential data.
fn credential_key(attestation_object: &[u8]) -> Result<CredentialJwk, DevAuthenticatorError> {
    let bad = |r: &str| DevAuthenticatorError::Attestation(r.to_owned());
    let object: Cbor =
        serde_cbor_2::from_slice(attestation_object).map_err(|e| bad(&e.to_string()))?;
    let Cbor::Map(object) = object else {
        return Err(bad("not a map"));
    };
    let Some(Cbor::Bytes(auth_data)) = object.get(&Cbor::Text("authData".into())) else {
        return Err(bad("no authData"));
    };
    // rpIdHash(32) flags(1) signCount(4) aaguid(16) credentialIdLength(2) credentialId COSE_Key
    let id_len = auth_data
        .get(53..55)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| bad("short authData"))?;
    let cose = auth_data
        .get(55 + id_len..)
        .ok_or_else(|| bad("short authData"))?;
    let key: Cbor = serde_cbor_2::from_slice(cose).map_err(|e| bad(&e.to_string()))?;
    let Cbor::Map(key) = key else {
        return Err(bad("COSE key is not a map"));
    };
    let int = |k: i128| key.get(&Cbor::Integer(k));
    if int(1) != Some(&Cbor::Integer(2)) || int(3) != Some(&Cbor::Integer(-7)) {
        return Err(bad("not an EC2 ES256 key"));
    }
    let (Some(Cbor::Bytes(x)), Some(Cbor::Bytes(y))) = (int(-2), int(-3)) else {
        return Err(bad("no coordinates"));
    };
    CredentialJwk::p256_checked(x, y).map_err(|e| bad(&e.to_string()))
}

/// A complete development approver: a device key, a software authenticator with one enrolled
/// credential, and its identity. Approving runs the real ceremony and mints a real grant.
#[derive(Debug)]
pub struct DevApprover {
    /// The device's Ed25519 signing key.
    pub device: crate::DeviceSigningKey,
    /// The software authenticator that holds the credential.
    pub authenticator: SoftAuthenticator,
    /// The enrolled credential, as the registry holds it.
    pub credential: RegisteredCredential,
    /// Who mints: the approver id, its owner and its broker.
    pub issuer: crate::grant::Issuer,
}

/// Why a development approval failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevApproveError {
    /// The software authenticator failed.
    #[error(transparent)]
    Authenticator(#[from] DevAuthenticatorError),
    /// Minting the grant failed.
    #[error(transparent)]
    Mint(#[from] crate::MintError),
}

impl DevApprover {
    /// A new approver `approver_id` owned by `owner` and paired with `broker`, with a fresh key
    /// and credential.
    pub fn new(
        approver_id: &str,
        owner: &str,
        broker: &str,
    ) -> Result<Self, DevAuthenticatorError> {
        let mut authenticator = SoftAuthenticator::new(RelyingParty::countersign())?;
        let credential = authenticator.register(owner)?;
        Ok(Self {
            device: crate::DeviceSigningKey::generate(),
            authenticator,
            credential,
            issuer: crate::grant::Issuer {
                approver_id: approver_id.into(),
                owner: owner.into(),
                broker: broker.into(),
            },
        })
    }

    /// The registry entry a broker would hold after pairing.
    pub fn registry_entry(&self) -> crate::registry::ApproverEntry {
        crate::registry::ApproverEntry {
            id: self.issuer.approver_id.clone(),
            owner: self.issuer.owner.clone(),
            device_keys: vec![self.device.public_jwk()],
            credentials: vec![self.credential.clone()],
        }
    }

    /// A user-verified assertion over `challenge` by the enrolled credential.
    pub fn assert(
        &mut self,
        challenge: &[u8; 32],
    ) -> Result<WebAuthnAssertion, DevAuthenticatorError> {
        self.authenticator
            .assert(&self.credential.id, challenge, true)
    }

    /// Completes `draft`: the ceremony over its challenge, then the device signature.
    pub fn sign(&mut self, draft: crate::GrantDraft) -> Result<crate::Grant, DevApproveError> {
        let assertion = self.assert(draft.challenge())?;
        Ok(draft.sign(assertion, &self.device)?)
    }

    /// Completes `batch`: one ceremony over its challenge, then a device signature per grant.
    pub fn sign_batch(
        &mut self,
        batch: crate::grant::BatchDraft,
    ) -> Result<Vec<crate::Grant>, DevApproveError> {
        let assertion = self.assert(batch.challenge())?;
        Ok(batch.sign(assertion, &self.device)?)
    }

    /// Completes a bounded grant's `draft`: the ceremony over its challenge, then the device
    /// signature.
    pub fn sign_bounded(
        &mut self,
        draft: crate::BoundedDraft,
    ) -> Result<crate::BoundedGrant, DevApproveError> {
        let assertion = self.assert(draft.challenge())?;
        Ok(draft.sign(assertion, &self.device)?)
    }

    /// Approves `pending` with `options`.
    pub fn approve(
        &mut self,
        pending: &crate::PendingAction,
        options: crate::grant::GrantOptions,
    ) -> Result<crate::Grant, DevApproveError> {
        let draft = crate::GrantDraft::new(pending, &self.issuer, options)?;
        self.sign(draft)
    }
}
