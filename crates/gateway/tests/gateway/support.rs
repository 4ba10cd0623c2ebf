//! A real broker with a paired engine (the development authenticator approves), a gateway
//! configuration for it, and the real MCP peers of the official Python SDK.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use countersign_approver::authn::Unattended;
use countersign_testkit::{AGENT, GATEWAY, OWNER, PairedEngine, paired_engine_with};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

pub(crate) const AGENT_SECRET_VAR: &str = "COUNTERSIGN_TEST_AGENT_SECRET";
pub(crate) const GATEWAY_SECRET_VAR: &str = "COUNTERSIGN_TEST_GATEWAY_SECRET";
pub(crate) const GATEWAY_KEY_VAR: &str = "COUNTERSIGN_TEST_GATEWAY_KEY";

/// The repository's root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where setup installed the Python SDK (1.x, the session era).
pub(crate) fn python_path() -> PathBuf {
    sdk("python-mcp1")
}

/// Where setup installed the Python SDK 2.x (the 2026-07-28 era).
pub(crate) fn python2_path() -> PathBuf {
    sdk("python-mcp2")
}

fn sdk(dir: &str) -> PathBuf {
    let path = root().join("target").join(dir);
    assert!(
        path.join("mcp").is_dir(),
        "the Python MCP SDK is missing from {}: run scripts/setup.sh",
        path.display()
    );
    path
}

pub(crate) struct Setup {
    pub(crate) paired: PairedEngine,
    _dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) record: PathBuf,
}

/// A broker (tweaked by `broker`), an engine paired with it, and a gateway configuration for
/// the MCP server "stripe" with `extra` TOML appended.
pub(crate) async fn setup(
    label: &str,
    extra: &str,
    broker: impl FnOnce(&mut countersign_broker::config::Config),
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let paired = paired_engine_with(dir.path(), label, broker).await;
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            r#"[broker]
url = "{url}"

[agent]
id = "{AGENT}"
owner = "{OWNER}"
secret = {{ env = "{AGENT_SECRET_VAR}" }}

[gateway]
audience = "{GATEWAY}"
secret = {{ env = "{GATEWAY_SECRET_VAR}" }}
key = {{ env = "{GATEWAY_KEY_VAR}" }}

[mcp]
server = "stripe"
{extra}
"#,
            url = paired.url,
        ),
    )
    .unwrap();
    let record = dir.path().join("executions.jsonl");
    Setup {
        paired,
        _dir: dir,
        config,
        record,
    }
}

