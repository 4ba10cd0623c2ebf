//! Agent permission hooks: Claude Code (`PreToolUse`, `PermissionRequest`; `command` and `http`
//! hooks) and Codex (`PreToolUse`, `PermissionRequest`; `command` hooks). The hook is the
//! enforcement point: it answers allow only after the broker allowed the call, or after the
//! owner approved it and the grant was verified here and spent at the broker.
//!
//! Both agents run the tool when a hook fails (a crash, a timeout, an answer they cannot read),
//! so every refusal here is an explicit deny in the agent's documented shape, given before the
//! hook's own timeout (`hold.max_wait_secs` must stay below it).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::pep::{Pep, Verdict, clip};

/// The largest hook payload taken, in bytes.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// Which agent calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code.
    #[value(name = "claude-code")]
    ClaudeCode,
    /// OpenAI Codex CLI.
    Codex,
}

impl Agent {
    /// The namespace of the agent's built-in tools to policy: `claude-code/Bash`.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ClaudeCode => "Claude Code",
            Self::Codex => "Codex",
        }
    }
}

/// The hook events answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    PreToolUse,
    PermissionRequest,
}

impl Event {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "PreToolUse" => Some(Self::PreToolUse),
            "PermissionRequest" => Some(Self::PermissionRequest),
            _ => None,
        }
    }
}

/// The fields of a hook payload the gateway reads (both agents send these; the rest is
/// ignored, as their schemas grow).
#[derive(Clone, Debug, Deserialize)]
pub struct Payload {
    pub hook_event_name: String,
    pub tool_name: String,
    pub tool_input: Value,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// The gateway's answer to one hook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub reason: String,
}

impl Decision {
    fn deny(reason: impl Into<String>) -> Self {
        Self {
            allow: false,
            reason: reason.into(),
        }
    }
}

/// The policy name of a hook's tool: `mcp__server__tool` is `server/tool`; a built-in tool `T`
/// is `<agent namespace>/T`.
pub fn resource_of(agent: Agent, tool: &str) -> String {
    if let Some(rest) = tool.strip_prefix("mcp__")
        && let Some((server, name)) = rest.split_once("__")
        && !server.is_empty()
        && !name.is_empty()
    {
        return format!("{server}/{name}");
    }
    format!("{}/{tool}", agent.namespace())
}

/// Reads a payload: bounded, JSON, with the fields every hook event has.
pub fn parse(bytes: &[u8]) -> Result<(Event, Payload), GatewayError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(GatewayError::Malformed(format!(
            "the hook payload is over {MAX_PAYLOAD} bytes"
        )));
    }
    let value = countersign_protocol::json::parse_value(
        bytes,
        countersign_protocol::json::Limits {
            max_bytes: MAX_PAYLOAD,
            max_depth: 64,
        },
    )
    .map_err(|e| GatewayError::Malformed(format!("the hook payload: {e}")))?;
    let payload: Payload = serde_json::from_value(value)
        .map_err(|e| GatewayError::Malformed(format!("the hook payload: {e}")))?;
    let event = Event::parse(&payload.hook_event_name).ok_or_else(|| {
        GatewayError::Malformed(format!(
            "the hook event {:?} is not one Countersign answers (PreToolUse, PermissionRequest)",
            clip(&payload.hook_event_name, 64)
        ))
    })?;
    Ok((event, payload))
}

/// The event named in a payload that could not be read in full, for the shape of its deny.
fn event_hint(bytes: &[u8]) -> Event {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_PAYLOAD)]);
    if text.contains("\"PermissionRequest\"") {
        Event::PermissionRequest
    } else {
        Event::PreToolUse
    }
}

/// Decides one hook call: allowed by policy, or approved by the owner and the grant spent here;
/// every other path denies with why.
pub async fn decide(pep: &Pep, agent: Agent, payload: &Payload) -> Decision {
    match decide_inner(pep, agent, payload).await {
        Ok(decision) => decision,
        Err(e) => Decision::deny(format!("Countersign: not allowed. {e}")),
    }
}

async fn decide_inner(
    pep: &Pep,
    agent: Agent,
    payload: &Payload,
) -> Result<Decision, GatewayError> {
    let config = pep.config();
    let tool = payload.tool_name.as_str();
    let resource = config
        .tools
        .get(tool)
        .and_then(|t| t.resource.clone())
        .unwrap_or_else(|| resource_of(agent, tool));
    let arguments: Map<String, Value> = match &payload.tool_input {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("input".into(), other.clone());
            map
        }
    };
    let intent = config
        .tools
        .get(tool)
        .and_then(|t| t.intent.clone())
        .unwrap_or_else(|| match &payload.cwd {
            Some(cwd) => format!("{} uses {tool} in {}", agent.name(), clip(cwd, 512)),
            None => format!("{} uses {tool}", agent.name()),
        });
    let action = pep.action(&resource, arguments, intent, None)?;
    match pep.evaluate(&action).await? {
        Verdict::Allow => Ok(Decision {
            allow: true,
            reason: "Countersign: allowed by policy".into(),
        }),
        Verdict::Deny { policy, reason } => Err(GatewayError::Denied { policy, reason }),
        Verdict::Held { id, .. } => {
            let grant = pep
                .wait(&id, config.max_wait(tool))
                .await
                .map_err(|e| match e {
                    GatewayError::StillPending { id, expires_at } => {
                        GatewayError::NotApproved(format!(
                            "no decision from the owner in time; {id} stays pending until \
                         {expires_at}, and the same call asked again waits on it"
                        ))
                    }
                    other => other,
                })?;
            let released = pep.release(&grant, &action).await?;
            Ok(Decision {
                allow: true,
                reason: format!(
                    "Countersign: approved by the owner ({}); the grant is spent",
                    released.txn
                ),
            })
        }
    }
}

