//! The MCP proxy: over stdio ([`mod@stdio`]: the host starts the gateway in place of the server,
//! and the gateway starts the server) and over Streamable HTTP ([`mod@http`]: the gateway listens
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
mod tasks;
use tasks::TaskRun;
mod wire;

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
pub use wire::STATUS_META;
pub(crate) use wire::{
    APPROVAL_INPUT, Answer, Era, INVALID_PARAMS, INVALID_REQUEST, Incoming, await_tool,
    error_frame, first_text, id_key, input_required, kept_params, own_request, read_client,
    refused, tool_error,
};

/// The largest JSON-RPC message the proxy takes, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The tool the gateway adds to resume waiting on a held call.
pub const AWAIT_TOOL: &str = "await_approval";

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
    /// Tasks of held calls, by task id.
    tasks: std::sync::Mutex<HashMap<String, Arc<tasks::Task>>>,
}

/// An answer of the server's the gateway changes before the client gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rewrite {
    /// `tools/list`: annotations noted, `await_approval` added, tasks offered.
    List,
    /// `initialize` (the session era): the experimental tasks offered.
    Initialize,
    /// `server/discover` (2026-07-28): the Tasks extension offered.
    Discover,
}

impl Rewrite {
    /// What the answer to a request of `method` needs, if anything.
    pub(crate) fn of(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::List),
            "initialize" => Some(Self::Initialize),
            "server/discover" => Some(Self::Discover),
            _ => None,
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Calls {
    pub(crate) fn new(pep: Pep) -> Self {
        Self {
            pep,
            annotations: Default::default(),
            held: Default::default(),
            client: std::sync::Mutex::new("an MCP client".into()),
            running: AtomicUsize::new(0),
            tasks: Default::default(),
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

    /// An answer frame as the client gets it (see [`Rewrite`]).
    pub(crate) fn rewrite(&self, kind: Rewrite, frame: &mut Value) {
        match kind {
            Rewrite::List => self.listed(frame),
            Rewrite::Initialize | Rewrite::Discover => {
                let Some(capabilities) = frame
                    .pointer_mut("/result/capabilities")
                    .and_then(Value::as_object_mut)
                else {
                    return;
                };
                // Held calls can be tasks, whatever the server does with its own.
                if kind == Rewrite::Initialize {
                    capabilities.entry("tasks").or_insert_with(
                        || json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}),
                    );
                } else if let Some(extensions) = capabilities
                    .entry("extensions")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                {
                    extensions
                        .entry(tasks::EXTENSION)
                        .or_insert_with(|| json!({}));
                }
            }
        }
    }

    /// A `tools/list` answer frame as the client gets it: the tools' annotations noted, each
    /// tool offered as a task, and `await_approval` added.
    fn listed(&self, frame: &mut Value) {
        let Some(tools) = frame.pointer_mut("/result/tools") else {
            return;
        };
        self.note_tools(tools);
        if let Some(list) = tools.as_array_mut() {
            for tool in list.iter_mut() {
                if let Some(tool) = tool.as_object_mut() {
                    tool.entry("execution")
                        .or_insert_with(|| json!({"taskSupport": "optional"}));
                }
            }
            if !list
                .iter()
                .any(|t| t.get("name").and_then(Value::as_str) == Some(AWAIT_TOOL))
            {
                list.push(await_tool());
            }
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
    async fn annotations_of(
        &self,
        via: &dyn Transport,
        tool: &str,
        meta: Option<&Value>,
    ) -> Option<ToolAnnotations> {
        let known = |calls: &Self| lock(&calls.annotations).get(tool).cloned();
        if let Some(a) = known(self) {
            return Some(a);
        }
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            // A 2026-07-28 server reads the protocol version (and who asks) from each request.
            if let Some(meta) = meta {
                params["_meta"] = meta.clone();
            }
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
    pub(crate) async fn call(
        self: &Arc<Self>,
        via: Arc<dyn Transport>,
        message: &Value,
    ) -> Handled {
        let era = Era::of(message);
        let step = self.call_in(via.as_ref(), message, &era).await;
        let handled = match (step, era.tasks) {
            (
                Step::Held {
                    id,
                    held,
                    tool,
                    exp,
                },
                Some(shape),
            ) => {
                let deadline =
                    Duration::from_secs(u64::try_from(exp - self.pep.now()).unwrap_or(0) + 10);
                let message = format!("Waiting for the owner's approval of {id}");
                let run = TaskRun::Wait {
                    held,
                    tool,
                    deadline,
                };
                Handled::Answer(self.start_task(via, shape, id, message, run))
            }
            // A task was asked for (2025-11-25): every answer is one.
            (Step::Handled(Handled::Forward), Some(tasks::Shape::Experimental)) => {
                let Some(params) = kept_params(message) else {
                    return Handled::Answer(refused(&GatewayError::Malformed(
                        "tools/call without params".into(),
                    )));
                };
                let run = TaskRun::Forward(params);
                Handled::Answer(self.start_task(
                    via,
                    tasks::Shape::Experimental,
                    String::new(),
                    "Running".into(),
                    run,
                ))
            }
            (Step::Handled(Handled::Answer(answer)), Some(tasks::Shape::Experimental)) => {
                let run = TaskRun::Done(answer);
                Handled::Answer(self.start_task(
                    via,
                    tasks::Shape::Experimental,
                    String::new(),
                    "Done".into(),
                    run,
                ))
            }
            (Step::Handled(handled), _) => handled,
            (Step::Held { .. }, None) => Handled::Answer(refused(&GatewayError::Malformed(
                "a held call without a task".into(),
            ))),
        };
        match handled {
            Handled::Answer(answer) if era.modern => Handled::Answer(answer.complete()),
            handled => handled,
        }
    }

    async fn call_in(&self, via: &dyn Transport, message: &Value, era: &Era) -> Step {
        let params_value = message.get("params").cloned().unwrap_or(Value::Null);
        let params: CallToolRequestParams = match serde_json::from_value(params_value) {
            Ok(p) => p,
            Err(e) => {
                return Step::Handled(Handled::Answer(Answer::Error(json!({
                    "code": INVALID_PARAMS,
                    "message": format!("Countersign gateway: tools/call params: {e}"),
                }))));
            }
        };
        let answer = |a| Step::Handled(Handled::Answer(a));
        let progress = message.pointer("/params/_meta/progressToken").cloned();
        if params.name == AWAIT_TOOL {
            return answer(self.await_approval(via, &params, progress).await);
        }
        let tool = params.name.to_string();
        let action = match self.action_of(via, &params, era).await {
            Ok(a) => a,
            Err(e) => return answer(refused(&e)),
        };
        // A 2026-07-28 client's retry after `input_required`: the sealed state names the item.
        if let Some(token) = message
            .pointer("/params/requestState")
            .and_then(Value::as_str)
        {
            return answer(
                self.retry(via, message, token, action, progress, &tool)
                    .await,
            );
        }
        let verdict = match self.pep.evaluate(&action).await {
            Ok(v) => v,
            Err(e) => return answer(refused(&e)),
        };
        match verdict {
            Verdict::Allow => Step::Handled(Handled::Forward),
            Verdict::Deny { policy, reason } => {
                answer(refused(&GatewayError::Denied { policy, reason }))
            }
            Verdict::Held { id, expires_at } => {
                let Some(kept) = kept_params(message) else {
                    return answer(refused(&GatewayError::Malformed(
                        "tools/call without params".into(),
                    )));
                };
                let hash = action.action_hash().map(|h| h.as_str().to_owned());
                let held = self.hold(&id, kept, action);
                let exp = countersign_protocol::timestamp::Timestamp::try_from(expires_at)
                    .map(|t| t.unix())
                    .unwrap_or_else(|_| self.pep.now() + 300);
                // A client that takes tasks gets one: it polls, and no timeout cuts it off.
                if era.tasks.is_some() {
                    return Step::Held {
                        id,
                        held,
                        tool,
                        exp,
                    };
                }
                if era.url_elicitation {
                    // Tell the client at once, and let it come back: its retry waits.
                    let Ok(hash) = hash else {
                        return answer(refused(&GatewayError::Malformed(
                            "the call cannot be hashed".into(),
                        )));
                    };
                    let token = self.pep.sealer().seal(&crate::state::RequestState {
                        id: id.clone(),
                        hash,
                        exp,
                    });
                    return answer(input_required(&id, &token, true));
                }
                let wait = Wait {
                    progress,
                    retry: None,
                    task: None,
                    max: None,
                };
                answer(self.wait_and_run(via, &id, held, &tool, wait).await)
            }
        }
    }

    /// The held call `id`, kept (the first kept parameters stay; an identical call joins them).
    fn hold(
        &self,
        id: &str,
        params: Box<RawValue>,
        action: countersign_protocol::ActionRequest,
    ) -> Arc<Mutex<Held>> {
        lock(&self.held)
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Held {
                    params,
                    action,
                    done: None,
                }))
            })
            .clone()
    }

