//! Integration tests of countersign-protocol: real cryptography throughout, nothing mocked.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

mod attacks;
mod batch;
mod bounded;
mod jcs;
mod lifecycle;
mod pending;
mod replay;
mod support;
mod tamper;
mod webauthn;
