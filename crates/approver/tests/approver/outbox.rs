//! Approve and deny through the outbox against the real broker: a crash between writing the
//! decision and sending it, or between sending and hearing back, loses nothing and never yields
//! two different grants for one item.

use std::time::Duration;

use countersign_approver::client::{BrokerClient, DecisionOutcome};
use countersign_approver::history::History;
use countersign_approver::outbox::{self, Authenticator};
use countersign_approver::{Error, Result};
use countersign_broker::config::{AgentConfig, Config, GatewayConfig, secret_hash};
use countersign_broker::simulate::{
    AgentSecret, FleetSecrets, GatewaySecret, SimulatedAgent, scenarios,
};
use countersign_protocol::DeviceSigningKey;
use countersign_protocol::action::Status;
use countersign_protocol::api::Decision;
use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::{RelyingParty, WebAuthnAssertion};

const OWNER: &str = "alice@example.com";
const AGENT: &str = "spiffe://example.com/agent/billing";
const SECRET: &str = "outbox-test-agent-secret-0123456789abcdef";
const GATEWAY: &str = "https://tools.example.com";
const GATEWAY_SECRET: &str = "outbox-test-gateway-secret-0123456789ab";

struct Soft {
    inner: SoftAuthenticator,
    credential: RegisteredCredential,
}

impl Authenticator for Soft {
    fn credential(&self) -> &RegisteredCredential {
        &self.credential
    }

    fn assert(&mut self, challenge: &[u8; 32]) -> Result<WebAuthnAssertion> {
        self.inner
            .assert(&self.credential.id, challenge, true)
            .map_err(|e| Error::Authenticator(e.to_string()))
    }
}

