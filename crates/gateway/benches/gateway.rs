//! What the gateway costs and how fast it releases a call, against the real parts: an in-process
//! broker on loopback (SQLite), the real `countersign-gateway` binary over stdio, and the
//! official Python SDK's FastMCP server (`tests/mcp/server.py`).
//!
//! - overhead: an allowed `tools/call` straight to the server versus through the gateway (which
//!   asks the broker first), interleaved in blocks, p50/p99 of each and of the difference, over
//!   stdio and over Streamable HTTP;
//! - release: from the owner's decision reaching the broker to the server running the held call.
//!
//! `GATEWAY_BENCH=overhead|http|release` runs one part; `GATEWAY_BENCH_CALLS` sets the number of
//! calls per path (default 2000). Prints figures; never a pass/fail test.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: it prints, and fails loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use countersign_approver::authn::Unattended;
use countersign_testkit::{AGENT, GATEWAY, OWNER, paired_engine_with};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A raw JSON-RPC peer over a child's stdio.
struct Peer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    next: u64,
}

impl Peer {
    async fn start(command: &[String], env: &[(String, String)]) -> Self {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = Self {
            child,
            stdin,
            lines,
            next: 1,
        };
        peer.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}),
        )
        .await;
        peer.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        peer
    }

    async fn send(&mut self, frame: &Value) {
        self.stdin
            .write_all(format!("{frame}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("the peer is alive");
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame["id"] == id {
                return frame;
            }
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    println!(
        "{name:<34} n={:<5} p50 {p50:7.3} ms   p99 {p99:7.3} ms   max {:7.3} ms",
        ms.len(),
        ms[ms.len() - 1]
    );
    (p50, p99)
}

struct Fixture {
    _dir: tempfile::TempDir,
    paired: countersign_testkit::PairedEngine,
    config: PathBuf,
    env: Vec<(String, String)>,
    record: PathBuf,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // The per-agent evaluation rate limit (120 a minute by default) would refuse a benchmark.
    let paired = paired_engine_with(dir.path(), "gw-bench", |c| {
        c.rate_limit = countersign_broker::config::RateLimit {
            per_minute: 1_000_000,
            burst: 100_000,
        };
    })
    .await;
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{}\"\n\n[agent]\nid = \"{AGENT}\"\nowner = \"{OWNER}\"\n\
             secret = {{ env = \"BENCH_AGENT_SECRET\" }}\n\n[gateway]\naudience = \"{GATEWAY}\"\n\
             secret = {{ env = \"BENCH_GATEWAY_SECRET\" }}\n\n[mcp]\nserver = \"calendar\"\n\n\
             [tools.echo]\nresource = \"calendar/events.list\"\n\n[tools.\"refunds.create\"]\n\
             resource = \"stripe/refunds.create\"\n\n[hold]\nmax_wait_secs = 60\n",
            paired.url
        ),
    )
    .unwrap();
    let record = dir.path().join("executions.jsonl");
    let python = root().join("target/python-mcp1");
    assert!(python.join("mcp").is_dir(), "run scripts/setup.sh first");
    let secrets = &paired.fleet.secrets;
    let env = vec![
        (
            "BENCH_AGENT_SECRET".into(),
            secrets.agents[0].secret.clone(),
        ),
        (
            "BENCH_GATEWAY_SECRET".into(),
            secrets.gateways[0].secret.clone(),
        ),
        ("PYTHONPATH".into(), python.display().to_string()),
        (
            "COUNTERSIGN_TEST_RECORD".into(),
            record.display().to_string(),
        ),
    ];
    Fixture {
        _dir: dir,
        paired,
        config,
        env,
        record,
    }
}

fn server_command() -> Vec<String> {
    vec![
        "python3".into(),
        root().join("tests/mcp/server.py").display().to_string(),
    ]
}

fn gateway_command(config: &Path) -> Vec<String> {
    let mut command = vec![
        env!("CARGO_BIN_EXE_countersign-gateway").into(),
        "mcp".into(),
        "stdio".into(),
        "--config".into(),
        config.display().to_string(),
        "--".into(),
    ];
    command.extend(server_command());
    command
}

/// A peer that can call the server's `echo` tool.
trait Echo {
    async fn echo(&mut self, text: &str) -> Value;
}

impl Echo for Peer {
    async fn echo(&mut self, text: &str) -> Value {
        self.call("echo", json!({ "text": text })).await
    }
}

impl Echo for HttpPeer {
    async fn echo(&mut self, text: &str) -> Value {
        self.call("echo", json!({ "text": text })).await
    }
}

/// `calls` allowed calls straight to the server and through the gateway, after a warm-up of
/// both (Python imports, the broker's caches, connections), interleaved in blocks of 50 so that
/// drift on a noisy machine hits both alike; prints both and the difference.
async fn compare(direct: &mut impl Echo, gated: &mut impl Echo, calls: usize) {
    for _ in 0..50 {
        direct.echo("warm").await;
        gated.echo("warm").await;
    }
    let (mut straight, mut through) = (Vec::new(), Vec::new());
    while straight.len() < calls {
        for _ in 0..50 {
            let t = Instant::now();
            let answer = direct.echo("x").await;
            straight.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(answer.get("result").is_some(), "{answer}");
        }
        for _ in 0..50 {
            let t = Instant::now();
            let answer = gated.echo("x").await;
            through.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(answer["result"]["content"][0]["text"], "x", "{answer}");
        }
    }
    let (d50, d99) = summary("straight to the server", straight);
    let (g50, g99) = summary("through the gateway", through);
    println!(
        "{:<34} p50 +{:.3} ms   p99 +{:.3} ms   (goal: p99 added < 3 ms)",
        "added by the gateway",
        g50 - d50,
        g99 - d99
    );
}

