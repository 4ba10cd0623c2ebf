//! # countersign-approver
//!
//! The engine of the Countersign app, without any GUI: everything the desktop shell and the
//! `countersign` command line share. It depends on `countersign-protocol` for every type it
//! exchanges with brokers, and must never depend on `tauri` or on the broker crate.
//!
//! Present today: [`history`], the local tamper-evident record of every item and state change
//! (SQLite in WAL mode, a hash chain over every entry, full-text search, filters, JSON Lines and
//! CSV export, an integrity check that names the first broken link); and [`vault`], key custody
//! in the OS keyring (the device signing key is generated on first use and never touches a
//! file). The broker client, WebAuthn ceremonies, the decision outbox and notifications build on
//! them.
//!
//! Known limit of the chain alone: cutting off the newest entries leaves a valid, shorter
//! chain. The remedy is to anchor the head (last hash and count) outside the file — in the OS
//! keyring next to the device key, or signed by it — which comes with key custody.

pub mod authn;
pub mod client;
pub mod display;
pub mod engine;
pub mod error;
pub mod history;
pub mod notify;
pub mod outbox;
pub mod pin;
pub mod vault;

pub use error::{Error, Result};
pub use history::{EntryKind, Filter, History};
pub use vault::Vault;
