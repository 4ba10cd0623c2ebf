//! Approver engine tests: real SQLite files in temporary directories.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

mod client;
mod context;
mod engine;
mod history;
mod interop;
mod outbox;
mod review;
mod support;
mod vault;
