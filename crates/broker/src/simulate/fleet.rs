//! The fleet: the simulator's secrets, the demo fleet and its tool catalog.

use countersign_protocol::grant::DeviceSigningKey;
use serde::Deserialize;

use crate::config::{AgentConfig, GatewayConfig, ToolConfig, secret_hash};

/// Plaintext secrets the simulator uses (written by `countersign-broker demo-init`; demo only).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSecrets {
    /// The owner the agents act for.
    pub owner: String,
    pub agents: Vec<AgentSecret>,
    pub gateways: Vec<GatewaySecret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSecret {
    pub id: String,
    pub secret: String,
    /// The agent that delegated to this one, if any.
    #[serde(default)]
    pub delegated_by: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySecret {
    pub audience: String,
    pub secret: String,
    /// The gateway's Ed25519 private key (32 bytes, base64url), when it has one: it proves
    /// possession with it when presenting a bounded grant.
    #[serde(default)]
    pub key: Option<String>,
}

impl GatewaySecret {
    /// The gateway's signing key, when it has one.
    pub fn signing_key(&self) -> anyhow::Result<Option<DeviceSigningKey>> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let bytes = countersign_protocol::hash::b64url_decode(key)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the key of gateway {} is not 32 bytes of base64url",
                    self.audience
                )
            })?;
        Ok(Some(DeviceSigningKey::from_secret(&bytes)))
    }
}

/// The demo fleet with fresh random secrets: three agents of `owner` (two of them acting for a
/// planner agent) and two gateways — payments for `stripe/*`, tools for everything. Returns the
/// simulator's secrets and the broker's configuration entries (secrets hashed).
pub fn demo_fleet(owner: &str) -> (FleetSecrets, Vec<AgentConfig>, Vec<GatewayConfig>) {
    let agents = [
        (
            "spiffe://example.com/agent/billing",
            Some("spiffe://example.com/agent/planner"),
        ),
        ("spiffe://example.com/agent/devops", None),
        (
            "spiffe://example.com/agent/assistant",
            Some("spiffe://example.com/agent/planner"),
        ),
    ];
    let gateways = [
        ("https://payments-gateway.example.com", "stripe/*"),
        ("https://tools-gateway.example.com", "*"),
    ];
    let mut secrets = FleetSecrets {
        owner: owner.to_owned(),
        agents: Vec::new(),
        gateways: Vec::new(),
    };
    let (mut agent_configs, mut gateway_configs) = (Vec::new(), Vec::new());
    for (id, delegated_by) in agents {
        let secret = random_secret();
        agent_configs.push(AgentConfig {
            id: id.to_owned(),
            owner: owner.to_owned(),
            secret_sha256: secret_hash(&secret),
        });
        secrets.agents.push(AgentSecret {
            id: id.to_owned(),
            secret,
            delegated_by: delegated_by.map(str::to_owned),
        });
    }
    for (audience, tools) in gateways {
        let secret = random_secret();
        let key = DeviceSigningKey::generate();
        gateway_configs.push(GatewayConfig {
            audience: audience.to_owned(),
            tools: vec![tools.to_owned()],
            secret_sha256: secret_hash(&secret),
            key: Some(key.public_jwk()),
        });
        secrets.gateways.push(GatewaySecret {
            audience: audience.to_owned(),
            secret,
            key: Some(countersign_protocol::hash::b64url(&*key.secret())),
        });
    }
    (secrets, agent_configs, gateway_configs)
}

/// The demo's tool catalog: what each demo tool touches and how risky it is. Policy decides on
/// these facts, not on the `data` agents claim in their requests.
pub fn demo_catalog() -> Vec<ToolConfig> {
    use countersign_protocol::action::Risk;
    let tool = |name: &str, domain: &str, classes: &[&str], risk| ToolConfig {
        name: name.into(),
        domain: Some(domain.into()),
        classification: classes.iter().map(|c| (*c).to_owned()).collect(),
        risk: Some(risk),
    };
    vec![
        tool(
            "stripe/refunds.create",
            "payments",
            &["financial"],
            Risk::High,
        ),
        tool(
            "github/repos.delete",
            "source",
            &["internal"],
            Risk::Critical,
        ),
        tool("postgres/query", "crm", &["pii"], Risk::Medium),
        tool("postgres/drop_database", "crm", &["pii"], Risk::Critical),
        tool("gmail/send", "mail", &["confidential"], Risk::Medium),
        tool("calendar/events.list", "calendar", &["internal"], Risk::Low),
    ]
}

/// A 256-bit random secret, base64url.
pub fn random_secret() -> String {
    countersign_protocol::hash::random_b64url::<32>()
}
