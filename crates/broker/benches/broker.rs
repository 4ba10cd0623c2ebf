//! Broker benchmarks against the real binary on loopback: prints figures, never passes or fails.
//!
//! `cargo bench -p countersign-broker --bench broker`
//! 1. evaluation → pending visible on an approver's SSE stream: p50/p99 over 1000 requests;
//! 2. redemption throughput with exactly-once consumption;
//! 3. 10,000 pending items with 100 connected approvers: broker memory and delivery p99.
//!
//! `BROKER_BENCH_STORE=postgres` runs them on PostgreSQL (a cluster the bench starts, as the
//! tests do) and `BROKER_BENCH_INSTANCES=N` on N instances of one database (127.0.0.1..N, one
//! public URL): events are written through one instance and streamed from another, and
//! redemptions and submissions are spread over all of them.
//!
//! In 3, 16 submitters send evaluations as fast as the broker answers them (closed loop): the
//! delivery figure then includes each evaluation's queueing at saturation. `BROKER_BENCH_RATE=R`
//! sends R evaluations a second instead (open loop, each timed from when it was due, so a
//! late send counts against the broker).

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a bench: aborts on a broken setup; the broker child is reaped in Drop"
)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use countersign_broker::config::secret_hash;
use countersign_protocol::PendingAction;
use countersign_protocol::api::{EventKind, PairRequest, PairResponse, RedeemRequest};
use countersign_protocol::dev_authenticator::DevApprover;
use countersign_protocol::grant::{GrantDraft, GrantOptions, Issuer};
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_countersign-broker");
const GATEWAY: &str = "https://payments-gateway.example.com";
const GATEWAY_SECRET: &str = "bench-gateway-secret-0123456789abcdef";

#[path = "../tests/broker/postgres.rs"]
#[expect(dead_code, unreachable_pub, reason = "shared with the tests")]
mod postgres;

/// One broker, or several instances of one on a PostgreSQL database.
struct Broker {
    children: Vec<Child>,
    /// The public URL every instance answers for.
    url: String,
    addrs: Vec<std::net::SocketAddr>,
    host: Option<String>,
    store: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Broker {
    /// Instance `i`'s own address.
    fn direct(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i % self.addrs.len()])
    }

    /// A client whose public URL leads to instance `i`.
    fn client(&self, i: usize) -> reqwest::Client {
        let builder = reqwest::Client::builder();
        match &self.host {
            Some(host) => builder.resolve(host, self.addrs[i % self.addrs.len()]),
            None => builder,
        }
        .build()
        .unwrap()
    }

    fn instances(&self) -> usize {
        self.addrs.len()
    }
}

