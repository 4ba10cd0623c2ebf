//! Agents' standing, request-proof ids, idempotency keys, consumed grant ids and sign
//! counters: each a single statement, or a transaction under a row or advisory lock, so every
//! instance sees one answer.

use countersign_protocol::replay::{ConsumeError, ReplayStore, SignCounterStore};

use crate::config::RateLimit;

use super::super::{AgentState, Agents, Calls, Limits, Result, StoreError};
use super::PgStore;

impl Agents for PgStore {
    fn agent_state(&self, agent: &str) -> Result<AgentState> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT suspended, quarantined FROM agents WHERE id = $1",
                &[&agent],
            )?
            .map(|r| -> Result<AgentState> {
                Ok(AgentState {
                    suspended: r.try_get(0)?,
                    quarantined: r.try_get(1)?,
                })
            })
            .transpose()?
            .unwrap_or_default())
    }

    fn set_suspended(&self, agent: &str, suspended: bool) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO agents (id, suspended) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET suspended = excluded.suspended",
            &[&agent, &suspended],
        )?;
        Ok(())
    }

    fn release_agent(&self, agent: &str) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE agents SET suspended = FALSE, quarantined = FALSE WHERE id = $1",
                &[&agent],
            )?;
            tx.execute("DELETE FROM denials WHERE agent = $1", &[&agent])?;
            Ok(())
        })
    }

    fn record_denial(&self, agent: &str, now: i64, window: i64, threshold: u32) -> Result<bool> {
        self.with_tx(|tx| {
            // Denials reaching any instance count together; the lock makes "quarantined now"
            // true for exactly one of them.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('agent:' || $1, 0))",
                &[&agent],
            )?;
            tx.execute(
                "INSERT INTO denials (agent, at) VALUES ($1, $2)",
                &[&agent, &now],
            )?;
            tx.execute(
                "DELETE FROM denials WHERE agent = $1 AND at <= $2",
                &[&agent, &(now - window)],
            )?;
            let count: i64 = tx
                .query_one("SELECT COUNT(*) FROM denials WHERE agent = $1", &[&agent])?
                .try_get(0)?;
            if count < i64::from(threshold) {
                return Ok(false);
            }
            let already = tx
                .query_opt("SELECT quarantined FROM agents WHERE id = $1", &[&agent])?
                .map(|r| r.try_get::<_, bool>(0))
                .transpose()?
                .unwrap_or(false);
            tx.execute(
                "INSERT INTO agents (id, quarantined) VALUES ($1, TRUE)
                 ON CONFLICT (id) DO UPDATE SET quarantined = TRUE",
                &[&agent],
            )?;
            Ok(!already)
        })
    }
}

impl Calls for PgStore {
    fn fresh_proof(&self, jti: &str, expires_at: i64, _now: i64) -> Result<bool> {
        let inserted = self.conn()?.execute(
            "INSERT INTO proof_ids (jti, exp) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&jti, &expires_at],
        )?;
        Ok(inserted == 1)
    }

    fn idempotent(&self, approver: &str, key: &str) -> Result<Option<(u16, String)>> {
        self.conn()?
            .query_opt(
                "SELECT status, body FROM idempotency WHERE approver = $1 AND key = $2",
                &[&approver, &key],
            )?
            .map(|r| {
                let status: i32 = r.try_get(0)?;
                Ok((u16::try_from(status).unwrap_or(500), r.try_get(1)?))
            })
            .transpose()
    }

    fn save_idempotent(
        &self,
        approver: &str,
        key: &str,
        status: u16,
        body: &str,
        now: i64,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO idempotency (approver, key, status, body, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&approver, &key, &i32::from(status), &body, &now],
        )?;
        Ok(())
    }
}

fn unavailable(e: StoreError) -> ConsumeError {
    ConsumeError::Unavailable(e.to_string())
}

