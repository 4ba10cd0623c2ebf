//! Grant verification throughput beside the two raw signature verifications it contains.
//!
//! `cargo bench -p countersign-protocol` runs criterion on the three, then prints a summary of
//! medians measured in the same process: full verifications per second on one core, raw
//! Ed25519 and raw P-256 ECDSA verifications per second, and the ratio of the full rate to the
//! rate the two raw verifications allow together (goal ≥ 0.8).

#![expect(clippy::expect_used, reason = "a bench aborts on a broken fixture")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use countersign_protocol::action::{
    ActionName, ActionRequest, Actor, ActorChain, Context, DataTouched, PendingAction,
    PendingParts, PolicyRef, Resource, Subject, Timestamp,
};
use countersign_protocol::clock::{Clock as _, SystemClock};
use countersign_protocol::dev_authenticator::DevApprover;
use countersign_protocol::grant::GrantOptions;
use countersign_protocol::hash::b64url_decode;
use countersign_protocol::registry::RegistryDocument;
use countersign_protocol::replay::MemoryCounterStore;
use countersign_protocol::spiffe::SpiffeId;
use countersign_protocol::{
    ApproverRegistry, GrantVerifier, MemoryReplayStore, Presentation, VerifierConfig,
};
use criterion::{Criterion, criterion_group};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The broker whose grants the bench's verifier accepts.
const BROKER: &str = "https://broker.example.com";
const AUDIENCE: &str = "https://payments-gateway.example.com";

struct Setup {
    verifier: GrantVerifier,
    token: String,
    action: ActionRequest,
    ed_key: ed25519_dalek::VerifyingKey,
    ed_sig: ed25519_dalek::Signature,
    ed_msg: Vec<u8>,
    p256_key: countersign_protocol::webauthn::CredentialKey,
    p256_rustcrypto: p256::ecdsa::VerifyingKey,
    p256_der: Vec<u8>,
    p256_sig: p256::ecdsa::Signature,
    p256_msg: Vec<u8>,
}

