//! The events table: each state change's event, and the approvers' streams read back.

use countersign_protocol::api::{ApproverEvent, EventKind};
use rusqlite::{Connection, params};

use super::super::{Events, Result, StoredRequest};
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

pub(super) fn kind_text(kind: EventKind) -> Result<String> {
    match serde_json::to_value(kind)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

impl Events for SqliteStore {
    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT e.id, e.kind, e.agent, e.detail, r.id IS NOT NULL, {PREFIXED_COLUMNS}
             FROM events e LEFT JOIN requests r ON r.id = e.request
             WHERE e.owner = ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![owner, after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                let request = if r.get::<_, bool>(4)? {
                    Some(read_request_at(r, 5)?)
                } else {
                    None
                };
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    request,
                ))
            },
        )?;
        let mut events = Vec::new();
        for row in rows {
            let (id, kind, agent, detail, request) = row?;
            events.push(ApproverEvent {
                id,
                kind: serde_json::from_value(serde_json::Value::String(kind))?,
                // The request as it stands now: a replayed event never shows a stale state.
                request: request.map(to_request).transpose()?.map(|r| r.view),
                agent,
                detail,
            });
        }
        Ok(events)
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
