//! A real broker on a loopback port with a real SQLite file, real agents, gateways and a real
//! approver (device key + software authenticator, real ceremonies).

use std::path::PathBuf;
use std::time::Duration;

use countersign_broker::config::{
    AgentConfig, Config, GatewayConfig, Quarantine, RateLimit, secret_hash,
};
use countersign_broker::simulate::{
    AgentSecret, FleetSecrets, GatewaySecret, Scenario, SimulatedAgent, scenarios,
};
use countersign_broker::{RunningBroker, spawn};
use countersign_protocol::api::{
    ApproverEvent, PairRequest, PairResponse, RequestList, RequestView,
};
use countersign_protocol::dev_authenticator::DevApprover;
use countersign_protocol::grant::{DeviceSigningKey, GrantDraft, GrantOptions, Issuer};
use countersign_protocol::hash::b64url;
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const OWNER: &str = "alice@example.com";
pub const BILLING: &str = "spiffe://example.com/agent/billing";
pub const DEVOPS: &str = "spiffe://example.com/agent/devops";
/// A second owner, with an agent of their own.
pub const BOB: &str = "bob@example.com";
pub const BOBS: &str = "spiffe://example.com/agent/bobs-assistant";
pub const PAYMENTS: &str = "https://payments-gateway.example.com";
pub const TOOLS: &str = "https://tools-gateway.example.com";

/// A test gateway's key, derived from its audience (never for a deployment).
pub fn gateway_key(audience: &str) -> DeviceSigningKey {
    let seed = secret_hash(&format!("{audience}-gateway-key"));
    let bytes: [u8; 32] = countersign_protocol::hash::b64url_decode(&seed)
        .unwrap()
        .try_into()
        .unwrap();
    DeviceSigningKey::from_secret(&bytes)
}

