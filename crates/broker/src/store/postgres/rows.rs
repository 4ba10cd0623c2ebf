//! Reading and writing `requests` rows.

use countersign_protocol::PendingAction;
use countersign_protocol::action::Status;
use countersign_protocol::api::{ReportedOutcome, RequestView};
use tokio_postgres::Row;

use super::super::{Result, StoredRequest};
use super::PgConn;

pub(super) const REQUEST_COLUMNS: &str = "pending, status, merged, reason, decided_by, owner, agent, grant_token, grant_jti, grant_exp, \
     outcome, outcome_detail, bounded_jti";

/// [`REQUEST_COLUMNS`] with the `requests` table's alias, for joins.
pub(super) const PREFIXED_COLUMNS: &str = "r.pending, r.status, r.merged, r.reason, r.decided_by, r.owner, r.agent, \
     r.grant_token, r.grant_jti, r.grant_exp, r.outcome, r.outcome_detail, r.bounded_jti";

/// The request in the columns of [`REQUEST_COLUMNS`] starting at `at`.
pub(super) fn read_request_at(row: &Row, at: usize) -> Result<StoredRequest> {
    let pending: PendingAction = serde_json::from_str(row.try_get(at)?)?;
    let status: Status = serde_json::from_value(serde_json::Value::String(row.try_get(at + 1)?))?;
    let merged: i64 = row.try_get(at + 2)?;
    let outcome = row
        .try_get::<_, Option<String>>(at + 10)?
        .map(|o| serde_json::from_value(serde_json::Value::String(o)))
        .transpose()?
        .map(|outcome| -> Result<ReportedOutcome> {
            Ok(ReportedOutcome {
                outcome,
                detail: row.try_get(at + 11)?,
            })
        })
        .transpose()?;
    Ok(StoredRequest {
        view: RequestView {
            pending,
            status,
            merged: u32::try_from(merged).unwrap_or(u32::MAX),
            reason: row.try_get(at + 3)?,
            decided_by: row.try_get(at + 4)?,
            outcome,
            bounded_grant: row.try_get(at + 12)?,
        },
        owner: row.try_get(at + 5)?,
        agent: row.try_get(at + 6)?,
        grant: row.try_get(at + 7)?,
        grant_jti: row.try_get(at + 8)?,
        grant_exp: row.try_get(at + 9)?,
    })
}

pub(super) fn pending_count(conn: &mut PgConn, owner: &str, now: i64) -> Result<u32> {
    let count: i64 = conn
        .query_one(
            "SELECT COUNT(*) FROM requests WHERE owner = $1 AND status = 'pending' AND expires_at > $2",
            &[&owner, &now],
        )?
        .get(0);
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// The request `id`; with `lock`, its row stays locked until the transaction ends.
pub(super) fn load(conn: &mut PgConn, id: &str, lock: bool) -> Result<Option<StoredRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    conn.query_opt(&sql, &[&id])?
        .map(|row| read_request_at(&row, 0))
        .transpose()
}

/// A request the transaction just wrote or updated (so it exists).
pub(super) fn load_existing(conn: &mut PgConn, id: &str) -> Result<StoredRequest> {
    load(conn, id, false)?.ok_or_else(|| {
        super::super::StoreError::Inconsistent(format!("request {id} vanished mid-transaction"))
    })
}

pub(super) fn set_status(conn: &mut PgConn, id: &str, status: Status) -> Result<()> {
    conn.execute(
        "UPDATE requests SET status = $1 WHERE id = $2",
        &[&crate::store::status_text(status)?, &id],
    )?;
    Ok(())
}
