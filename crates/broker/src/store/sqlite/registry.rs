//! Pairing codes and approvers, one row per device key and credential.

use countersign_protocol::registry::ApproverEntry;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::{PairOutcome, Registry, Result, UpdateOutcome};
use super::SqliteStore;

/// Bumps the registry version inside the transaction that changed an approver.
pub(super) fn bump_registry(tx: &Connection) -> Result<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'registry_version'",
        [],
    )?;
    Ok(())
}

/// Writes an approver's entry with one row per device key and credential; a key or credential
/// another approver holds fails the unique index, and the caller's transaction is dropped.
pub(super) fn write_approver(tx: &Connection, entry: &ApproverEntry, now: i64) -> Result<bool> {
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
pub(super) fn insert_unique(tx: &Connection, sql: &str, a: &str, b: &str) -> Result<bool> {
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

impl Registry for SqliteStore {
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
}
