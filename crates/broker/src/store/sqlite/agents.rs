//! Agents' standing: suspension and quarantine.

use rusqlite::{OptionalExtension as _, params};

use super::super::{AgentState, Agents, Limits, Result};
use super::SqliteStore;

impl Agents for SqliteStore {
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

/// One instance per SQLite file: its rate limits are counted in memory.
impl Limits for SqliteStore {}