impl Setup {
    /// The environment the gateway (and the server it starts) runs with.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let secrets = &self.paired.fleet.secrets;
        vec![
            (AGENT_SECRET_VAR, secrets.agents[0].secret.clone()),
            (GATEWAY_SECRET_VAR, secrets.gateways[0].secret.clone()),
            (
                GATEWAY_KEY_VAR,
                secrets.gateways[0].key.clone().expect("a test gateway key"),
            ),
            ("PYTHONPATH", python_path().display().to_string()),
            ("COUNTERSIGN_TEST_RECORD", self.record.display().to_string()),
            ("COUNTERSIGN_LOG", "countersign_gateway=info".into()),
        ]
    }

    /// `countersign-gateway mcp stdio --config … -- python3 server.py`.
    pub(crate) fn gateway_command(&self) -> Vec<String> {
        vec![
            env!("CARGO_BIN_EXE_countersign-gateway").into(),
            "mcp".into(),
            "stdio".into(),
            "--config".into(),
            self.config.display().to_string(),
            "--".into(),
            "python3".into(),
            root().join("tests/mcp/server.py").display().to_string(),
        ]
    }

    /// The server's executions, as it recorded them.
    pub(crate) fn executions(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut e: Value = serde_json::from_str(l).unwrap();
                // When it ran: for the benchmark, not the tests.
                e.as_object_mut().unwrap().remove("at");
                e
            })
            .collect()
    }

    /// Waits for the next pending item at the broker and returns its id.
    pub(crate) async fn next_pending(&mut self) -> String {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.paired.engine.sync().await.unwrap();
            if let Some(item) = self.paired.engine.pending().unwrap().first() {
                return item.review.id.clone();
            }
            assert!(tokio::time::Instant::now() < until, "no pending item came");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Approves `id` with the development authenticator.
    pub(crate) async fn approve(&mut self, id: &str) {
        self.paired.engine.sync().await.unwrap();
        self.paired
            .engine
            .approve(id, None, &Unattended)
            .await
            .unwrap();
    }

    /// What the gateway reported of `id`, from the owner's history (after its `redeemed` entry).
    pub(crate) async fn outcome(&mut self, id: &str) -> Value {
        let entries = self.entries(id).await;
        let at = |kind: &str| entries.iter().position(|(k, _)| k == kind);
        let redeemed = at("redeemed").expect("a redeemed entry");
        let outcome = at("outcome").expect("an outcome entry");
        assert!(redeemed < outcome, "{entries:?}");
        entries[outcome].1.clone()
    }

    /// The history entries of `id`, after a sync.
    pub(crate) async fn entries(&mut self, id: &str) -> Vec<(String, Value)> {
        self.paired.engine.sync().await.unwrap();
        let opened = self
            .paired
            .engine
            .open_item(id, countersign_approver::engine::Via::App)
            .unwrap();
        opened
            .entries
            .into_iter()
            .map(|e| (e.kind.to_string(), e.detail))
            .collect()
    }
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub(crate) async fn listening(port: u16) {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < until,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SDK's FastMCP server over Streamable HTTP, and `countersign-gateway mcp http` in front
/// of it.
pub(crate) struct HttpGateway {
    _server: tokio::process::Child,
    _gateway: tokio::process::Child,
    /// The gateway's MCP endpoint.
    pub(crate) url: String,
}

impl HttpGateway {
    pub(crate) async fn start(setup: &Setup) -> Self {
        let (server_port, gateway_port) = (free_port(), free_port());
        let server = tokio::process::Command::new("python3")
            .arg(root().join("tests/mcp/server.py"))
            .args(["--http", &server_port.to_string()])
            .envs(setup.env())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign-gateway"))
            .args(["mcp", "http", "--config"])
            .arg(&setup.config)
            .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
            .args(["--upstream", &format!("http://127.0.0.1:{server_port}/mcp")])
            .envs(setup.env())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        listening(server_port).await;
        listening(gateway_port).await;
        Self {
            _server: server,
            _gateway: gateway,
            url: format!("http://127.0.0.1:{gateway_port}/mcp"),
        }
    }
}

/// The official Python SDK's client, running `steps` against the gateway; one JSON line per
/// step.
pub(crate) struct Client {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Client {
    pub(crate) fn start(setup: &Setup, steps: Value) -> Self {
        Self::with_spec(
            setup,
            &serde_json::json!({"command": setup.gateway_command(), "steps": steps}),
        )
    }

    /// The client over Streamable HTTP to `url`.
    pub(crate) fn http(setup: &Setup, url: &str, steps: Value) -> Self {
        Self::with_spec(setup, &serde_json::json!({"url": url, "steps": steps}))
    }

    /// The SDK 2.x client (2026-07-28) over stdio, answering elicitations with `elicitation`
    /// (or declaring none); the server behind the gateway is the SDK 2.x server.
    pub(crate) fn modern(setup: &Setup, steps: Value, elicitation: Option<&str>) -> Self {
        let spec = serde_json::json!({
            "command": setup.gateway_command(), "steps": steps, "elicitation": elicitation,
        });
        let env = setup.env().into_iter().map(|(k, v)| match k {
            "PYTHONPATH" => (k, python2_path().display().to_string()),
            _ => (k, v),
        });
        Self::spawn("python3", "client2.py", &spec, env)
    }

    fn with_spec(setup: &Setup, spec: &Value) -> Self {
        Self::spawn("python3", "client.py", spec, setup.env())
    }

    /// The official TypeScript SDK's client over stdio.
    pub(crate) fn typescript(setup: &Setup, steps: Value) -> Self {
        let client = root().join("tests/mcp/ts/node_modules/@modelcontextprotocol/sdk");
        assert!(
            client.is_dir(),
            "the MCP TypeScript SDK is missing from tests/mcp/ts: run scripts/setup.sh"
        );
        let spec = serde_json::json!({"command": setup.gateway_command(), "steps": steps});
        Self::spawn("node", "ts/client.mjs", &spec, setup.env())
    }

    fn spawn(
        program: &str,
        script: &str,
        spec: &Value,
        env: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Self {
        let mut child = tokio::process::Command::new(program)
            .arg(root().join("tests/mcp").join(script))
            .arg(spec.to_string())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next line the client printed.
    pub(crate) async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .expect("the client answered in time")
            .unwrap()
            .expect("the client printed a line");
        serde_json::from_str(&line).unwrap()
    }

    /// Skips the `initialized` and `tools` lines; returns the tool names.
    pub(crate) async fn started(&mut self) -> Vec<String> {
        let init = self.next().await;
        assert!(init.get("initialized").is_some(), "{init}");
        let tools = self.next().await;
        serde_json::from_value(tools["tools"].clone()).unwrap()
    }

    pub(crate) async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the client ended")
            .unwrap();
        assert!(status.success(), "the client failed: {status}");
    }

    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The result text of a step line.
pub(crate) fn text(step: &Value) -> String {
    step["text"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
