//! Fan-out: one reader of the events table per broker instance hands each new event to every
//! open stream of its owner, in memory.
//!
//! The events table is the truth and the event id is the stream's id. The [`Hub`] keeps a
//! cursor (the last id it dispatched) and reads what committed after it whenever it is woken: by
//! a write on this instance, by another instance's notification (PostgreSQL `NOTIFY`), or by a
//! periodic catch-up that finds what a lost notification did not announce. Event ids commit in
//! the order they are assigned (SQLite serialises writers; the PostgreSQL store takes each id
//! from a counter row locked until its transaction commits), so reading `id > cursor` never
//! skips an event that commits later with a smaller id.
//!
//! The hub serialises each event once, as a [`Frame`] every stream of its owner sends as it is.
//! Each stream has a bounded buffer. A stream that falls behind by a whole buffer is dropped
//! from the hub; it then reads what it missed from storage and subscribes again, so a slow
//! client costs its own reads, never memory without bound or the other streams' latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_protocol::api::ApproverEvent;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::store::Store;

/// Events held for one stream before it is dropped and catches up from storage.
pub const STREAM_BUFFER: usize = 1024;
/// Events read from storage per dispatch round.
const BATCH: usize = 1000;

/// The instance's event dispatcher.
#[derive(Debug)]
pub struct Hub {
    subscribers: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_subscriber: AtomicU64,
    wake: Notify,
    /// The last event id dispatched.
    cursor: AtomicI64,
    /// Ids of requests whose status changed (wakes long-polls).
    changes: broadcast::Sender<String>,
    rounds: AtomicU64,
    dispatched: AtomicU64,
    dropped: AtomicU64,
}

/// An event as a stream sends it: its id, its kind and its JSON, made once per event.
#[derive(Debug)]
pub struct Frame {
    pub id: i64,
    pub kind: String,
    pub data: String,
}

impl Frame {
    pub fn of(event: &ApproverEvent) -> serde_json::Result<Self> {
        let kind = match serde_json::to_value(event.kind)? {
            serde_json::Value::String(kind) => kind,
            other => other.to_string(),
        };
        Ok(Self {
            id: event.id,
            kind,
            data: serde_json::to_string(event)?,
        })
    }
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Frame>>,
}

/// One stream's subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    owner: String,
    id: u64,
    rx: mpsc::Receiver<Arc<Frame>>,
}

impl Subscription {
    /// The next event for this owner, or `None` when the stream fell a whole buffer behind
    /// (and was dropped): the caller reads the rest from storage and subscribes again.
    pub async fn recv(&mut self) -> Option<Arc<Frame>> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.owner, self.id);
    }
}

