//! The MCP proxy: over stdio ([`stdio`]: the host starts the gateway in place of the server,
//! and the gateway starts the server) and over Streamable HTTP ([`http`]: the gateway listens
//! and forwards to the server's URL).
//!
//! Both work on JSON-RPC frames: every message passes through unchanged except `tools/call`
//! requests, which go through the [`Pep`] core, and `tools/list` results, to which the
//! `await_approval` tool is added (and whose annotations are noted for the owner's review).
//! Messages are read and written with `rmcp`'s model types where the gateway looks inside them.
//!
//! A held call is answered within the hold limit: the client gets its result when the owner
//! decides in time, and otherwise a "waiting for the owner's approval" result naming the pending
//! item, with `notifications/progress` meanwhile when it sent a progress token. Calling the
//! `await_approval` tool with that id resumes the wait. The call's parameters are kept as the
//! bytes the client sent, and the call runs once: the grant is spent at the broker before it
//! runs, a second wait on a call that ran gets the same result, and identical calls join one
//! pending item (the broker merges them).

pub mod http;
pub mod stdio;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use countersign_protocol::action::ToolAnnotations;
use countersign_protocol::api::RunOutcome;
use rmcp::model::{CallToolRequestParams, Tool};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::error::GatewayError;
use crate::pep::{Pep, Verdict, clip};

pub use stdio::stdio;

/// The largest JSON-RPC message the proxy takes, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The tool the gateway adds to resume waiting on a held call.
pub const AWAIT_TOOL: &str = "await_approval";

/// JSON-RPC "invalid request".
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "invalid params".
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// A future a transport returns.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a front end does for the core: talk to the server and to the client.
pub(crate) trait Transport: Send + Sync {
    /// Sends a request of the gateway's own to the server and waits (at most `limit`) for the
    /// answer frame.
    fn ask<'a>(
        &'a self,
        method: &'static str,
        params: &'a RawValue,
        limit: Duration,
    ) -> Pending<'a, Result<Value, GatewayError>>;
    /// Sends a notification frame to the client (progress), if it can.
    fn notify(&self, frame: Value);
}

/// A held call: its kept parameters and what became of it.
struct Held {
    /// The `tools/call` params exactly as the client sent them.
    params: Box<RawValue>,
    action: countersign_protocol::ActionRequest,
    /// Once the call ran (or was refused for good): the answer every later wait gets.
    done: Option<Answer>,
}

/// What the client is answered: a result or a JSON-RPC error object.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Result(Value),
    Error(Value),
}

