//! MCP tasks for held calls: the client gets a task handle at once and polls it, so no client
//! timeout ever cuts a held call off.
//!
//! Two shapes, negotiated per request: the 2025-11-25 experimental tasks (the client asks for a
//! task with `params.task`; `tasks/get`, `tasks/result`, `tasks/cancel`, `tasks/list`), and the
//! 2026-07-28 Tasks extension `io.modelcontextprotocol/tasks` (the client declares it in the
//! request's capabilities; the gateway answers `resultType: "task"`; `tasks/get` carries the
//! result inline; `tasks/cancel`). A task waits for the owner until the pending item expires. It
//! can be cancelled until its call starts running, never after: a cancelled task's call never
//! runs, and a running one runs once.

use std::sync::Mutex as SyncMutex;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Mutex;

use super::{Answer, Calls, Held, INVALID_PARAMS, Transport, Wait, lock, refused};

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for the owner (or about to run).
    Working,
    /// Released: the call is running on the server; it can no longer be cancelled.
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn wire(self) -> &'static str {
        match self {
            Self::Working | Self::Running => "working",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Which shape the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// 2025-11-25 experimental tasks.
    Experimental,
    /// 2026-07-28 `io.modelcontextprotocol/tasks`.
    Extension,
}

/// The 2026-07-28 Tasks extension's identifier.
pub(crate) const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How often clients are asked to poll, in milliseconds.
const POLL_MS: u64 = 1000;

/// One task.
pub(crate) struct Task {
    pub(crate) id: String,
    /// The pending item it waits on.
    pub(crate) pending: String,
    shape: Shape,
    created_at: String,
    ttl_ms: u64,
    state: SyncMutex<(Status, String, String)>,
    answer: SyncMutex<Option<Answer>>,
    /// Told when the task is cancelled (the wait stops).
    pub(crate) cancelled: Notify,
    done: watch::Sender<bool>,
}

impl Task {
    pub(crate) fn new(
        id: String,
        pending: String,
        message: String,
        shape: Shape,
        now: &str,
        ttl_ms: u64,
    ) -> Self {
        Self {
            id,
            pending,
            shape,
            created_at: now.to_owned(),
            ttl_ms,
            state: SyncMutex::new((Status::Working, message, now.to_owned())),
            answer: SyncMutex::new(None),
            cancelled: Notify::new(),
            done: watch::channel(false).0,
        }
    }

    pub(crate) fn status(&self) -> Status {
        lock(&self.state).0
    }

    /// Moves to `Running` unless cancelled: whether the call may run.
    pub(crate) fn start_running(&self, now: &str) -> bool {
        let mut state = lock(&self.state);
        if state.0 != Status::Working {
            return false;
        }
        *state = (Status::Running, "Approved; running".into(), now.to_owned());
        true
    }

    /// Cancels a task that is not running yet: whether it was.
    pub(crate) fn cancel(&self, now: &str) -> bool {
        {
            let mut state = lock(&self.state);
            if state.0 != Status::Working {
                return false;
            }
            *state = (
                Status::Cancelled,
                "Cancelled by the client; the call never ran".into(),
                now.to_owned(),
            );
        }
        self.cancelled.notify_waiters();
        self.cancelled.notify_one();
        self.done.send_replace(true);
        true
    }

    /// Records the call's answer (a cancelled task keeps its status).
    pub(crate) fn finish(&self, answer: Answer, now: &str) {
        {
            let mut state = lock(&self.state);
            if state.0 == Status::Cancelled {
                return;
            }
            let status = match &answer {
                Answer::Result(_) => Status::Completed,
                Answer::Error(_) => Status::Failed,
            };
            let message = match status {
                Status::Completed => "Done",
                _ => "The tool failed",
            };
            *state = (status, message.into(), now.to_owned());
        }
        *lock(&self.answer) = Some(answer);
        self.done.send_replace(true);
    }

