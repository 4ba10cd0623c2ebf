//! Shared fixtures: a registered approver with a real device key and a real software
//! authenticator, a realistic pending action, and helpers to forge tokens with real signatures.

use std::sync::Arc;

use countersign_protocol::action::{
    ActionName, ActionRequest, Actor, ActorChain, Context, DataTouched, PendingAction,
    PendingParts, PolicyRef, Resource, Subject, Timestamp,
};
use countersign_protocol::clock::ManualClock;
use countersign_protocol::dev_authenticator::DevApprover;
use countersign_protocol::grant::{Grant, GrantDraft, GrantOptions, Issuer};
use countersign_protocol::hash::b64url;
use countersign_protocol::registry::{ApproverEntry, RegisteredCredential, RegistryDocument};
use countersign_protocol::replay::MemoryCounterStore;
use countersign_protocol::spiffe::SpiffeId;
use countersign_protocol::webauthn::{CredentialJwk, WebAuthnAssertion};
use countersign_protocol::{
    ApproverRegistry, DeviceSigningKey, GrantVerifier, MemoryReplayStore, Presentation,
    VerifierConfig,
};
use p256::ecdsa::signature::Signer as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub const AUDIENCE: &str = "https://payments-gateway.example.com";
pub const OWNER: &str = "alice@example.com";
pub const APPROVER: &str = "apr_laptop";
/// The broker whose grants the fixture's verifiers accept.
pub const BROKER: &str = "https://broker.example.com";
/// 2026-09-21T…Z; any fixed time works, tests move the clock explicitly.
pub const NOW: i64 = 1_790_000_000;

pub struct Fixture {
    pub approver: DevApprover,
    pub device: DeviceSigningKey,
    pub issuer: Issuer,
    pub registry: Arc<ApproverRegistry>,
    pub clock: Arc<ManualClock>,
    pub replay: Arc<MemoryReplayStore>,
    pub counters: Arc<MemoryCounterStore>,
}

impl Fixture {
    pub fn new() -> Self {
        let approver = DevApprover::new(APPROVER, OWNER, BROKER).unwrap();
        let document = RegistryDocument {
            approvers: vec![approver.registry_entry()],
        };
        let registry = ApproverRegistry::new(document).unwrap();
        Self {
            device: DeviceSigningKey::from_secret(&approver.device.secret()),
            issuer: approver.issuer.clone(),
            approver,
            registry: Arc::new(registry),
            clock: Arc::new(ManualClock::new(NOW)),
            replay: Arc::new(MemoryReplayStore::new()),
            counters: Arc::new(MemoryCounterStore::new()),
        }
    }

    pub fn credential_id(&self) -> &str {
        &self.approver.credential.id
    }

    /// Replaces the registry (e.g. to add approvers), keeping stores and clock.
    pub fn with_registry(&mut self, document: RegistryDocument) {
        self.registry = Arc::new(ApproverRegistry::new(document).unwrap());
    }

    pub fn entry(&self) -> ApproverEntry {
        self.registry.document().approvers[0].clone()
    }

    pub fn verifier(&self) -> GrantVerifier {
        self.verifier_for(AUDIENCE)
    }

    pub fn verifier_for(&self, audience: &str) -> GrantVerifier {
        GrantVerifier::new(
            VerifierConfig::new(audience, BROKER),
            self.registry.clone(),
            self.replay.clone(),
            self.counters.clone(),
            self.clock.clone(),
        )
    }

    pub fn draft(&self, pending: &PendingAction) -> GrantDraft {
        GrantDraft::new(pending, &self.issuer, GrantOptions::at(NOW)).unwrap()
    }

    /// The whole approval: claims, a user-verified assertion over their hash, the JWS.
    pub fn mint(&mut self, pending: &PendingAction) -> Grant {
        let draft = self.draft(pending);
        self.sign_draft(draft)
    }

    pub fn sign_draft(&mut self, draft: GrantDraft) -> Grant {
        self.approver.sign(draft).unwrap()
    }

    pub fn assert(&mut self, challenge: &[u8; 32]) -> WebAuthnAssertion {
        self.approver.assert(challenge).unwrap()
    }

    /// A user-verified assertion over the claims in `payload` (minus `webauthn`), embedded,
    /// and the JWS signed with the real device key: what an attacker holding both could make.
    pub fn reassert_and_sign(&mut self, header: &Value, payload: &mut Value) -> String {
        let obj = payload.as_object_mut().unwrap();
        obj.remove("webauthn");
        let challenge: [u8; 32] =
            Sha256::digest(serde_json_canonicalizer::to_vec(&payload).unwrap()).into();
        let assertion = self.assert(&challenge);
        payload["webauthn"] = serde_json::to_value(assertion).unwrap();
        sign_token(header, payload, &self.device)
    }

