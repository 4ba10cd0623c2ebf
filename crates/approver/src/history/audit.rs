//! The audit: the items table is what the app displays and approves from; the chain is what
//! makes it trustworthy. This checks that the two agree, item by item.

use countersign_protocol::PendingAction;
use rusqlite::OptionalExtension as _;
use serde_json::Value;

use super::{ChainReport, EntryKind, History, ItemStatus};
use crate::error::{Error, Result};

/// The first entry of an item no longer in the items table.
const ORPHAN_ENTRY: &str =
    "SELECT MIN(seq), item FROM entries WHERE item NOT IN (SELECT id FROM items)
     GROUP BY item ORDER BY 1 LIMIT 1";
const ALL_ITEMS: &str =
    "SELECT id, status, pending, broker, agent, tool, intent, created_at, expires_at
     FROM items ORDER BY rowid";
const ITEM_ENTRIES: &str = "SELECT seq, kind, detail FROM entries WHERE item = ?1 ORDER BY seq";

impl History {
    /// Checks every link of the chain, in order, then every item against its entries (see
    /// [`Self::verify_items`]). The error names the first broken entry.
    pub fn verify(&self) -> Result<ChainReport> {
        let report = self.verify_chain()?;
        self.verify_items()?;
        Ok(report)
    }

    /// Checks that every item still shows what its chained entries recorded: the action its
    /// `received` entry hashed, and the status its newest state change set. (The items table is
    /// what the app displays and approves from; the chain is what makes it trustworthy.)
    pub fn verify_items(&self) -> Result<()> {
        if let Some((seq, item)) = self
            .conn
            .query_row(ORPHAN_ENTRY, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
        {
            return Err(Error::ChainBroken {
                seq,
                reason: format!("item {item} was removed from the history"),
            });
        }
        let mut items = self.conn.prepare(ALL_ITEMS)?;
        let mut entries = self.conn.prepare(ITEM_ENTRIES)?;
        let mut rows = items.query([])?;
        while let Some(row) = rows.next()? {
            let (id, status, pending): (String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            let broker: String = row.get(3)?;
            let shown: (String, String, String, i64, i64) = (
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
            );
            let mut first: Option<(i64, EntryKind, String)> = None;
            let mut newest: Option<(i64, ItemStatus)> = None;
            let mut list = entries.query([&id])?;
            while let Some(entry) = list.next()? {
                let seq: i64 = entry.get(0)?;
                let kind: String = entry.get(1)?;
                let kind = EntryKind::parse(&kind).ok_or_else(|| Error::ChainBroken {
                    seq,
                    reason: "its kind is unknown".into(),
                })?;
                if first.is_none() {
                    first = Some((seq, kind, entry.get(2)?));
                }
                if let Some(status) = kind.status() {
                    newest = Some((seq, status));
                }
            }
            let broken = |seq: i64, what: String| Error::ChainBroken {
                seq,
                reason: format!("item {id} {what}"),
            };
            let (Some((first_seq, first_kind, detail)), Some((last_seq, last_status))) =
                (first, newest)
            else {
                return Err(broken(
                    0,
                    "has no entry: it was added outside the chain".into(),
                ));
            };
            let action: PendingAction = serde_json::from_str(&pending)
                .map_err(|_| broken(first_seq, "is no longer a readable action".into()))?;
            if !matches!(first_kind, EntryKind::Received | EntryKind::Refused) {
                return Err(broken(first_seq, "does not begin with its arrival".into()));
            }
            let recorded: Value = serde_json::from_str(&detail)
                .map_err(|_| broken(first_seq, "has an unreadable entry".into()))?;
            // Entries written before the hash (refused items) and the broker were recorded
            // have nothing to compare them with.
            let differs = |key: &str, value: &str| {
                recorded.get(key).is_some_and(|r| r.as_str() != Some(value))
            };
            let columns = (
                action.actor.id.as_str().to_owned(),
                action.resource.id.clone(),
                action.context.intent.clone(),
                action.created_at.unix(),
                action.expires_at.unix(),
            );
            if action.id != id
                || (first_kind == EntryKind::Received
                    && (!action.verify_hash() || recorded.get("action_hash").is_none()))
                || differs("action_hash", action.action_hash.as_str())
                || differs("broker", &broker)
                || shown != columns
            {
                return Err(broken(
                    first_seq,
                    "shows an action other than the one this entry recorded".into(),
                ));
            }
            if status != last_status.as_str() {
                return Err(broken(
                    last_seq,
                    format!("reads {status}, but this entry made it {last_status}"),
                ));
            }
        }
        Ok(())
    }
}
