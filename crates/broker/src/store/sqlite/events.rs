//! The events table: each state change's event, and the approvers' streams read back.

use countersign_protocol::api::{ApproverEvent, EventKind};
use rusqlite::{Connection, params};

use super::super::{Events, Result, StoredRequest, kind_text};
use super::SqliteStore;
use super::rows::{PREFIXED_COLUMNS, read_request_at, to_request};

pub(super) fn append_event(
    tx: &Connection,
    owner: &str,
    kind: EventKind,
    request: Option<&StoredRequest>,
    agent: Option<&str>,
    detail: Option<&str>,
    now: i64,
) -> Result<ApproverEvent> {
    tx.execute(
        "INSERT INTO events (owner, kind, request, agent, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            owner,
            kind_text(kind)?,
            request.map(|r| r.view.pending.id.as_str()),
            agent,
            detail,
            now
        ],
    )?;
    Ok(ApproverEvent {
        id: tx.last_insert_rowid(),
        kind,
        request: request.map(|r| r.view.clone()),
        agent: agent.map(str::to_owned),
        detail: detail.map(str::to_owned),
    })
}

/// The columns [`read_event`] reads: the event, then its request as it stands now.
const EVENT_COLUMNS: &str = "e.id, e.kind, e.agent, e.detail, r.id IS NOT NULL, e.owner";

/// An event row (with [`PREFIXED_COLUMNS`] after [`EVENT_COLUMNS`]) and its owner.
fn read_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, RawEvent)> {
    let request = if r.get::<_, bool>(4)? {
        Some(read_request_at(r, 6)?)
    } else {
        None
    };
    Ok((
        r.get(5)?,
        RawEvent {
            id: r.get(0)?,
            kind: r.get(1)?,
            agent: r.get(2)?,
            detail: r.get(3)?,
            request,
        },
    ))
}

struct RawEvent {
    id: i64,
    kind: String,
    agent: Option<String>,
    detail: Option<String>,
    request: Option<super::rows::Row>,
}

impl RawEvent {
    fn into_event(self) -> Result<ApproverEvent> {
        Ok(ApproverEvent {
            id: self.id,
            kind: serde_json::from_value(serde_json::Value::String(self.kind))?,
            // The request as it stands now: a replayed event never shows a stale state.
            request: self.request.map(to_request).transpose()?.map(|r| r.view),
            agent: self.agent,
            detail: self.detail,
        })
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Events for SqliteStore {
    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, {PREFIXED_COLUMNS}
             FROM events e LEFT JOIN requests r ON r.id = e.request
             WHERE e.owner = ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![owner, after, limit_param(limit)], read_event)?;
        rows.map(|row| row?.1.into_event()).collect()
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, ApproverEvent)>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, {PREFIXED_COLUMNS}
             FROM events e LEFT JOIN requests r ON r.id = e.request
             WHERE e.id > ?1 ORDER BY e.id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after, limit_param(limit)], read_event)?;
        rows.map(|row| {
            let (owner, raw) = row?;
            Ok((owner, raw.into_event()?))
        })
        .collect()
    }

    fn last_event_id_overall(&self) -> Result<i64> {
        let conn = self.lock()?;
        Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    fn last_event_id(&self, owner: &str) -> Result<i64> {
        let conn = self.lock()?;
        Ok(conn.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE owner = ?1",
            [owner],
            |r| r.get(0),
        )?)
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
}
