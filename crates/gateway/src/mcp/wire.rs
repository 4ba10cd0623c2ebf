//! The messages the proxy reads and writes: how a client's message is read, the protocol era and
//! abilities a request declares, and the results and errors the gateway makes itself.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::pep::clip;

use super::{AWAIT_TOOL, MAX_MESSAGE};

/// JSON-RPC "invalid request".
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "invalid params".
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// What the client is answered: a result or a JSON-RPC error object.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Result(Value),
    Error(Value),
}

impl Answer {
    /// For a 2026-07-28 client: a result says it is complete (`resultType`), unless it says
    /// otherwise already (`input_required`).
    pub(crate) fn complete(self) -> Self {
        match self {
            Self::Result(mut result) => {
                if let Some(object) = result.as_object_mut() {
                    object
                        .entry("resultType")
                        .or_insert_with(|| Value::String("complete".into()));
                }
                Self::Result(result)
            }
            error => error,
        }
    }

    /// The response frame for request `id`.
    pub(crate) fn frame(&self, id: &Value) -> Value {
        match self {
            Self::Result(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Self::Error(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        }
    }
}

/// The key of a JSON-RPC id in maps: its JSON text (`1` and `"1"` differ).
pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

/// JSON-RPC "parse error".
pub(crate) const PARSE_ERROR: i64 = -32700;

/// What the gateway does with one message from the client.
pub(crate) enum Incoming {
    /// Answer the client with this frame, and send nothing to the server.
    Refuse(Value),
    /// Send it to the server as it is (a batch without `tools/call`).
    Pass,
    /// One message, read strictly.
    Message(Value),
}

/// Reads a client's message strictly ([`countersign_protocol::json`]): duplicate keys, integers
/// beyond 2^53 and deep nesting are refused, never passed on, because a server that reads them
/// otherwise than the gateway could run a call other than the one the owner approved (or one
/// nobody was asked about). A batch (2025-03-26) is passed on only without a `tools/call` in it.
pub(crate) fn read_client(bytes: &[u8]) -> Incoming {
    let limits = countersign_protocol::json::Limits {
        max_bytes: MAX_MESSAGE,
        max_depth: 64,
    };
    let message = match countersign_protocol::json::parse_value(bytes, limits) {
        Ok(message) => message,
        Err(e) => {
            return Incoming::Refuse(error_frame(
                &Value::Null,
                PARSE_ERROR,
                &format!("Countersign gateway: the message is refused: {e}"),
            ));
        }
    };
    let Some(batch) = message.as_array() else {
        return Incoming::Message(message);
    };
    let calls = |m: &Value| m.get("method").and_then(Value::as_str) == Some("tools/call");
    if !batch.iter().any(calls) {
        return Incoming::Pass;
    }
    Incoming::Refuse(Value::Array(
        batch
            .iter()
            .filter_map(|m| m.get("id"))
            .map(|id| {
                error_frame(
                    id,
                    INVALID_REQUEST,
                    "Countersign gateway: a batch with tools/call is refused; send each call \
                     on its own",
                )
            })
            .collect(),
    ))
}

/// A request of the gateway's own to the server: its id (`countersign-<tag>-<n>`, never a
/// client's) and its frame, the params as they are.
pub(crate) fn own_request(tag: &str, n: u64, method: &str, params: &RawValue) -> (Value, String) {
    let id = Value::String(format!("countersign-{tag}-{n}"));
    let frame = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{}}}"#,
        Value::String(method.to_owned()),
        params.get()
    );
    (id, frame)
}

