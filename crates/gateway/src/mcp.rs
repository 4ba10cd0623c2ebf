//! The MCP proxy over stdio: the host starts `countersign-gateway mcp stdio -- <server…>` in
//! place of the server, and the gateway starts the server as its child.
//!
//! The proxy works on JSON-RPC frames: every message passes through byte for byte except
//! `tools/call` requests, which go through the [`Pep`] core, and `tools/list` results, to which
//! the `await_approval` tool is added (and whose annotations are noted for the owner's review).
//! Messages are read and written with `rmcp`'s model types where the gateway looks inside them.
//!
//! A held call is answered within the hold limit: the client gets its result when the owner
//! decides in time, and otherwise a "waiting for the owner's approval" result naming the pending
//! item, with `notifications/progress` meanwhile when it sent a progress token. Calling the
//! `await_approval` tool with that id resumes the wait. The call's parameters are kept as the
//! bytes the client sent, and the call runs once: the grant is spent at the broker before it
//! runs, a second wait on a call that ran gets the same result, and identical calls join one
//! pending item (the broker merges them).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use countersign_protocol::action::ToolAnnotations;
use countersign_protocol::api::RunOutcome;
use rmcp::model::{CallToolRequestParams, Tool};
use serde_json::{Map, Value, json};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::GatewayError;
use crate::pep::{Pep, Verdict, clip};

/// The largest JSON-RPC message the proxy takes, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The tool the gateway adds to resume waiting on a held call.
pub const AWAIT_TOOL: &str = "await_approval";

/// JSON-RPC "invalid request".
const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "invalid params".
const INVALID_PARAMS: i64 = -32602;

/// A held call: its kept parameters and what became of it.
struct Held {
    /// The `tools/call` params exactly as the client sent them.
    params: Box<serde_json::value::RawValue>,
    action: countersign_protocol::ActionRequest,
    /// Once the call ran (or was refused for good): the JSON-RPC answer every later wait gets.
    done: Option<Answer>,
}

/// What the client is answered: a result or a JSON-RPC error object.
#[derive(Clone, Debug)]
enum Answer {
    Result(Value),
    Error(Value),
}

/// The proxy's shared state.
struct Proxy {
    pep: Pep,
    to_client: mpsc::UnboundedSender<String>,
    to_server: mpsc::UnboundedSender<String>,
    /// Answers to requests the gateway itself sent upstream, by id.
    own: std::sync::Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The client's `tools/list` requests in flight (their results get `await_approval`).
    listing: std::sync::Mutex<HashSet<String>>,
    /// The client's `tools/call` ids in flight: a second request with one of them is refused.
    calls: std::sync::Mutex<HashSet<String>>,
    /// Annotations by tool name, from `tools/list` results.
    annotations: std::sync::Mutex<HashMap<String, ToolAnnotations>>,
    /// Held calls by pending item id; each behind its own lock, so one wait runs the call.
    held: std::sync::Mutex<HashMap<String, Arc<Mutex<Held>>>>,
    /// The client's name and protocol version, from `initialize`.
    client: std::sync::Mutex<(String, String)>,
    next_id: AtomicU64,
    /// `tools/call` tasks still running.
    active: std::sync::atomic::AtomicUsize,
    /// A per-process tag in the gateway's own request ids, so they never meet a client's.
    tag: String,
}