/// What the run is on: the store, and how many instances.
fn setup() -> (bool, usize) {
    let postgres = std::env::var("BROKER_BENCH_STORE").is_ok_and(|s| s == "postgres");
    let instances = std::env::var("BROKER_BENCH_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    (postgres, if postgres { instances } else { 1 })
}

fn label() -> String {
    match setup() {
        (false, _) => "SQLite".into(),
        (true, 1) => "PostgreSQL, 1 instance".into(),
        (true, n) => format!("PostgreSQL, {n} instances"),
    }
}

fn agent_id(i: usize) -> String {
    format!("spiffe://example.com/agent/a{i}")
}

fn agent_secret(i: usize) -> String {
    format!("bench-agent-secret-{i:04}-0123456789abcdef")
}

fn owner(i: usize) -> String {
    format!("owner{i}@example.com")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(owners: usize) -> Broker {
    let (postgres, instances) = setup();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on(instances);
    let db = dir.path().join("broker.db");
    let (host, store) = if postgres {
        let url = postgres::cluster().new_database();
        (
            Some("broker.test".to_owned()),
            vec!["--store-url".to_owned(), url],
        )
    } else {
        (
            None,
            vec!["--database".to_owned(), db.to_str().unwrap().to_owned()],
        )
    };
    let url = match &host {
        Some(host) => format!("http://{host}:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    let mut config = format!(
        "public_url = \"{url}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\npending_ttl_secs = 3600\n\
         policies = \"{}\"\nmax_pending_per_owner = 10000000\n\
         [rate_limit]\nper_minute = 10000000\nburst = 1000000\n\n\
         [pairing_rate_limit]\nper_minute = 10000000\nburst = 1000000\n\n\
         [[gateways]]\naudience = \"{GATEWAY}\"\ntools = [\"*\"]\nsecret_sha256 = \"{}\"\n\n",
        db.display(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/demo.cedar"),
        secret_hash(GATEWAY_SECRET)
    );
    for i in 0..owners {
        config.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nowner = \"{}\"\nsecret_sha256 = \"{}\"\n\n",
            agent_id(i),
            owner(i),
            secret_hash(&agent_secret(i))
        ));
    }
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, config).unwrap();
    let addrs: Vec<std::net::SocketAddr> = (0..instances)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, i as u8 + 1], port)))
        .collect();
    let children = addrs
        .iter()
        .map(|addr| {
            Command::new(BIN)
                .args(["--config", path.to_str().unwrap()])
                .args(&store)
                .args(["serve", "--listen", &addr.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let broker = Broker {
        children,
        url,
        addrs,
        host,
        store,
        _dir: dir,
    };
    for i in 0..instances {
        let mut up = false;
        for _ in 0..200 {
            up = reqwest::get(format!("{}/healthz", broker.direct(i)))
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "broker instance {i} did not start");
    }
    broker
}

/// A port free on 127.0.0.1 .. 127.0.0.n.
fn free_port_on(n: usize) -> u16 {
    loop {
        let port = free_port();
        if (2..=n).all(|i| std::net::TcpListener::bind((format!("127.0.0.{i}"), port)).is_ok()) {
            return port;
        }
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Approver {
    dev: DevApprover,
    id: String,
    url: String,
    http: reqwest::Client,
}

impl Approver {
    /// An approver of `owner` talking to instance `instance`.
    async fn pair(broker: &Broker, owner: &str, instance: usize) -> Self {
        let out = Command::new(BIN)
            .args(&broker.store)
            .args(["pair", "--owner", owner])
            .output()
            .unwrap();
        let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut approver = Self {
            dev: DevApprover::new("unpaired", owner, &broker.url).unwrap(),
            id: String::new(),
            url: broker.url.clone(),
            http: broker.client(instance),
        };
        let body = serde_json::to_vec(&PairRequest {
            code,
            device_key: approver.dev.device.public_jwk(),
            credential: approver.dev.credential.clone(),
            name: None,
        })
        .unwrap();
        let response = approver
            .http
            .post(format!("{}/v1/pair", broker.url))
            .header(PROOF_HEADER, approver.proof("POST", "/v1/pair", &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let paired: PairResponse = response.json().await.unwrap();
        approver.id = paired.approver_id.clone();
        approver.dev.issuer = Issuer {
            approver_id: paired.approver_id,
            owner: paired.owner,
            broker: broker.url.clone(),
        };
        approver
    }

    fn proof(&self, method: &str, path: &str, body: &[u8]) -> String {
        let url = format!("{}{path}", self.url);
        let now =
            countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
        sign_proof(
            &self.dev.device,
            &self.id,
            &ProofRequest {
                method,
                url: &url,
                body,
                now,
            },
        )
    }

    /// Streams events; each arrives with the instant it was received.
    async fn stream(&self) -> mpsc::UnboundedReceiver<(Instant, Seen)> {
        let response = self
            .http
            .get(format!("{}/v1/approver/stream", self.url))
            .header(PROOF_HEADER, self.proof("GET", "/v1/approver/stream", b""))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            while let Some(Ok(event)) = events.next().await {
                if event.data.is_empty() {
                    continue;
                }
                let at = Instant::now();
                if let Ok(parsed) = serde_json::from_str::<Seen>(&event.data)
                    && tx.send((at, parsed)).is_err()
                {
                    break;
                }
            }
        });
        rx
    }
}

/// What the bench reads of an event: its kind and its item's id. The rest is skipped, not
/// built: a hundred approvers in one process must not time their own parsing.
#[derive(serde::Deserialize)]
struct Seen {
    kind: EventKind,
    #[serde(default)]
    request: Option<SeenRequest>,
}

#[derive(serde::Deserialize)]
struct SeenRequest {
    pending: SeenPending,
}

#[derive(serde::Deserialize)]
struct SeenPending {
    id: String,
}

fn refund(agent: usize, n: usize) -> Value {
    json!({
        "subject": {"type": "user", "id": owner(agent)},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": "stripe/refunds.create"},
        "context": {"intent": format!("Refund order {n}"), "arguments": {"order": n.to_string(), "amount": "5000.00", "currency": "EUR"}}
    })
}

async fn evaluate(http: &reqwest::Client, url: &str, agent: usize, n: usize) -> String {
    let response = http
        .post(format!("{url}/access/v1/evaluation"))
        .bearer_auth(agent_secret(agent))
        .json(&refund(agent, n))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["context"]["approval"]["id"]
        .as_str()
        .expect("held")
        .to_owned()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(samples: &mut [f64]) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        percentile(samples, 0.5) * 1e3,
        percentile(samples, 0.99) * 1e3,
        samples.last().copied().unwrap_or(0.0) * 1e3,
        samples.len()
    )
}

async fn latency() {
    let broker = start(1).await;
    // Written through the first instance, streamed from the last (the same one on one).
    let approver = Approver::pair(&broker, &owner(0), broker.instances() - 1).await;
    let mut events = approver.stream().await;
    let http = reqwest::Client::new();
    let writer = broker.direct(0);
    // Warm up connections.
    for n in 0..20 {
        evaluate(&http, &writer, 0, 1_000_000 + n).await;
        events.recv().await;
    }
    let mut samples = Vec::with_capacity(1000);
    for n in 0..1000 {
        let start = Instant::now();
        let id = evaluate(&http, &writer, 0, n).await;
        loop {
            let (at, event) = events.recv().await.unwrap();
            if event.kind == EventKind::Pending && event.request.is_some_and(|r| r.pending.id == id)
            {
                samples.push(at.duration_since(start).as_secs_f64());
                break;
            }
        }
    }
    println!(
        "1. [{}] evaluation -> pending on the approver's SSE stream{}: {}",
        label(),
        if broker.instances() > 1 {
            " (written on A, streamed from B)"
        } else {
            ""
        },
        millis(&mut samples)
    );
}

async fn redemption() {
    const GRANTS: usize = 2000;
    let broker = start(1).await;
    let mut approver = Approver::pair(&broker, &owner(0), 0).await;
    let http = reqwest::Client::new();
    let mut work = Vec::with_capacity(GRANTS);
    let now = countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
    // Pending items from the broker, grants from the real ceremony (not timed).
    let list: Value = {
        for n in 0..GRANTS {
            evaluate(&http, &broker.direct(0), 0, n).await;
        }
        let path = "/v1/approver/requests?status=pending&limit=500";
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let path = match &before {
                Some(b) => format!("{path}&before={b}"),
                None => path.to_owned(),
            };
            let page: Value = approver
                .http
                .get(format!("{}{path}", broker.url))
                .header(PROOF_HEADER, approver.proof("GET", &path, b""))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all.extend(page["requests"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => before = Some(next.to_owned()),
                None => break,
            }
        }
        json!({"requests": all})
    };
    for view in list["requests"].as_array().unwrap() {
        let pending: PendingAction = serde_json::from_value(view["pending"].clone()).unwrap();
        let draft = GrantDraft::new(&pending, &approver.dev.issuer, GrantOptions::at(now)).unwrap();
        let grant = approver.dev.sign(draft).unwrap().token().to_owned();
        // The owner's decision, so the broker holds the grant as approved (not timed).
        let path = format!("/v1/approver/requests/{}/decision", pending.id);
        let decision = serde_json::to_vec(&json!({"decision": "approve", "grant": grant})).unwrap();
        let status = approver
            .http
            .post(format!("{}{path}", broker.url))
            .header(PROOF_HEADER, approver.proof("POST", &path, &decision))
            .header("idempotency-key", pending.id.as_str())
            .header("content-type", "application/json")
            .body(decision)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "approving {}: {status}", pending.id);
        let body = serde_json::to_vec(&RedeemRequest {
            grant,
            action: pending.request(),
            presenter_jkt: None,
        })
        .unwrap();
        work.push(body);
    }
    let work = Arc::new(work);
    let run = |bodies: Arc<Vec<Vec<u8>>>| {
        // The gateways' connections spread over the instances.
        let urls: Vec<String> = (0..32).map(|t| broker.direct(t)).collect();
        async move {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let start = Instant::now();
            let tasks: Vec<_> = (0..32)
                .map(|t| {
                    let (bodies, next, url) = (bodies.clone(), next.clone(), urls[t].clone());
                    tokio::spawn(async move {
                        let http = reqwest::Client::new();
                        let mut statuses: HashMap<u16, usize> = HashMap::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(body) = bodies.get(i) else { break };
                            let status = http
                                .post(format!("{url}/v1/grants/redeem"))
                                .bearer_auth(GATEWAY_SECRET)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await
                                .unwrap()
                                .status()
                                .as_u16();
                            *statuses.entry(status).or_default() += 1;
                        }
                        statuses
                    })
                })
                .collect();
            let mut total: HashMap<u16, usize> = HashMap::new();
            for task in tasks {
                for (k, v) in task.await.unwrap() {
                    *total.entry(k).or_default() += v;
                }
            }
            (start.elapsed(), total)
        }
    };
    let (elapsed, first) = run(work.clone()).await;
    let (_, second) = run(work.clone()).await;
    println!(
        "2. [{}] redemption: {GRANTS} grants in {:.2} s = {:.0} /s (32 concurrent gateway connections); first pass {:?}, replay pass {:?}",
        label(),
        elapsed.as_secs_f64(),
        GRANTS as f64 / elapsed.as_secs_f64(),
        first,
        second
    );
}

async fn fan_out() {
    const OWNERS: usize = 10;
    const PER_OWNER: usize = 10;
    const ITEMS: usize = 10_000;
    let broker = start(OWNERS).await;
    // Memory of the first instance.
    let pid = broker.children[0].id();
    let idle = rss_kib(pid, "VmRSS:");
    let mut streams = Vec::new();
    for o in 0..OWNERS {
        for a in 0..PER_OWNER {
            // Each owner's approvers spread over the instances.
            let approver = Approver::pair(&broker, &owner(o), a).await;
            streams.push((o, approver.stream().await, approver));
        }
    }
    let connected = rss_kib(pid, "VmRSS:");
    // Collect receive times per (stream, pending id).
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    for (_, mut events, approver) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _keep = approver;
            while let Some((at, event)) = events.recv().await {
                if event.kind == EventKind::Pending
                    && let Some(r) = event.request
                {
                    let _ = tx.send((r.pending.id, at));
                }
            }
        });
    }
    drop(tx);
    let sent: Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    // How long each evaluation took to be answered (part of the delivery time).
    let answered: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let start = Instant::now();
    let urls: Vec<String> = (0..broker.instances()).map(|i| broker.direct(i)).collect();
    let rate: Option<u32> = std::env::var("BROKER_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok());
    let submitters: Vec<_> = match rate {
        // Closed loop: 16 submitters, each sends its next evaluation when the last is answered.
        None => {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            (0..16)
                .map(|_| {
                    let (urls, sent, next, answered) =
                        (urls.clone(), sent.clone(), next.clone(), answered.clone());
                    tokio::spawn(async move {
                        let http = reqwest::Client::new();
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if n >= ITEMS {
                                break;
                            }
                            let t = Instant::now();
                            let id = evaluate(&http, &urls[n % urls.len()], n % OWNERS, n).await;
                            answered.lock().unwrap().push(t.elapsed().as_secs_f64());
                            sent.lock().await.insert(id, t);
                        }
                    })
                })
                .collect()
        }
        // Open loop: evaluation n is due at n / rate seconds, whatever came before it.
        Some(rate) => {
            let http = reqwest::Client::new();
            let every = Duration::from_secs(1) / rate.max(1);
            let mut due = tokio::time::Instant::now();
            let mut tasks = Vec::with_capacity(ITEMS);
            for n in 0..ITEMS {
                tokio::time::sleep_until(due).await;
                let (http, url, sent, answered) = (
                    http.clone(),
                    urls[n % urls.len()].clone(),
                    sent.clone(),
                    answered.clone(),
                );
                let t = due.into_std();
                tasks.push(tokio::spawn(async move {
                    let id = evaluate(&http, &url, n % OWNERS, n).await;
                    answered.lock().unwrap().push(t.elapsed().as_secs_f64());
                    sent.lock().await.insert(id, t);
                }));
                due += every;
            }
            tasks
        }
    };
    let mut received = Vec::with_capacity(ITEMS * PER_OWNER);
    let expected = ITEMS * PER_OWNER;
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.len() < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(r)) => received.push(r),
            _ => break,
        }
    }
    for s in submitters {
        s.await.unwrap();
    }
    let submit_secs = start.elapsed().as_secs_f64();
    let sent = sent.lock().await;
    let mut delivery: Vec<f64> = received
        .iter()
        .filter_map(|(id, at)| {
            sent.get(id)
                .map(|t| at.saturating_duration_since(*t).as_secs_f64())
        })
        .collect();
    let metrics = reqwest::get(format!("{}/metrics", broker.direct(0)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fanout: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("countersign_fanout"))
        .collect();
    let loaded = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");
    println!(
        "3. [{}] {ITEMS} pending items, {} approvers ({OWNERS} owners x {PER_OWNER}), {}: {} deliveries of {expected} in {submit_secs:.1} s",
        label(),
        OWNERS * PER_OWNER,
        rate.map_or_else(
            || "16 submitters as fast as answered".to_owned(),
            |r| format!("{r} evaluations/s")
        ),
        delivery.len()
    );
    println!(
        "   delivery (evaluation sent -> event on each of the owner's streams): {}",
        millis(&mut delivery)
    );
    println!(
        "   of which the evaluation's answer (sent -> response received): {}",
        millis(&mut answered.lock().unwrap())
    );
    println!("   {}", fanout.join(", "));
    println!(
        "   broker RSS: idle {:.1} MiB, 100 streams {:.1} MiB, with 10,000 pending {:.1} MiB, peak {:.1} MiB",
        idle as f64 / 1024.0,
        connected as f64 / 1024.0,
        loaded as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let only = std::env::var("BROKER_BENCH").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only.is_empty() || only.contains("latency") {
            latency().await;
        }
        if only.is_empty() || only.contains("redeem") {
            redemption().await;
        }
        if only.is_empty() || only.contains("fanout") {
            fan_out().await;
        }
    });
}
