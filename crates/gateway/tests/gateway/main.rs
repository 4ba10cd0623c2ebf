//! The gateway against real peers: a real broker over loopback, the development authenticator
//! approving through a paired engine, and the official Python MCP SDK's client and server.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod hooks;
mod http;
mod mcp;
mod modern;
mod support;