/// Runs the proxy: the client on `client_in`/`client_out`, the server started from `command`.
pub async fn stdio(
    pep: Pep,
    command: &[String],
    client_in: impl AsyncRead + Unpin + Send + 'static,
    client_out: impl AsyncWrite + Unpin + Send + 'static,
) -> anyhow::Result<()> {
    let (program, args) = command
        .split_first()
        .context("no server command after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the server {program:?}"))?;
    let server_in = child.stdin.take().context("the server's stdin")?;
    let server_out = child.stdout.take().context("the server's stdout")?;

    let (to_client, client_rx) = mpsc::unbounded_channel::<String>();
    let (to_server, server_rx) = mpsc::unbounded_channel::<String>();
    let proxy = Arc::new(Proxy {
        pep,
        to_client,
        to_server,
        own: Default::default(),
        listing: Default::default(),
        calls: Default::default(),
        annotations: Default::default(),
        held: Default::default(),
        client: std::sync::Mutex::new(("an MCP client".into(), String::new())),
        next_id: AtomicU64::new(1),
        active: Default::default(),
        tag: countersign_protocol::hash::random_b64url::<6>(),
    });
    let client_writer = tokio::spawn(write_lines(client_out, client_rx));
    let server_writer = tokio::spawn(write_lines(server_in, server_rx));

    let from_server = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(server_out);
            loop {
                match read_message(&mut reader).await {
                    Ok(Some(line)) => proxy.on_server_message(line),
                    Ok(None) => break,
                    Err(e) => tracing::warn!(error = %e, "an unreadable message from the server"),
                }
            }
            // The server is gone: every call waiting on it fails now.
            proxy.own.lock().unwrap_or_else(|p| p.into_inner()).clear();
        })
    };
    let from_client = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(client_in);
            loop {
                match read_message(&mut reader).await {
                    Ok(Some(line)) => proxy.clone().on_client_message(line),
                    Ok(None) => break,
                    Err(e) => {
                        proxy.send_client(&error_frame(
                            &Value::Null,
                            INVALID_REQUEST,
                            &format!("Countersign gateway: {e}"),
                        ));
                    }
                }
            }
        })
    };
    let status = tokio::select! {
        _ = from_client => {
            // The host closed our stdin: the session is over. Held calls never run.
            None
        }
        _ = from_server => child.wait().await.ok(),
    };
    if status.is_some() {
        // The server is gone: calls that were running on it fail now, and report so; give
        // them a moment to answer (calls still waiting for the owner are abandoned: they
        // never run).
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while proxy.running() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let answers already queued reach the client.
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(50)).await;
    client_writer.abort();
    server_writer.abort();
    if let Some(status) = status {
        anyhow::bail!("the server exited ({status})");
    }
    Ok(())
}

async fn write_lines(
    mut out: impl AsyncWrite + Unpin,
    mut lines: mpsc::UnboundedReceiver<String>,
) -> std::io::Result<()> {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// One newline-delimited message (without its newline), `None` at the end of input.
async fn read_message(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> Result<Option<String>, GatewayError> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| GatewayError::Malformed(e.to_string()))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_MESSAGE {
        // Skip the rest of the oversized line.
        let mut rest = Vec::new();
        let _ = reader.read_until(b'\n', &mut rest).await;
        return Err(GatewayError::Malformed(format!(
            "a message over {MAX_MESSAGE} bytes was dropped"
        )));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| GatewayError::Malformed("a message that is not UTF-8".into()))
}

/// The key of a JSON-RPC id in maps: its JSON text (`1` and `"1"` differ).
fn id_key(id: &Value) -> String {
    id.to_string()
}

