//! The outbox's rows: at most one decision per item (its primary key), written in the same
//! transaction as the history entry it records, and closed when the broker answers. The flow
//! around them (mint, self-check, send) is [`crate::outbox`].

use countersign_protocol::api::Decision;
use rusqlite::{OptionalExtension as _, Transaction, params};
use serde_json::Value;

use super::items::record_in;
use super::{EntryKind, History};
use crate::error::Result;

/// A decision waiting in (or sent from) the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub item: String,
    pub broker: String,
    pub idempotency_key: String,
    pub decision: Decision,
    pub acked: bool,
    /// The broker refused it for good (see [`crate::outbox::reject`]); the item is open again.
    pub rejected: bool,
}

/// How the broker answered a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It recorded this decision.
    Recorded,
    /// Another decision came first.
    AlreadyDecided,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::AlreadyDecided => "already_decided",
        }
    }
}

const REJECTED: &str = "rejected";

const ITEM_BROKER: &str = "SELECT broker FROM items WHERE id = ?1";
const INSERT: &str = "INSERT INTO outbox (item, broker, idempotency_key, decision, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5)";
const ONE: &str = "SELECT broker, idempotency_key, decision, acked_at, outcome
     FROM outbox WHERE item = ?1";
const UNSENT: &str = "SELECT item, broker, idempotency_key, decision
     FROM outbox WHERE acked_at IS NULL ORDER BY created_at, rowid";
const CLEAR_REJECTED: &str = "DELETE FROM outbox WHERE item = ?1 AND outcome = 'rejected'";
const UNACKED_DECISION: &str = "SELECT decision FROM outbox WHERE item = ?1 AND acked_at IS NULL";
const CLOSE: &str = "UPDATE outbox SET acked_at = ?1, outcome = ?2 WHERE item = ?3";
const SHARED_KEY: &str = "SELECT COUNT(*) > 1 FROM outbox WHERE idempotency_key = ?1";
const ITEM_STATUS: &str = "SELECT status FROM items WHERE id = ?1";
const FIRST_KIND: &str = "SELECT kind FROM entries WHERE item = ?1 ORDER BY seq LIMIT 1";

impl History {
    /// Queues `decision` for `item` with its history entry (`kind`, `detail`), in one
    /// transaction. Fails, changing nothing, when the item already has a queued decision.
    pub(crate) fn enqueue(
        &mut self,
        item: &str,
        decision: &Decision,
        idempotency_key: &str,
        entry: (EntryKind, Value),
        now: i64,
    ) -> Result<Queued> {
        let tx = self.conn.transaction()?;
        let queued = insert(&tx, item, decision, idempotency_key, entry, now)?;
        tx.commit()?;
        Ok(queued)
    }

    /// Queues the approvals of one batch ceremony, each `(item, decision, entry)`, under one
    /// idempotency key (which is what keeps them together until the broker answers), in one
    /// transaction: all or none.
    pub(crate) fn enqueue_batch(
        &mut self,
        decisions: Vec<(String, Decision, (EntryKind, Value))>,
        idempotency_key: &str,
        now: i64,
    ) -> Result<Vec<Queued>> {
        let tx = self.conn.transaction()?;
        let queued = decisions
            .into_iter()
            .map(|(item, decision, entry)| {
                insert(&tx, &item, &decision, idempotency_key, entry, now)
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(queued)
    }

    /// The queued decision for `item`, if any.
    pub fn queued(&self, item: &str) -> Result<Option<Queued>> {
        type Row = (String, String, String, Option<i64>, Option<String>);
        let row: Option<Row> = self
            .conn
            .query_row(ONE, [item], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        row.map(|(broker, key, decision, acked, outcome)| {
            Ok(Queued {
                item: item.to_owned(),
                broker,
                idempotency_key: key,
                decision: serde_json::from_str(&decision)?,
                acked: acked.is_some(),
                rejected: outcome.as_deref() == Some(REJECTED),
            })
        })
        .transpose()
    }

    /// Every decision not yet acknowledged, oldest first (the order the ceremonies happened).
    pub fn unsent(&self) -> Result<Vec<Queued>> {
        let mut stmt = self.conn.prepare_cached(UNSENT)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (item, broker, key, decision) = row?;
            Ok(Queued {
                item,
                broker,
                idempotency_key: key,
                decision: serde_json::from_str(&decision)?,
                acked: false,
                rejected: false,
            })
        })
        .collect()
    }

    /// Removes `item`'s decision if the broker rejected it, so the owner can decide again.
    pub(crate) fn clear_rejected(&mut self, item: &str) -> Result<()> {
        self.conn.execute(CLEAR_REJECTED, [item])?;
        Ok(())
    }

    /// Marks the decisions of `answers` acknowledged by the broker, in one transaction (a
    /// batch's answers are recorded together).
    pub(crate) fn acknowledge(&mut self, answers: &[(&str, Answer)], now: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (item, answer) in answers {
            tx.execute(CLOSE, params![now, answer.as_str(), item])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether other decisions share `key`: the approvals of one batch ceremony, which only go
    /// to the broker together (even when only some of them are still unacknowledged).
    pub(crate) fn in_batch(&self, key: &str) -> Result<bool> {
        Ok(self.conn.query_row(SHARED_KEY, [key], |r| r.get(0))?)
    }

    /// Records that the broker refused the decision for `item` for good, in one transaction:
    /// the outbox row is closed and, if the item still shows that decision, an entry (`detail`)
    /// opens it again — `rejected`, or `refused` for an item refused on arrival. Nothing
    /// changes when the row was acknowledged meanwhile (another sender got the broker's yes),
    /// and the item keeps a status the broker reported since (expired, decided by another
    /// approver).
    pub(crate) fn reject(&mut self, item: &str, detail: Value, now: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let decision: Option<String> = tx
            .query_row(UNACKED_DECISION, [item], |r| r.get(0))
            .optional()?;
        let Some(decision) = decision else {
            return Ok(());
        };
        tx.execute(CLOSE, params![now, REJECTED, item])?;
        let ours = match serde_json::from_str::<Decision>(&decision)? {
            Decision::Approve { .. } => "approved",
            Decision::Deny { .. } => "denied",
        };
        let current: String = tx.query_row(ITEM_STATUS, [item], |r| r.get(0))?;
        if current == ours {
            let first: String = tx.query_row(FIRST_KIND, [item], |r| r.get(0))?;
            let kind = if first == "refused" {
                EntryKind::Refused
            } else {
                EntryKind::Rejected
            };
            record_in(&tx, item, kind, detail, now)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn insert(
    tx: &Transaction<'_>,
    item: &str,
    decision: &Decision,
    idempotency_key: &str,
    entry: (EntryKind, Value),
    now: i64,
) -> Result<Queued> {
    let broker: String = tx.query_row(ITEM_BROKER, [item], |r| r.get(0))?;
    tx.execute(
        INSERT,
        params![
            item,
            broker,
            idempotency_key,
            serde_json::to_string(decision)?,
            now
        ],
    )?;
    record_in(tx, item, entry.0, entry.1, now)?;
    Ok(Queued {
        item: item.to_owned(),
        broker,
        idempotency_key: idempotency_key.to_owned(),
        decision: decision.clone(),
        acked: false,
        rejected: false,
    })
}