fn sim(url: &str) -> SimulatedAgent {
    let secrets = FleetSecrets {
        owner: OWNER.into(),
        agents: vec![AgentSecret {
            id: AGENT.into(),
            secret: SECRET.into(),
            delegated_by: None,
        }],
        gateways: vec![GatewaySecret {
            audience: GATEWAY.into(),
            secret: GATEWAY_SECRET.into(),
        }],
    };
    SimulatedAgent::new(url, &secrets, &secrets.agents[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_anywhere_in_approving_yields_exactly_one_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("broker.db"),
        agents: vec![AgentConfig {
            id: AGENT.into(),
            owner: OWNER.into(),
            secret_sha256: secret_hash(SECRET),
        }],
        gateways: vec![GatewayConfig {
            audience: GATEWAY.into(),
            tools: vec!["*".into()],
            secret_sha256: secret_hash(GATEWAY_SECRET),
        }],
        ..Config::default()
    };
    let broker = countersign_broker::spawn(config).await.unwrap();
    let url = format!("http://{}", broker.addr);
    let code = countersign_broker::approver::issue_pairing_code(
        broker.state.store.as_ref(),
        OWNER,
        0,
        i64::MAX / 2,
    )
    .unwrap();
    let mut inner = SoftAuthenticator::new(RelyingParty::countersign());
    let credential = inner.register(OWNER).unwrap();
    let mut authenticator = Soft {
        inner,
        credential: credential.clone(),
    };
    let device = DeviceSigningKey::generate();
    let (client, paired) = BrokerClient::pair(
        &url,
        &code,
        DeviceSigningKey::from_secret(&device.secret()),
        credential,
        None,
    )
    .await
    .unwrap();
    let issuer = countersign_protocol::grant::Issuer {
        approver_id: paired.approver_id,
        owner: paired.owner,
    };

    let agent = sim(&url);
    let refund = agent.request(&scenarios()[0]).unwrap();
    let ticket = agent
        .evaluate(&refund)
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    let path = dir.path().join("history.db");
    let mut history = History::open(&path).unwrap();
    for view in client.list(Some("pending")).await.unwrap().requests {
        history.receive(client.base(), &view.pending, 1).unwrap();
    }

    // Approve: written to the outbox and the history together, nothing sent yet ... then crash.
    let queued = outbox::approve(
        &mut history,
        &ticket.id,
        &issuer,
        &device,
        &mut authenticator,
        now(),
    )
    .unwrap();
    let Decision::Approve { grant } = &queued.decision else {
        panic!("an approval")
    };
    drop(history);

    // Restart: the same decision is still queued; approving again does not mint a second grant.
    let mut history = History::open(&path).unwrap();
    let again = outbox::approve(
        &mut history,
        &ticket.id,
        &issuer,
        &device,
        &mut authenticator,
        now(),
    )
    .unwrap();
    assert_eq!(again, queued);
    assert_eq!(outbox::unsent(&mut history).unwrap().len(), 1);

    // Sent, but the answer is lost (as if the process died right after sending) ...
    let first = client
        .decide(&ticket.id, &queued.decision, &queued.idempotency_key)
        .await
        .unwrap();
    assert!(matches!(first, DecisionOutcome::Recorded(_)));
    // ... so it is sent again after restart, and the broker gives the same answer.
    let sent = outbox::flush(&mut history, &client, now()).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, first);
    assert!(outbox::unsent(&mut history).unwrap().is_empty());

    // The agent receives exactly that grant, and the gateway redeems it once.
    let status = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.status, Status::Approved);
    assert_eq!(status.grant.as_deref(), Some(grant.as_str()));
    assert_eq!(
        agent.redeem(GATEWAY, grant, &refund).await.unwrap(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        agent.redeem(GATEWAY, grant, &refund).await.unwrap(),
        reqwest::StatusCode::CONFLICT
    );

    let kinds: Vec<String> = history
        .entries(&ticket.id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["received", "approved"]);
    history.verify().unwrap();
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_is_queued_sent_and_seen_by_the_agent_and_refusals_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("broker.db"),
        agents: vec![AgentConfig {
            id: AGENT.into(),
            owner: OWNER.into(),
            secret_sha256: secret_hash(SECRET),
        }],
        gateways: vec![GatewayConfig {
            audience: GATEWAY.into(),
            tools: vec!["*".into()],
            secret_sha256: secret_hash(GATEWAY_SECRET),
        }],
        ..Config::default()
    };
    let broker = countersign_broker::spawn(config).await.unwrap();
    let url = format!("http://{}", broker.addr);
    let code = countersign_broker::approver::issue_pairing_code(
        broker.state.store.as_ref(),
        OWNER,
        0,
        i64::MAX / 2,
    )
    .unwrap();
    let mut inner = SoftAuthenticator::new(RelyingParty::countersign());
    let credential = inner.register(OWNER).unwrap();
    let mut authenticator = Soft {
        inner,
        credential: credential.clone(),
    };
    let device = DeviceSigningKey::generate();
    let (client, paired) = BrokerClient::pair(
        &url,
        &code,
        DeviceSigningKey::from_secret(&device.secret()),
        credential,
        None,
    )
    .await
    .unwrap();
    let issuer = countersign_protocol::grant::Issuer {
        approver_id: paired.approver_id,
        owner: paired.owner,
    };
    let agent = sim(&url);
    let ticket = agent
        .evaluate(&agent.request(&scenarios()[2]).unwrap())
        .await
        .unwrap()
        .context
        .unwrap()
        .approval
        .unwrap();
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    let view = client
        .list(Some("pending"))
        .await
        .unwrap()
        .requests
        .remove(0);

    // An item whose contents disagree with its hash is refused on arrival and cannot be approved.
    let mut lying = view.pending.clone();
    lying.id = "pa_lying".into();
    lying.context.intent = "Archive the repository".into();
    history.receive(client.base(), &lying, 1).unwrap();
    let refused = outbox::approve(
        &mut history,
        "pa_lying",
        &issuer,
        &device,
        &mut authenticator,
        now(),
    );
    assert!(
        matches!(refused, Err(Error::NotPending { ref status, .. }) if status == "refused"),
        "{refused:?}"
    );

    history.receive(client.base(), &view.pending, 1).unwrap();
    assert!(matches!(
        outbox::deny(&mut history, &ticket.id, "  ", false, now()),
        Err(Error::ReasonRequired)
    ));
    outbox::deny(
        &mut history,
        &ticket.id,
        "not this repository",
        false,
        now(),
    )
    .unwrap();
    assert!(
        matches!(
            outbox::approve(&mut history, &ticket.id, &issuer, &device, &mut authenticator, now()),
            Ok(q) if matches!(q.decision, Decision::Deny { .. })
        ),
        "the first decision stays the decision"
    );
    outbox::flush(&mut history, &client, now()).await.unwrap();
    let status = agent
        .wait(&ticket.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (status.status, status.reason.as_deref()),
        (Status::Denied, Some("not this repository"))
    );
    broker.stop();
}

fn now() -> i64 {
    countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock)
}
