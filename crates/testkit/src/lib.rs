//! Test support shared by the integration tests of the approver and the CLI and by the desktop
//! app's tests: the smallest fleet a real broker is configured with (one owner, one agent, one
//! gateway allowed every tool), its names, pairing codes taken straight from a running broker's
//! store, and a broker with an engine paired to it. Never published, never a dependency of anything shipped: the broker's own
//! API carries no test fixtures.

#![expect(
    clippy::expect_used,
    reason = "test support: a fixture that cannot be built fails the test that asked for it"
)]

use std::path::Path;

use countersign_approver::authn::{Kind, Unattended};
use countersign_approver::engine::Engine;
use countersign_broker::RunningBroker;
use countersign_broker::config::{AgentConfig, Config, GatewayConfig, secret_hash};
use countersign_broker::simulate::{
    AgentSecret, FleetSecrets, GatewaySecret, SimulatedAgent, demo_catalog,
};

/// The owner every test fleet belongs to.
pub const OWNER: &str = "alice@example.com";
/// The fleet's agent.
pub const AGENT: &str = "spiffe://example.com/agent/billing";
/// The fleet's gateway.
pub const GATEWAY: &str = "https://tools.example.com";

/// The fleet of [`OWNER`], [`AGENT`] and [`GATEWAY`], its secrets derived from `label`.
pub fn fleet(label: &str) -> SmallFleet {
    SmallFleet::new(OWNER, AGENT, GATEWAY, label)
}

/// A real broker on loopback, and an engine paired with it.
pub struct PairedEngine {
    pub broker: RunningBroker,
    /// The broker's base URL.
    pub url: String,
    /// An engine with the development authenticator ("dev key") enrolled, paired as [`OWNER`].
    pub engine: Engine,
    /// The broker's fleet: [`SmallFleet::agent`] gives its agent.
    pub fleet: SmallFleet,
}

impl std::fmt::Debug for PairedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairedEngine")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A broker for the fleet `label` (its database in `dir`), and an engine whose profile is
/// `dir/app` (keyring entries under `label` and this process's id) with the development
/// authenticator enrolled and paired with that broker: what most tests of the app start from.
pub async fn paired_engine(dir: &Path, label: &str) -> PairedEngine {
    paired_engine_with(dir, label, |_| {}).await
}

/// [`paired_engine`] with the broker's configuration changed by `tweak` first (a shorter
/// expiry, say).
pub async fn paired_engine_with(
    dir: &Path,
    label: &str,
    tweak: impl FnOnce(&mut Config),
) -> PairedEngine {
    let fleet = fleet(label);
    let mut config = fleet.config(
        dir.join("broker.db"),
        "127.0.0.1:0".parse().expect("an address"),
    );
    tweak(&mut config);
    let broker = countersign_broker::spawn(config).await.expect("a broker");
    let code = pairing_code(&broker, OWNER);
    let mut engine = Engine::open(&dir.join("app"), &format!("{label}-{}", std::process::id()))
        .expect("an engine");
    engine
        .enroll(Kind::Dev, "dev key", None, &Unattended)
        .await
        .expect("the development authenticator enrolled");
    let url = format!("http://{}", broker.addr);
    engine
        .pair(&url, &code, None, None, None, &Unattended)
        .await
        .expect("paired");
    PairedEngine {
        broker,
        url,
        engine,
        fleet,
    }
}

/// A one-time pairing code for `owner`, issued by `broker`'s own store (what
/// `countersign-broker pair` prints), valid for as long as a test runs.
pub fn pairing_code(broker: &RunningBroker, owner: &str) -> String {
    countersign_broker::pairing::issue_pairing_code(
        broker.state.store.as_ref(),
        owner,
        0,
        i64::MAX / 2,
    )
    .expect("a pairing code")
}

/// The smallest fleet: one owner, one agent, and one gateway allowed every tool. For tests
/// that need a real broker and an agent but no demo files.
#[derive(Clone, Debug)]
pub struct SmallFleet {
    pub secrets: FleetSecrets,
}

impl SmallFleet {
    /// A fleet whose secrets are derived from `label` (test secrets; never for a deployment).
    pub fn new(owner: &str, agent: &str, gateway: &str, label: &str) -> Self {
        Self {
            secrets: FleetSecrets {
                owner: owner.into(),
                agents: vec![AgentSecret {
                    id: agent.into(),
                    secret: format!("{label}-agent-secret-0123456789abcdefghij"),
                    delegated_by: None,
                }],
                gateways: vec![GatewaySecret {
                    audience: gateway.into(),
                    secret: format!("{label}-gateway-secret-0123456789abcdefgh"),
                    // 32 bytes in base64url, derived from the label.
                    key: Some(secret_hash(&format!("{label}-gateway-key"))),
                }],
            },
        }
    }

    /// A broker configuration for this fleet, with its database at `database`: a demo broker
    /// (the built-in demo policies) with the demo tool catalog.
    pub fn config(&self, database: std::path::PathBuf, listen: std::net::SocketAddr) -> Config {
        Config {
            listen,
            database,
            demo: true,
            tools: demo_catalog(),
            agents: self
                .secrets
                .agents
                .iter()
                .map(|a| AgentConfig {
                    id: a.id.clone(),
                    owner: self.secrets.owner.clone(),
                    secret_sha256: secret_hash(&a.secret),
                })
                .collect(),
            gateways: self
                .secrets
                .gateways
                .iter()
                .map(|g| GatewayConfig {
                    audience: g.audience.clone(),
                    tools: vec!["*".into()],
                    secret_sha256: secret_hash(&g.secret),
                    key: g
                        .signing_key()
                        .expect("a test gateway key")
                        .map(|k| k.public_jwk()),
                })
                .collect(),
            ..Config::default()
        }
    }

    /// The fleet's (first) agent, talking to the broker at `url`.
    pub fn agent(&self, url: &str) -> anyhow::Result<SimulatedAgent> {
        SimulatedAgent::new(url, &self.secrets, &self.secrets.agents[0])
    }
}