async fn overhead(f: &Fixture, calls: usize) {
    println!("== allowed call: straight to the server vs through the gateway (stdio)");
    let mut direct = Peer::start(&server_command(), &f.env).await;
    let mut gated = Peer::start(&gateway_command(&f.config), &f.env).await;
    compare(&mut direct, &mut gated, calls).await;
    direct.stop().await;
    gated.stop().await;
}

/// A raw JSON-RPC peer over Streamable HTTP.
struct HttpPeer {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    next: u64,
}

impl HttpPeer {
    async fn start(url: String) -> Self {
        let mut peer = Self {
            http: reqwest::Client::new(),
            url,
            session: None,
            next: 1,
        };
        peer.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}),
        )
        .await;
        peer.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        peer
    }

    async fn post(&mut self, frame: &Value) -> Vec<Value> {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(frame.to_string());
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        let answer = request.send().await.unwrap();
        if let Some(session) = answer.headers().get("mcp-session-id") {
            self.session = Some(session.to_str().unwrap().to_owned());
        }
        let sse = answer.headers().get("content-type").is_some_and(|v| {
            v.to_str()
                .unwrap_or_default()
                .starts_with("text/event-stream")
        });
        let body = answer.text().await.unwrap();
        if sse {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect()
        } else {
            serde_json::from_str(&body).into_iter().collect()
        }
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let frames = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        frames
            .into_iter()
            .find(|f| f["id"] == id)
            .expect("an answer")
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn listening(port: u16) {
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn overhead_http(f: &Fixture, calls: usize) {
    println!("== allowed call: straight to the server vs through the gateway (Streamable HTTP)");
    let (server_port, gateway_port) = (free_port(), free_port());
    let _server = tokio::process::Command::new("python3")
        .arg(root().join("tests/mcp/server.py"))
        .args(["--http", &server_port.to_string()])
        .envs(f.env.iter().cloned())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign-gateway"))
        .args(["mcp", "http", "--config"])
        .arg(&f.config)
        .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
        .args(["--upstream", &format!("http://127.0.0.1:{server_port}/mcp")])
        .envs(f.env.iter().cloned())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    listening(server_port).await;
    listening(gateway_port).await;
    let mut direct = HttpPeer::start(format!("http://127.0.0.1:{server_port}/mcp")).await;
    let mut gated = HttpPeer::start(format!("http://127.0.0.1:{gateway_port}/mcp")).await;
    compare(&mut direct, &mut gated, calls).await;
}

async fn release(f: &mut Fixture, rounds: usize) {
    println!("== decision reaching the broker → the server running the held call");
    let mut gated = Peer::start(&gateway_command(&f.config), &f.env).await;
    let mut latencies = Vec::new();
    for n in 0..rounds {
        let _ = std::fs::remove_file(&f.record);
        gated
            .send(
                &json!({"jsonrpc": "2.0", "id": format!("held-{n}"), "method": "tools/call",
                "params": {"name": "refunds.create",
                           "arguments": {"order": n.to_string(), "amount": "5000.00"}}}),
            )
            .await;
        let id = loop {
            f.paired.engine.sync().await.unwrap();
            if let Some(item) = f.paired.engine.pending().unwrap().first() {
                break item.review.id.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The ceremony and the grant are local; the clock starts as the decision is sent.
        let queued = f
            .paired
            .engine
            .approve_queued(&id, None, &Unattended)
            .unwrap();
        #[expect(
            clippy::disallowed_methods,
            reason = "compared with the wall-clock time the server records"
        )]
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        f.paired.engine.deliver(queued).await.unwrap();
        // The answer to the held call.
        loop {
            let line = gated.lines.next_line().await.unwrap().unwrap();
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame["id"] == format!("held-{n}") {
                assert_eq!(frame["result"]["isError"], false, "{frame}");
                break;
            }
        }
        let record: Value = serde_json::from_str(
            std::fs::read_to_string(&f.record)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        latencies.push((record["at"].as_f64().unwrap() - sent) * 1e3);
    }
    summary("decision → the server runs it", latencies);
    println!("{:<34} (goal: p99 < 25 ms)", "");
    gated.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let part = std::env::var("GATEWAY_BENCH").unwrap_or_default();
    let calls: usize = std::env::var("GATEWAY_BENCH_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    let mut f = fixture().await;
    if part.is_empty() || part == "overhead" {
        overhead(&f, calls).await;
    }
    if part.is_empty() || part == "http" {
        overhead_http(&f, calls).await;
    }
    if part.is_empty() || part == "release" {
        release(&mut f, 200).await;
    }
}
