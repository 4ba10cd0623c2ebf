//! The MCP proxy over Streamable HTTP: the gateway listens where the client connects and
//! forwards to the server's URL. Requests other than `tools/call` (and the answers to
//! `tools/list`) pass through with their headers (`Mcp-Session-Id`, `MCP-Protocol-Version`,
//! `Authorization`) and their answers stream back unchanged; `GET` streams and `DELETE` too.
//!
//! A `tools/call` is handled in a task of its own, so a client that disconnects while its call
//! is held or running changes nothing: the call still runs at most once, its outcome is
//! reported, and `await_approval` gets its result. A client that accepts `text/event-stream`
//! and sent a progress token gets `notifications/progress` while the call is held.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{
    Calls, Handled, INVALID_REQUEST, Incoming, MAX_MESSAGE, Pending, Rewrite, Transport,
    error_frame, id_key, lock, own_request, read_client,
};
use crate::error::GatewayError;
use crate::pep::Pep;

/// Headers a request to the server carries over from the client's.
const CARRIED: &[&str] = &[
    "mcp-session-id",
    "mcp-protocol-version",
    "authorization",
    "last-event-id",
    "accept",
    "content-type",
];

/// Headers of the server's answer the client gets.
const RETURNED: &[&str] = &["content-type", "mcp-session-id", "cache-control"];

struct HttpProxy {
    calls: Arc<Calls>,
    upstream: String,
    http: reqwest::Client,
    /// `tools/call` requests in progress, by session and id.
    in_flight: std::sync::Mutex<HashSet<String>>,
    next_id: AtomicU64,
    tag: String,
}

/// The proxy's router, forwarding to `upstream` (the server's MCP endpoint URL).
pub fn router(pep: Pep, upstream: &str) -> anyhow::Result<axum::Router> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let proxy = Arc::new(HttpProxy {
        calls: Arc::new(Calls::new(pep)),
        upstream: upstream.to_owned(),
        http,
        in_flight: Default::default(),
        next_id: AtomicU64::new(1),
        tag: countersign_protocol::hash::random_b64url::<6>(),
    });
    Ok(axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(proxy))
}

/// One request of the client's: its frames' answer, or the server's, streamed back.
async fn handle(
    State(proxy): State<Arc<HttpProxy>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE).await else {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &error_frame(
                &Value::Null,
                INVALID_REQUEST,
                &format!("Countersign gateway: a message over {MAX_MESSAGE} bytes"),
            ),
        );
    };
    if method != Method::POST {
        return proxy.forward(method, &headers, bytes).await;
    }
    let message = match read_client(&bytes) {
        Incoming::Message(message) => Some(message),
        Incoming::Pass => None,
        Incoming::Refuse(frame) => return json_response(StatusCode::BAD_REQUEST, &frame),
    };
    let name = message
        .as_ref()
        .and_then(|m| m.get("method"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = message.as_ref().and_then(|m| m.get("id")).cloned();
    match (name.as_deref(), id, message) {
        (Some("tools/call"), Some(id), Some(message)) => {
            proxy.tools_call(headers, bytes, id, message).await
        }
        // A tools/call without an id is never passed on: it would run unasked.
        (Some("tools/call"), None, _) => json_response(
            StatusCode::BAD_REQUEST,
            &error_frame(
                &Value::Null,
                INVALID_REQUEST,
                "Countersign gateway: a tools/call needs an id",
            ),
        ),
        (Some(name), Some(id), Some(message)) if name.starts_with("tasks/") => {
            // The gateway's own tasks are answered here; the server's go to the server.
            match proxy.calls.task_request(&message).await {
                Some(answer) => json_response(StatusCode::OK, &answer.frame(&id)),
                None => proxy.forward(method, &headers, bytes).await,
            }
        }
        (Some(name), Some(id), Some(message)) if let Some(kind) = Rewrite::of(name) => {
            if name == "initialize" {
                proxy.calls.initialize(&message);
            }
            proxy.rewritten(&headers, bytes, &id, kind).await
        }
        _ => proxy.forward(method, &headers, bytes).await,
    }
}

fn json_response(status: StatusCode, frame: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        frame.to_string(),
    )
        .into_response()
}

