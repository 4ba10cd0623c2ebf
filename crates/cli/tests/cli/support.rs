//! Shared setup: a broker with one agent and its gateway, a simulated agent, and a CLI profile
//! (its own directory and keyring profile) driven through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use countersign_broker::RunningBroker;
use countersign_broker::config::Config;
use countersign_broker::simulate::{Scenario, SimulatedAgent, scenarios};
use countersign_protocol::action::ActionRequest;
use countersign_protocol::api::RequestStatus;
use countersign_testkit::SmallFleet;
use serde_json::Value;

pub use countersign_testkit::{GATEWAY, OWNER};

fn fleet() -> SmallFleet {
    countersign_testkit::fleet("cli-test")
}

pub fn broker_config(dir: &Path, listen: &str) -> Config {
    fleet().config(dir.join("broker.db"), listen.parse().unwrap())
}

pub async fn broker(dir: &Path) -> RunningBroker {
    countersign_broker::spawn(broker_config(dir, "127.0.0.1:0"))
        .await
        .unwrap()
}

pub fn url(broker: &RunningBroker) -> String {
    format!("http://{}", broker.addr)
}

pub fn agent(url: &str) -> SimulatedAgent {
    fleet().agent(url).unwrap()
}

/// A held call: the refund of 5000 that the demo policy sends to the owner, with `intent`.
pub fn held(intent: &str) -> Scenario {
    Scenario {
        intent: intent.into(),
        ..scenarios()[0].clone()
    }
}

/// Submits `scenario` and returns the request and the id of its pending action.
pub async fn submit(agent: &SimulatedAgent, scenario: &Scenario) -> (ActionRequest, String) {
    submit_request(agent, &agent.request(scenario).unwrap()).await
}

/// Submits `request`, which policy must hold, and returns it with its item id.
pub async fn submit_request(
    agent: &SimulatedAgent,
    request: &ActionRequest,
) -> (ActionRequest, String) {
    let request = request.clone();
    let response = agent.evaluate(&request).await.unwrap();
    let id = response
        .context
        .and_then(|c| c.approval)
        .expect("the call is held for approval")
        .id;
    (request, id)
}

pub async fn outcome(agent: &SimulatedAgent, id: &str) -> RequestStatus {
    agent.wait(id, Duration::from_secs(10)).await.unwrap()
}

/// A one-time pairing code.
pub fn code(broker: &RunningBroker) -> String {
    countersign_testkit::pairing_code(broker, OWNER)
}

/// One CLI profile: a directory and a keyring profile of its own.
#[derive(Debug)]
pub struct App {
    pub home: PathBuf,
    pub profile: String,
}

impl App {
    pub fn new(dir: &Path) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            home: dir.join(format!("app-{n}")),
            profile: format!("cli-test-{}-{n}", std::process::id()),
        }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .args(args)
            .env("COUNTERSIGN_HOME", &self.home)
            .env("COUNTERSIGN_PROFILE", &self.profile)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the binary to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    /// Runs with `--json`, expects `code`, and returns the parsed output.
    pub async fn json(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(code),
            "countersign {args:?}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    pub async fn ok(&self, args: &[&str]) -> Value {
        self.json(args, 0).await
    }

    /// Enrols the development authenticator and pairs with `broker`.
    pub async fn paired(dir: &Path, broker: &RunningBroker) -> Self {
        let app = Self::new(dir);
        app.ok(&["authenticators", "add", "--kind", "dev", "--name", "laptop"])
            .await;
        app.ok(&["pair", &url(broker), &code(broker)]).await;
        app
    }
}
