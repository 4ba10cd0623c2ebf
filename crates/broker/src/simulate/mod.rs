//! A simulated agent fleet: agents submit a realistic mix of tool calls, wait for their owner's
//! decisions, and redeem grants the way their gateways would — for the demo and for tests.
//!
//! `fleet`: secrets and the demo fleet; `scenarios`: the scripted calls; `agent`: the
//! agent-and-gateway client that plays them.

mod agent;
mod fleet;
mod scenarios;

pub use agent::{SimulatedAgent, run_fleet};
pub use fleet::{
    AgentSecret, FleetSecrets, GatewaySecret, demo_catalog, demo_fleet, random_secret,
};
pub use scenarios::{CallOutcome, Scenario, scenarios};
