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
    AgentState, DecideOutcome, HoldOutcome, NewPending, Page, PairOutcome, Purged, RedeemOutcome,
    Redemption, Result, Retention, Store, StoreError, StoredDecision, StoredRequest, UpdateOutcome,
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
    // Approvers' device keys and credentials, one row each: no two approvers can share one, and
    // a bad entry can never be stored next to a good one. A version that every change bumps,
    // so instances reload their registry. Events reference their request instead of copying
    // it (an agent's 250 KiB item merged 30 times is stored once, not 31 times). Listing newest
    // first by owner.
    "CREATE TABLE approver_keys (kid TEXT PRIMARY KEY, approver TEXT NOT NULL);
    CREATE TABLE approver_credentials (id TEXT PRIMARY KEY, approver TEXT NOT NULL);
    INSERT OR IGNORE INTO approver_keys (kid, approver)
        SELECT k.value ->> '$.kid', a.id FROM approvers a, json_each(a.entry, '$.device_keys') k;
    INSERT OR IGNORE INTO approver_credentials (id, approver)
        SELECT c.value ->> '$.id', a.id FROM approvers a, json_each(a.entry, '$.credentials') c;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 1);
    CREATE TABLE events_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        request TEXT,
        agent TEXT,
        detail TEXT,
        at INTEGER NOT NULL
    );
    INSERT INTO events_v2 (id, owner, kind, request, agent, detail, at)
        SELECT id, owner, body ->> '$.kind', body ->> '$.request.pending.id', body ->> '$.agent',
               body ->> '$.detail', at FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_owner ON events(owner, id);
    CREATE INDEX events_request ON events(request);
    CREATE INDEX events_at ON events(at);
    CREATE INDEX requests_owner ON requests(owner);
    CREATE INDEX requests_decided ON requests(status, decided_at);
    CREATE INDEX idempotency_at ON idempotency(at);",
];

/// The statuses an item ends in.
const FINAL_STATUSES: &str = "('denied', 'expired', 'cancelled', 'redeemed', 'revoked')";

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

/// [`REQUEST_COLUMNS`] with the `requests` table's alias, for joins.
const PREFIXED_COLUMNS: &str = "r.pending, r.status, r.merged, r.reason, r.decided_by, r.owner, r.agent, \
     r.grant_token, r.grant_jti, r.grant_exp";

fn read_request(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    read_request_at(row, 0)
}

/// A [`Row`] from the columns of [`REQUEST_COLUMNS`] starting at `at`.
fn read_request_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Row> {
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
    })
}

fn pending_count(conn: &Connection, owner: &str, now: i64) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM requests WHERE owner = ?1 AND status = 'pending' AND expires_at > ?2",
        params![owner, now],
        |r| r.get(0),
    )?)
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

fn kind_text(kind: EventKind) -> Result<String> {
    match serde_json::to_value(kind)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// Bumps the registry version inside the transaction that changed an approver.
fn bump_registry(tx: &Connection) -> Result<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'registry_version'",
        [],
    )?;
    Ok(())
}

/// Writes an approver's entry with one row per device key and credential; a key or credential
/// another approver holds fails the unique index, and the caller's transaction is dropped.
fn write_approver(tx: &Connection, entry: &ApproverEntry, now: i64) -> Result<bool> {
    tx.execute(
        "INSERT INTO approvers (id, owner, entry, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET entry = excluded.entry, updated_at = excluded.updated_at",
        params![entry.id, entry.owner, serde_json::to_string(entry)?, now],
    )?;
    tx.execute("DELETE FROM approver_keys WHERE approver = ?1", [&entry.id])?;
    tx.execute(
        "DELETE FROM approver_credentials WHERE approver = ?1",
        [&entry.id],
    )?;
    for key in &entry.device_keys {
        if !insert_unique(
            tx,
            "INSERT INTO approver_keys (kid, approver) VALUES (?1, ?2)",
            &key.kid,
            &entry.id,
        )? {
            return Ok(false);
        }
    }
    for credential in &entry.credentials {
        if !insert_unique(
            tx,
            "INSERT INTO approver_credentials (id, approver) VALUES (?1, ?2)",
            &credential.id,
            &entry.id,
        )? {
            return Ok(false);
        }
    }
    bump_registry(tx)?;
    Ok(true)
}

