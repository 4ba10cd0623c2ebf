//! Items: receiving them, their state changes, and finding them again (filters and
//! full-text search).

use countersign_protocol::PendingAction;
use rusqlite::{OptionalExtension as _, ToSql, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain::append;
use super::{Entry, EntryKind, History, ItemStatus};
use crate::error::{Error, Result};

/// An item as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub id: String,
    pub status: ItemStatus,
    pub agent: String,
    pub tool: String,
    pub intent: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// How many identical requests the item stands for (1: itself alone).
    pub merged: u32,
}

/// Filters for [`History::list`]; all optional.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub status: Option<ItemStatus>,
    pub agent: Option<String>,
    pub tool: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Full-text query over intent, tool, agent and arguments (words, all must match).
    pub search: Option<String>,
    pub limit: usize,
}

const KNOWN: &str = "SELECT 1 FROM items WHERE id = ?1";
const INSERT: &str = "INSERT INTO items
     (id, broker, status, agent, tool, intent, pending, created_at, expires_at, updated_at)
     VALUES (?1, ?2, ?10, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const INSERT_FTS: &str = "INSERT INTO items_fts (rowid, id, agent, tool, intent, arguments)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const COUNT: &str = "SELECT COUNT(*) FROM items WHERE status = ?1";
const SET_MERGED: &str = "UPDATE items SET merged = ?2 WHERE id = ?1 AND merged < ?2";
const ITEM: &str = "SELECT pending, status FROM items WHERE id = ?1";
const ITEM_BROKER: &str = "SELECT broker FROM items WHERE id = ?1";
const OPEN: &str = "SELECT id FROM items WHERE broker = ?1 AND status IN ('pending', 'approved')
     AND expires_at >= ?2 ORDER BY created_at";
const DUE_TO_EXPIRE: &str = "SELECT id FROM items WHERE status = 'pending' AND expires_at <= ?1";
const UNNOTIFIED: &str = "SELECT i.id FROM items i WHERE i.status = 'pending' AND NOT EXISTS
       (SELECT 1 FROM entries e WHERE e.item = i.id AND e.kind = 'notified')
     ORDER BY i.created_at, i.rowid";
const SET_STATUS: &str = "UPDATE items SET status = ?1, updated_at = ?2 WHERE id = ?3";
const TOUCH: &str = "UPDATE items SET updated_at = ?1 WHERE id = ?2";
const SUMMARY: &str =
    "SELECT i.id, i.status, i.agent, i.tool, i.intent, i.created_at, i.updated_at, i.merged";

impl History {
    /// Stores a newly received item and its `received` entry (or `refused`, when its hash
    /// disagrees with what it shows). Receiving an item twice records nothing new.
    pub fn receive(
        &mut self,
        broker: &str,
        pending: &PendingAction,
        at: i64,
    ) -> Result<Option<Entry>> {
        let tx = self.conn.transaction()?;
        let known: bool = tx
            .query_row(KNOWN, [&pending.id], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if known {
            return Ok(None);
        }
        let json = serde_json::to_string(pending)?;
        // The entry records the item's hash and broker, so that neither can be changed in the
        // items table without `verify` noticing.
        let (kind, detail) = if pending.verify_hash() {
            (
                EntryKind::Received,
                serde_json::json!({"action_hash": pending.action_hash, "broker": broker}),
            )
        } else {
            (
                EntryKind::Refused,
                serde_json::json!({
                    "reason": "action_hash does not match the item's contents",
                    "action_hash": pending.action_hash,
                    "broker": broker,
                }),
            )
        };
        tx.execute(
            INSERT,
            params![
                pending.id,
                broker,
                pending.actor.id.as_str(),
                pending.resource.id,
                pending.context.intent,
                json,
                pending.created_at.unix(),
                pending.expires_at.unix(),
                at,
                kind.status().unwrap_or(ItemStatus::Pending)
            ],
        )?;
        let rowid = tx.last_insert_rowid();
        tx.execute(
            INSERT_FTS,
            params![
                rowid,
                pending.id,
                pending.actor.id.as_str(),
                pending.resource.id,
                pending.context.intent,
                serde_json::to_string(&pending.context.arguments)?
            ],
        )?;
        let entry = append(&tx, &pending.id, kind, detail, at)?;
        tx.commit()?;
        Ok(Some(entry))
    }

    /// Appends a state change for a known item.
    pub fn record(&mut self, item: &str, kind: EntryKind, detail: Value, at: i64) -> Result<Entry> {
        let tx = self.conn.transaction()?;
        let entry = record_in(&tx, item, kind, detail, at)?;
        tx.commit()?;
        Ok(entry)
    }

    /// How many items have `status`.
    pub fn count(&self, status: ItemStatus) -> Result<u64> {
        let n: i64 = self.conn.query_row(COUNT, [status], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Raises an item's merged count to `merged` (counts only grow); returns whether it did.
    pub fn set_merged(&mut self, id: &str, merged: u32) -> Result<bool> {
        let n = self.conn.execute(SET_MERGED, params![id, merged])?;
        Ok(n > 0)
    }

    /// The stored pending action.
    pub fn item(&self, id: &str) -> Result<Option<(PendingAction, ItemStatus)>> {
        let row: Option<(String, ItemStatus)> = self
            .conn
            .query_row(ITEM, [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(pending, status)| Ok((serde_json::from_str(&pending)?, status)))
            .transpose()
    }

    /// The broker an item came from, if the item is known.
    pub fn item_broker(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(ITEM_BROKER, [id], |r| r.get(0))
            .optional()?)
    }

    /// The items of `broker` still open here — pending, or approved and not yet known to be
    /// redeemed — that expired no earlier than `since` (older ones the broker has let go).
    pub fn open_items(&self, broker: &str, since: i64) -> Result<Vec<String>> {
        self.ids(OPEN, params![broker, since])
    }

    /// The pending items past their expiry at `now`.
    pub fn due_to_expire(&self, now: i64) -> Result<Vec<String>> {
        self.ids(DUE_TO_EXPIRE, params![now])
    }

    /// The pending items not yet notified, oldest first.
    pub fn unnotified(&self) -> Result<Vec<String>> {
        self.ids(UNNOTIFIED, params![])
    }

    fn ids(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Items matching `filter`, newest first (by creation; with a search, by arrival).
    pub fn list(&self, filter: &Filter) -> Result<Vec<ItemSummary>> {
        let limit = i64::try_from(filter.limit.clamp(1, 10_000)).unwrap_or(100);
        let search = filter
            .search
            .as_deref()
            .map(fts_query)
            .filter(|q| !q.is_empty());
        // With a search, walk the full-text index newest first (rowids follow arrival) and
        // stop at the limit; without one, the time-ordered indexes serve.
        // Only the filters in use are written into the query: `(? IS NULL OR column = ?)`
        // would hide every index from the planner and scan the whole history by time.
        let mut conditions = Vec::new();
        let mut values: Vec<(&str, &dyn ToSql)> = Vec::new();
        if let Some(status) = &filter.status {
            conditions.push("i.status = :status");
            values.push((":status", status));
        }
        if let Some(agent) = &filter.agent {
            conditions.push("i.agent = :agent");
            values.push((":agent", agent));
        }
        if let Some(tool) = &filter.tool {
            conditions.push("i.tool = :tool");
            values.push((":tool", tool));
        }
        if let Some(since) = &filter.since {
            conditions.push("i.created_at >= :since");
            values.push((":since", since));
        }
        if let Some(until) = &filter.until {
            conditions.push("i.created_at < :until");
            values.push((":until", until));
        }
        values.push((":limit", &limit));
        // With a search, walk the full-text index newest first (rowids follow arrival) and
        // stop at the limit (CROSS JOIN keeps that order of the loops); without one, the
        // time-ordered indexes serve.
        let sql = if let Some(search) = &search {
            values.push((":search", search));
            conditions.insert(0, "items_fts MATCH :search");
            format!(
                "{SUMMARY} FROM items_fts f CROSS JOIN items i ON i.rowid = f.rowid
                 WHERE {} ORDER BY f.rowid DESC LIMIT :limit",
                conditions.join(" AND ")
            )
        } else {
            let filters = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            format!(
                "{SUMMARY} FROM items i {filters} ORDER BY i.created_at DESC, i.id DESC LIMIT :limit"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(values.as_slice(), |r| {
            Ok(ItemSummary {
                id: r.get(0)?,
                status: r.get(1)?,
                agent: r.get(2)?,
                tool: r.get(3)?,
                intent: r.get(4)?,
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
                merged: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Appends a state change for a known item inside `tx`.
pub(super) fn record_in(
    tx: &Transaction<'_>,
    item: &str,
    kind: EntryKind,
    detail: Value,
    at: i64,
) -> Result<Entry> {
    let changed = match kind.status() {
        Some(status) => tx.execute(SET_STATUS, params![status, at, item])?,
        None => tx.execute(TOUCH, params![at, item])?,
    };
    if changed == 0 {
        return Err(Error::UnknownItem(item.to_owned()));
    }
    match kind {
        EntryKind::Approved => super::context::record_approval(tx, item, at)?,
        EntryKind::Rejected => super::context::forget_approval(tx, item)?,
        _ => {}
    }
    append(tx, item, kind, detail, at)
}

/// Turns free text into an FTS5 query of quoted terms (all must match), so that user input is
/// never FTS5 syntax.
fn fts_query(text: &str) -> String {
    text.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}