pub struct TestBroker {
    pub broker: Option<RunningBroker>,
    /// Holds the database directory for the test's lifetime.
    pub _dir: tempfile::TempDir,
    pub config: Config,
    pub secrets: FleetSecrets,
    pub url: String,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agents = [
            (BILLING, OWNER, "billing-secret-0123456789abcdefghijklmn"),
            (DEVOPS, OWNER, "devops-secret-0123456789abcdefghijklmno"),
            (BOBS, BOB, "bobs-secret-0123456789abcdefghijklmnopq"),
        ];
        let gateways = [
            (
                PAYMENTS,
                vec!["stripe/*"],
                "payments-gw-secret-0123456789abcdefghij",
            ),
            (TOOLS, vec!["*"], "tools-gw-secret-0123456789abcdefghijklm"),
        ];
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: dir.path().join("broker.db"),
            policies: Some(demo_policies()),
            tools: countersign_broker::simulate::demo_catalog(),
            // Tests pair many devices from one address; the throttle has a test of its own.
            pairing_rate_limit: RateLimit {
                per_minute: 600,
                burst: 100,
            },
            rate_limit: RateLimit {
                per_minute: 6000,
                burst: 1000,
            },
            quarantine: Quarantine {
                denials: 3,
                window_secs: 600,
            },
            agents: agents
                .iter()
                .map(|(id, owner, secret)| AgentConfig {
                    id: (*id).into(),
                    owner: (*owner).into(),
                    secret_sha256: secret_hash(secret),
                })
                .collect(),
            gateways: gateways
                .iter()
                .map(|(aud, tools, secret)| GatewayConfig {
                    audience: (*aud).into(),
                    tools: tools.iter().map(|t| (*t).to_owned()).collect(),
                    secret_sha256: secret_hash(secret),
                    key: Some(gateway_key(aud).public_jwk()),
                })
                .collect(),
            ..Config::default()
        };
        if crate::postgres::postgres_under_test() {
            config.store.url = Some(crate::postgres::cluster().new_database());
        }
        edit(&mut config);
        let secrets = FleetSecrets {
            owner: OWNER.into(),
            agents: agents
                .iter()
                .map(|(id, _, secret)| AgentSecret {
                    id: (*id).into(),
                    secret: (*secret).into(),
                    delegated_by: Some("spiffe://example.com/agent/planner".into()),
                })
                .collect(),
            gateways: gateways
                .iter()
                .map(|(aud, _, secret)| GatewaySecret {
                    audience: (*aud).into(),
                    secret: (*secret).into(),
                    key: Some(b64url(&*gateway_key(aud).secret())),
                })
                .collect(),
        };
        let broker = spawn(config.clone()).await.unwrap();
        let url = format!("http://{}", broker.addr);
        Self {
            broker: Some(broker),
            _dir: dir,
            config,
            secrets,
            url,
        }
    }

    /// Stops the broker and starts it again on the same database and address (its URL is its
    /// identity in the grants it accepts).
    pub async fn restart(&mut self) {
        if let Some(broker) = self.broker.take() {
            self.config.listen = broker.addr;
            broker.shut_down().await;
        }
        // The old server's sockets are closed by the runtime shortly after its task ends; the
        // address is bound again as soon as it is free (within seconds), never a new one.
        let mut tries = 0;
        let broker = loop {
            let started = spawn(self.config.clone()).await;
            if started.is_ok() || tries == 50 {
                break started.unwrap();
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.url = format!("http://{}", broker.addr);
        self.broker = Some(broker);
    }

    /// The running broker's state (its real store, for tests that need many rows fast).
    pub fn state(&self) -> &std::sync::Arc<countersign_broker::state::AppState> {
        &self.broker.as_ref().unwrap().state
    }

    /// The arguments that point the admin commands at this broker's store.
    pub fn store_args(&self) -> Vec<String> {
        match &self.config.store.url {
            Some(url) => vec!["--store-url".into(), url.clone()],
            None => vec![
                "--database".into(),
                self.config.database.to_str().unwrap().into(),
            ],
        }
    }

    /// A connection to this broker's database, for tests that write or count rows directly.
    pub async fn db(&self) -> TestDb {
        match &self.config.store.url {
            Some(url) => {
                let postgres = crate::postgres::cluster();
                let plain = postgres.plain_url(&crate::postgres::Cluster::database_of(url));
                let (client, connection) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                TestDb::Postgres(client)
            }
            None => TestDb::Sqlite(rusqlite::Connection::open(&self.config.database).unwrap()),
        }
    }

    /// A simulated agent, acting for its configured owner.
    pub fn agent(&self, id: &str) -> SimulatedAgent {
        let secret = self.secrets.agents.iter().find(|a| a.id == id).unwrap();
        let owner = &self
            .config
            .agents
            .iter()
            .find(|a| a.id == id)
            .unwrap()
            .owner;
        let secrets = FleetSecrets {
            owner: owner.clone(),
            ..self.secrets.clone()
        };
        SimulatedAgent::new(&self.url, &secrets, secret).unwrap()
    }

    pub fn agent_secret(&self, id: &str) -> String {
        self.secrets
            .agents
            .iter()
            .find(|a| a.id == id)
            .unwrap()
            .secret
            .clone()
    }

    pub fn gateway_secret(&self, audience: &str) -> String {
        self.secrets
            .gateways
            .iter()
            .find(|g| g.audience == audience)
            .unwrap()
            .secret
            .clone()
    }

    /// A one-time pairing code from the real admin command.
    pub fn pairing_code(&self, owner: &str) -> String {
        pairing_code(&self.store_args(), owner)
    }

    /// A paired approver of `owner`.
    pub async fn approver(&self, owner: &str) -> TestApprover {
        let code = self.pairing_code(owner);
        let mut approver = TestApprover::new(&self.url, owner);
        approver.pair(&code).await.unwrap();
        approver
    }
}

/// A one-time pairing code for `owner` from the real admin command, on the store that
/// `store_args` name.
pub fn pairing_code(store_args: &[String], owner: &str) -> String {
    let mut args: Vec<&str> = store_args.iter().map(String::as_str).collect();
    args.extend(["pair", "--owner", owner]);
    broker_command(&args)
}

/// Runs `countersign-broker <args>`, which must succeed; its standard output, trimmed.
pub fn broker_command(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign-broker"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "countersign-broker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A value for [`TestDb`]'s statements.
#[derive(Clone, Debug)]
pub enum SqlValue {
    Text(String),
    Int(i64),
}

/// The broker's own database, SQLite or PostgreSQL. Statements number their parameters `$1`,
/// `$2`, … in order of first use, which both read the same way.
pub enum TestDb {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl TestDb {
    /// Runs `sql` once per row of parameters, in one transaction.
    pub async fn execute_many(&mut self, sql: &str, rows: &[Vec<SqlValue>]) {
        match self {
            Self::Sqlite(conn) => {
                let tx = conn.transaction().unwrap();
                for row in rows {
                    let values: Vec<rusqlite::types::Value> = row
                        .iter()
                        .map(|v| match v {
                            SqlValue::Text(t) => rusqlite::types::Value::Text(t.clone()),
                            SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
                        })
                        .collect();
                    tx.execute(sql, rusqlite::params_from_iter(values)).unwrap();
                }
                tx.commit().unwrap();
            }
            Self::Postgres(client) => {
                let tx = client.transaction().await.unwrap();
                let statement = tx.prepare(sql).await.unwrap();
                for row in rows {
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = row
                        .iter()
                        .map(|v| match v {
                            SqlValue::Text(t) => t as &(dyn tokio_postgres::types::ToSql + Sync),
                            SqlValue::Int(i) => i as &(dyn tokio_postgres::types::ToSql + Sync),
                        })
                        .collect();
                    tx.execute(&statement, &params).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        }
    }

    pub async fn execute(&mut self, sql: &str, params: Vec<SqlValue>) {
        self.execute_many(sql, &[params]).await;
    }

    /// The integers of the first row of `sql` (cast them to `BIGINT` for PostgreSQL).
    pub async fn integers(&mut self, sql: &str) -> Vec<i64> {
        match self {
            Self::Sqlite(conn) => conn
                .query_row(sql, [], |r| {
                    (0..r.as_ref().column_count())
                        .map(|i| r.get(i))
                        .collect::<rusqlite::Result<Vec<i64>>>()
                })
                .unwrap(),
            Self::Postgres(client) => {
                let row = client.query_one(sql, &[]).await.unwrap();
                (0..row.len()).map(|i| row.get(i)).collect()
            }
        }
    }
}

/// The demo policy file shipped with the broker.
pub fn demo_policies() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/demo.cedar"))
}

pub fn scenario(tool: &str) -> Scenario {
    scenarios().into_iter().find(|s| s.tool == tool).unwrap()
}

/// The refund over the threshold (held for approval).
pub fn big_refund() -> Scenario {
    scenarios().into_iter().next().unwrap()
}

pub struct TestApprover {
    pub dev: DevApprover,
    pub id: String,
    pub url: String,
    pub http: reqwest::Client,
}

impl TestApprover {
    pub fn new(url: &str, owner: &str) -> Self {
        Self {
            dev: DevApprover::new("unpaired", owner, url).unwrap(),
            id: String::new(),
            url: url.into(),
            http: reqwest::Client::new(),
        }
    }

    pub fn proof(&self, method: &str, path: &str, body: &[u8]) -> String {
        let now =
            countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
        let url = format!("{}{path}", self.url);
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

    /// A request with a fresh device-key proof.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let proof = self.proof(method.as_str(), path, &bytes);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header(PROOF_HEADER, proof);
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn pair(&mut self, code: &str) -> Result<PairResponse, (StatusCode, Value)> {
        let body = serde_json::to_value(PairRequest {
            code: code.into(),
            device_key: self.dev.device.public_jwk(),
            credential: self.dev.credential.clone(),
            name: Some("test laptop".into()),
        })
        .unwrap();
        let response = self.send(Method::POST, "/v1/pair", Some(&body), &[]).await;
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        if status != StatusCode::OK {
            return Err((status, value));
        }
        let paired: PairResponse = serde_json::from_value(value).unwrap();
        self.id = paired.approver_id.clone();
        self.dev.issuer = Issuer {
            approver_id: paired.approver_id.clone(),
            owner: paired.owner.clone(),
            broker: self.url.clone(),
        };
        Ok(paired)
    }

    pub async fn list(&self, status: Option<&str>) -> RequestList {
        let path = match status {
            Some(s) => format!("/v1/approver/requests?status={s}"),
            None => "/v1/approver/requests".into(),
        };
        let response = self.send(Method::GET, &path, None, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Approves with a real grant: the ceremony over the claims' hash, then the device JWS.
    pub async fn approve(&mut self, view: &RequestView, key: &str) -> (StatusCode, Value) {
        let grant = self.grant(view);
        self.decide(
            &view.pending.id,
            &json!({"decision": "approve", "grant": grant}),
            key,
        )
        .await
    }

    pub fn grant(&mut self, view: &RequestView) -> String {
        self.grant_for(&view.pending)
    }

    /// A real grant for `pending`, made here and never sent to the broker.
    pub fn grant_for(&mut self, pending: &countersign_protocol::PendingAction) -> String {
        let now =
            countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
        let draft = GrantDraft::new(pending, &self.dev.issuer, GrantOptions::at(now)).unwrap();
        self.dev.sign(draft).unwrap().token().to_owned()
    }

    pub async fn deny(
        &self,
        id: &str,
        reason: &str,
        suspend: bool,
        key: &str,
    ) -> (StatusCode, Value) {
        self.decide(
            id,
            &json!({"decision": "deny", "reason": reason, "suspend_agent": suspend}),
            key,
        )
        .await
    }

    pub async fn decide(&self, id: &str, body: &Value, key: &str) -> (StatusCode, Value) {
        let path = format!("/v1/approver/requests/{id}/decision");
        let response = self
            .send(Method::POST, &path, Some(body), &[("idempotency-key", key)])
            .await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Opens the event stream, resuming after `last`; events arrive on the channel.
    pub async fn stream(&self, last: Option<i64>) -> EventStream {
        let proof = self.proof("GET", "/v1/approver/stream", b"");
        let mut request = self
            .http
            .get(format!("{}/v1/approver/stream", self.url))
            .header(PROOF_HEADER, proof);
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            while let Some(Ok(event)) = events.next().await {
                if event.data.is_empty() {
                    continue;
                }
                let parsed: ApproverEvent = serde_json::from_str(&event.data).unwrap();
                assert_eq!(event.id, parsed.id.to_string(), "SSE id is the event id");
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        EventStream { rx, task }
    }
}

pub struct EventStream {
    pub rx: mpsc::UnboundedReceiver<ApproverEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    pub async fn next(&mut self) -> ApproverEvent {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an event within 10 s")
            .unwrap()
    }

    /// Waits for the next event of `kind`, returning those skipped too.
    pub async fn until(&mut self, kind: countersign_protocol::api::EventKind) -> ApproverEvent {
        loop {
            let event = self.next().await;
            if event.kind == kind {
                return event;
            }
        }
    }

    /// Closes the connection.
    pub fn drop_connection(self) {
        self.task.abort();
    }
}

/// Raw JSON POST with a bearer secret.
pub async fn post_raw(
    url: &str,
    secret: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    post_raw_via(&reqwest::Client::new(), url, secret, content_type, body).await
}

/// [`post_raw`] through `http` (a client whose connections the caller reuses).
pub async fn post_raw_via(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = http
        .post(url)
        .bearer_auth(secret)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Submits `request`, which policy must hold for approval, and returns its ticket.
pub async fn hold(
    agent: &SimulatedAgent,
    request: &countersign_protocol::ActionRequest,
) -> countersign_protocol::api::ApprovalTicket {
    let answer = agent.evaluate(request).await.unwrap();
    answer
        .context
        .and_then(|c| c.approval)
        .expect("held for approval")
}
