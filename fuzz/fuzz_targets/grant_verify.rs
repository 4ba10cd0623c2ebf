//! Grant verification: whatever is presented, no panic; and a valid grant with any edit made to
//! it is refused, so that only the very token the owner's approval produced passes.
//!
//! The input is either a whole token (first byte 0) or edits of a freshly minted one.
#![no_main]

use std::sync::{Arc, OnceLock};

use countersign_fuzz::{AUDIENCE, Approver, BROKER, NOW, action, edit, pending};
use countersign_protocol::action::ActionRequest;
use countersign_protocol::clock::ManualClock;
use countersign_protocol::replay::MemoryCounterStore;
use countersign_protocol::{
    ApproverRegistry, GrantVerifier, MemoryReplayStore, Presentation, VerifierConfig,
};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    token: String,
    action: ActionRequest,
    registry: Arc<ApproverRegistry>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let approver = Approver::new();
        let action = action();
        let grant = approver.approve(&pending(action.clone()), NOW);
        let fixture = Fixture {
            token: grant.token().to_owned(),
            action,
            registry: approver.registry,
        };
        // The target means something only if the untouched grant passes.
        assert!(check(&fixture, &fixture.token), "the fixture grant does not verify");
        fixture
    })
}

/// Whether `token` passes a fresh verifier (nothing spent, no counter seen).
fn check(fixture: &Fixture, token: &str) -> bool {
    let verifier = GrantVerifier::new(
        VerifierConfig::new(AUDIENCE, BROKER),
        fixture.registry.clone(),
        Arc::new(MemoryReplayStore::new()),
        Arc::new(MemoryCounterStore::new()),
        Arc::new(ManualClock::new(NOW)),
    );
    verifier
        .check(&Presentation {
            grant: token,
            action: &fixture.action,
            presenter_jkt: None,
        })
        .is_ok()
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let bytes = match data.split_first() {
        Some((0, raw)) => raw.to_vec(),
        _ => edit(fixture.token.as_bytes(), data.get(1..).unwrap_or_default()),
    };
    let Ok(token) = std::str::from_utf8(&bytes) else {
        return;
    };
    if check(fixture, token) {
        assert_eq!(token, fixture.token, "an edited grant verified");
    }
});
