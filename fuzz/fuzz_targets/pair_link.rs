//! Pairing links come from anywhere: never a panic, and an accepted link names an http(s)
//! broker without user information, query or fragment, whose text cannot read as another
//! host (no `@` anywhere), and a code of the pairing alphabet.
#![no_main]

use countersign_protocol::link::PairLink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(link) = PairLink::parse(text) else {
        return;
    };
    assert!(
        link.broker.starts_with("http://") || link.broker.starts_with("https://"),
        "{link:?}"
    );
    assert!(
        !link.broker.contains(['@', '?', '#']) && !link.broker["https://".len()..].contains("//"),
        "{link:?}"
    );
    assert!(
        !link.code.is_empty()
            && link.code.len() <= 128
            && link
                .code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{link:?}"
    );
});