impl Hub {
    /// A hub whose cursor starts at `last_event_id` (what exists before it starts is read by
    /// streams from storage, never dispatched).
    pub fn new(last_event_id: i64) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self {
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(0),
            wake: Notify::new(),
            cursor: AtomicI64::new(last_event_id),
            changes,
            rounds: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Subscribes to `owner`'s events. Subscribe before reading the backlog: an event that
    /// commits after the read is dispatched after the subscription.
    pub fn subscribe(self: &Arc<Self>, owner: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(owner.to_owned())
            .or_default()
            .push(Subscriber { id, tx });
        Subscription {
            hub: self.clone(),
            owner: owner.to_owned(),
            id,
            rx,
        }
    }

    /// Ids of requests whose status changed, as they are dispatched.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Says that events were written (here, or on another instance): the hub reads them soon.
    /// Wakes coalesce: many writes while a round runs cost one more read.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many streams are subscribed.
    pub fn subscribers(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// The last event id dispatched.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Reads and dispatches until woken for the last time (the task is aborted with the
    /// broker). A failed read is retried; nothing past the cursor is lost meanwhile.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, catch_up: Duration) {
        loop {
            // A wake that arrives while a round runs leaves a permit: the next round starts at
            // once and reads what that write committed.
            let _ = tokio::time::timeout(catch_up, self.wake.notified()).await;
            if let Err(e) = self.dispatch_committed(store.as_ref()) {
                tracing::warn!(error = %e, "reading new events failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.wake();
            }
        }
    }

    /// One round: everything committed after the cursor, in id order, to its owner's streams.
    pub fn dispatch_committed(&self, store: &dyn Store) -> crate::store::Result<usize> {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let mut total = 0;
        loop {
            let batch = store.events_since(self.cursor(), BATCH)?;
            let full = batch.len() == BATCH;
            for (owner, event) in batch {
                let id = event.id;
                if let Some(request) = &event.request {
                    let _ = self.changes.send(request.pending.id.clone());
                }
                match Frame::of(&event) {
                    Ok(frame) => self.dispatch(&owner, Arc::new(frame)),
                    // Cannot happen for the events the broker writes; were it to, the streams
                    // would still find the event in their backlog on their next reconnect.
                    Err(e) => tracing::error!(id, error = %e, "serialising an event"),
                }
                self.cursor.store(id, Ordering::Release);
                total += 1;
            }
            self.dispatched.fetch_add(total as u64, Ordering::Relaxed);
            if !full {
                return Ok(total);
            }
        }
    }

    fn dispatch(&self, owner: &str, event: Arc<Frame>) {
        let mut subscribers = self.lock();
        let Some(streams) = subscribers.get_mut(owner) else {
            return;
        };
        // A full buffer drops the stream (it catches up from storage); a closed one is gone.
        streams.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if streams.is_empty() {
            subscribers.remove(owner);
        }
    }

    /// Its counters, in the Prometheus text format.
    pub fn render(&self) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP countersign_fanout_rounds_total Reads of newly committed events.\n\
             # TYPE countersign_fanout_rounds_total counter\n\
             countersign_fanout_rounds_total {}\n\
             # HELP countersign_fanout_events_total Events handed to streams, each read once.\n\
             # TYPE countersign_fanout_events_total counter\n\
             countersign_fanout_events_total {}\n\
             # HELP countersign_fanout_lagging_total Streams dropped a whole buffer behind (they \
             caught up from storage).\n\
             # TYPE countersign_fanout_lagging_total counter\n\
             countersign_fanout_lagging_total {}\n",
            c(&self.rounds),
            c(&self.dispatched),
            c(&self.dropped)
        )
    }

    fn remove(&self, owner: &str, id: u64) {
        let mut subscribers = self.lock();
        if let Some(streams) = subscribers.get_mut(owner) {
            streams.retain(|s| s.id != id);
            if streams.is_empty() {
                subscribers.remove(owner);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Events as _, SqliteStore};
    use countersign_protocol::api::EventKind;

    fn write(store: &SqliteStore, owner: &str, n: usize) {
        for i in 0..n {
            store
                .agent_event(owner, "agent", EventKind::AgentSuspended, &i.to_string(), 0)
                .unwrap();
        }
    }

    /// A stream that stops reading is dropped once a whole buffer behind: the hub never holds
    /// more than a buffer for it, the others keep theirs, and what it received is in order.
    #[tokio::test]
    async fn a_stream_a_buffer_behind_is_dropped_and_the_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        let hub = Arc::new(Hub::new(store.last_event_id_overall().unwrap()));
        let mut slow = hub.subscribe("alice");
        let mut other = hub.subscribe("bob");
        write(&store, "alice", STREAM_BUFFER + 10);
        write(&store, "bob", 3);
        assert_eq!(
            hub.dispatch_committed(&store).unwrap(),
            STREAM_BUFFER + 13,
            "each event read once"
        );
        assert_eq!(hub.subscribers(), 1, "only the slow stream is gone");
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        let mut previous = 0;
        for _ in 0..STREAM_BUFFER {
            let event = slow.recv().await.unwrap();
            assert!(event.id > previous);
            previous = event.id;
        }
        // Then the end: the stream reads the rest from the store after `previous`.
        assert!(slow.recv().await.is_none());
        assert_eq!(
            store.events_after("alice", previous, 100).unwrap().len(),
            10,
            "nothing it missed is lost"
        );
        for _ in 0..3 {
            let frame = other.recv().await.unwrap();
            let event: ApproverEvent = serde_json::from_str(&frame.data).unwrap();
            assert_eq!(
                (event.id, frame.kind.as_str()),
                (frame.id, "agent_suspended")
            );
        }
        // The next round starts after the cursor: nothing is dispatched twice.
        assert_eq!(hub.dispatch_committed(&store).unwrap(), 0);
        assert_eq!(hub.cursor(), store.last_event_id_overall().unwrap());
    }
}
