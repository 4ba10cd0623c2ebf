//! `GET /v1/approver/stream`: Server-Sent Events with monotonically increasing ids.
//!
//! A client resumes with `Last-Event-ID`: the broker replays every stored event after it, then
//! follows live ones handed over by the instance's [`Hub`](crate::fanout::Hub), which reads each
//! event from storage once for every stream. The stream subscribes before reading the backlog
//! and skips live events at or below the last id it sent, so nothing falls between the two and
//! nothing is sent twice; a stream dropped by the hub for falling a whole buffer behind reads
//! what it missed from storage and subscribes again.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use countersign_protocol::api::ApproverEvent;
use futures_util::Stream;
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
    let heartbeat = Duration::from_secs(state.config.heartbeat_secs.max(1));
    tokio::spawn(follow(state, owner, after, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

async fn follow(
    state: Arc<AppState>,
    owner: String,
    mut sent: i64,
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
    loop {
        let mut live = state.hub.subscribe(&owner);
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
                Some(event) if event.id > sent => {
                    if !send(&tx, &event).await {
                        return;
                    }
                    sent = event.id;
                }
                Some(_) => {}
                // Dropped for falling behind: catch up from storage.
                None => break,
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