/// The answer in the agent's documented shape; `None` is "exit 0, print nothing" (Codex's
/// PreToolUse allow: it has no explicit allow).
pub fn answer(agent: Agent, event: Event, decision: &Decision) -> Option<Value> {
    let reason = clip(&decision.reason, 2000);
    match event {
        Event::PreToolUse => {
            if decision.allow && agent == Agent::Codex {
                return None;
            }
            Some(json!({
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": if decision.allow { "allow" } else { "deny" },
                    "permissionDecisionReason": reason,
                }
            }))
        }
        Event::PermissionRequest => {
            let decision = if decision.allow {
                json!({"behavior": "allow"})
            } else {
                json!({"behavior": "deny", "message": reason})
            };
            Some(json!({
                "hookSpecificOutput": {
                    "hookEventName": "PermissionRequest",
                    "decision": decision,
                }
            }))
        }
    }
}

/// One hook call, from its bytes to the answer's JSON text (empty for "print nothing").
pub async fn handle(pep: &Pep, agent: Agent, bytes: &[u8]) -> String {
    let (event, decision) = match parse(bytes) {
        Ok((event, payload)) => (event, decide(pep, agent, &payload).await),
        Err(e) => (
            event_hint(bytes),
            Decision::deny(format!("Countersign: not allowed. {e}")),
        ),
    };
    tracing::info!(?agent, ?event, allow = decision.allow, reason = %decision.reason, "hook answered");
    answer(agent, event, &decision)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// `hook run`: one payload on stdin, the answer on stdout.
pub async fn run(pep: &Pep, agent: Agent) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    tokio::io::stdin()
        .take(MAX_PAYLOAD as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    let mut out = handle(pep, agent, &bytes).await;
    if !out.is_empty() {
        use tokio::io::AsyncWriteExt as _;
        out.push('\n');
        let mut stdout = tokio::io::stdout();
        stdout.write_all(out.as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// What `hook serve` answers with.
struct Served {
    pep: Pep,
    /// The bearer token callers must present, when configured.
    token: Option<zeroize::Zeroizing<String>>,
}

/// The `hook serve` router: `POST /claude-code` and `POST /codex`, each answering 200 with the
/// agent's JSON (a non-2xx answer would let the agent run the tool). With `hooks.token`
/// configured, a request without that bearer token is denied.
pub fn router(pep: Pep) -> Result<axum::Router, GatewayError> {
    let token = pep
        .config()
        .hooks
        .token
        .as_ref()
        .map(|t| t.resolve("hooks.token"))
        .transpose()?;
    let pep = Arc::new(Served { pep, token });
    Ok(axum::Router::new()
        .route("/claude-code", post(claude))
        .route("/codex", post(codex))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(pep))
}

async fn claude(
    State(served): State<Arc<Served>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    respond(serve_one(&served, &headers, Agent::ClaudeCode, body).await)
}

async fn codex(
    State(served): State<Arc<Served>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    respond(serve_one(&served, &headers, Agent::Codex, body).await)
}

/// Whether `headers` carry the bearer `token`, compared in constant time.
fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Reads at most [`MAX_PAYLOAD`] bytes (a larger body is denied, never refused with a status
/// the agent would ignore) and answers.
async fn serve_one(
    served: &Served,
    headers: &axum::http::HeaderMap,
    agent: Agent,
    body: axum::body::Body,
) -> String {
    let deny = |event: Event, why: &str| {
        let decision = Decision::deny(format!("Countersign: not allowed. {why}"));
        answer(agent, event, &decision)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let bytes = axum::body::to_bytes(body, MAX_PAYLOAD).await;
    if let Some(token) = &served.token
        && !authorized(headers, token)
    {
        let event = bytes
            .as_deref()
            .map(event_hint)
            .unwrap_or(Event::PreToolUse);
        tracing::warn!(
            ?agent,
            "a hook call without the configured token was denied"
        );
        return deny(event, "this hook endpoint needs its bearer token");
    }
    let pep = &served.pep;
    match bytes {
        Ok(bytes) => handle(pep, agent, &bytes).await,
        Err(_) => deny(
            Event::PreToolUse,
            &format!(
                "malformed input: the hook payload is over {MAX_PAYLOAD} bytes or was cut off"
            ),
        ),
    }
}

fn respond(body: String) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