fn accepts_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The JSON-RPC frames of a server's answer: one JSON body, or the `data:` of each SSE event.
fn frames(content_type: &str, body: &[u8]) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        let text = String::from_utf8_lossy(body);
        text.replace("\r\n", "\n")
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                (!data.is_empty())
                    .then(|| serde_json::from_str(&data.join("\n")).ok())
                    .flatten()
            })
            .collect()
    } else {
        serde_json::from_slice(body).into_iter().collect()
    }
}

fn sse_event(frame: &Value) -> String {
    format!("event: message\ndata: {frame}\n\n")
}

impl HttpProxy {
    fn request(
        &self,
        method: Method,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, &self.upstream).body(body);
        for name in CARRIED {
            for value in headers.get_all(*name) {
                request = request.header(*name, value);
            }
        }
        request
    }

    /// Sends the client's request to the server unchanged and streams the answer back.
    async fn forward(
        &self,
        method: Method,
        headers: &HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        match self.request(method, headers, body.to_vec()).send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status().as_u16());
                for name in RETURNED {
                    if let Some(value) = answer.headers().get(*name)
                        && let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_bytes(value.as_bytes()),
                        )
                    {
                        response = response.header(n, v);
                    }
                }
                response
                    .body(Body::from_stream(answer.bytes_stream()))
                    .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
            }
            Err(e) => json_response(
                StatusCode::BAD_GATEWAY,
                &error_frame(
                    &Value::Null,
                    INVALID_REQUEST,
                    &format!("Countersign gateway: the server is unreachable: {e}"),
                ),
            ),
        }
    }

    /// A request whose answer the gateway changes (see [`Rewrite`]): the server's answer,
    /// changed.
    async fn rewritten(
        &self,
        headers: &HeaderMap,
        body: axum::body::Bytes,
        id: &Value,
        kind: Rewrite,
    ) -> Response {
        let answer = match self
            .request(Method::POST, headers, body.to_vec())
            .send()
            .await
        {
            Ok(a) => a,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    &error_frame(
                        id,
                        INVALID_REQUEST,
                        &format!("the server is unreachable: {e}"),
                    ),
                );
            }
        };
        let status = answer.status();
        let session = answer.headers().get("mcp-session-id").cloned();
        let content_type = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let Ok(bytes) = answer.bytes().await else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let mut frames = frames(&content_type, &bytes);
        for frame in &mut frames {
            if frame.get("id") == Some(id) {
                self.calls.rewrite(kind, frame);
            }
        }
        let (content_type, body) = if content_type.starts_with("text/event-stream") {
            (
                "text/event-stream",
                frames.iter().map(sse_event).collect::<String>(),
            )
        } else {
            let Some(frame) = frames.first() else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            ("application/json", frame.to_string())
        };
        let mut response = Response::builder()
            .status(status.as_u16())
            .header(header::CONTENT_TYPE, content_type);
        if let Some(session) = session
            && let Ok(v) = HeaderValue::from_bytes(session.as_bytes())
        {
            response = response.header("mcp-session-id", v);
        }
        response
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
    }

    /// `tools/call`, in a task of its own; answered as JSON, or as an event stream with progress
    /// when the client accepts one and asked for progress.
    async fn tools_call(
        self: Arc<Self>,
        headers: HeaderMap,
        bytes: axum::body::Bytes,
        id: Value,
        message: Value,
    ) -> Response {
        let session = headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let key = format!("{session} {}", id_key(&id));
        if !lock(&self.in_flight).insert(key.clone()) {
            return json_response(
                StatusCode::OK,
                &error_frame(
                    &id,
                    INVALID_REQUEST,
                    "Countersign gateway: a tools/call with this id is already in progress; it \
                     runs at most once",
                ),
            );
        }
        let stream =
            accepts_stream(&headers) && message.pointer("/params/_meta/progressToken").is_some();
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let task = {
            let proxy = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let via: Arc<dyn Transport> = Arc::new(Upstream {
                    proxy: proxy.clone(),
                    headers: headers.clone(),
                    progress: stream.then_some(tx),
                });
                let frames = match proxy.calls.call(via, &message).await {
                    Handled::Answer(answer) => vec![answer.frame(&id)],
                    // Allowed: the client's own request, to the server.
                    Handled::Forward => proxy.forward_frames(&headers, bytes.to_vec(), &id).await,
                };
                lock(&proxy.in_flight).remove(&key);
                frames
            })
        };
        drop(tx);
        if !stream {
            return match task.await {
                Ok(frames) => match frames.as_slice() {
                    [one] => json_response(StatusCode::OK, one),
                    many => (
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        many.iter().map(sse_event).collect::<String>(),
                    )
                        .into_response(),
                },
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            };
        }
        let (events, body) = mpsc::unbounded_channel::<Result<String, Infallible>>();
        tokio::spawn(async move {
            // Progress until the answer; the stream ends with it (a task the call became may
            // hold the progress sender longer).
            tokio::pin!(task);
            let frames = loop {
                tokio::select! {
                    Some(frame) = rx.recv() => {
                        let _ = events.send(Ok(sse_event(&frame)));
                    }
                    frames = &mut task => break frames.unwrap_or_default(),
                }
            };
            while let Ok(frame) = rx.try_recv() {
                let _ = events.send(Ok(sse_event(&frame)));
            }
            for frame in frames {
                let _ = events.send(Ok(sse_event(&frame)));
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(body));
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    }

    /// POSTs `body` to the server with the client's `headers` and reads every frame of the
    /// answer, within `limit`.
    async fn post_frames(
        &self,
        headers: &HeaderMap,
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<Result<Vec<Value>, reqwest::Error>, tokio::time::error::Elapsed> {
        tokio::time::timeout(limit, async {
            let answer = self.request(Method::POST, headers, body).send().await?;
            let content_type = answer
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = answer.bytes().await?;
            Ok(frames(&content_type, &bytes))
        })
        .await
    }

    /// Sends the client's allowed call to the server and returns every frame of its answer
    /// (the server's notifications first, its response last).
    async fn forward_frames(&self, headers: &HeaderMap, body: Vec<u8>, id: &Value) -> Vec<Value> {
        let limit = self.calls.pep.config().hold.run_timeout();
        match self.post_frames(headers, body, limit).await {
            Ok(Ok(frames)) if !frames.is_empty() => frames,
            Ok(Ok(_)) => vec![error_frame(
                id,
                INVALID_REQUEST,
                "the server answered nothing",
            )],
            Ok(Err(e)) => vec![error_frame(
                id,
                INVALID_REQUEST,
                &format!("the server is unreachable: {e}"),
            )],
            Err(_) => vec![error_frame(
                id,
                INVALID_REQUEST,
                &format!("the server did not answer within {} s", limit.as_secs()),
            )],
        }
    }
}

/// The server as one request of the client's reaches it: the client's session headers, and
/// its event stream for progress.
struct Upstream {
    proxy: Arc<HttpProxy>,
    headers: HeaderMap,
    progress: Option<mpsc::UnboundedSender<Value>>,
}

impl Transport for Upstream {
    fn ask<'a>(
        &'a self,
        method: &'static str,
        params: &'a RawValue,
        limit: Duration,
    ) -> Pending<'a, Result<Value, GatewayError>> {
        Box::pin(async move {
            let n = self.proxy.next_id.fetch_add(1, Ordering::Relaxed);
            let (id, frame) = own_request(&self.proxy.tag, n, method, params);
            let mut headers = self.headers.clone();
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            match self
                .proxy
                .post_frames(&headers, frame.into_bytes(), limit)
                .await
            {
                Ok(Ok(frames)) => frames
                    .into_iter()
                    .find(|f| f.get("id") == Some(&id))
                    .ok_or_else(|| {
                        GatewayError::Upstream("the server's answer has no response".into())
                    }),
                Ok(Err(e)) => Err(GatewayError::Upstream(format!(
                    "the server is unreachable or failed: {e}"
                ))),
                Err(_) => Err(GatewayError::Upstream(format!(
                    "the server did not answer within {} s",
                    limit.as_secs()
                ))),
            }
        })
    }

    fn notify(&self, frame: Value) {
        if let Some(progress) = &self.progress {
            let _ = progress.send(frame);
        }
    }
}
