//! Broker tests: a real broker over loopback HTTP with a real SQLite file (or, with
//! `COUNTERSIGN_TEST_STORE=postgres`, a real PostgreSQL database of a cluster the tests start),
//! real grants from the software authenticator, nothing mocked.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

mod batch;
mod bounded;
mod flow;
mod hygiene;
mod input;
mod openapi;
mod pairing;
mod policy;
#[expect(
    dead_code,
    reason = "shared with the instances suite, which stops and starts clusters"
)]
mod postgres;
mod restart;
mod review;
mod stream;
mod support;
mod tls;
