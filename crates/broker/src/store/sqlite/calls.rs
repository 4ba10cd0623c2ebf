//! Request-proof ids and idempotency keys.

use rusqlite::{OptionalExtension as _, params};

use super::super::{Calls, Result};
use super::SqliteStore;

impl Calls for SqliteStore {
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
}
