//! `GET /v1/approver/stream`: Server-Sent Events with monotonically increasing ids.
//!
//! A client resumes with `Last-Event-ID`: the broker replays every stored event after it, then
//! follows live ones. It subscribes before reading the backlog, and a live notification only
//! triggers another read of storage after the last id sent, so nothing falls between the two and
//! nothing is sent twice; a client that falls behind the live channel is caught up the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use countersign_protocol::api::ApproverEvent;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiResult;
use crate::http::ApproverCall;
use crate::state::AppState;

/// Events sent per backlog page.
const PAGE: usize = 500;

pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    call: ApproverCall,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (proof, headers) = (call.proof, call.headers);
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let owner = proof.owner;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    let live = state.events.subscribe();
    let heartbeat = Duration::from_secs(state.config.heartbeat_secs.max(1));
    tokio::spawn(follow(state, owner, after, live, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

async fn follow(
    state: Arc<AppState>,
    owner: String,
    mut sent: i64,
    mut live: tokio::sync::broadcast::Receiver<(String, ApproverEvent)>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    state.metrics.streams.fetch_add(1, Ordering::Relaxed);
    let _guard = StreamGuard(state.clone());
    let mut closing = state.closing.subscribe();
    if tx
        .send(Ok(Event::default()
            .retry(Duration::from_secs(2))
            .comment("countersign")))
        .await
        .is_err()
    {
        return;
    }
    'outer: loop {
        // Backlog from storage.
        loop {
            let page = match state.store.events_after(&owner, sent, PAGE) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "reading the event backlog");
                    return;
                }
            };
            let full = page.len() == PAGE;
            for event in page {
                if !send(&tx, &event).await {
                    return;
                }
                sent = event.id;
            }
            if !full {
                break;
            }
        }
        // Live events, until the connection or the broker goes away.
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                _ = closing.wait_for(|closed| *closed) => return,
                // The client went away: the task ends with its connection, not at the next
                // event for its owner.
                () = tx.closed() => return,
            };
            match received {
                Ok((to, event)) => {
                    // SQLite serialises writers, so ids commit in order: reading storage after
                    // this notification yields it and anything before it, once.
                    if to == owner && event.id > sent {
                        continue 'outer;
                    }
                }
                Err(RecvError::Lagged(_)) => continue 'outer,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<Result<Event, Infallible>>, event: &ApproverEvent) -> bool {
    let Ok(data) = serde_json::to_string(event) else {
        return true;
    };
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "event".into());
    tx.send(Ok(Event::default()
        .id(event.id.to_string())
        .event(kind)
        .data(data)))
        .await
        .is_ok()
}

struct StreamGuard(Arc<AppState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.metrics.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