pub(crate) fn error_frame(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Which protocol era a request is of, and what its client can do.
pub(crate) struct Era {
    /// A 2026-07-28 (or later) request: its results say `resultType`.
    pub(crate) modern: bool,
    /// The client takes URL-mode elicitation (`input_required` with a URL to approve at).
    pub(crate) url_elicitation: bool,
    /// The client takes a task for this call: it asked for one (2025-11-25), or declared the
    /// Tasks extension (2026-07-28).
    pub(crate) tasks: Option<super::tasks::Shape>,
    /// The client's name, from the request's own metadata.
    pub(crate) client: Option<String>,
    /// The request's `_meta` (protocol version, client info and capabilities), for the
    /// gateway's own requests on its behalf.
    pub(crate) meta: Option<Value>,
}

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The key of the approval request in `input_required`'s `inputRequests`.
pub(crate) const APPROVAL_INPUT: &str = "countersign_approval";

impl Era {
    pub(crate) fn of(message: &Value) -> Self {
        let meta = message.pointer("/params/_meta");
        let version = meta
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str);
        // Protocol versions are dates: they compare as text.
        let modern = version.is_some_and(|v| v >= "2026-07-28");
        let url_elicitation = modern
            && meta
                .and_then(|m| m.get(META_CAPABILITIES))
                .and_then(|c| c.pointer("/elicitation/url"))
                .is_some();
        let tasks = if message.pointer("/params/task").is_some() {
            Some(super::tasks::Shape::Experimental)
        } else if modern
            && meta
                .and_then(|m| m.get(META_CAPABILITIES))
                .and_then(|c| c.get("extensions"))
                .and_then(|e| e.get(super::tasks::EXTENSION))
                .is_some()
        {
            Some(super::tasks::Shape::Extension)
        } else {
            None
        };
        let client = meta
            .and_then(|m| m.get(META_CLIENT))
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .map(|n| clip(n, 64));
        let meta = modern.then(|| {
            let mut own = Map::new();
            for key in [META_VERSION, META_CLIENT, META_CAPABILITIES] {
                if let Some(v) = meta.and_then(|m| m.get(key)) {
                    own.insert(key.to_owned(), v.clone());
                }
            }
            Value::Object(own)
        });
        Self {
            modern,
            url_elicitation,
            tasks,
            client,
            meta,
        }
    }
}

/// The call's parameters as the client sent them, without a retry's own members.
pub(crate) fn kept_params(message: &Value) -> Option<Box<RawValue>> {
    let mut params = message.get("params")?.clone();
    if let Some(object) = params.as_object_mut() {
        object.remove("inputResponses");
        object.remove("requestState");
        // The gateway makes the task; the server runs the call.
        object.remove("task");
    }
    serde_json::value::to_raw_value(&params).ok()
}

/// `input_required` (2026-07-28): on the first answer, a URL-mode elicitation asking the user to
/// approve in Countersign; on later ones, only the state, so the client retries.
pub(crate) fn input_required(id: &str, token: &str, ask: bool) -> Answer {
    let mut result = json!({"resultType": "input_required", "requestState": token});
    if ask {
        result["inputRequests"] = json!({
            APPROVAL_INPUT: {
                "method": "elicitation/create",
                "params": {
                    "mode": "url",
                    "message": format!(
                        "Countersign holds this call for its owner's approval ({id}). Approve or \
                         deny it in the Countersign app; nothing runs before."
                    ),
                    "url": format!("countersign://review?id={id}"),
                    "elicitationId": id,
                },
            },
        });
    }
    Answer::Result(result)
}

/// The first text content of a tool result, for an outcome's detail.
pub(crate) fn first_text(result: &Value) -> Option<String> {
    result
        .get("content")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("text").and_then(Value::as_str))
        .map(|t| clip(t, 512))
}

/// Where a gateway-made result says, for programs, what became of the call (`status`: pending,
/// refused, declined, unknown; `code`, `id`, `expires_at`).
pub const STATUS_META: &str = "dev.countersign/status";

/// A tool-level error the model reads: why the call did not run.
pub(crate) fn tool_error(text: &str, structured: Option<Value>) -> Answer {
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
    });
    if let Some(s) = structured {
        // In `_meta`, not `structuredContent`: that belongs to the tool's own output schema,
        // which clients check it against.
        result["_meta"] = json!({ STATUS_META: s });
    }
    Answer::Result(result)
}

/// A refusal as a tool error naming the code.
pub(crate) fn refused(e: &GatewayError) -> Answer {
    tool_error(
        &format!("Countersign: not run. {e}"),
        Some(json!({"status": "refused", "code": e.code(), "reason": e.to_string()})),
    )
}

pub(crate) fn await_tool() -> Value {
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
