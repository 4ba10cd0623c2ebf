//! Several broker instances on one PostgreSQL database: real `countersign-broker serve`
//! processes on 127.0.0.1, .2 and .3 (one port, one public URL, `broker.test`, as behind a load
//! balancer), a real cluster the tests start, real approvers, agents and gateways. Each client
//! picks its instance by resolving `broker.test` to it.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![expect(
    unreachable_pub,
    reason = "support items are shared between test modules"
)]

#[path = "../broker/postgres.rs"]
mod postgres;
#[path = "../broker/support.rs"]
#[expect(
    dead_code,
    reason = "shared with the broker suite; not every item is used here"
)]
mod support;

mod harness;
mod instances;
mod operations;
