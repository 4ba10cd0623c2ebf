//! Approver engine tests: real SQLite files in temporary directories.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod client;
mod history;
mod outbox;
mod vault;
