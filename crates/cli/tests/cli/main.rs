//! End-to-end tests of the `countersign` binary: a real broker on loopback, real SQLite files,
//! the real OS keyring (run them through `scripts/session.sh`), the software authenticator,
//! and — for notifications — the session's real notification server (dunst).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

mod bounded;
mod flows;
mod hostile;
mod notify;
mod resilience;
mod support;
mod tls;