fn setup() -> Setup {
    let mut approver =
        DevApprover::new("apr_bench", "alice@example.com", BROKER).expect("approver");
    let action = ActionRequest {
        subject: Subject {
            kind: "user".into(),
            id: "alice@example.com".into(),
            properties: None,
        },
        actor: Actor {
            id: SpiffeId::parse("spiffe://example.com/agent/billing").expect("id"),
            act: Some(ActorChain {
                sub: SpiffeId::parse("spiffe://example.com/agent/planner").expect("id"),
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
                .cloned()
                .expect("object"),
            data: Some(DataTouched {
                domain: "payments".into(),
                classification: vec!["financial".into(), "pii".into()],
            }),
            annotations: None,
        },
    };
    let now = SystemClock.now();
    let pending = PendingAction::new(
        PendingParts {
            id: "pa_bench".into(),
            created_at: Timestamp::from_unix(now).expect("time"),
            expires_at: Timestamp::from_unix(now + 3600).expect("time"),
            audience: AUDIENCE.into(),
            policy: PolicyRef {
                id: "refunds".into(),
                reason: "refunds over 1000".into(),
            },
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
        },
        action.clone(),
    )
    .expect("pending");
    let grant = approver
        .approve(&pending, GrantOptions::at(now))
        .expect("grant");
    let registry = ApproverRegistry::new(RegistryDocument {
        approvers: vec![approver.registry_entry()],
    })
    .expect("registry");
    let verifier = GrantVerifier::new(
        VerifierConfig::new(AUDIENCE, BROKER),
        Arc::new(registry),
        Arc::new(MemoryReplayStore::new()),
        Arc::new(MemoryCounterStore::new()),
        Arc::new(SystemClock),
    );

    // The raw inputs the full verification contains: the JWS signature and the assertion's.
    let token = grant.token().to_owned();
    let (input, sig) = token.rsplit_once('.').expect("jws");
    let ed_msg = input.as_bytes().to_vec();
    let ed_key = ed25519_dalek::VerifyingKey::from_bytes(
        b64url_decode(&approver.device.public_jwk().x)
            .expect("x")
            .as_slice()
            .try_into()
            .expect("32"),
    )
    .expect("key");
    let ed_sig =
        ed25519_dalek::Signature::from_slice(&b64url_decode(sig).expect("sig")).expect("sig");
    let webauthn = &grant.claims().webauthn;
    let mut p256_msg = b64url_decode(&webauthn.authenticator_data).expect("ad");
    p256_msg.extend_from_slice(&Sha256::digest(
        b64url_decode(&webauthn.client_data_json).expect("cd"),
    ));
    let p256_der = b64url_decode(&webauthn.signature).expect("sig");
    let p256_sig = p256::ecdsa::Signature::from_der(&p256_der).expect("der");
    let p256_rustcrypto = {
        let jwk = &approver.credential.public_key;
        let mut sec1 = vec![4u8];
        sec1.extend(b64url_decode(&jwk.x).expect("x"));
        sec1.extend(b64url_decode(&jwk.y).expect("y"));
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("point")
    };
    let p256_key = approver.credential.public_key.to_key().expect("key");
    Setup {
        verifier,
        token,
        action,
        ed_key,
        ed_sig,
        ed_msg,
        p256_key,
        p256_rustcrypto,
        p256_der,
        p256_sig,
        p256_msg,
    }
}

impl Setup {
    fn full(&self) {
        let p = Presentation {
            grant: &self.token,
            action: &self.action,
            presenter_jkt: None,
        };
        black_box(self.verifier.check(black_box(&p))).expect("verifies");
    }

    fn ed25519(&self) {
        // verify_strict, as the verifier uses (RFC 8032 strict checks).
        black_box(
            self.ed_key
                .verify_strict(black_box(&self.ed_msg), &self.ed_sig),
        )
        .expect("verifies");
    }

    fn p256(&self) {
        assert!(black_box(
            self.p256_key
                .verify(black_box(&self.p256_msg), &self.p256_der)
        ));
    }

    fn p256_rustcrypto(&self) {
        use p256::ecdsa::signature::Verifier as _;
        black_box(
            self.p256_rustcrypto
                .verify(black_box(&self.p256_msg), &self.p256_sig),
        )
        .expect("verifies");
    }
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("grant");
    group.bench_function("full_verification", |b| b.iter(|| s.full()));
    group.bench_function("raw_ed25519_verify", |b| b.iter(|| s.ed25519()));
    group.bench_function("raw_p256_ecdsa_verify", |b| b.iter(|| s.p256()));
    group.finish();
}

criterion_group!(criterion_benches, benches);

/// Median seconds per call over 31 batches of `per_batch` calls.
fn median_secs(per_batch: u32, f: impl Fn()) -> f64 {
    for _ in 0..per_batch {
        f();
    }
    let mut samples: Vec<f64> = (0..31)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_secs_f64() / f64::from(per_batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn summary() {
    let s = setup();
    if std::env::var_os("PROFILE_FULL").is_some() {
        for _ in 0..20_000 {
            s.full();
        }
        return;
    }
    let full = median_secs(500, || s.full());
    let ed = median_secs(2000, || s.ed25519());
    let p256 = median_secs(1000, || s.p256());
    let p256_rc = median_secs(500, || s.p256_rustcrypto());
    let raw_both = 1.0 / (ed + p256);
    println!();
    println!("summary (medians of 31 batches, one core)");
    println!(
        "  full grant verification : {:>9.0} /s  ({:.1} µs)",
        1.0 / full,
        full * 1e6
    );
    println!(
        "  raw Ed25519 verify      : {:>9.0} /s  ({:.1} µs)",
        1.0 / ed,
        ed * 1e6
    );
    println!(
        "  raw P-256 ECDSA verify  : {:>9.0} /s  ({:.1} µs)  ring, as the verifier uses",
        1.0 / p256,
        p256 * 1e6
    );
    println!(
        "  (RustCrypto p256 verify : {:>9.0} /s  ({:.1} µs), for reference)",
        1.0 / p256_rc,
        p256_rc * 1e6
    );
    println!("  both raw verifications  : {raw_both:>9.0} /s");
    println!(
        "  ratio full / both raw   : {:>9.3}  (goal >= 0.8)",
        (1.0 / full) / raw_both
    );
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    // SUMMARY_ONLY=1 skips criterion's detailed runs.
    if std::env::var_os("SUMMARY_ONLY").is_none() {
        criterion_benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if !test_mode {
        summary();
    }
}