    pub fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "countersign-grant+jwt", "kid": self.device.public_jwk().kid})
    }
}

pub fn present<'a>(grant: &'a str, action: &'a ActionRequest) -> Presentation<'a> {
    Presentation {
        grant,
        action,
        presenter_jkt: None,
    }
}

/// A realistic held call: a refund over the policy threshold, delegated planner → billing.
pub fn request() -> ActionRequest {
    ActionRequest {
        subject: Subject {
            kind: "user".into(),
            id: OWNER.into(),
            properties: None,
        },
        actor: Actor {
            id: SpiffeId::parse("spiffe://example.com/agent/billing").unwrap(),
            act: Some(ActorChain {
                sub: SpiffeId::parse("spiffe://example.com/agent/planner").unwrap(),
                act: None,
            }),
        },
        action: ActionName {
            name: "tools/call".into(),
            properties: None,
        },
        resource: Resource {
            kind: "tool".into(),
            id: "stripe/refunds.create".into(),
            properties: None,
        },
        context: Context {
            intent: "Refund order 1234 after complaint".into(),
            arguments: json!({"order": "1234", "amount": "5000.00", "currency": "EUR"})
                .as_object()
                .unwrap()
                .clone(),
            data: Some(DataTouched {
                domain: "payments".into(),
                classification: vec!["financial".into(), "pii".into()],
            }),
            annotations: None,
        },
    }
}

pub fn pending_for(request: ActionRequest) -> PendingAction {
    PendingAction::new(
        PendingParts {
            id: "pa_01JDZ8Q3K2".into(),
            created_at: Timestamp::from_unix(NOW - 10).unwrap(),
            expires_at: Timestamp::from_unix(NOW + 290).unwrap(),
            audience: AUDIENCE.into(),
            policy: PolicyRef {
                id: "refunds-over-1000".into(),
                reason: "refunds over 1000 need the owner".into(),
            },
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
        },
        request,
    )
    .unwrap()
}

pub fn pending() -> PendingAction {
    pending_for(request())
}

/// Decodes a compact JWS's header and payload.
pub fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let h = countersign_protocol::hash::b64url_decode(parts.next().unwrap()).unwrap();
    let p = countersign_protocol::hash::b64url_decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
    )
}

/// A compact JWS over arbitrary header and payload, with a real Ed25519 signature.
pub fn sign_token(header: &Value, payload: &Value, key: &DeviceSigningKey) -> String {
    let input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header).unwrap()),
        b64url(&serde_json::to_vec(payload).unwrap())
    );
    let signature = key.sign_bytes(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

/// An authenticator written from the WebAuthn spec with RustCrypto, for ceremonies a real
/// authenticator would never produce (wrong type, missing flags, cross-origin).
pub struct RawAuthenticator {
    key: p256::ecdsa::SigningKey,
    pub id: String,
}

impl RawAuthenticator {
    pub fn new() -> Self {
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        Self {
            key,
            id: b64url(b"raw-authenticator-credential"),
        }
    }

    pub fn credential(&self) -> RegisteredCredential {
        RegisteredCredential {
            id: self.id.clone(),
            public_key: CredentialJwk::from_key(self.key.verifying_key()),
        }
    }

    pub fn assertion(
        &self,
        client_data: &Value,
        rp_id: &str,
        flags: u8,
        counter: u32,
    ) -> WebAuthnAssertion {
        let client = serde_json::to_vec(client_data).unwrap();
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client));
        let signature: p256::ecdsa::Signature = self.key.sign(&signed);
        WebAuthnAssertion::from_parts(
            &countersign_protocol::hash::b64url_decode(&self.id).unwrap(),
            &auth_data,
            &client,
            signature.to_der().as_bytes(),
        )
    }
}

pub fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Value {
    json!({"type": kind, "challenge": b64url(challenge), "origin": origin})
}

/// The claims of `payload` without `webauthn`, and their challenge.
pub fn challenge_of(payload: &Value) -> [u8; 32] {
    let mut claims: Map<String, Value> = payload.as_object().unwrap().clone();
    claims.remove("webauthn");
    Sha256::digest(serde_json_canonicalizer::to_vec(&claims).unwrap()).into()
}
