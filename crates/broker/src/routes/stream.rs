//! `GET /v1/approver/stream`: Server-Sent Events with monotonically increasing ids.
//!
//! A client resumes with `Last-Event-ID`: the broker replays every stored event after it, then
//! follows live ones handed over by the instance's [`Hub`](crate::fanout::Hub), which reads and
//! serialises each event once for every stream. The stream subscribes before reading the backlog
//! and skips live events at or below the last id it sent, so nothing falls between the two and
//! nothing is sent twice; a stream dropped by the hub for falling a whole buffer behind reads
//! what it missed from storage and subscribes again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use countersign_protocol::api::ApproverEvent;
use futures_util::Stream;

use crate::error::ApiResult;
use crate::fanout::{Frame, Subscription};
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
    let heartbeat = Duration::from_secs(state.config.heartbeat_secs.max(1));
    state.metrics.streams.fetch_add(1, Ordering::Relaxed);
    let follow = Follow {
        closing: state.closing.subscribe(),
        _guard: StreamGuard(state.clone()),
        state,
        owner: proof.owner,
        sent: after,
        greeted: false,
        live: None,
        backlog: VecDeque::new(),
        backlog_read: false,
    };
    // The response body itself reads the backlog and the hub: no task in between, and the
    // subscription goes with the connection.
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}

/// One stream's position: what it has sent, its subscription, the backlog it is reading.
struct Follow {
    state: Arc<AppState>,
    owner: String,
    /// The last event id sent.
    sent: i64,
    greeted: bool,
    live: Option<Subscription>,
    backlog: VecDeque<ApproverEvent>,
    /// The backlog after the subscription has been read to its end.
    backlog_read: bool,
    closing: tokio::sync::watch::Receiver<bool>,
    _guard: StreamGuard,
}

impl Follow {
    /// The next event to send; `None` ends the stream (the broker is stopping, or storage
    /// failed and the client reconnects with `Last-Event-ID`).
    async fn next(&mut self) -> Option<Event> {
        if !self.greeted {
            self.greeted = true;
            return Some(
                Event::default()
                    .retry(Duration::from_secs(2))
                    .comment("countersign"),
            );
        }
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if event.id > self.sent
                    && let Ok(frame) = Frame::of(&event)
                {
                    self.sent = event.id;
                    return Some(sse(&frame));
                }
                continue;
            }
            // Subscribe before reading the backlog: what commits after the read is dispatched
            // after the subscription.
            let live = match &mut self.live {
                Some(live) => live,
                None => {
                    self.backlog_read = false;
                    self.live.insert(self.state.hub.subscribe(&self.owner))
                }
            };
            if !self.backlog_read {
                let page = match self.state.store.events_after(&self.owner, self.sent, PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the event backlog");
                        return None;
                    }
                };
                self.backlog_read = page.len() < PAGE;
                self.backlog.extend(page);
                continue;
            }
            let received = tokio::select! {
                received = live.recv() => received,
                _ = self.closing.wait_for(|closed| *closed) => return None,
            };
            match received {
                Some(frame) if frame.id > self.sent => {
                    self.sent = frame.id;
                    return Some(sse(&frame));
                }
                Some(_) => {}
                // Dropped for falling behind: catch up from storage.
                None => self.live = None,
            }
        }
    }
}

fn sse(frame: &Frame) -> Event {
    Event::default()
        .id(frame.id.to_string())
        .event(&frame.kind)
        .data(&frame.data)
}

struct StreamGuard(Arc<AppState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.metrics.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