    /// The action the broker is asked about for this call.
    async fn action_of(
        &self,
        via: &dyn Transport,
        params: &CallToolRequestParams,
        era: &Era,
    ) -> Result<countersign_protocol::ActionRequest, GatewayError> {
        let tool = params.name.to_string();
        let config = self.pep.config();
        let resource = config
            .tools
            .get(&tool)
            .and_then(|t| t.resource.clone())
            .unwrap_or_else(|| format!("{}/{tool}", config.mcp.server));
        let client = era
            .client
            .clone()
            .unwrap_or_else(|| lock(&self.client).clone());
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
        let annotations = self.annotations_of(via, &tool, era.meta.as_ref()).await;
        let arguments: Map<String, Value> = params.arguments.clone().unwrap_or_default();
        self.pep.action(&resource, arguments, intent, annotations)
    }

    /// `await_approval {id}`: the legacy path's resumed wait.
    async fn await_approval(
        &self,
        via: &dyn Transport,
        params: &CallToolRequestParams,
        progress: Option<Value>,
    ) -> Answer {
        let Some(id) = params
            .arguments
            .as_ref()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
        else {
            return tool_error(
                "await_approval needs {\"id\": \"pa_…\"}: the id a held call answered with",
                None,
            );
        };
        let held = lock(&self.held).get(id).cloned();
        match held {
            Some(held) => {
                let wait = Wait {
                    progress,
                    retry: None,
                    task: None,
                    max: None,
                };
                self.wait_and_run(via, id, held, AWAIT_TOOL, wait).await
            }
            None => tool_error(
                &format!(
                    "This gateway holds no call {id} (it may have restarted). Nothing ran. \
                     Send the original call again: an identical call joins the same request."
                ),
                Some(json!({"status": "unknown", "id": id})),
            ),
        }
    }

