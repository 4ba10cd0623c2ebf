//! SPIFFE ids: never a panic; an accepted id is kept byte for byte, within the standard's
//! limits, and parses again.
#![no_main]

use countersign_protocol::spiffe::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = SpiffeId::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert!(text.len() <= 2048 && text.starts_with("spiffe://"));
    // No port, user, query or fragment can hide after the scheme.
    let rest = &text["spiffe://".len()..];
    assert!(
        rest.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./-_".contains(&b)),
        "{text:?}"
    );
    assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
});
