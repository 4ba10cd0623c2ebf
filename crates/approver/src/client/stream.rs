//! The event stream: opening it, following it with reconnection and backoff, and reading
//! each event strictly.

use std::time::Duration;

use countersign_protocol::api::{ApproverEvent, EventKind};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use countersign_protocol::proof::PROOF_HEADER;

use super::{
    BrokerClient, Listing, MAX_PAGE_BYTES, Unreadable, http, parse_strict, read_view, status_code,
};
use crate::error::{Error, Result};

/// What the follower delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The pending listing after a (re)connection: the owner's pending requests as the broker
    /// sees them now. Items known here but not listed are asked for one by one (see
    /// `Engine::reconcile`).
    Reconciled(Listing),
    Event(Box<ApproverEvent>),
    /// A streamed item this app will not take, with why.
    Unreadable(Unreadable),
    /// The connection dropped; the follower retries after this long.
    Disconnected {
        retry_in: Duration,
        reason: String,
    },
}

impl BrokerClient {
    /// Opens the event stream after `last_event_id`; events arrive on the channel until the
    /// connection ends (then the channel closes with the error, if any).
    pub async fn stream(&self, last_event_id: i64) -> Result<mpsc::Receiver<Result<Streamed>>> {
        let path = "/v1/approver/stream";
        let url = format!("{}{path}", self.base);
        let proof = self.proof("GET", &url, b"");
        let response = self
            .http
            .get(&url)
            .header(PROOF_HEADER, proof)
            .header("last-event-id", last_event_id.to_string())
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(Error::Broker {
                status: response.status().as_u16(),
                code: status_code(response.status()),
                message: "the stream was refused".into(),
                body: response.text().await.unwrap_or_default(),
            });
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            loop {
                // The connection closes as soon as nobody listens (heartbeats send nothing on).
                let item = tokio::select! {
                    item = events.next() => item,
                    () = tx.closed() => break,
                };
                let Some(item) = item else { break };
                let message = match item {
                    Ok(event) if event.data.is_empty() => continue,
                    Ok(event) if event.data.len() > MAX_PAGE_BYTES => {
                        Ok(Streamed::Unreadable(Unreadable {
                            item: String::new(),
                            reason: format!(
                                "an event of {} bytes, over the limit",
                                event.data.len()
                            ),
                        }))
                    }
                    Ok(event) => read_event(&event.data),
                    Err(e) => Err(Error::Http(e.to_string())),
                };
                let stop = message.is_err();
                if tx.send(message).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Follows the broker for good: reconcile with the listing, then stream from the listing's
    /// event id; on any failure wait (capped exponential backoff with full jitter) and start
    /// over. Ends when the receiver of `out` is dropped.
    pub async fn follow(&self, out: mpsc::Sender<Delivery>) {
        let mut attempt: u32 = 0;
        loop {
            let mut healthy = false;
            let reason = match self.follow_once(&out, &mut healthy).await {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            // Backoff starts over only after a connection that worked, so a broker (or proxy)
            // that accepts and drops at once is not hammered.
            if healthy {
                attempt = 0;
            }
            let retry_in = backoff(attempt);
            attempt = attempt.saturating_add(1);
            if out
                .send(Delivery::Disconnected { retry_in, reason })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(retry_in).await;
        }
    }

    /// One connection. `Ok` only when the receiver is gone. `healthy` is set once an event
    /// arrived or the stream stayed open for [`HEALTHY_AFTER`].
    async fn follow_once(&self, out: &mpsc::Sender<Delivery>, healthy: &mut bool) -> Result<()> {
        let listing = self.pending().await?;
        let mut events = self.stream(listing.last_event_id).await?;
        let opened = tokio::time::Instant::now();
        if out.send(Delivery::Reconciled(listing)).await.is_err() {
            return Ok(());
        }
        while let Some(event) = events.recv().await {
            *healthy |= opened.elapsed() >= HEALTHY_AFTER;
            let delivery = match event? {
                Streamed::Event(event) => Delivery::Event(event),
                Streamed::Unreadable(unreadable) => Delivery::Unreadable(unreadable),
            };
            *healthy = true;
            if out.send(delivery).await.is_err() {
                return Ok(());
            }
        }
        *healthy |= opened.elapsed() >= HEALTHY_AFTER;
        Err(Error::Http("the event stream ended".into()))
    }
}

/// Follows every client at once (see [`BrokerClient::follow`]); deliveries arrive tagged with
/// their broker's base URL. Must be called inside a Tokio runtime; the followers stop when the
/// receiver is dropped.
pub fn follow_all(clients: Vec<BrokerClient>) -> mpsc::Receiver<(String, Delivery)> {
    let (tx, rx) = mpsc::channel(256);
    for client in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            let base = client.base().to_owned();
            let (inner_tx, mut inner_rx) = mpsc::channel(64);
            let follower = tokio::spawn(async move { client.follow(inner_tx).await });
            loop {
                tokio::select! {
                    delivery = inner_rx.recv() => {
                        let Some(delivery) = delivery else { break };
                        if tx.send((base.clone(), delivery)).await.is_err() {
                            break;
                        }
                    }
                    // The receiver is gone: the connection goes now, not at the next event.
                    () = tx.closed() => break,
                }
            }
            follower.abort();
        });
    }
    rx
}

/// One message of the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Streamed {
    Event(Box<ApproverEvent>),
    /// An event this app will not take (its item is unreadable, or of a kind it does not know).
    Unreadable(Unreadable),
}

/// An event as sent, its item read separately.
#[derive(serde::Deserialize)]
struct RawEvent {
    id: i64,
    kind: String,
    #[serde(default)]
    request: Option<serde_json::Value>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

fn read_event(data: &str) -> Result<Streamed> {
    let raw: RawEvent = parse_strict(data.as_bytes())?;
    let request = match raw.request {
        Some(value) => match read_view(value) {
            Ok(view) => Some(view),
            Err(unreadable) => return Ok(Streamed::Unreadable(unreadable)),
        },
        None => None,
    };
    let Ok(kind) = serde_json::from_value::<EventKind>(serde_json::Value::String(raw.kind.clone()))
    else {
        return Ok(Streamed::Unreadable(Unreadable {
            item: request.map(|r| r.pending.id).unwrap_or_default(),
            reason: format!("an event of a kind this app does not know ({:?})", raw.kind),
        }));
    };
    Ok(Streamed::Event(Box::new(ApproverEvent {
        id: raw.id,
        kind,
        request,
        agent: raw.agent,
        detail: raw.detail,
    })))
}

/// How long a stream must have stayed open for the backoff to start over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Capped exponential backoff with full jitter: uniform in [0, min(30 s, 250 ms × 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    use rand_core::RngCore as _;
    let cap = Duration::from_secs(30).as_millis() as u64;
    let ceiling = 250u64.saturating_mul(1u64 << attempt.min(16)).min(cap);
    Duration::from_millis(rand_core::OsRng.next_u64() % (ceiling + 1))
}
