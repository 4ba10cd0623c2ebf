//! Consumed grant ids and sign counters, for the protocol crate's verifier.

use countersign_protocol::replay::{ConsumeError, ReplayStore, SignCounterStore};
use rusqlite::{OptionalExtension as _, params};

use super::super::Result;
use super::SqliteStore;

pub(super) fn unavailable(e: impl std::fmt::Display) -> ConsumeError {
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
