//! # countersign-approver
//!
//! The engine of the Countersign app, without any GUI: everything the desktop shell and the
//! `countersign` command line share. It depends on `countersign-protocol` for every type it
//! exchanges with brokers, and must never depend on `tauri` or on the broker crate.
//!
//! - [`engine`]: one profile — history, keyring, authenticators, paired brokers — and the
//!   operations both front ends offer: enrol, pair, sync, follow, approve, deny.
//! - [`authn`]: WebAuthn enrolment verified by webauthn-rs and user-verified assertions over a
//!   caller-chosen challenge, through CTAP2 backends (USB security keys, Windows Hello, and the
//!   `dev-authenticator` software token), with prompts behind the [`authn::Prompt`] trait.
//! - [`vault`]: key custody in the OS keyring (the device key never touches a file).
//! - [`client`]: the broker client (request proofs, listing, decisions, the SSE stream with
//!   reconnection and reconciliation); [`pin`]: the broker's pinned TLS certificate.
//! - [`outbox`]: decisions written with their history entry before they are sent, and sent
//!   with an idempotency key until acknowledged.
//! - [`history`]: the local tamper-evident record (SQLite, WAL, hash chain, FTS5, export); its
//!   head is anchored in the keyring so truncation is detected too.
//! - [`notify`] and [`display`]: notifications, and untrusted text made visible.

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
