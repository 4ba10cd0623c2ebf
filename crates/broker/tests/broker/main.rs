//! Broker tests: a real broker over loopback HTTP with a real SQLite file, real grants from the
//! software authenticator, nothing mocked.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

mod flow;
mod hygiene;
mod input;
mod openapi;
mod pairing;
mod policy;
mod restart;
mod review;
mod stream;
mod support;
mod tls;