impl PgStore {
    /// Records `jti` in `state` unless it is already recorded; then says which state it has.
    fn mark_grant(&self, jti: &str, expires_at: i64, state: &str) -> Result<(), ConsumeError> {
        let mut conn = self.conn().map_err(unavailable)?;
        let row = conn
            .query_one(
                "WITH added AS (
                    INSERT INTO grant_ids (jti, state, exp) VALUES ($1, $2, $3)
                    ON CONFLICT DO NOTHING RETURNING state)
                 SELECT (SELECT state FROM added), (SELECT state FROM grant_ids WHERE jti = $1)",
                &[&jti, &state, &expires_at],
            )
            .map_err(unavailable)?;
        let added: Option<String> = row.get(0);
        if added.is_some() {
            return Ok(());
        }
        let existing: Option<String> = row.get(1);
        Err(if existing.as_deref() == Some("revoked") {
            ConsumeError::Revoked
        } else {
            ConsumeError::AlreadyConsumed
        })
    }
}

impl ReplayStore for PgStore {
    fn consume(&self, jti: &str, expires_at: i64, _now: i64) -> Result<(), ConsumeError> {
        self.mark_grant(jti, expires_at, "consumed")
    }

    fn revoke(&self, jti: &str, expires_at: i64, _now: i64) -> Result<(), ConsumeError> {
        self.mark_grant(jti, expires_at, "revoked")
    }

    fn is_revoked(&self, jti: &str) -> Result<bool, ConsumeError> {
        let state = self
            .conn()
            .map_err(unavailable)?
            .query_opt("SELECT state FROM grant_ids WHERE jti = $1", &[&jti])
            .map_err(unavailable)?
            .map(|r| r.get::<_, String>(0));
        Ok(state.as_deref() == Some("revoked"))
    }
}

impl SignCounterStore for PgStore {
    fn advance(&self, credential_id: &str, counter: u32) -> Result<u32, ConsumeError> {
        self.with_tx(|tx| {
            // One assertion per credential at a time across instances: the previous counter
            // each one sees is the one the last committed.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('credential:' || $1, 0))",
                &[&credential_id],
            )?;
            let previous: i64 = tx
                .query_opt(
                    "SELECT counter FROM sign_counters WHERE credential = $1",
                    &[&credential_id],
                )?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(0);
            tx.execute(
                "INSERT INTO sign_counters (credential, counter) VALUES ($1, $2)
                 ON CONFLICT (credential) DO UPDATE SET counter = GREATEST(sign_counters.counter, excluded.counter)",
                &[&credential_id, &i64::from(counter)],
            )?;
            Ok(u32::try_from(previous).unwrap_or(u32::MAX))
        })
        .map_err(unavailable)
    }
}

/// The database's clock in seconds: one clock for every instance.
const NOW: &str = "EXTRACT(EPOCH FROM clock_timestamp())::FLOAT8";

impl Limits for PgStore {
    fn take_shared(
        &self,
        key: &str,
        burst: u32,
        per_minute: u32,
    ) -> Result<Option<std::result::Result<(), u64>>> {
        let rate = f64::from(per_minute) / 60.0;
        let wait = |tokens: f64| RateLimit { per_minute, burst }.wait_secs(tokens);
        if burst == 0 {
            return Ok(Some(Err(wait(0.0))));
        }
        let burst = f64::from(burst);
        let mut conn = self.conn()?;
        // One statement: refill by the time since the last take, then take one token if there
        // is one; concurrent takes from any instance queue on the bucket's row.
        let taken = conn.query_opt(
            &format!(
                "INSERT INTO rate_buckets AS b (key, tokens, at) VALUES ($1::TEXT, $2::FLOAT8 - 1, {NOW})
                 ON CONFLICT (key) DO UPDATE SET
                     tokens = LEAST($2::FLOAT8, b.tokens + ({NOW} - b.at) * $3::FLOAT8) - 1,
                     at = {NOW}
                 WHERE LEAST($2::FLOAT8, b.tokens + ({NOW} - b.at) * $3::FLOAT8) >= 1
                 RETURNING tokens"
            ),
            &[&key, &burst, &rate],
        )?;
        if taken.is_some() {
            return Ok(Some(Ok(())));
        }
        let tokens: f64 = conn
            .query_opt(
                &format!(
                    "SELECT LEAST($2::FLOAT8, tokens + ({NOW} - at) * $3::FLOAT8) \
                     FROM rate_buckets WHERE key = $1::TEXT"
                ),
                &[&key, &burst, &rate],
            )?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0.0);
        Ok(Some(Err(wait(tokens))))
    }
}