    /// Waits until the task is terminal.
    pub(crate) async fn finished(&self) {
        let mut done = self.done.subscribe();
        while !*done.borrow_and_update() {
            if done.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn answer(&self) -> Option<Answer> {
        lock(&self.answer).clone()
    }

    /// The task's fields in the client's shape.
    pub(crate) fn fields(&self) -> Value {
        let (status, message, updated) = lock(&self.state).clone();
        match self.shape {
            Shape::Experimental => json!({
                "taskId": self.id,
                "status": status.wire(),
                "statusMessage": message,
                "createdAt": self.created_at,
                "lastUpdatedAt": updated,
                "ttl": self.ttl_ms,
                "pollInterval": POLL_MS,
            }),
            Shape::Extension => json!({
                "taskId": self.id,
                "status": status.wire(),
                "statusMessage": message,
                "createdAt": self.created_at,
                "lastUpdatedAt": updated,
                "ttlMs": self.ttl_ms,
                "pollIntervalMs": POLL_MS,
            }),
        }
    }

    /// The answer to the `tools/call` that created it.
    pub(crate) fn created(&self) -> Value {
        match self.shape {
            Shape::Experimental => json!({"task": self.fields()}),
            Shape::Extension => {
                let mut fields = self.fields();
                fields["resultType"] = json!("task");
                fields
            }
        }
    }

    /// `tasks/get`: the task (2026-07-28: with its result or error inline once terminal).
    pub(crate) fn get(&self) -> Value {
        let mut fields = self.fields();
        if self.shape == Shape::Extension {
            fields["resultType"] = json!("complete");
            match self.answer() {
                Some(Answer::Result(result)) if self.status() == Status::Completed => {
                    fields["result"] = result;
                }
                Some(Answer::Error(error)) if self.status() == Status::Failed => {
                    fields["error"] = error;
                }
                _ => {}
            }
        }
        fields
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.status().terminal()
    }
}

/// How long a task is kept after it is created, in milliseconds.
const TASK_TTL_MS: u64 = 3_600_000;

/// What a task does in the background.
pub(super) enum TaskRun {
    /// Wait for the owner, then run the held call.
    Wait {
        held: Arc<Mutex<Held>>,
        tool: String,
        deadline: Duration,
    },
    /// Run the allowed call.
    Forward(Box<RawValue>),
    /// Nothing: the answer is known.
    Done(Answer),
}

impl Calls {
    /// Starts a task and returns the answer that creates it.
    pub(super) fn start_task(
        self: &Arc<Self>,
        via: Arc<dyn Transport>,
        shape: Shape,
        pending: String,
        message: String,
        run: TaskRun,
    ) -> Answer {
        let id = format!("task_{}", countersign_protocol::hash::random_b64url::<12>());
        let task = Arc::new(Task::new(
            id.clone(),
            pending,
            message,
            shape,
            &self.timestamp(),
            TASK_TTL_MS,
        ));
        lock(&self.tasks).insert(id, task.clone());
        let created = task.created();
        let calls = self.clone();
        tokio::spawn(async move {
            let answer = match run {
                TaskRun::Done(answer) => answer,
                TaskRun::Forward(params) => {
                    let limit = calls.pep.config().hold.run_timeout();
                    match via.ask("tools/call", &params, limit).await {
                        Ok(frame) => match frame.get("error") {
                            Some(error) => Answer::Error(error.clone()),
                            None => {
                                Answer::Result(frame.get("result").cloned().unwrap_or(Value::Null))
                            }
                        },
                        Err(e) => refused(&e),
                    }
                }
                TaskRun::Wait {
                    held,
                    tool,
                    deadline,
                } => {
                    let wait = Wait {
                        progress: None,
                        retry: None,
                        task: Some(&task),
                        max: Some(deadline),
                    };
                    calls
                        .wait_and_run(via.as_ref(), &task.pending, held, &tool, wait)
                        .await
                }
            };
            task.finish(answer, &calls.timestamp());
        });
        Answer::Result(created)
    }

    /// Now, as RFC 3339 UTC.
    pub(super) fn timestamp(&self) -> String {
        countersign_protocol::timestamp::Timestamp::from_unix(self.pep.now())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default()
    }

    /// A `tasks/*` request about one of the gateway's tasks; `None` when the task is not the
    /// gateway's (the server's own: the request goes to the server).
    pub(crate) async fn task_request(&self, message: &Value) -> Option<Answer> {
        let method = message.get("method").and_then(Value::as_str)?;
        if method == "tasks/list" {
            let list: Vec<Value> = lock(&self.tasks).values().map(|t| t.fields()).collect();
            return Some(Answer::Result(json!({"tasks": list})));
        }
        let id = message.pointer("/params/taskId").and_then(Value::as_str)?;
        let task = lock(&self.tasks).get(id).cloned()?;
        let invalid = |text: &str| {
            Answer::Error(
                json!({"code": INVALID_PARAMS, "message": format!("Countersign gateway: {text}")}),
            )
        };
        Some(match method {
            "tasks/get" => Answer::Result(task.get()),
            "tasks/result" => {
                task.finished().await;
                match task.answer() {
                    Some(answer) => answer,
                    None => invalid("the task was cancelled; its call never ran"),
                }
            }
            "tasks/cancel" => {
                if task.cancel(&self.timestamp()) {
                    Answer::Result(task.get())
                } else if task.is_terminal() {
                    invalid("the task is finished already")
                } else {
                    invalid("the call is running; it runs once and cannot be cancelled now")
                }
            }
            "tasks/update" => invalid("this task takes no input"),
            _ => return None,
        })
    }
}