impl Answer {
    /// The response frame for request `id`.
    pub(crate) fn frame(&self, id: &Value) -> Value {
        match self {
            Self::Result(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Self::Error(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        }
    }
}

/// What became of one `tools/call`.
pub(crate) enum Handled {
    /// Allowed by policy: send the client's own frame to the server, unchanged.
    Forward,
    /// Answered by the gateway (a refusal, a held call's result, "still waiting").
    Answer(Answer),
}

/// The state both front ends share: held calls, the tools' annotations, the client's name.
pub(crate) struct Calls {
    pub(crate) pep: Pep,
    annotations: std::sync::Mutex<HashMap<String, ToolAnnotations>>,
    /// Held calls by pending item id; each behind its own lock, so one wait runs the call.
    held: std::sync::Mutex<HashMap<String, Arc<Mutex<Held>>>>,
    /// The client's name, from `initialize`.
    client: std::sync::Mutex<String>,
    /// Calls running on the server (spent, waiting for its answer).
    running: AtomicUsize,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key of a JSON-RPC id in maps: its JSON text (`1` and `"1"` differ).
pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

pub(crate) fn error_frame(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

impl Calls {
    pub(crate) fn new(pep: Pep) -> Self {
        Self {
            pep,
            annotations: Default::default(),
            held: Default::default(),
            client: std::sync::Mutex::new("an MCP client".into()),
            running: AtomicUsize::new(0),
        }
    }

    /// Calls running on the server now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Notes what an `initialize` request says of the client.
    pub(crate) fn initialize(&self, message: &Value) {
        let name = message
            .pointer("/params/clientInfo/name")
            .and_then(Value::as_str)
            .unwrap_or("an MCP client");
        *lock(&self.client) = clip(name, 64);
    }

    /// A `tools/list` answer frame as the client gets it: the tools' annotations noted, and
    /// `await_approval` added.
    pub(crate) fn listed(&self, frame: &mut Value) {
        let Some(tools) = frame.pointer_mut("/result/tools") else {
            return;
        };
        self.note_tools(tools);
        if let Some(list) = tools.as_array_mut()
            && !list
                .iter()
                .any(|t| t.get("name").and_then(Value::as_str) == Some(AWAIT_TOOL))
        {
            list.push(await_tool());
        }
    }

    /// Notes each listed tool's annotations (the server's claims, for the owner's review).
    fn note_tools(&self, tools: &Value) {
        let Some(list) = tools.as_array() else { return };
        let mut known = lock(&self.annotations);
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

    /// The annotations of `tool`, asking the server for its list when none was seen yet.
    async fn annotations_of(&self, via: &dyn Transport, tool: &str) -> Option<ToolAnnotations> {
        let known = |calls: &Self| lock(&calls.annotations).get(tool).cloned();
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
            let answer = via
                .ask("tools/list", &raw, Duration::from_secs(10))
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

    /// One `tools/call` request frame.
    pub(crate) async fn call(&self, via: &dyn Transport, message: &Value) -> Handled {
        let params_value = message.get("params").cloned().unwrap_or(Value::Null);
        let params: CallToolRequestParams = match serde_json::from_value(params_value) {
            Ok(p) => p,
            Err(e) => {
                return Handled::Answer(Answer::Error(json!({
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
                return Handled::Answer(tool_error(
                    "await_approval needs {\"id\": \"pa_…\"}: the id a held call answered with",
                    None,
                ));
            };
            let held = lock(&self.held).get(id).cloned();
            return Handled::Answer(match held {
                Some(held) => {
                    self.wait_and_run(via, id, held, progress, &params.name)
                        .await
                }
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
        let client = lock(&self.client).clone();
        let intent = config
            .tools
            .get(&tool)
            .and_then(|t| t.intent.clone())
            .unwrap_or_else(|| {
                format!(
                    "The MCP client {client:?} calls the tool {tool} of the server {}",
                    config.mcp.server
                )
            });
        let annotations = self.annotations_of(via, &tool).await;
        let arguments: Map<String, Value> = params.arguments.clone().unwrap_or_default();
        let action = match self.pep.action(&resource, arguments, intent, annotations) {
            Ok(a) => a,
            Err(e) => return Handled::Answer(refused(&e)),
        };
        let verdict = match self.pep.evaluate(&action).await {
            Ok(v) => v,
            Err(e) => return Handled::Answer(refused(&e)),
        };
        match verdict {
            Verdict::Allow => Handled::Forward,
            Verdict::Deny { policy, reason } => {
                Handled::Answer(refused(&GatewayError::Denied { policy, reason }))
            }
            Verdict::Held { id, .. } => {
                let kept = match message
                    .get("params")
                    .map(serde_json::value::to_raw_value)
                    .transpose()
                {
                    Ok(Some(raw)) => raw,
                    _ => {
                        return Handled::Answer(refused(&GatewayError::Malformed(
                            "tools/call without params".into(),
                        )));
                    }
                };
                let held = lock(&self.held)
                    .entry(id.clone())
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(Held {
                            params: kept,
                            action,
                            done: None,
                        }))
                    })
                    .clone();
                Handled::Answer(self.wait_and_run(via, &id, held, progress, &tool).await)
            }
        }
    }

    /// Waits for the owner's decision on `id` (bounded), then verifies, spends and runs the
    /// held call once, and reports its outcome.
    async fn wait_and_run(
        &self,
        via: &dyn Transport,
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
                    via.notify(json!({
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": progress,
                            "progress": step,
                            "message": format!("Waiting for the owner's approval of {id}"),
                        },
                    }));
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
        self.running.fetch_add(1, Ordering::SeqCst);
        let limit = self.pep.config().hold.run_timeout();
        let answer = match via.ask("tools/call", &held.params, limit).await {
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
        // The caller sends the answer at once; a front end that is closing waits for this.
        self.running.fetch_sub(1, Ordering::SeqCst);
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
