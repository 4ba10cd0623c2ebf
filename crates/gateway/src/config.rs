//! The gateway's one TOML file: the broker, the agent and gateway credentials (by reference to
//! the OS keyring or an environment variable, never inline), hold limits and per-tool overrides.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{GatewayError, Result};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerSection,
    pub agent: AgentSection,
    pub gateway: GatewaySection,
    #[serde(default)]
    pub mcp: McpSection,
    #[serde(default)]
    pub hold: HoldSection,
    #[serde(default)]
    pub hooks: HooksSection,
    /// Per-tool overrides, by the tool's name as its server (or the agent's hook) gives it.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolOverride>,
}

/// Where the broker is and who it is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Its base URL, `http://127.0.0.1:8470` or `https://…`.
    pub url: String,
    /// Its identity as grants name it (its public URL), when that differs from `url`.
    #[serde(default)]
    pub id: Option<String>,
}

/// The agent the gateway asks for, with its broker credential.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Its SPIFFE ID, as the broker knows it.
    pub id: String,
    /// The human it acts for (its configured owner at the broker).
    pub owner: String,
    pub secret: SecretRef,
}

/// The gateway's own identity (the audience grants are for) and credential.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub audience: String,
    pub secret: SecretRef,
    /// The gateway's Ed25519 private key (32 bytes, base64url) — `countersign-gateway key new
    /// NAME` makes one and files it in the OS keyring. With it the gateway redeems bounded
    /// grants bound to it; the broker's entry for this gateway holds the public half.
    #[serde(default)]
    pub key: Option<SecretRef>,
}

/// How MCP tools are named to policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// The server's name: its tool `t` is `<server>/t` to the broker.
    #[serde(default = "default_server")]
    pub server: String,
}

impl Default for McpSection {
    fn default() -> Self {
        Self {
            server: default_server(),
        }
    }
}

fn default_server() -> String {
    "mcp".into()
}

/// The hook endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// A bearer token `hook serve` requires (`Authorization: Bearer …`), so that other local
    /// programs cannot make held requests in the agent's name. Claude Code's `http` hooks send
    /// it from an environment variable (`headers` with `allowedEnvVars`).
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// How long things may take.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldSection {
    /// How long one tool call (or hook) waits for the owner before it answers "still waiting"
    /// (MCP) or "no decision" (hooks). Keep it below the client's own timeout (60 s for most
    /// MCP clients; the hook's `timeout`).
    #[serde(default = "default_max_wait")]
    pub max_wait_secs: u64,
    /// How often a held MCP call sends `notifications/progress` (when the client asked for it).
    #[serde(default = "default_progress")]
    pub progress_every_secs: u64,
    /// How long the upstream server may take to run a released call.
    #[serde(default = "default_run_timeout")]
    pub run_timeout_secs: u64,
}

impl Default for HoldSection {
    fn default() -> Self {
        Self {
            max_wait_secs: default_max_wait(),
            progress_every_secs: default_progress(),
            run_timeout_secs: default_run_timeout(),
        }
    }
}

fn default_max_wait() -> u64 {
    45
}
fn default_progress() -> u64 {
    5
}
fn default_run_timeout() -> u64 {
    120
}

impl HoldSection {
    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.max_wait_secs)
    }
    pub fn progress_every(&self) -> Duration {
        Duration::from_secs(self.progress_every_secs.max(1))
    }
    pub fn run_timeout(&self) -> Duration {
        Duration::from_secs(self.run_timeout_secs.max(1))
    }
}

/// What changes for one tool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// The name policy knows it by, instead of `<server>/<tool>`.
    #[serde(default)]
    pub resource: Option<String>,
    /// The intent shown to the owner, instead of the generic one.
    #[serde(default)]
    pub intent: Option<String>,
    /// A longer (or shorter) wait for this tool.
    #[serde(default)]
    pub max_wait_secs: Option<u64>,
}

