//! What the fuzz targets share: a real approver (device key and software authenticator), the
//! registry that knows it, a held call, and edits of a valid token driven by the fuzzer's bytes.

use std::sync::Arc;

use countersign_protocol::action::{
    ActionRequest, Delegation, PendingAction, PendingParts, PolicyRef, Timestamp,
};
use countersign_protocol::grant::{GrantOptions, Issuer};
use countersign_protocol::hash::b64url;
use countersign_protocol::registry::{ApproverEntry, RegisteredCredential, RegistryDocument};
use countersign_protocol::webauthn::{CredentialJwk, ORIGIN, RP_ID, WebAuthnAssertion};
use countersign_protocol::{ApproverRegistry, DeviceSigningKey, Grant, GrantDraft};
use sha2::{Digest as _, Sha256};

/// The fixed time every target verifies at.
pub const NOW: i64 = 1_790_000_000;
/// The gateway the grants are for.
pub const AUDIENCE: &str = "https://payments-gateway.example.com";
/// The broker that recorded them.
pub const BROKER: &str = "https://broker.example.com";
const OWNER: &str = "alice@example.com";

/// A registered approver: its device key, a P-256 credential (an authenticator written from the
/// WebAuthn spec, so the fuzz build needs no software-token stack), and the registry holding it.
pub struct Approver {
    pub device: DeviceSigningKey,
    credential: p256::ecdsa::SigningKey,
    pub issuer: Issuer,
    pub registry: Arc<ApproverRegistry>,
}

const CREDENTIAL_ID: &[u8] = b"fuzz-credential";

impl Approver {
    pub fn new() -> Self {
        let device = DeviceSigningKey::generate();
        let credential = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let issuer = Issuer {
            approver_id: "apr_fuzz".into(),
            owner: OWNER.into(),
            broker: BROKER.into(),
        };
        let registry = ApproverRegistry::new(RegistryDocument {
            approvers: vec![ApproverEntry {
                id: issuer.approver_id.clone(),
                owner: issuer.owner.clone(),
                device_keys: vec![device.public_jwk()],
                credentials: vec![RegisteredCredential {
                    id: b64url(CREDENTIAL_ID),
                    public_key: CredentialJwk::from_key(credential.verifying_key()),
                }],
            }],
        })
        .expect("a registry of one approver");
        Self {
            device,
            credential,
            issuer,
            registry: Arc::new(registry),
        }
    }

    /// A user-verified assertion over `challenge` (flags UP and UV, counter 1).
    fn assert(&self, challenge: &[u8; 32]) -> WebAuthnAssertion {
        use p256::ecdsa::signature::Signer as _;
        let client = serde_json::to_vec(&serde_json::json!({
            "type": "webauthn.get",
            "challenge": b64url(challenge),
            "origin": ORIGIN,
        }))
        .expect("client data");
        let mut auth_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
        auth_data.push(0x05);
        auth_data.extend_from_slice(&1u32.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client));
        let signature: p256::ecdsa::Signature = self.credential.sign(&signed);
        WebAuthnAssertion::from_parts(
            CREDENTIAL_ID,
            &auth_data,
            &client,
            signature.to_der().as_bytes(),
        )
    }

    /// The whole approval of `pending` at `now`: claims, assertion, device signature.
    pub fn approve(&self, pending: &PendingAction, now: i64) -> Grant {
        let draft = GrantDraft::new(pending, &self.issuer, GrantOptions::at(now)).expect("a draft");
        let assertion = self.assert(draft.challenge());
        draft.sign(assertion, &self.device).expect("a grant")
    }
}

impl Default for Approver {
    fn default() -> Self {
        Self::new()
    }
}

/// A realistic held call: a refund, delegated planner → billing.
pub fn action() -> ActionRequest {
    let json = serde_json::json!({
        "subject": {"type": "user", "id": OWNER},
        "actor": {
            "id": "spiffe://example.com/agent/billing",
            "act": {"sub": "spiffe://example.com/agent/planner"}
        },
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "stripe/refunds.create"},
        "context": {
            "intent": "Refund order 1234 after complaint",
            "arguments": {"order": "1234", "amount": "5000.00", "currency": "EUR"},
            "data": {"domain": "payments", "classification": ["financial", "pii"]}
        }
    });
    serde_json::from_value(json).expect("the fixture action")
}

/// `action` as the broker holds it.
pub fn pending(action: ActionRequest) -> PendingAction {
    PendingAction::new(
        PendingParts {
            id: "pa_fuzz".into(),
            created_at: Timestamp::from_unix(NOW - 10).expect("a time"),
            expires_at: Timestamp::from_unix(NOW + 290).expect("a time"),
            audience: AUDIENCE.into(),
            policy: PolicyRef {
                id: "refunds".into(),
                reason: "refunds need the owner".into(),
            },
            delegation: Delegation::ClaimedByAgent,
            catalog: None,
        },
        action,
    )
    .expect("the fixture pending action")
}

/// `original` edited as `data` says: four bytes per edit (what, where ×2, byte), replacing,
/// inserting or deleting one byte. No edits leave it as it was.
pub fn edit(original: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = original.to_vec();
    for edit in data.chunks_exact(4) {
        let at = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        match edit[0] % 3 {
            0 if !out.is_empty() => {
                let i = at % out.len();
                out[i] = edit[3];
            }
            1 => {
                let i = at % (out.len() + 1);
                out.insert(i, edit[3]);
            }
            _ if !out.is_empty() => {
                let i = at % out.len();
                out.remove(i);
            }
            _ => {}
        }
    }
    out
}
