//! Approver engine tests: real SQLite files in temporary directories.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod history;
mod vault;
