//! [`Store`] on one SQLite file in WAL mode: migrations, requests with their events, grant ids,
//! sign counters, request-proof ids, idempotency keys and agent standing.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use countersign_protocol::PendingAction;
use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, EventKind, RequestView};
use countersign_protocol::registry::ApproverEntry;
use countersign_protocol::replay::{ConsumeError, ReplayStore, SignCounterStore};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use super::{
    AgentState, DecideOutcome, NewPending, Result, Store, StoreError, StoredDecision, StoredRequest,
};

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        agent TEXT NOT NULL,
        action_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        pending TEXT NOT NULL,
        merged INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        grant_token TEXT,
        grant_jti TEXT,
        grant_exp INTEGER,
        reason TEXT,
        decided_by TEXT,
        decided_at INTEGER,
        redeemed_at INTEGER
    );
    CREATE INDEX requests_owner_status ON requests(owner, status);
    CREATE INDEX requests_merge ON requests(agent, action_hash, status);
    CREATE INDEX requests_expiry ON requests(status, expires_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        body TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX events_owner ON events(owner, id);
    CREATE TABLE approvers (id TEXT PRIMARY KEY, owner TEXT NOT NULL, entry TEXT NOT NULL, updated_at INTEGER NOT NULL);
    CREATE TABLE pairing_codes (code_hash TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER);
    CREATE TABLE grant_ids (jti TEXT PRIMARY KEY, state TEXT NOT NULL, exp INTEGER NOT NULL);
    CREATE TABLE sign_counters (credential TEXT PRIMARY KEY, counter INTEGER NOT NULL);
    CREATE TABLE proof_ids (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);
    CREATE TABLE idempotency (approver TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (approver, key));
    CREATE TABLE agents (id TEXT PRIMARY KEY, suspended INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE denials (agent TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX denials_agent ON denials(agent, at);",
];

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock()?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

const REQUEST_COLUMNS: &str =
    "pending, status, merged, reason, decided_by, owner, agent, grant_token, grant_jti, grant_exp";

/// One `requests` row, as read by [`REQUEST_COLUMNS`].
struct Row {
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
}

fn read_request(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        pending: row.get(0)?,
        status: row.get(1)?,
        merged: row.get(2)?,
        reason: row.get(3)?,
        decided_by: row.get(4)?,
        owner: row.get(5)?,
        agent: row.get(6)?,
        grant: row.get(7)?,
        grant_jti: row.get(8)?,
        grant_exp: row.get(9)?,
    })
}

fn to_request(row: Row) -> Result<StoredRequest> {
    let pending: PendingAction = serde_json::from_str(&row.pending)?;
    let status: Status = serde_json::from_value(serde_json::Value::String(row.status))?;
    Ok(StoredRequest {
        view: RequestView {
            pending,
            status,
            merged: row.merged,
            reason: row.reason,
            decided_by: row.decided_by,
        },
        owner: row.owner,
        agent: row.agent,
        grant: row.grant,
        grant_jti: row.grant_jti,
        grant_exp: row.grant_exp,
    })
}