fn error_frame(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

impl Proxy {
    /// Calls that are running on the server (spent, waiting for its answer).
    fn running(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn send_client(&self, line: &str) {
        let _ = self.to_client.send(line.to_owned());
    }

    fn answer(&self, id: &Value, answer: &Answer) {
        let frame = match answer {
            Answer::Result(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Answer::Error(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        };
        self.send_client(&frame.to_string());
    }

    fn on_client_message(self: Arc<Self>, line: String) {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            // Not JSON: the server answers that as it would.
            let _ = self.to_server.send(line);
            return;
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").cloned();
        match (method, id) {
            (Some("tools/call"), Some(id)) => {
                if !self
                    .calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id_key(&id))
                {
                    self.send_client(&error_frame(
                        &id,
                        INVALID_REQUEST,
                        "Countersign gateway: a tools/call with this id is already in progress; \
                         it runs at most once",
                    ));
                    return;
                }
                tokio::spawn(async move {
                    let key = id_key(&id);
                    let answer = self.clone().call(&line, &message).await;
                    if let Some(answer) = answer {
                        self.calls
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        self.answer(&id, &answer);
                    }
                });
            }
            (Some(method), Some(id)) => {
                if method == "tools/list" {
                    self.listing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id_key(&id));
                }
                if method == "initialize" {
                    let params = message.get("params");
                    let name = params
                        .and_then(|p| p.pointer("/clientInfo/name"))
                        .and_then(Value::as_str)
                        .unwrap_or("an MCP client");
                    let version = params
                        .and_then(|p| p.get("protocolVersion"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    *self.client.lock().unwrap_or_else(|p| p.into_inner()) =
                        (clip(name, 64), version.to_owned());
                }
                let _ = self.to_server.send(line);
            }
            _ => {
                let _ = self.to_server.send(line);
            }
        }
    }

    fn on_server_message(&self, line: String) {
        let Ok(mut message) = serde_json::from_str::<Value>(&line) else {
            self.send_client(&line);
            return;
        };
        let is_response = message.get("method").is_none()
            && (message.get("result").is_some() || message.get("error").is_some());
        let Some(id) = message.get("id").cloned().filter(|_| is_response) else {
            self.send_client(&line);
            return;
        };
        let key = id_key(&id);
        if let Some(waiter) = self
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            let _ = waiter.send(message);
            return;
        }
        // An allowed call's answer passes through; its id is free again.
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let listing = self
            .listing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        if listing && let Some(tools) = message.pointer_mut("/result/tools") {
            self.note_tools(tools);
            if let Some(list) = tools.as_array_mut()
                && !list
                    .iter()
                    .any(|t| t.get("name").and_then(Value::as_str) == Some(AWAIT_TOOL))
            {
                list.push(await_tool());
            }
            self.send_client(&message.to_string());
            return;
        }
        self.send_client(&line);
    }

    /// Notes each listed tool's annotations (the server's claims, for the owner's review).
    fn note_tools(&self, tools: &Value) {
        let Some(list) = tools.as_array() else { return };
        let mut known = self.annotations.lock().unwrap_or_else(|p| p.into_inner());
        for tool in list {
            let Ok(tool) = serde_json::from_value::<Tool>(tool.clone()) else {
                continue;
            };
            let annotations = tool.annotations.as_ref().map(|a| ToolAnnotations {
                title: a
                    .title
                    .as_deref()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| clip(t, 256)),
                read_only_hint: a.read_only_hint,
                destructive_hint: a.destructive_hint,
                idempotent_hint: a.idempotent_hint,
                open_world_hint: a.open_world_hint,
            });
            known.insert(tool.name.to_string(), annotations.unwrap_or_default());
        }
    }

    /// Sends a request of the gateway's own upstream and waits for its answer.
    async fn ask_server(
        &self,
        method: &str,
        params: &serde_json::value::RawValue,
        limit: Duration,
    ) -> Result<Value, GatewayError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = Value::String(format!("countersign-{}-{n}", self.tag));
        let (tx, rx) = oneshot::channel();
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id_key(&id), tx);
        let frame = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":{},"params":{}}}"#,
            id,
            Value::String(method.to_owned()),
            params.get()
        );
        self.to_server
            .send(frame)
            .map_err(|_| GatewayError::Upstream("the server is gone".into()))?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(GatewayError::Upstream(
                "the server exited before it answered".into(),
            )),
            Err(_) => {
                self.own
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id_key(&id));
                Err(GatewayError::Upstream(format!(
                    "the server did not answer within {} s",
                    limit.as_secs()
                )))
            }
        }
    }

    /// The annotations of `tool`, asking the server for its list when none was seen yet.
    async fn annotations_of(&self, tool: &str) -> Option<ToolAnnotations> {
        let known = |proxy: &Self| {
            proxy
                .annotations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(tool)
                .cloned()
        };
        if let Some(a) = known(self) {
            return Some(a);
        }
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let raw = serde_json::value::to_raw_value(&params).ok()?;
            let answer = self
                .ask_server("tools/list", &raw, Duration::from_secs(10))
                .await
                .ok()?;
            if let Some(tools) = answer.pointer("/result/tools") {
                self.note_tools(tools);
            }
            cursor = answer
                .pointer("/result/nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() || known(self).is_some() {
                break;
            }
        }
        known(self)
    }

    /// One `tools/call`: `None` when the answer was sent already.
    async fn call(self: Arc<Self>, line: &str, message: &Value) -> Option<Answer> {
        let params_value = message.get("params").cloned().unwrap_or(Value::Null);
        let params: CallToolRequestParams = match serde_json::from_value(params_value) {
            Ok(p) => p,
            Err(e) => {
                return Some(Answer::Error(json!({
                    "code": INVALID_PARAMS,
                    "message": format!("Countersign gateway: tools/call params: {e}"),
                })));
            }
        };
        let progress = message.pointer("/params/_meta/progressToken").cloned();
        if params.name == AWAIT_TOOL {
            let Some(id) = params
                .arguments
                .as_ref()
                .and_then(|a| a.get("id"))
                .and_then(Value::as_str)
            else {
                return Some(tool_error(
                    "await_approval needs {\"id\": \"pa_…\"}: the id a held call answered with",
                    None,
                ));
            };
            let held = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .cloned();
            return Some(match held {
                Some(held) => self.wait_and_run(id, held, progress, &params.name).await,
                None => tool_error(
                    &format!(
                        "This gateway holds no call {id} (it may have restarted). Nothing ran. \
                         Send the original call again: an identical call joins the same request."
                    ),
                    Some(json!({"status": "unknown", "id": id})),
                ),
            });
        }
        let tool = params.name.to_string();
        let config = self.pep.config();
        let resource = config
            .tools
            .get(&tool)
            .and_then(|t| t.resource.clone())
            .unwrap_or_else(|| format!("{}/{tool}", config.mcp.server));
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        let intent = config
            .tools
            .get(&tool)
            .and_then(|t| t.intent.clone())
            .unwrap_or_else(|| {
                format!(
                    "{client} calls the tool {tool} of the MCP server {}",
                    config.mcp.server
                )
            });
        let annotations = self.annotations_of(&tool).await;
        let arguments: Map<String, Value> = params.arguments.clone().unwrap_or_default();
        let action = match self.pep.action(&resource, arguments, intent, annotations) {
            Ok(a) => a,
            Err(e) => return Some(refused(&e)),
        };
        let verdict = match self.pep.evaluate(&action).await {
            Ok(v) => v,
            Err(e) => return Some(refused(&e)),
        };
        match verdict {
            Verdict::Allow => {
                // Unchanged: the client's own frame, answered by the server through the proxy.
                let _ = self.to_server.send(line.to_owned());
                None
            }
            Verdict::Deny { policy, reason } => {
                Some(refused(&GatewayError::Denied { policy, reason }))
            }
            Verdict::Held { id, .. } => {
                let kept = match message
                    .get("params")
                    .map(serde_json::value::to_raw_value)
                    .transpose()
                {
                    Ok(Some(raw)) => raw,
                    _ => serde_json::value::to_raw_value(&json!({})).ok()?,
                };
                let held = self
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id.clone())
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(Held {
                            params: kept,
                            action,
                            done: None,
                        }))
                    })
                    .clone();
                Some(self.wait_and_run(&id, held, progress, &tool).await)
            }
        }
    }

    /// Waits for the owner's decision on `id` (bounded), then verifies, spends and runs the
    /// held call once, and reports its outcome.
    async fn wait_and_run(
        &self,
        id: &str,
        held: Arc<Mutex<Held>>,
        progress: Option<Value>,
        tool: &str,
    ) -> Answer {
        let mut held = held.lock().await;
        if let Some(done) = &held.done {
            return done.clone();
        }
        let max = self.pep.config().max_wait(tool);
        let wait = self.pep.wait(id, max);
        tokio::pin!(wait);
        let every = self.pep.config().hold.progress_every();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut step = 0u64;
        let decided = loop {
            tokio::select! {
                decided = &mut wait => break decided,
                _ = ticker.tick(), if progress.is_some() => {
                    step += 1;
                    self.send_client(&json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": progress,
                            "progress": step,
                            "message": format!("Waiting for the owner's approval of {id}"),
                        },
                    }).to_string());
                }
            }
        };
        let grant = match decided {
            Ok(grant) => grant,
            Err(GatewayError::StillPending { id, expires_at }) => {
                return tool_error(
                    &format!(
                        "Waiting for the owner's approval of {id}; nothing has run. The request \
                         expires at {expires_at}. Call the tool {AWAIT_TOOL} with {{\"id\": \
                         \"{id}\"}} to keep waiting."
                    ),
                    Some(json!({"status": "pending", "id": id, "expires_at": expires_at})),
                );
            }
            Err(e @ (GatewayError::OwnerDenied(_) | GatewayError::NotApproved(_))) => {
                let answer = refused(&e);
                held.done = Some(answer.clone());
                return answer;
            }
            Err(e) => return refused(&e),
        };
        let released = match self.pep.release(&grant, &held.action).await {
            Ok(r) => r,
            Err(e) => {
                let answer = refused(&e);
                held.done = Some(answer.clone());
                return answer;
            }
        };
        // Spent: from here on the call runs at most once, whatever happens.
        self.active.fetch_add(1, Ordering::SeqCst);
        let limit = self.pep.config().hold.run_timeout();
        let answer = match self.ask_server("tools/call", &held.params, limit).await {
            Ok(frame) => {
                if let Some(error) = frame.get("error") {
                    let detail = error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("an error")
                        .to_owned();
                    let _ = self
                        .pep
                        .report(&released, RunOutcome::Failed, Some(detail))
                        .await;
                    Answer::Error(error.clone())
                } else {
                    let result = frame.get("result").cloned().unwrap_or(Value::Null);
                    let failed = result.get("isError").and_then(Value::as_bool) == Some(true);
                    let (outcome, detail) = if failed {
                        (RunOutcome::Failed, first_text(&result))
                    } else {
                        (RunOutcome::Succeeded, None)
                    };
                    let _ = self.pep.report(&released, outcome, detail).await;
                    Answer::Result(result)
                }
            }
            Err(e) => {
                let _ = self
                    .pep
                    .report(&released, RunOutcome::Failed, Some(e.to_string()))
                    .await;
                refused(&e)
            }
        };
        held.done = Some(answer.clone());
        // The caller queues the answer at once; the proxy waits for this count on the way out.
        self.active.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

