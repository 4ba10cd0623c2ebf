//! Configuration: a TOML file, overridden by environment variables and flags (in `main`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use countersign_protocol::hash::b64url;

/// The broker's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; loopback by default.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL clients use to reach the broker (request proofs are bound to it).
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// Cedar policy file; the built-in demo policies when absent.
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// How long a pending action waits for its owner.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl_secs: i64,
    /// How long a pairing code stays valid.
    #[serde(default = "default_pairing_ttl")]
    pub pairing_ttl_secs: i64,
    /// Seconds between SSE heartbeats (comment lines) on idle approver streams.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub quarantine: Quarantine,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub gateways: Vec<GatewayConfig>,
}

/// Per-agent token bucket for evaluations.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: 120,
            burst: 30,
        }
    }
}

/// Automatic quarantine after repeated denials.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    pub denials: u32,
    pub window_secs: i64,
}

impl Default for Quarantine {
    fn default() -> Self {
        Self {
            denials: 3,
            window_secs: 600,
        }
    }
}

/// TLS with rustls, when a certificate is configured.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// An agent: its SPIFFE ID, its owner, and the SHA-256 (base64url) of its secret.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    pub owner: String,
    pub secret_sha256: String,
}

/// A gateway: the audience it redeems for, the tools it runs (exact names, or prefixes ending in
/// `*`), and the SHA-256 (base64url) of its secret.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub audience: String,
    pub tools: Vec<String>,
    pub secret_sha256: String,
}

impl GatewayConfig {
    /// Whether this gateway runs `tool`.
    pub fn runs(&self, tool: &str) -> bool {
        self.tools
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => tool.starts_with(prefix),
                None => pattern == tool,
            })
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}

fn default_database() -> PathBuf {
    PathBuf::from("countersign-broker.db")
}

fn default_pending_ttl() -> i64 {
    300
}

fn default_pairing_ttl() -> i64 {
    600
}

fn default_heartbeat() -> u64 {
    15
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            database: default_database(),
            policies: None,
            pending_ttl_secs: default_pending_ttl(),
            pairing_ttl_secs: default_pairing_ttl(),
            heartbeat_secs: default_heartbeat(),
            rate_limit: RateLimit::default(),
            quarantine: Quarantine::default(),
            tls: None,
            agents: Vec::new(),
            gateways: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The base URL request proofs are bound to.
    pub fn public_url(&self) -> String {
        let url = self.public_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", self.listen)
        });
        url.trim_end_matches('/').to_owned()
    }
}

/// Who a bearer secret belongs to. Secrets are 256-bit random values, so a plain SHA-256 is a
/// sufficient one-way form to store (no password hashing needed).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    agents: HashMap<String, AgentConfig>,
    gateways: HashMap<String, GatewayConfig>,
}

impl Credentials {
    pub fn new(config: &Config) -> Self {
        Self {
            agents: config
                .agents
                .iter()
                .map(|a| (a.secret_sha256.clone(), a.clone()))
                .collect(),
            gateways: config
                .gateways
                .iter()
                .map(|g| (g.secret_sha256.clone(), g.clone()))
                .collect(),
        }
    }

    pub fn agent(&self, secret: &str) -> Option<&AgentConfig> {
        self.agents.get(&secret_hash(secret))
    }

    pub fn gateway(&self, secret: &str) -> Option<&GatewayConfig> {
        self.gateways.get(&secret_hash(secret))
    }

    /// The audience of the first gateway that runs `tool`.
    pub fn audience_for(&self, tool: &str) -> Option<&str> {
        let mut gateways: Vec<&GatewayConfig> = self.gateways.values().collect();
        gateways.sort_by(|a, b| a.audience.cmp(&b.audience));
        gateways
            .into_iter()
            .find(|g| g.runs(tool))
            .map(|g| g.audience.as_str())
    }

    /// The owner of agent `id`, if configured.
    pub fn owner_of(&self, agent_id: &str) -> Option<&str> {
        self.agents
            .values()
            .find(|a| a.id == agent_id)
            .map(|a| a.owner.as_str())
    }
}

/// `b64url(SHA-256(secret))`, the stored form of a bearer secret.
pub fn secret_hash(secret: &str) -> String {
    b64url(&Sha256::digest(secret.as_bytes()))
}