fn status_text(status: Status) -> Result<String> {
    match serde_json::to_value(status)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

fn load(tx: &Connection, id: &str) -> Result<Option<StoredRequest>> {
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
fn load_existing(tx: &Connection, id: &str) -> Result<StoredRequest> {
    load(tx, id)?.ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

fn append_event(
    tx: &Connection,
    owner: &str,
    kind: EventKind,
    request: Option<&StoredRequest>,
    agent: Option<&str>,
    detail: Option<&str>,
    now: i64,
) -> Result<ApproverEvent> {
    let mut event = ApproverEvent {
        id: 0,
        kind,
        request: request.map(|r| r.view.clone()),
        agent: agent.map(str::to_owned),
        detail: detail.map(str::to_owned),
    };
    tx.execute(
        "INSERT INTO events (owner, body, at) VALUES (?1, '', ?2)",
        params![owner, now],
    )?;
    event.id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE events SET body = ?1 WHERE id = ?2",
        params![serde_json::to_string(&event)?, event.id],
    )?;
    Ok(event)
}

fn set_status(tx: &Connection, id: &str, status: Status) -> Result<()> {
    tx.execute(
        "UPDATE requests SET status = ?1 WHERE id = ?2",
        params![status_text(status)?, id],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn hold(&self, new: &NewPending, now: i64) -> Result<(StoredRequest, ApproverEvent)> {
        self.with_tx(|tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM requests WHERE agent = ?1 AND action_hash = ?2 AND status = 'pending'
                     AND expires_at > ?3 ORDER BY created_at LIMIT 1",
                    params![new.agent, new.pending.action_hash.as_str(), now],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                tx.execute("UPDATE requests SET merged = merged + 1 WHERE id = ?1", [&id])?;
                let request = load_existing(tx, &id)?;
                let event = append_event(tx, &new.owner, EventKind::Merged, Some(&request), None, None, now)?;
                return Ok((request, event));
            }
            let p = &new.pending;
            tx.execute(
                "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
                params![
                    p.id,
                    new.owner,
                    new.agent,
                    p.action_hash.as_str(),
                    serde_json::to_string(p)?,
                    p.created_at.unix(),
                    p.expires_at.unix()
                ],
            )?;
            let request = load_existing(tx, &p.id)?;
            let event = append_event(tx, &new.owner, EventKind::Pending, Some(&request), None, None, now)?;
            Ok((request, event))
        })
    }

    fn request(&self, id: &str) -> Result<Option<StoredRequest>> {
        let conn = self.lock()?;
        load(&conn, id)
    }

    fn list(&self, owner: &str, status: Option<Status>) -> Result<Vec<RequestView>> {
        let conn = self.lock()?;
        let status = status.map(status_text).transpose()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE owner = ?1 AND (?2 IS NULL OR status = ?2)
             ORDER BY expires_at, id LIMIT 10000"
        ))?;
        let rows = stmt.query_map(params![owner, status], read_request)?;
        rows.map(|r| Ok(to_request(r?)?.view)).collect()
    }

    fn decide(
        &self,
        id: &str,
        owner: &str,
        approver: &str,
        decision: &StoredDecision,
        now: i64,
    ) -> Result<DecideOutcome> {
        self.with_tx(|tx| {
            let Some(current) = load(tx, id)? else { return Ok(DecideOutcome::NotFound) };
            if current.owner != owner {
                return Ok(DecideOutcome::NotFound);
            }
            if current.view.status != Status::Pending || current.view.pending.expires_at.unix() <= now {
                return Ok(DecideOutcome::AlreadyFinal(Box::new(current)));
            }
            let kind = match decision {
                StoredDecision::Approve { grant, jti, exp } => {
                    tx.execute(
                        "UPDATE requests SET status = 'approved', grant_token = ?1, grant_jti = ?2, grant_exp = ?3,
                         decided_by = ?4, decided_at = ?5 WHERE id = ?6",
                        params![grant, jti, exp, approver, now, id],
                    )?;
                    EventKind::Approved
                }
                StoredDecision::Deny { reason } => {
                    tx.execute(
                        "UPDATE requests SET status = 'denied', reason = ?1, decided_by = ?2, decided_at = ?3 WHERE id = ?4",
                        params![reason, approver, now, id],
                    )?;
                    EventKind::Denied
                }
            };
            let request = load_existing(tx, id)?;
            let event = append_event(tx, owner, kind, Some(&request), None, None, now)?;
            Ok(DecideOutcome::Recorded { request: Box::new(request), event: Box::new(event) })
        })
    }

    fn redeemed(&self, txn: &str, now: i64) -> Result<Option<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let changed = tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = ?1 WHERE id = ?2 AND status = 'approved'",
                params![now, txn],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let request = load_existing(tx, txn)?;
            let event = append_event(tx, &request.owner, EventKind::Redeemed, Some(&request), None, None, now)?;
            Ok(Some((request, event)))
        })
    }

    fn revoke(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let Some(current) = load(tx, id)? else { return Ok(None) };
            if current.owner != owner || current.view.status != Status::Approved {
                return Ok(None);
            }
            let (Some(jti), Some(exp)) = (&current.grant_jti, current.grant_exp) else { return Ok(None) };
            let inserted = tx.execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES (?1, 'revoked', ?2) ON CONFLICT DO NOTHING",
                params![jti, exp],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            set_status(tx, id, Status::Revoked)?;
            let request = load_existing(tx, id)?;
            let event = append_event(tx, owner, EventKind::Revoked, Some(&request), None, None, now)?;
            Ok(Some((request, event)))
        })
    }

    fn expire_due(&self, now: i64) -> Result<Vec<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM requests WHERE status = 'pending' AND expires_at <= ?1 LIMIT 1000",
                )?;
                let rows = stmt.query_map([now], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                set_status(tx, &id, Status::Expired)?;
                let request = load_existing(tx, &id)?;
                let event = append_event(tx, &request.owner, EventKind::Expired, Some(&request), None, None, now)?;
                out.push((request, event));
            }
            // Forget what can no longer matter.
            tx.execute("DELETE FROM proof_ids WHERE exp < ?1", [now])?;
            tx.execute("DELETE FROM grant_ids WHERE exp < ?1", [now - 300])?;
            Ok(out)
        })
    }

    fn events_after(&self, owner: &str, after: i64, limit: usize) -> Result<Vec<ApproverEvent>> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare("SELECT body FROM events WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?;
        let rows = stmt.query_map(
            params![owner, after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get::<_, String>(0),
        )?;
        rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
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

    fn add_pairing_code(&self, code_hash: &str, owner: &str, expires_at: i64) -> Result<()> {
        self.lock()?.execute(
            "INSERT INTO pairing_codes (code_hash, owner, expires_at) VALUES (?1, ?2, ?3)",
            params![code_hash, owner, expires_at],
        )?;
        Ok(())
    }

    fn use_pairing_code(&self, code_hash: &str, now: i64) -> Result<Option<String>> {
        self.with_tx(|tx| {
            let changed = tx.execute(
                "UPDATE pairing_codes SET used_at = ?1 WHERE code_hash = ?2 AND used_at IS NULL AND expires_at > ?1",
                params![now, code_hash],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            Ok(Some(tx.query_row(
                "SELECT owner FROM pairing_codes WHERE code_hash = ?1",
                [code_hash],
                |r| r.get(0),
            )?))
        })
    }

    fn save_approver(&self, entry: &ApproverEntry, now: i64) -> Result<()> {
        self.lock()?.execute(
            "INSERT INTO approvers (id, owner, entry, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET entry = excluded.entry, updated_at = excluded.updated_at",
            params![entry.id, entry.owner, serde_json::to_string(entry)?, now],
        )?;
        Ok(())
    }

    fn approvers(&self) -> Result<Vec<ApproverEntry>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare("SELECT entry FROM approvers ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
    }

    fn fresh_proof(&self, jti: &str, expires_at: i64, _now: i64) -> Result<bool> {
        let changed = self.lock()?.execute(
            "INSERT INTO proof_ids (jti, exp) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![jti, expires_at],
        )?;
        Ok(changed == 1)
    }

    fn idempotent(&self, approver: &str, key: &str) -> Result<Option<(u16, String)>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT status, body FROM idempotency WHERE approver = ?1 AND key = ?2",
                params![approver, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn save_idempotent(
        &self,
        approver: &str,
        key: &str,
        status: u16,
        body: &str,
        now: i64,
    ) -> Result<()> {
        self.lock()?.execute(
            "INSERT INTO idempotency (approver, key, status, body, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![approver, key, status, body, now],
        )?;
        Ok(())
    }

    fn agent_state(&self, agent: &str) -> Result<AgentState> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT suspended, quarantined FROM agents WHERE id = ?1",
                [agent],
                |r| {
                    Ok(AgentState {
                        suspended: r.get(0)?,
                        quarantined: r.get(1)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    fn set_suspended(&self, agent: &str, suspended: bool) -> Result<()> {
        self.lock()?.execute(
            "INSERT INTO agents (id, suspended) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET suspended = excluded.suspended",
            params![agent, suspended],
        )?;
        Ok(())
    }

    fn release_agent(&self, agent: &str) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE agents SET suspended = 0, quarantined = 0 WHERE id = ?1",
                [agent],
            )?;
            tx.execute("DELETE FROM denials WHERE agent = ?1", [agent])?;
            Ok(())
        })
    }

    fn record_denial(&self, agent: &str, now: i64, window: i64, threshold: u32) -> Result<bool> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO denials (agent, at) VALUES (?1, ?2)",
                params![agent, now],
            )?;
            tx.execute(
                "DELETE FROM denials WHERE agent = ?1 AND at <= ?2",
                params![agent, now - window],
            )?;
            let count: u32 = tx.query_row(
                "SELECT COUNT(*) FROM denials WHERE agent = ?1",
                [agent],
                |r| r.get(0),
            )?;
            if count < threshold {
                return Ok(false);
            }
            let already: bool = tx
                .query_row(
                    "SELECT quarantined FROM agents WHERE id = ?1",
                    [agent],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            tx.execute(
                "INSERT INTO agents (id, quarantined) VALUES (?1, 1)
                 ON CONFLICT (id) DO UPDATE SET quarantined = 1",
                [agent],
            )?;
            Ok(!already)
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> ConsumeError {
    ConsumeError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Records `jti` in `state` unless it is already recorded; then says which state it has.
    fn mark_grant(&self, jti: &str, expires_at: i64, state: &str) -> Result<(), ConsumeError> {
        let conn = self.lock().map_err(unavailable)?;
        let inserted = conn
            .execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![jti, state, expires_at],
            )
            .map_err(unavailable)?;
        if inserted == 1 {
            return Ok(());
        }
        let existing: String = conn
            .query_row("SELECT state FROM grant_ids WHERE jti = ?1", [jti], |r| {
                r.get(0)
            })
            .map_err(unavailable)?;
        Err(if existing == "revoked" {
            ConsumeError::Revoked
        } else {
            ConsumeError::AlreadyConsumed
        })
    }
}

impl ReplayStore for SqliteStore {
    fn consume(&self, jti: &str, expires_at: i64, _now: i64) -> Result<(), ConsumeError> {
        self.mark_grant(jti, expires_at, "consumed")
    }

    fn revoke(&self, jti: &str, expires_at: i64, _now: i64) -> Result<(), ConsumeError> {
        self.mark_grant(jti, expires_at, "revoked")
    }

    fn is_revoked(&self, jti: &str) -> Result<bool, ConsumeError> {
        let conn = self.lock().map_err(unavailable)?;
        let state: Option<String> = conn
            .query_row("SELECT state FROM grant_ids WHERE jti = ?1", [jti], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)?;
        Ok(state.as_deref() == Some("revoked"))
    }
}

impl SignCounterStore for SqliteStore {
    fn last(&self, credential_id: &str) -> Result<u32, ConsumeError> {
        let conn = self.lock().map_err(unavailable)?;
        let counter: Option<u32> = conn
            .query_row(
                "SELECT counter FROM sign_counters WHERE credential = ?1",
                [credential_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        Ok(counter.unwrap_or(0))
    }

    fn advance(&self, credential_id: &str, counter: u32) -> Result<u32, ConsumeError> {
        let mut conn = self.lock().map_err(unavailable)?;
        let tx = conn.transaction().map_err(unavailable)?;
        let previous: u32 = tx
            .query_row(
                "SELECT counter FROM sign_counters WHERE credential = ?1",
                [credential_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO sign_counters (credential, counter) VALUES (?1, ?2)
             ON CONFLICT (credential) DO UPDATE SET counter = MAX(counter, excluded.counter)",
            params![credential_id, counter],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(previous)
    }
}