/// The first text content of a tool result, for an outcome's detail.
fn first_text(result: &Value) -> Option<String> {
    result
        .get("content")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("text").and_then(Value::as_str))
        .map(|t| clip(t, 512))
}

/// A tool-level error the model reads: why the call did not run.
fn tool_error(text: &str, structured: Option<Value>) -> Answer {
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
    });
    if let Some(s) = structured {
        result["structuredContent"] = s;
    }
    Answer::Result(result)
}

/// A refusal as a tool error naming the code.
fn refused(e: &GatewayError) -> Answer {
    tool_error(
        &format!("Countersign: not run. {e}"),
        Some(json!({"status": "refused", "code": e.code(), "reason": e.to_string()})),
    )
}

fn await_tool() -> Value {
    json!({
        "name": AWAIT_TOOL,
        "title": "Wait for the owner's approval",
        "description": "Keeps waiting for the owner's decision on a tool call Countersign holds. \
                        Pass the id the held call answered with. Returns the call's own result \
                        once approved and run, or why it did not run.",
        "inputSchema": {
            "type": "object",
            "properties": {"id": {"type": "string", "description": "The held call's id (pa_…)"}},
            "required": ["id"],
        },
        "annotations": {"readOnlyHint": true, "openWorldHint": false},
    })
}
