//! `countersign-gateway`: the enforcement point in front of tools. One core ([`pep`]) asks the
//! broker about each tool call, holds it while the owner decides, verifies the grant here and
//! spends it at the broker, runs exactly the call that was held, and reports what became of it.
//! Two front ends: an MCP proxy over stdio ([`mcp`]) and agent permission hooks ([`hook`]).

pub mod config;
pub mod error;
pub mod hook;
pub mod keyring;
pub mod mcp;
pub mod pep;
pub mod state;

pub use config::Config;
pub use error::GatewayError;
pub use pep::Pep;
