//! The MCP proxy over stdio: newline-delimited JSON-RPC between the host (our stdin and
//! stdout) and the server (a child process we start).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Calls, Handled, INVALID_REQUEST, Incoming, MAX_MESSAGE, Pending, Rewrite, Transport,
    error_frame, id_key, lock, own_request, read_client,
};
use crate::error::GatewayError;
use crate::pep::Pep;

/// The proxy's state.
struct Proxy {
    calls: Arc<Calls>,
    to_client: mpsc::UnboundedSender<String>,
    to_server: mpsc::UnboundedSender<String>,
    /// Answers to requests the gateway itself sent upstream, by id.
    own: std::sync::Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The client's requests in flight whose answers the gateway changes (see [`Rewrite`]).
    rewrite: std::sync::Mutex<HashMap<String, Rewrite>>,
    /// The client's `tools/call` ids in flight: a second request with one of them is refused.
    in_flight: std::sync::Mutex<HashSet<String>>,
    next_id: AtomicU64,
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
        calls: Arc::new(Calls::new(pep)),
        to_client,
        to_server,
        own: Default::default(),
        rewrite: Default::default(),
        in_flight: Default::default(),
        next_id: AtomicU64::new(1),
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
            lock(&proxy.own).clear();
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
                    Err(e) => proxy.send_client(&error_frame(
                        &Value::Null,
                        INVALID_REQUEST,
                        &format!("Countersign gateway: {e}"),
                    )),
                }
            }
        })
    };
    let status = tokio::select! {
        // The host closed our stdin: the session is over. Held calls never run.
        _ = from_client => None,
        _ = from_server => child.wait().await.ok(),
    };
    if status.is_some() {
        // The server is gone: calls that were running on it fail now, and report so; give
        // them a moment to answer (calls still waiting for the owner are abandoned: they
        // never run).
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while proxy.calls.running() > 0 && tokio::time::Instant::now() < until {
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

impl Transport for Proxy {
    fn ask<'a>(
        &'a self,
        method: &'static str,
        params: &'a RawValue,
        limit: Duration,
    ) -> Pending<'a, Result<Value, GatewayError>> {
        Box::pin(async move {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (id, frame) = own_request(&self.tag, n, method, params);
            let (tx, rx) = oneshot::channel();
            lock(&self.own).insert(id_key(&id), tx);
            self.to_server
                .send(frame)
                .map_err(|_| GatewayError::Upstream("the server is gone".into()))?;
            match tokio::time::timeout(limit, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(GatewayError::Upstream(
                    "the server exited before it answered".into(),
                )),
                Err(_) => {
                    lock(&self.own).remove(&id_key(&id));
                    Err(GatewayError::Upstream(format!(
                        "the server did not answer within {} s",
                        limit.as_secs()
                    )))
                }
            }
        })
    }

    fn notify(&self, frame: Value) {
        self.send_client(&frame);
    }
}

impl Proxy {
    fn send_client(&self, frame: &Value) {
        let _ = self.to_client.send(frame.to_string());
    }

    fn on_client_message(self: Arc<Self>, line: String) {
        let message = match read_client(line.as_bytes()) {
            Incoming::Message(message) => message,
            Incoming::Pass => {
                let _ = self.to_server.send(line);
                return;
            }
            Incoming::Refuse(frame) => {
                self.send_client(&frame);
                return;
            }
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").cloned();
        match (method, id) {
            (Some("tools/call"), Some(id)) => {
                if !lock(&self.in_flight).insert(id_key(&id)) {
                    self.send_client(&error_frame(
                        &id,
                        INVALID_REQUEST,
                        "Countersign gateway: a tools/call with this id is already in progress; \
                         it runs at most once",
                    ));
                    return;
                }
                tokio::spawn(async move {
                    let via: Arc<dyn Transport> = self.clone();
                    match self.calls.call(via, &message).await {
                        // The server answers it; its id is free again when the answer passes.
                        Handled::Forward => {
                            let _ = self.to_server.send(line);
                        }
                        Handled::Answer(answer) => {
                            lock(&self.in_flight).remove(&id_key(&id));
                            self.send_client(&answer.frame(&id));
                        }
                    }
                });
            }
            // A tools/call without an id is never passed on: it would run unasked.
            (Some("tools/call"), None) => {
                tracing::warn!("a tools/call notification (no id) was dropped");
            }
            (Some(method), Some(id)) if method.starts_with("tasks/") => {
                // The gateway's own tasks are answered here; the server's go to the server.
                tokio::spawn(async move {
                    match self.calls.task_request(&message).await {
                        Some(answer) => self.send_client(&answer.frame(&id)),
                        None => {
                            let _ = self.to_server.send(line);
                        }
                    }
                });
            }
            (Some(method), Some(id)) => {
                if let Some(kind) = Rewrite::of(method) {
                    lock(&self.rewrite).insert(id_key(&id), kind);
                }
                if method == "initialize" {
                    self.calls.initialize(&message);
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
            let _ = self.to_client.send(line);
            return;
        };
        let is_response = message.get("method").is_none()
            && (message.get("result").is_some() || message.get("error").is_some());
        let Some(id) = message.get("id").cloned().filter(|_| is_response) else {
            let _ = self.to_client.send(line);
            return;
        };
        let key = id_key(&id);
        if let Some(waiter) = lock(&self.own).remove(&key) {
            let _ = waiter.send(message);
            return;
        }
        // An allowed call's answer passes through; its id is free again.
        lock(&self.in_flight).remove(&key);
        let rewrite = lock(&self.rewrite).remove(&key);
        if let Some(kind) = rewrite {
            self.calls.rewrite(kind, &mut message);
            self.send_client(&message);
            return;
        }
        let _ = self.to_client.send(line);
    }
}
