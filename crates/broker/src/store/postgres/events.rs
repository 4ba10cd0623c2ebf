//! The events table, the ids it hands out in commit order, and the listener that hears of
//! other instances' events.

use std::sync::Arc;
use std::time::Duration;

use countersign_protocol::api::{ApproverEvent, EventKind};
use futures_util::StreamExt as _;
use tokio_postgres::{AsyncMessage, Row};

use super::super::{Events, Result, StoredRequest, kind_text};
use super::rows::{PREFIXED_COLUMNS, read_request_at};
use super::{CHANNEL, PgConn, PgStore};

/// Appends an event in the caller's transaction. Its id comes from the `event_seq` row, which
/// stays locked until that transaction ends: the next id is handed out only after this one
/// committed (or rolled back, giving it back), so ids commit in order and without gaps. The
/// notification carrying the id is delivered to every listener at commit.
pub(super) fn append_event(
    tx: &mut PgConn,
    owner: &str,
    kind: EventKind,
    request: Option<&StoredRequest>,
    agent: Option<&str>,
    detail: Option<&str>,
    now: i64,
) -> Result<ApproverEvent> {
    let row = tx.query_one(
        "WITH next AS (UPDATE event_seq SET last = last + 1 RETURNING last),
              added AS (INSERT INTO events (id, owner, kind, request, agent, detail, at)
                        SELECT last, $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::BIGINT
                        FROM next RETURNING id)
         SELECT id, pg_notify($7::TEXT, id::TEXT)::TEXT FROM added",
        &[
            &owner,
            &kind_text(kind)?,
            &request.map(|r| r.view.pending.id.as_str()),
            &agent,
            &detail,
            &now,
            &CHANNEL,
        ],
    )?;
    Ok(ApproverEvent {
        id: row.try_get(0)?,
        kind,
        request: request.map(|r| r.view.clone()),
        agent: agent.map(str::to_owned),
        detail: detail.map(str::to_owned),
    })
}

/// The columns [`read_event`] reads: the event, then its request as it stands now.
const EVENT_COLUMNS: &str = "e.id, e.kind, e.agent, e.detail, r.id IS NOT NULL, e.owner";

/// An event row (with [`PREFIXED_COLUMNS`] after [`EVENT_COLUMNS`]) and its owner.
fn read_event(row: &Row) -> Result<(String, ApproverEvent)> {
    let request = if row.try_get::<_, bool>(4)? {
        // The request as it stands now: a replayed event never shows a stale state.
        Some(read_request_at(row, 6)?.view)
    } else {
        None
    };
    let kind: String = row.try_get(1)?;
    Ok((
        row.try_get(5)?,
        ApproverEvent {
            id: row.try_get(0)?,
            kind: serde_json::from_value(serde_json::Value::String(kind))?,
            request,
            agent: row.try_get(2)?,
            detail: row.try_get(3)?,
        },
    ))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Events for PgStore {
    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>> {
        self.conn()?
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS}, {PREFIXED_COLUMNS}
                     FROM events e LEFT JOIN requests r ON r.id = e.request
                     WHERE e.owner = $1 AND e.id > $2 ORDER BY e.id LIMIT $3"
                ),
                &[&owner, &after, &limit_param(limit)],
            )?
            .iter()
            .map(|row| Ok(read_event(row)?.1))
            .collect()
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, ApproverEvent)>> {
        self.conn()?
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS}, {PREFIXED_COLUMNS}
                     FROM events e LEFT JOIN requests r ON r.id = e.request
                     WHERE e.id > $1 ORDER BY e.id LIMIT $2"
                ),
                &[&after, &limit_param(limit)],
            )?
            .iter()
            .map(read_event)
            .collect()
    }

    fn last_event_id(&self, owner: &str) -> Result<i64> {
        Ok(self
            .conn()?
            .query_one(
                "SELECT COALESCE(MAX(id), 0)::BIGINT FROM events WHERE owner = $1",
                &[&owner],
            )?
            .try_get(0)?)
    }

    fn last_event_id_overall(&self) -> Result<i64> {
        // Every id up to the counter has committed or is being committed; the events table's
        // maximum is what is visible.
        Ok(self
            .conn()?
            .query_one("SELECT COALESCE(MAX(id), 0)::BIGINT FROM events", &[])?
            .try_get(0)?)
    }

    fn agent_event(
        &self,
        owner: &str,
        agent: &str,
        kind: EventKind,
        detail: &str,
        now: i64,
    ) -> Result<ApproverEvent> {
        self.with_tx(|tx| append_event(tx, owner, kind, None, Some(agent), Some(detail), now))
    }

    fn watch(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.listen(wake);
    }
}

/// Pause between attempts to bring the listener back.
const RELISTEN: Duration = Duration::from_millis(500);

/// Holds a connection that listens on [`CHANNEL`] for as long as the store lives: `wake` for
/// every notification, and once after each (re)connection, since notifications sent while the
/// listener was down are lost and the reader must look for itself.
pub(super) async fn listen(target: super::target::Target, wake: Arc<dyn Fn() + Send + Sync>) {
    loop {
        match target.connect().await {
            Ok((client, mut connection)) => {
                let on_message = wake.clone();
                let messages = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => on_message(),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the event listener's connection failed");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        tracing::debug!("listening for other instances' events");
                        wake();
                        let _ = messages.await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN failed");
                        messages.abort();
                    }
                }
                drop(client);
            }
            Err(e) => tracing::warn!(
                error = %super::described(&e),
                "the event listener cannot connect; retrying"
            ),
        }
        tokio::time::sleep(RELISTEN).await;
    }
}
