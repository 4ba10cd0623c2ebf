//! # countersign-broker
//!
//! The reference broker: the service agents and their gateways talk to, and the Countersign app
//! pairs with. It decides each tool call with Cedar policy (allow, deny, or approval required),
//! holds approval-required calls as pending actions for the agent's owner, streams them to the
//! owner's paired approvers over SSE, accepts the owner's decision (a grant verified with
//! `countersign-protocol`, or a denial), and redeems each grant once for its gateway.
//!
//! Boundaries: types shared with approvers and gateways come only from `countersign-protocol`.
//! Storage sits behind [`store::Store`] (SQLite in WAL mode here). Agents and gateways
//! authenticate with per-client secrets stored hashed; approvers sign every request with their
//! device key. Admin operations (pairing codes, releasing agents) are local commands against the
//! database, never network endpoints.

pub mod config;
pub mod error;
pub mod fanout;
pub mod http;
pub mod openapi;
pub mod pairing;
pub mod policy;
pub mod routes;
pub mod server;
pub mod simulate;
pub mod state;
pub mod store;

pub use config::Config;
pub use server::{RunningBroker, open_store, serve, spawn};