    /// A 2026-07-28 client's retry with the request state the gateway sealed: the same call
    /// (its action hash), the item it names, waited on; a declined elicitation runs nothing.
    async fn retry(
        &self,
        via: &dyn Transport,
        message: &Value,
        token: &str,
        action: countersign_protocol::ActionRequest,
        progress: Option<Value>,
        tool: &str,
    ) -> Answer {
        let state = match self.pep.sealer().open(token, self.pep.now()) {
            Ok(state) => state,
            Err(why) => return refused(&GatewayError::Malformed(why.into())),
        };
        let same = action.action_hash().is_ok_and(|h| h.as_str() == state.hash);
        if !same {
            return refused(&GatewayError::Malformed(
                "the request state is for another call".into(),
            ));
        }
        if let Some(responses) = message
            .pointer("/params/inputResponses")
            .and_then(Value::as_object)
            && let Some(action) = responses
                .get(APPROVAL_INPUT)
                .and_then(|r| r.get("action"))
                .and_then(Value::as_str)
            && action != "accept"
        {
            return tool_error(
                &format!(
                    "Countersign: not run. You chose not to approve {} now ({action}); it stays \
                     pending for the owner until it expires.",
                    state.id
                ),
                Some(json!({"status": "declined", "id": state.id})),
            );
        }
        // After a restart the call is kept again from the retry (same hash: the same call).
        let Some(kept) = kept_params(message) else {
            return refused(&GatewayError::Malformed("tools/call without params".into()));
        };
        let held = self.hold(&state.id, kept, action);
        let wait = Wait {
            progress,
            retry: Some(token),
            task: None,
            max: None,
        };
        self.wait_and_run(via, &state.id, held, tool, wait).await
    }

    /// Waits for the owner's decision on `id` (bounded), then verifies, spends and runs the
    /// held call once, and reports its outcome.
    async fn wait_and_run(
        &self,
        via: &dyn Transport,
        id: &str,
        held: Arc<Mutex<Held>>,
        tool: &str,
        how: Wait<'_>,
    ) -> Answer {
        let Wait {
            progress,
            retry,
            task,
            max,
        } = how;
        let mut held = held.lock().await;
        if let Some(done) = &held.done {
            return done.clone();
        }
        let max = max.unwrap_or_else(|| self.pep.config().max_wait(tool));
        let wait = self.pep.wait(id, max);
        tokio::pin!(wait);
        let every = self.pep.config().hold.progress_every();
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut step = 0u64;
        let cancelled = async {
            match task {
                Some(task) => task.cancelled.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cancelled);
        let decided = loop {
            tokio::select! {
                decided = &mut wait => break decided,
                () = &mut cancelled => {
                    return refused(&GatewayError::NotApproved("the task was cancelled".into()));
                }
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
            Err(GatewayError::StillPending { .. }) if let Some(token) = retry => {
                // The client backs off and retries with the same state.
                return input_required(id, token, false);
            }
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
        // A task cancelled meanwhile never runs; one that starts running can no longer be
        // cancelled.
        if let Some(task) = task
            && !task.start_running(&self.timestamp())
        {
            return refused(&GatewayError::NotApproved("the task was cancelled".into()));
        }
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

/// What `call_in` came to.
enum Step {
    Handled(Handled),
    /// Held, for a client that takes a task.
    Held {
        id: String,
        held: Arc<Mutex<Held>>,
        tool: String,
        /// The pending item's expiry, Unix seconds.
        exp: i64,
    },
}

/// How one wait goes.
struct Wait<'a> {
    /// The client's progress token.
    progress: Option<Value>,
    /// The sealed state of a 2026-07-28 retry.
    retry: Option<&'a str>,
    /// The task the wait is for.
    task: Option<&'a tasks::Task>,
    /// How long, instead of the configured hold.
    max: Option<Duration>,
}
