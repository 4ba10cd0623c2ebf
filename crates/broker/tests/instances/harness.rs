//! Three `countersign-broker serve` processes on one PostgreSQL database, and what the tests
//! do with them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use countersign_broker::simulate::{FleetSecrets, SimulatedAgent};
use countersign_protocol::api::{ApproverEvent, RequestView};
use reqwest::StatusCode;

use crate::support::{TestApprover, big_refund, broker_command, hold, pairing_code};

pub const BIN: &str = env!("CARGO_BIN_EXE_countersign-broker");
pub const OWNER: &str = "alice@example.com";
pub const BILLING: &str = "spiffe://example.com/agent/billing";
pub const PAYMENTS: &str = "https://payments-gateway.example.com";
/// The one name every client uses; each resolves it to the instance it talks to.
pub const HOST: &str = "broker.test";

/// Three `countersign-broker serve` processes on one database, on 127.0.0.1–3 and one port.
pub struct Instances {
    pub port: u16,
    pub store_url: String,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    pub secrets: FleetSecrets,
}

impl Drop for Instances {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Instances {
    pub async fn start(store_url: String, edit: impl FnOnce(&mut String)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        broker_command(&["demo-init", "--owner", OWNER, dir.path().to_str().unwrap()]);
        let port = free_port_on_all();
        let config_path = dir.path().join("broker.toml");
        let mut config = format!(
            "public_url = \"http://{HOST}:{port}\"\nmax_pending_per_owner = 1000000\n{}\n\
             [rate_limit]\nper_minute = 1000000\nburst = 100000\n\n\
             [pairing_rate_limit]\nper_minute = 1000000\nburst = 100000\n",
            std::fs::read_to_string(&config_path).unwrap()
        );
        edit(&mut config);
        std::fs::write(&config_path, config).unwrap();
        let secrets: FleetSecrets =
            toml::from_str(&std::fs::read_to_string(dir.path().join("simulate.toml")).unwrap())
                .unwrap();
        let mut instances = Self {
            port,
            store_url,
            dir,
            children: Vec::new(),
            secrets,
        };
        for i in 0..3 {
            let child = instances.spawn(i);
            instances.children.push(Some(child));
        }
        for i in 0..3 {
            instances.ready(i).await;
        }
        instances
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("broker.toml")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i as u8 + 1], self.port))
    }

    /// The public URL (what grants and request proofs are bound to).
    pub fn url(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }

    /// The arguments that point the admin commands at the instances' database.
    pub fn store_args(&self) -> Vec<String> {
        vec!["--store-url".into(), self.store_url.clone()]
    }

    /// Instance `i`'s own address.
    pub fn direct(&self, i: usize) -> String {
        format!("http://{}", self.addr(i))
    }

    fn spawn(&self, i: usize) -> Child {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .args(["--store-url", &self.store_url, "serve", "--listen"])
            .arg(self.addr(i).to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn ready(&self, i: usize) {
        let mut up = false;
        for _ in 0..300 {
            up = reqwest::get(format!("{}/healthz", self.direct(i)))
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "instance {i} did not start");
    }

    /// SIGKILL: no goodbye to its clients or its database.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A client whose `broker.test` is instance `i`.
    pub fn client(&self, i: usize) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(HOST, self.addr(i))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// An approver of the owner, paired through instance `i` with a code from the admin
    /// command, talking to instance `i`.
    pub async fn approver(&self, i: usize) -> TestApprover {
        let code = pairing_code(&self.store_args(), OWNER);
        let mut approver = TestApprover::new(&self.url(), OWNER);
        approver.http = self.client(i);
        approver.pair(&code).await.unwrap();
        approver
    }

    /// The billing agent, talking to instance `i`.
    pub fn agent(&self, i: usize) -> SimulatedAgent {
        let secret = self
            .secrets
            .agents
            .iter()
            .find(|a| a.id == BILLING)
            .unwrap();
        SimulatedAgent::new(&self.direct(i), &self.secrets, secret).unwrap()
    }
}

/// A port free on 127.0.0.1, .2 and .3.
fn free_port_on_all() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let others = (2..=3).all(|i| {
            std::net::TcpListener::bind(("127.0.0.".to_owned() + &i.to_string(), port)).is_ok()
        });
        if others {
            return port;
        }
    }
}

/// Holds a big refund through `agent`; the owner's view of it.
pub async fn held(agent: &SimulatedAgent, approver: &TestApprover, intent: &str) -> RequestView {
    let mut request = agent.request(&big_refund()).unwrap();
    request.context.intent = intent.into();
    let ticket = hold(agent, &request).await;
    let response = approver
        .send(
            reqwest::Method::GET,
            &format!("/v1/approver/requests/{}", ticket.id),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub fn events_in_order(events: &[ApproverEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "out of order: {} then {}",
            pair[0].id,
            pair[1].id
        );
    }
}
