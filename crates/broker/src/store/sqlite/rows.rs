//! Reading and writing `requests` rows.

use countersign_protocol::PendingAction;
use countersign_protocol::action::Status;
use countersign_protocol::api::{ReportedOutcome, RequestView};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::{Result, StoreError, StoredRequest, status_text};

pub(super) const REQUEST_COLUMNS: &str = "pending, status, merged, reason, decided_by, owner, agent, grant_token, grant_jti, grant_exp, \
     outcome, outcome_detail, bounded_jti";

/// One `requests` row, as read by [`REQUEST_COLUMNS`].
pub(super) struct Row {
    pending: String,
    status: String,
    merged: u32,
    reason: Option<String>,
    decided_by: Option<String>,
    owner: String,
    agent: String,
    grant: Option<String>,
    grant_jti: Option<String>,
    grant_exp: Option<i64>,
    outcome: Option<String>,
    outcome_detail: Option<String>,
    bounded_jti: Option<String>,
}

/// [`REQUEST_COLUMNS`] with the `requests` table's alias, for joins.
pub(super) const PREFIXED_COLUMNS: &str = "r.pending, r.status, r.merged, r.reason, r.decided_by, r.owner, r.agent, \
     r.grant_token, r.grant_jti, r.grant_exp, r.outcome, r.outcome_detail, r.bounded_jti";

pub(super) fn read_request(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    read_request_at(row, 0)
}

/// A [`Row`] from the columns of [`REQUEST_COLUMNS`] starting at `at`.
pub(super) fn read_request_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Row> {
    Ok(Row {
        pending: row.get(at)?,
        status: row.get(at + 1)?,
        merged: row.get(at + 2)?,
        reason: row.get(at + 3)?,
        decided_by: row.get(at + 4)?,
        owner: row.get(at + 5)?,
        agent: row.get(at + 6)?,
        grant: row.get(at + 7)?,
        grant_jti: row.get(at + 8)?,
        grant_exp: row.get(at + 9)?,
        outcome: row.get(at + 10)?,
        outcome_detail: row.get(at + 11)?,
        bounded_jti: row.get(at + 12)?,
    })
}

pub(super) fn pending_count(conn: &Connection, owner: &str, now: i64) -> Result<u32> {
    Ok(conn.query_row(
        // Named: without statistics SQLite would take the expiry index and read every pending row.
        "SELECT COUNT(*) FROM requests INDEXED BY requests_owner_pending
         WHERE owner = ?1 AND status = 'pending' AND expires_at > ?2",
        params![owner, now],
        |r| r.get(0),
    )?)
}

pub(super) fn to_request(row: Row) -> Result<StoredRequest> {
    let pending: PendingAction = serde_json::from_str(&row.pending)?;
    let status: Status = serde_json::from_value(serde_json::Value::String(row.status))?;
    let outcome = row
        .outcome
        .map(|o| serde_json::from_value(serde_json::Value::String(o)))
        .transpose()?
        .map(|outcome| ReportedOutcome {
            outcome,
            detail: row.outcome_detail,
        });
    Ok(StoredRequest {
        view: RequestView {
            pending,
            status,
            merged: row.merged,
            reason: row.reason,
            decided_by: row.decided_by,
            outcome,
            bounded_grant: row.bounded_jti,
        },
        owner: row.owner,
        agent: row.agent,
        grant: row.grant,
        grant_jti: row.grant_jti,
        grant_exp: row.grant_exp,
    })
}

pub(super) fn load(tx: &Connection, id: &str) -> Result<Option<StoredRequest>> {
    let raw = tx
        .query_row(
            &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"),
            [id],
            read_request,
        )
        .optional()?;
    raw.map(to_request).transpose()
}

/// A request the transaction just wrote or updated (so it exists).
pub(super) fn load_existing(tx: &Connection, id: &str) -> Result<StoredRequest> {
    load(tx, id)?.ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

pub(super) fn set_status(tx: &Connection, id: &str, status: Status) -> Result<()> {
    tx.execute(
        "UPDATE requests SET status = ?1 WHERE id = ?2",
        params![status_text(status)?, id],
    )?;
    Ok(())
}
