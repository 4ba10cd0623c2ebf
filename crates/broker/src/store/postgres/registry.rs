//! Pairing codes and approvers, one row per device key and credential.

use countersign_protocol::registry::ApproverEntry;

use super::super::{PairOutcome, Registry, Result, UpdateOutcome};
use super::{PgConn, PgStore};

/// Writes an approver's entry with one row per device key and credential, and bumps the
/// registry version (so every instance reloads); false when a key or credential belongs to
/// another approver (the caller rolls back).
fn write_approver(tx: &mut PgConn, entry: &ApproverEntry, now: i64) -> Result<bool> {
    tx.execute(
        "INSERT INTO approvers (id, owner, entry, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET entry = excluded.entry, updated_at = excluded.updated_at",
        &[
            &entry.id,
            &entry.owner,
            &serde_json::to_string(entry)?,
            &now,
        ],
    )?;
    tx.execute(
        "DELETE FROM approver_keys WHERE approver = $1",
        &[&entry.id],
    )?;
    tx.execute(
        "DELETE FROM approver_credentials WHERE approver = $1",
        &[&entry.id],
    )?;
    for key in &entry.device_keys {
        let inserted = tx.execute(
            "INSERT INTO approver_keys (kid, approver) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&key.kid, &entry.id],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
    }
    for credential in &entry.credentials {
        let inserted = tx.execute(
            "INSERT INTO approver_credentials (id, approver) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&credential.id, &entry.id],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
    }
    bump_registry(tx)?;
    Ok(true)
}

fn bump_registry(tx: &mut PgConn) -> Result<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'registry_version'",
        &[],
    )?;
    Ok(())
}

impl Registry for PgStore {
    fn add_pairing_code(&self, code_hash: &str, owner: &str, expires_at: i64) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO pairing_codes (code_hash, owner, expires_at) VALUES ($1, $2, $3)",
            &[&code_hash, &owner, &expires_at],
        )?;
        Ok(())
    }

    fn pairing_code_valid(&self, code_hash: &str, now: i64) -> Result<bool> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT 1 FROM pairing_codes WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2",
                &[&code_hash, &now],
            )?
            .is_some())
    }

    fn pair(&self, code_hash: &str, entry: &ApproverEntry, now: i64) -> Result<PairOutcome> {
        self.with_tx_or_rollback(|tx| {
            // The update takes the code's row lock: of two instances pairing with one code,
            // the second finds it used.
            let used = tx.query_opt(
                "UPDATE pairing_codes SET used_at = $1
                 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING owner",
                &[&now, &code_hash],
            )?;
            let Some(row) = used else {
                return Ok((PairOutcome::CodeInvalid, false));
            };
            let mut entry = entry.clone();
            entry.owner = row.try_get(0)?;
            if !write_approver(tx, &entry, now)? {
                // Rolling back gives the code back too.
                return Ok((PairOutcome::Conflict, false));
            }
            Ok((PairOutcome::Paired(entry), true))
        })
    }

    fn update_approver(&self, entry: &ApproverEntry, now: i64) -> Result<UpdateOutcome> {
        self.with_tx_or_rollback(|tx| {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM approvers WHERE id = $1 FOR UPDATE",
                    &[&entry.id],
                )?
                .is_some();
            if !exists {
                return Ok((UpdateOutcome::NotFound, false));
            }
            if !write_approver(tx, entry, now)? {
                return Ok((UpdateOutcome::Conflict, false));
            }
            Ok((UpdateOutcome::Updated, true))
        })
    }

    fn remove_approver(&self, id: &str) -> Result<bool> {
        self.with_tx(|tx| {
            let removed = tx.execute("DELETE FROM approvers WHERE id = $1", &[&id])?;
            tx.execute("DELETE FROM approver_keys WHERE approver = $1", &[&id])?;
            tx.execute(
                "DELETE FROM approver_credentials WHERE approver = $1",
                &[&id],
            )?;
            if removed > 0 {
                bump_registry(tx)?;
            }
            Ok(removed > 0)
        })
    }

    fn approvers(&self) -> Result<Vec<ApproverEntry>> {
        let rows = self
            .conn()?
            .query("SELECT id, entry FROM approvers ORDER BY id", &[])?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: &str = row.try_get(0)?;
            // A row that does not parse is reported and skipped: it must not take the others
            // (or the broker) down with it.
            match serde_json::from_str(row.try_get(1)?) {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::error!(approver = %id, error = %e, "skipping an unreadable approver row");
                }
            }
        }
        Ok(out)
    }

    fn registry_version(&self) -> Result<i64> {
        Ok(self
            .conn()?
            .query_one("SELECT value FROM meta WHERE key = 'registry_version'", &[])?
            .try_get(0)?)
    }
}