/// Runs an insert; false when a unique constraint refused it.
fn insert_unique(tx: &Connection, sql: &str, a: &str, b: &str) -> Result<bool> {
    match tx.execute(sql, params![a, b]) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn set_status(tx: &Connection, id: &str, status: Status) -> Result<()> {
    tx.execute(
        "UPDATE requests SET status = ?1 WHERE id = ?2",
        params![status_text(status)?, id],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn hold(&self, new: &NewPending, max_pending: u32, now: i64) -> Result<HoldOutcome> {
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
                return Ok(HoldOutcome::Held(Box::new(request), Box::new(event)));
            }
            if pending_count(tx, &new.owner, now)? >= max_pending {
                return Ok(HoldOutcome::OverCap);
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
            Ok(HoldOutcome::Held(Box::new(request), Box::new(event)))
        })
    }

    fn request(&self, id: &str) -> Result<Option<StoredRequest>> {
        let conn = self.lock()?;
        load(&conn, id)
    }

    fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page> {
        let conn = self.lock()?;
        let status = status.map(status_text).transpose()?;
        let limit = limit.clamp(1, countersign_protocol::api::MAX_PAGE);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT rowid, {REQUEST_COLUMNS} FROM requests
             WHERE owner = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR rowid < ?3)
             ORDER BY rowid DESC LIMIT ?4"
        ))?;
        // One more than asked for tells whether there is a next page.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![owner, status, before, fetch], |r| {
            Ok((r.get::<_, i64>(0)?, read_request_at(r, 1)?))
        })?;
        let mut requests = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for row in rows {
            let (rowid, row) = row?;
            if requests.len() == limit {
                more = true;
                break;
            }
            requests.push(to_request(row)?.view);
            last = Some(rowid);
        }
        Ok(Page {
            requests,
            next: if more { last } else { None },
        })
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

    fn redeem(&self, grant: &Redemption<'_>, now: i64) -> Result<RedeemOutcome> {
        self.with_tx(|tx| {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM grant_ids WHERE jti = ?1",
                    [grant.jti],
                    |r| r.get(0),
                )
                .optional()?;
            match state.as_deref() {
                Some("revoked") => return Ok(RedeemOutcome::Revoked),
                Some(_) => return Ok(RedeemOutcome::Replayed),
                None => {}
            }
            let Some(item) = load(tx, grant.txn)? else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            let accepted = item.view.status == Status::Approved
                && item.grant_jti.as_deref() == Some(grant.jti)
                && item.owner == grant.sub
                && item.view.pending.audience == grant.aud;
            if !accepted {
                return Ok(RedeemOutcome::NotAccepted);
            }
            tx.execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES (?1, 'consumed', ?2)",
                params![grant.jti, grant.exp],
            )?;
            tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = ?1 WHERE id = ?2",
                params![now, grant.txn],
            )?;
            let request = load_existing(tx, grant.txn)?;
            let event = append_event(
                tx,
                &request.owner,
                EventKind::Redeemed,
                Some(&request),
                None,
                None,
                now,
            )?;
            Ok(RedeemOutcome::Redeemed(Box::new(request), Box::new(event)))
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

    fn add_pairing_code(&self, code_hash: &str, owner: &str, expires_at: i64) -> Result<()> {
        self.lock()?.execute(
            "INSERT INTO pairing_codes (code_hash, owner, expires_at) VALUES (?1, ?2, ?3)",
            params![code_hash, owner, expires_at],
        )?;
        Ok(())
    }

    fn pairing_code_valid(&self, code_hash: &str, now: i64) -> Result<bool> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT 1 FROM pairing_codes WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![code_hash, now],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false))
    }

    fn pair(&self, code_hash: &str, entry: &ApproverEntry, now: i64) -> Result<PairOutcome> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE pairing_codes SET used_at = ?1 WHERE code_hash = ?2 AND used_at IS NULL AND expires_at > ?1",
            params![now, code_hash],
        )?;
        if changed == 0 {
            return Ok(PairOutcome::CodeInvalid);
        }
        let owner: String = tx.query_row(
            "SELECT owner FROM pairing_codes WHERE code_hash = ?1",
            [code_hash],
            |r| r.get(0),
        )?;
        let mut entry = entry.clone();
        entry.owner = owner;
        if !write_approver(&tx, &entry, now)? {
            // Dropping the transaction rolls back the code's use too.
            return Ok(PairOutcome::Conflict);
        }
        tx.commit()?;
        Ok(PairOutcome::Paired(entry))
    }

    fn update_approver(&self, entry: &ApproverEntry, now: i64) -> Result<UpdateOutcome> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM approvers WHERE id = ?1", [&entry.id], |_| {
                Ok(true)
            })
            .optional()?
            .unwrap_or(false);
        if !exists {
            return Ok(UpdateOutcome::NotFound);
        }
        if !write_approver(&tx, entry, now)? {
            return Ok(UpdateOutcome::Conflict);
        }
        tx.commit()?;
        Ok(UpdateOutcome::Updated)
    }

    fn remove_approver(&self, id: &str) -> Result<bool> {
        self.with_tx(|tx| {
            let removed = tx.execute("DELETE FROM approvers WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM approver_keys WHERE approver = ?1", [id])?;
            tx.execute("DELETE FROM approver_credentials WHERE approver = ?1", [id])?;
            if removed > 0 {
                bump_registry(tx)?;
            }
            Ok(removed > 0)
        })
    }

    fn approvers(&self) -> Result<Vec<ApproverEntry>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare("SELECT id, entry FROM approvers ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, entry) = row?;
            // A row that does not parse is reported and skipped: it must not take the others
            // (or the broker) down with it.
            match serde_json::from_str(&entry) {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::error!(approver = %id, error = %e, "skipping an unreadable approver row");
                }
            }
        }
        Ok(out)
    }

    fn registry_version(&self) -> Result<i64> {
        Ok(self.lock()?.query_row(
            "SELECT value FROM meta WHERE key = 'registry_version'",
            [],
            |r| r.get(0),
        )?)
    }

    fn pending_count(&self, owner: &str, now: i64) -> Result<u32> {
        let conn = self.lock()?;
        pending_count(&conn, owner, now)
    }

    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged> {
        self.with_tx(|tx| {
            let before = now.saturating_sub(retention.items_secs);
            let gone: Vec<String> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT id FROM requests WHERE
                       (status IN {FINAL_STATUSES} AND COALESCE(redeemed_at, decided_at, expires_at) < ?1)
                       OR (status = 'approved' AND grant_exp < ?1)
                     LIMIT 5000"
                ))?;
                let rows = stmt.query_map([before], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut purged = Purged::default();
            for id in &gone {
                tx.execute("DELETE FROM events WHERE request = ?1", [id])?;
                purged.items += tx.execute("DELETE FROM requests WHERE id = ?1", [id])?;
            }
            purged.events = tx.execute(
                "DELETE FROM events WHERE at < ?1",
                [now.saturating_sub(retention.events_secs)],
            )?;
            purged.idempotency_keys = tx.execute(
                "DELETE FROM idempotency WHERE at < ?1",
                [now.saturating_sub(retention.idempotency_secs)],
            )?;
            tx.execute("DELETE FROM pairing_codes WHERE expires_at < ?1", [now - 86_400])?;
            Ok(purged)
        })
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