/// Where a secret is: an environment variable or an OS keyring entry. Never the secret itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    Env {
        env: String,
    },
    Keyring {
        /// The entry's user name under the keyring service [`KEYRING_SERVICE`].
        keyring: String,
    },
    /// A secret written into the file: refused when the file is read.
    Inline(String),
}

/// The keyring service gateway secrets are filed under.
pub const KEYRING_SERVICE: &str = "countersign-gateway";

impl SecretRef {
    /// Reads the secret.
    pub fn resolve(&self, what: &str) -> Result<Zeroizing<String>> {
        let value = match self {
            Self::Env { env } => std::env::var(env).map_err(|_| {
                GatewayError::Config(format!(
                    "{what}: the environment variable {env} is not set (or not UTF-8)"
                ))
            })?,
            Self::Keyring { keyring } => crate::keyring::read(keyring)
                .map_err(|e| GatewayError::Config(format!("{what}: {e}")))?,
            Self::Inline(_) => return Err(inline(what)),
        };
        if value.trim().is_empty() {
            return Err(GatewayError::Config(format!("{what}: the secret is empty")));
        }
        Ok(Zeroizing::new(value))
    }
}

fn inline(what: &str) -> GatewayError {
    GatewayError::Config(format!(
        "{what}: a secret written into the configuration file is refused (a host's \
         configuration points at this file); use {{ env = \"VARIABLE\" }} or \
         {{ keyring = \"name\" }}"
    ))
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let url = |what: &str, value: &str| {
            let ok = value.starts_with("http://") || value.starts_with("https://");
            if ok {
                Ok(())
            } else {
                Err(GatewayError::Config(format!(
                    "{what} must be an http:// or https:// URL, not {value:?}"
                )))
            }
        };
        url("broker.url", &self.broker.url)?;
        if let Some(id) = &self.broker.id {
            url("broker.id", id)?;
        }
        countersign_protocol::spiffe::SpiffeId::parse(&self.agent.id)
            .map_err(|e| GatewayError::Config(format!("agent.id: {e}")))?;
        if self.agent.owner.trim().is_empty() {
            return Err(GatewayError::Config("agent.owner is empty".into()));
        }
        if self.gateway.audience.trim().is_empty() {
            return Err(GatewayError::Config("gateway.audience is empty".into()));
        }
        for (what, secret) in [
            ("agent.secret", Some(&self.agent.secret)),
            ("gateway.secret", Some(&self.gateway.secret)),
            ("gateway.key", self.gateway.key.as_ref()),
            ("hooks.token", self.hooks.token.as_ref()),
        ] {
            if matches!(secret, Some(SecretRef::Inline(_))) {
                return Err(inline(what));
            }
        }
        countersign_protocol::action::tool_name(&self.mcp.server)
            .map_err(|e| GatewayError::Config(format!("mcp.server: {e}")))?;
        if self.mcp.server.contains('/') {
            return Err(GatewayError::Config(
                "mcp.server must not contain '/'".into(),
            ));
        }
        for (name, tool) in &self.tools {
            if let Some(resource) = &tool.resource {
                countersign_protocol::action::tool_name(resource)
                    .map_err(|e| GatewayError::Config(format!("tools.{name}.resource: {e}")))?;
            }
        }
        if self.hold.max_wait_secs == 0 || self.hold.max_wait_secs > 3600 {
            return Err(GatewayError::Config(
                "hold.max_wait_secs must be 1 to 3600".into(),
            ));
        }
        Ok(())
    }

    /// The broker's identity as grants name it.
    pub fn broker_id(&self) -> &str {
        self.broker
            .id
            .as_deref()
            .unwrap_or(&self.broker.url)
            .trim_end_matches('/')
    }

    /// How long a call of `tool` waits in one go.
    pub fn max_wait(&self, tool: &str) -> Duration {
        self.tools
            .get(tool)
            .and_then(|t| t.max_wait_secs)
            .map(Duration::from_secs)
            .unwrap_or_else(|| self.hold.max_wait())
    }
}
