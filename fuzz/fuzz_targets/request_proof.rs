//! Approver request proofs: no panic, and a valid proof passes only for the very request it was
//! made for: any edit of the token, the method, the URL or the body is refused.
//!
//! The first byte picks what is edited (token, method, URL, body); the rest are the edits.
#![no_main]

use std::sync::{Arc, OnceLock};

use countersign_fuzz::{Approver, NOW, edit};
use countersign_protocol::ApproverRegistry;
use countersign_protocol::proof::{ProofRequest, sign_proof, target_uri};
use libfuzzer_sys::fuzz_target;

const METHOD: &str = "POST";
const URL: &str = "https://broker.example.com/v1/approver/requests/pa_fuzz/decision";
const BODY: &[u8] = br#"{"decision":"deny","reason":"not now"}"#;

struct Fixture {
    token: String,
    registry: Arc<ApproverRegistry>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let approver = Approver::new();
        let token = sign_proof(
            &approver.device,
            "apr_fuzz",
            &ProofRequest {
                method: METHOD,
                url: URL,
                body: BODY,
                now: NOW,
            },
        );
        let fixture = Fixture {
            token,
            registry: approver.registry,
        };
        assert!(
            check(&fixture, &fixture.token, METHOD, URL, BODY),
            "the fixture proof does not verify"
        );
        fixture
    })
}

fn check(fixture: &Fixture, token: &str, method: &str, url: &str, body: &[u8]) -> bool {
    let request = ProofRequest {
        method,
        url,
        body,
        now: NOW,
    };
    fixture.registry.verify_proof(token, &request).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((what, edits)) = data.split_first() else {
        return;
    };
    let mut token = fixture.token.as_bytes().to_vec();
    let mut method = METHOD.as_bytes().to_vec();
    let mut url = URL.as_bytes().to_vec();
    let mut body = BODY.to_vec();
    let target = match what % 4 {
        0 => &mut token,
        1 => &mut method,
        2 => &mut url,
        _ => &mut body,
    };
    *target = edit(target, edits);
    let (Ok(token), Ok(method), Ok(url)) = (
        std::str::from_utf8(&token),
        std::str::from_utf8(&method),
        std::str::from_utf8(&url),
    ) else {
        return;
    };
    if check(fixture, token, method, url, &body) {
        assert_eq!(token, fixture.token, "an edited proof verified");
        assert!(method.eq_ignore_ascii_case(METHOD), "another method passed: {method:?}");
        assert_eq!(target_uri(url), target_uri(URL), "another URL passed: {url:?}");
        assert_eq!(body, BODY, "another body passed");
    }
});
