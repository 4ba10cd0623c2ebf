//! Shared setup: a real broker on loopback with one agent and one gateway, a simulated agent,
//! and a paired approver with a software authenticator.

use countersign_approver::authn::AuthenticatorFailure;
use countersign_approver::client::BrokerClient;
use countersign_approver::outbox::Authenticator;
use countersign_approver::{Error, Result};
use countersign_broker::RunningBroker;
use std::path::Path;

use countersign_broker::config::Config;
use countersign_broker::simulate::SimulatedAgent;
use countersign_protocol::DeviceSigningKey;
use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::grant::Issuer;
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::{RelyingParty, WebAuthnAssertion};
use countersign_testkit::SmallFleet;

pub use countersign_testkit::{GATEWAY, OWNER};

fn fleet() -> SmallFleet {
    countersign_testkit::fleet("approver-test")
}

pub fn broker_config(dir: &Path, listen: &str) -> Config {
    fleet().config(dir.join("broker.db"), listen.parse().unwrap())
}

pub fn sim(url: &str) -> SimulatedAgent {
    fleet().agent(url).unwrap()
}

/// The development authenticator behind the engine's [`Authenticator`] trait.
pub struct Soft {
    inner: SoftAuthenticator,
    credential: RegisteredCredential,
}

impl Soft {
    pub fn new() -> Self {
        let mut inner = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
        let credential = inner.register(OWNER).unwrap();
        Self { inner, credential }
    }
}

impl Authenticator for Soft {
    fn credential(&self) -> &RegisteredCredential {
        &self.credential
    }

    fn assert(&mut self, challenge: &[u8; 32]) -> Result<WebAuthnAssertion> {
        self.inner
            .assert(&self.credential.id, challenge, true)
            .map_err(|e| Error::authenticator(AuthenticatorFailure::Failed, e.to_string()))
    }
}

/// A one-time pairing code, as `countersign-broker pair` issues it.
pub fn code(broker: &RunningBroker) -> String {
    countersign_testkit::pairing_code(broker, OWNER)
}

/// A broker, and an approver paired with it.
pub struct Paired {
    pub broker: RunningBroker,
    pub url: String,
    pub client: BrokerClient,
    pub issuer: Issuer,
    pub device: DeviceSigningKey,
    pub authenticator: Soft,
}

pub async fn paired(dir: &Path) -> Paired {
    let broker = countersign_broker::spawn(broker_config(dir, "127.0.0.1:0"))
        .await
        .unwrap();
    let url = format!("http://{}", broker.addr);
    let authenticator = Soft::new();
    let device = DeviceSigningKey::generate();
    let copy = DeviceSigningKey::from_secret(&device.secret());
    let (client, paired) = BrokerClient::pair(
        &url,
        &code(&broker),
        copy,
        authenticator.credential.clone(),
        None,
    )
    .await
    .unwrap();
    let issuer = Issuer {
        approver_id: paired.approver_id,
        owner: paired.owner,
        broker: url.clone(),
    };
    Paired {
        broker,
        url,
        client,
        issuer,
        device,
        authenticator,
    }
}

pub fn now() -> i64 {
    countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock)
}

/// Submits `request`, which policy must hold for its owner, and returns the item's id.
pub async fn held(agent: &SimulatedAgent, request: &countersign_protocol::ActionRequest) -> String {
    agent
        .evaluate(request)
        .await
        .unwrap()
        .context
        .and_then(|c| c.approval)
        .expect("held for approval")
        .id
}

/// The grant the agent receives once its owner approved `id`.
pub async fn grant_of(agent: &SimulatedAgent, id: &str) -> String {
    agent
        .wait(id, std::time::Duration::from_secs(5))
        .await
        .unwrap()
        .grant
        .expect("approved with a grant")
}
