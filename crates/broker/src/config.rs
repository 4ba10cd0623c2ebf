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
    /// The SQLite database file (used unless `[store] url` names a PostgreSQL database).
    #[serde(default = "default_database")]
    pub database: PathBuf,
    #[serde(default)]
    pub store: StoreConfig,
    /// Cedar policy file. Required: a broker without one refuses to start (unless `demo`).
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// A demonstration broker: without a policy file it runs the built-in demo policies. Never
    /// set this for agents with real authority.
    #[serde(default)]
    pub demo: bool,
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
    /// Pairing attempts per client address (wrong codes cost the guesser, not the owners).
    #[serde(default = "default_pairing_rate_limit")]
    pub pairing_rate_limit: RateLimit,
    /// The most unexpired pending requests the broker holds for one owner; more are refused
    /// (429 `pending_cap_reached`) until the owner decides or they expire.
    #[serde(default = "default_max_pending")]
    pub max_pending_per_owner: u32,
    /// The longest lifetime a bounded grant may have, in seconds (default one hour, at most one
    /// day). A grant asking for longer is refused, never shortened.
    #[serde(default = "default_max_bounded_lifetime")]
    pub max_bounded_lifetime_secs: i64,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub gateways: Vec<GatewayConfig>,
    /// The tool catalog: what each tool touches and how risky it is. Policy decides on these
    /// facts, never on what an agent says about its own call.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
}

/// Where the broker keeps its state: the SQLite file `database` by default, or a PostgreSQL
/// database shared by several instances.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database` (or a libpq `key=value` string).
    #[serde(default)]
    pub url: Option<String>,
    /// The most connections this instance opens (default 16).
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl StoreConfig {
    /// The most connections an instance opens when not configured.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

    pub fn max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or(Self::DEFAULT_MAX_CONNECTIONS)
    }
}

/// How long the broker keeps decided things, in seconds. Approvers keep the owner's history
/// for good; the broker only needs what is live and a replay window.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Decided, expired, redeemed and revoked requests (default 30 days).
    #[serde(default = "default_keep_items")]
    pub items_secs: i64,
    /// Events, the stream's replay window (default 30 days).
    #[serde(default = "default_keep_items")]
    pub events_secs: i64,
    /// Idempotency keys of decisions (default 1 day).
    #[serde(default = "default_keep_idempotency")]
    pub idempotency_secs: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            items_secs: default_keep_items(),
            events_secs: default_keep_items(),
            idempotency_secs: default_keep_idempotency(),
        }
    }
}

impl From<RetentionConfig> for crate::store::Retention {
    fn from(r: RetentionConfig) -> Self {
        Self {
            items_secs: r.items_secs,
            events_secs: r.events_secs,
            idempotency_secs: r.idempotency_secs,
        }
    }
}

/// One tool of the catalog: a name (exact, or a prefix ending in `*`, matched in canonical
/// form), the data domain and classes it touches, and its risk.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub name: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub classification: Vec<String>,
    #[serde(default)]
    pub risk: Option<countersign_protocol::action::Risk>,
}

impl ToolConfig {
    /// The catalog's facts, as a pending action carries them.
    pub fn facts(&self) -> countersign_protocol::action::ToolFacts {
        countersign_protocol::action::ToolFacts {
            domain: self.domain.clone(),
            classification: self.classification.clone(),
            risk: self.risk,
        }
    }
}

/// Whether `pattern` (exact, or a prefix ending in `*`) names `tool`, both in canonical form.
fn matches_tool(pattern: &str, tool: &str) -> bool {
    let pattern = countersign_protocol::action::canonical_tool_name(pattern);
    let tool = countersign_protocol::action::canonical_tool_name(tool);
    match pattern.strip_suffix('*') {
        Some(prefix) => tool.starts_with(prefix),
        None => pattern == tool,
    }
}

/// Per-agent token bucket for evaluations.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Seconds until a bucket holding `tokens` has one again (at least 1, at most an hour).
    pub fn wait_secs(&self, tokens: f64) -> u64 {
        let rate = f64::from(self.per_minute) / 60.0;
        let seconds = if rate > 0.0 {
            ((1.0 - tokens) / rate).ceil()
        } else {
            60.0
        };
        // A small positive number of seconds.
        seconds.clamp(1.0, 3600.0) as u64
    }
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
/// `*`), the SHA-256 (base64url) of its secret, and its public key when it has one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub audience: String,
    pub tools: Vec<String>,
    pub secret_sha256: String,
    /// The gateway's Ed25519 public key (`countersign-gateway key new` prints it). Bounded
    /// grants are bound to it (`cnf.jkt` is its thumbprint), and the gateway proves it holds
    /// the private half each time it redeems one. A gateway without a key takes single-use
    /// grants only.
    #[serde(default)]
    pub key: Option<countersign_protocol::registry::DeviceJwk>,
}

impl GatewayConfig {
    /// Whether this gateway runs `tool` (names compared in canonical form).
    pub fn runs(&self, tool: &str) -> bool {
        self.tools.iter().any(|pattern| matches_tool(pattern, tool))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}

fn default_database() -> PathBuf {
    PathBuf::from("countersign-broker.db")
}

fn default_max_bounded_lifetime() -> i64 {
    countersign_protocol::bounded::BOUNDED_DEFAULT_LIFETIME_SECS
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

fn default_pairing_rate_limit() -> RateLimit {
    RateLimit {
        per_minute: 10,
        burst: 5,
    }
}

fn default_max_pending() -> u32 {
    200
}

fn default_keep_items() -> i64 {
    30 * 86_400
}

fn default_keep_idempotency() -> i64 {
    86_400
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            database: default_database(),
            store: StoreConfig::default(),
            policies: None,
            demo: false,
            pending_ttl_secs: default_pending_ttl(),
            pairing_ttl_secs: default_pairing_ttl(),
            heartbeat_secs: default_heartbeat(),
            rate_limit: RateLimit::default(),
            quarantine: Quarantine::default(),
            pairing_rate_limit: default_pairing_rate_limit(),
            max_pending_per_owner: default_max_pending(),
            max_bounded_lifetime_secs: default_max_bounded_lifetime(),
            retention: RetentionConfig::default(),
            tls: None,
            agents: Vec::new(),
            gateways: Vec::new(),
            tools: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        let most = countersign_protocol::bounded::BOUNDED_MAX_LIFETIME_SECS;
        if !(1..=most).contains(&config.max_bounded_lifetime_secs) {
            anyhow::bail!(
                "max_bounded_lifetime_secs is {}: it must be 1 to {most}",
                config.max_bounded_lifetime_secs
            );
        }
        for gateway in &config.gateways {
            if let Some(key) = &gateway.key {
                key.validate().map_err(|e| {
                    anyhow::anyhow!("the key of gateway {:?}: {e}", gateway.audience)
                })?;
            }
        }
        Ok(config)
    }

    /// The catalog entry for `tool` (the first that names it), if any.
    pub fn tool(&self, tool: &str) -> Option<&ToolConfig> {
        self.tools.iter().find(|t| matches_tool(&t.name, tool))
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

    /// The gateway that redeems for `audience`, if configured.
    pub fn gateway_of(&self, audience: &str) -> Option<&GatewayConfig> {
        self.gateways.values().find(|g| g.audience == audience)
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
