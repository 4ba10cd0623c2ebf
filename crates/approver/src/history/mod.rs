//! The local history: every pending item the app received and every state change it went
//! through, in SQLite (WAL), with each entry committing to the previous one in a hash chain,
//! full-text search, filters, and export to JSON Lines and CSV.
//!
//! Entry `n` stores `hash_n = b64url(SHA-256(JCS({seq, at, item, kind, detail, prev})))` with
//! `prev = hash_{n-1}` (the empty string for the first). Editing, deleting or reordering any
//! entry breaks every later link; [`History::verify`] names the first broken one.

use std::io::Write;
use std::path::Path;

use countersign_protocol::PendingAction;
use countersign_protocol::hash::{b64url, canonical_sha256};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// What happened to an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    Received,
    Notified,
    Viewed,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Redeemed,
    Revoked,
    /// The item was refused on arrival (its hash disagreed with its contents).
    Refused,
    /// The broker refused the decision queued here for good (a grant that expired while the
    /// broker was unreachable, say); the item is open again.
    Rejected,
}

impl EntryKind {
    /// The item status this entry moves to, if it changes it.
    fn status(self) -> Option<&'static str> {
        match self {
            Self::Approved => Some("approved"),
            Self::Denied => Some("denied"),
            Self::Expired => Some("expired"),
            Self::Cancelled => Some("cancelled"),
            Self::Redeemed => Some("redeemed"),
            Self::Revoked => Some("revoked"),
            Self::Refused => Some("refused"),
            Self::Received | Self::Rejected => Some("pending"),
            Self::Notified | Self::Viewed => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Notified => "notified",
            Self::Viewed => "viewed",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Redeemed => "redeemed",
            Self::Revoked => "revoked",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
        }
    }
}

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at: i64,
    pub item: String,
    pub kind: String,
    pub detail: Value,
    pub prev: String,
    pub hash: String,
}

/// An item as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub id: String,
    pub status: String,
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
    pub status: Option<String>,
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

/// The result of a successful integrity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
}

const MIGRATIONS: &[&str] = &["CREATE TABLE items (
        id TEXT PRIMARY KEY,
        broker TEXT NOT NULL,
        status TEXT NOT NULL,
        agent TEXT NOT NULL,
        tool TEXT NOT NULL,
        intent TEXT NOT NULL,
        pending TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX items_status ON items(status, created_at);
    CREATE INDEX items_agent ON items(agent, created_at);
    CREATE INDEX items_tool ON items(tool, created_at);
    CREATE INDEX items_created ON items(created_at);
    CREATE VIRTUAL TABLE items_fts USING fts5(id UNINDEXED, agent, tool, intent, arguments, tokenize = 'unicode61');
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        item TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX entries_item ON entries(item, seq);",
    // One decision per item, ever: the primary key is what makes a second, different grant for
    // an item impossible, even across crashes.
    "CREATE TABLE outbox (
        item TEXT PRIMARY KEY,
        broker TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        decision TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        acked_at INTEGER,
        outcome TEXT
    );",
    // Non-secret settings of the profile: enrolled authenticators (public keys only) and
    // paired brokers. Secrets stay in the OS keyring.
    "CREATE TABLE authenticators (
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        credential TEXT NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE brokers (
        url TEXT PRIMARY KEY,
        approver_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE INDEX entries_kind ON entries(item, kind);",
    // The broker's pinned TLS certificate (SHA-256, hex with colons); NULL for loopback http.
    "ALTER TABLE brokers ADD COLUMN pin TEXT;",
    // How many identical requests of one agent the broker merged into the item (1: itself).
    // A display count the broker reports, not a state change, so it is not chained.
    "ALTER TABLE items ADD COLUMN merged INTEGER NOT NULL DEFAULT 1;",
    // Each broker's own device key, by its keyring name (brokers paired before keys were per
    // broker share the first key, `device-key`). Settings of the profile that must outlive a
    // restart (notification privacy, say).
    "ALTER TABLE brokers ADD COLUMN key TEXT NOT NULL DEFAULT 'device-key';
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);"];

/// The history database.
#[derive(Debug)]
pub struct History {
    conn: Connection,
}

impl History {
    /// Opens (creating and migrating) the history at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a decision committed to the outbox survives a power cut before it is sent.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut history = Self { conn };
        history.migrate()?;
        Ok(history)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = self.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

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
            .query_row("SELECT 1 FROM items WHERE id = ?1", [&pending.id], |_| {
                Ok(true)
            })
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
            "INSERT INTO items (id, broker, status, agent, tool, intent, pending, created_at, expires_at, updated_at)
             VALUES (?1, ?2, ?10, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                kind.status().unwrap_or("pending")
            ],
        )?;
        let rowid = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO items_fts (rowid, id, agent, tool, intent, arguments) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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

    /// Runs a read-only query against the database.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn)
    }

    /// Runs `f` in one transaction with a recorder, so a change and what depends on it (an
    /// outbox row, say) are written together or not at all.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The setting `name`, if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets (and syncs to disk) the setting `name`.
    pub fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// How many items have `status`.
    pub fn count(&self, status: &str) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM items WHERE status = ?1",
            [status],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Raises an item's merged count to `merged` (counts only grow); returns whether it did.
    pub fn set_merged(&mut self, id: &str, merged: u32) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE items SET merged = ?2 WHERE id = ?1 AND merged < ?2",
            params![id, merged],
        )?;
        Ok(n > 0)
    }

    /// The stored pending action.
    pub fn item(&self, id: &str) -> Result<Option<(PendingAction, String)>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT pending, status FROM items WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(pending, status)| Ok((serde_json::from_str(&pending)?, status)))
            .transpose()
    }

    /// The broker an item came from, if the item is known.
    pub fn item_broker(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT broker FROM items WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// The items of `broker` still open here — pending, or approved and not yet known to be
    /// redeemed — that expired no earlier than `since` (older ones the broker has let go).
    pub fn open_items(&self, broker: &str, since: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM items WHERE broker = ?1 AND status IN ('pending', 'approved')
             AND expires_at >= ?2 ORDER BY created_at",
        )?;
        let rows = stmt.query_map(params![broker, since], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every entry of one item, oldest first.
    pub fn entries(&self, item: &str) -> Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, item, kind, detail, prev, hash FROM entries WHERE item = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([item], read_entry)?;
        rows.map(|r| r.map_err(Error::from)?.try_into()).collect()
    }

    /// Items matching `filter`, newest first (by creation; with a search, by arrival).
    pub fn list(&self, filter: &Filter) -> Result<Vec<ItemSummary>> {
        let limit = i64::try_from(filter.limit.clamp(1, 10_000)).unwrap_or(100);
        let search = filter
            .search
            .as_deref()
            .map(fts_query)
            .filter(|q| !q.is_empty());
        const FILTERS: &str = "(?1 IS NULL OR i.status = ?1) AND (?2 IS NULL OR i.agent = ?2)
             AND (?3 IS NULL OR i.tool = ?3) AND (?4 IS NULL OR i.created_at >= ?4)
             AND (?5 IS NULL OR i.created_at < ?5)";
        // With a search, walk the full-text index newest first (rowids follow arrival) and
        // stop at the limit; without one, the time-ordered indexes serve.
        let sql = if search.is_some() {
            format!(
                "SELECT i.id, i.status, i.agent, i.tool, i.intent, i.created_at, i.updated_at, i.merged
                 FROM items_fts f JOIN items i ON i.rowid = f.rowid
                 WHERE items_fts MATCH ?6 AND {FILTERS}
                 ORDER BY f.rowid DESC LIMIT ?7"
            )
        } else {
            format!(
                "SELECT i.id, i.status, i.agent, i.tool, i.intent, i.created_at, i.updated_at, i.merged
                 FROM items i WHERE ?6 IS NULL AND {FILTERS}
                 ORDER BY i.created_at DESC, i.id DESC LIMIT ?7"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                filter.status,
                filter.agent,
                filter.tool,
                filter.since,
                filter.until,
                search,
                limit
            ],
            |r| {
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
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest entry's sequence number and hash, if any.
    pub fn head(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The stored hash of entry `seq`, if it exists.
    pub fn entry_hash(&self, seq: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT hash FROM entries WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Checks every link of the chain, in order, then every item against its entries (see
    /// [`Self::verify_items`]). The error names the first broken entry.
    pub fn verify(&self) -> Result<ChainReport> {
        let report = self.verify_chain()?;
        self.verify_items()?;
        Ok(report)
    }

    /// Checks every link of the chain, in order. The error names the first broken entry.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, item, kind, detail, prev, hash FROM entries ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut prev = String::new();
        let mut expected_seq = 1;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let raw = read_entry(row)?;
            let seq = raw.0;
            let entry: Entry = raw.try_into().map_err(|_| Error::ChainBroken {
                seq,
                reason: "detail is not JSON".into(),
            })?;
            if entry.seq != expected_seq {
                return Err(Error::ChainBroken {
                    seq: expected_seq,
                    reason: format!("entry {expected_seq} is missing"),
                });
            }
            if entry.prev != prev {
                return Err(Error::ChainBroken {
                    seq,
                    reason: "does not link to the entry before it".into(),
                });
            }
            if entry_hash(&entry)? != entry.hash {
                return Err(Error::ChainBroken {
                    seq,
                    reason: "its contents were changed".into(),
                });
            }
            prev = entry.hash;
            expected_seq += 1;
            count += 1;
        }
        Ok(ChainReport { entries: count })
    }

    /// Checks that every item still shows what its chained entries recorded: the action its
    /// `received` entry hashed, and the status its newest state change set. (The items table is
    /// what the app displays and approves from; the chain is what makes it trustworthy.)
    pub fn verify_items(&self) -> Result<()> {
        if let Some((seq, item)) = self
            .conn
            .query_row(
                "SELECT MIN(seq), item FROM entries WHERE item NOT IN (SELECT id FROM items)
                 GROUP BY item ORDER BY 1 LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?
        {
            return Err(Error::ChainBroken {
                seq,
                reason: format!("item {item} was removed from the history"),
            });
        }
        let mut items = self.conn.prepare(
            "SELECT id, status, pending, broker, agent, tool, intent, created_at, expires_at
             FROM items ORDER BY rowid",
        )?;
        let mut entries = self
            .conn
            .prepare("SELECT seq, kind, detail FROM entries WHERE item = ?1 ORDER BY seq")?;
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
            let mut newest: Option<(i64, &'static str)> = None;
            let mut list = entries.query([&id])?;
            while let Some(entry) = list.next()? {
                let seq: i64 = entry.get(0)?;
                let kind: EntryKind = serde_json::from_value(Value::String(entry.get(1)?))
                    .map_err(|_| Error::ChainBroken {
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
            if status != last_status {
                return Err(broken(
                    last_seq,
                    format!("reads {status}, but this entry made it {last_status}"),
                ));
            }
        }
        Ok(())
    }

    /// Writes every entry as JSON Lines, oldest first.
    pub fn export_jsonl(&self, out: &mut dyn Write) -> Result<u64> {
        let mut count = 0;
        self.each_entry(|entry| {
            serde_json::to_writer(&mut *out, entry)?;
            out.write_all(b"\n")?;
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Writes every entry as CSV (seq, at, item, kind, detail, prev, hash), oldest first.
    pub fn export_csv(&self, out: &mut dyn Write) -> Result<u64> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(["seq", "at", "item", "kind", "detail", "prev", "hash"])?;
        let mut count = 0;
        self.each_entry(|e| {
            writer.write_record([
                e.seq.to_string(),
                e.at.to_string(),
                e.item.clone(),
                e.kind.clone(),
                e.detail.to_string(),
                e.prev.clone(),
                e.hash.clone(),
            ])?;
            count += 1;
            Ok(())
        })?;
        writer.flush()?;
        Ok(count)
    }

    fn each_entry(&self, mut f: impl FnMut(&Entry) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, item, kind, detail, prev, hash FROM entries ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let entry: Entry = read_entry(row)?.try_into()?;
            f(&entry)?;
        }
        Ok(())
    }
}

/// Appends a state change for a known item inside `tx`.
pub fn record_in(
    tx: &Transaction<'_>,
    item: &str,
    kind: EntryKind,
    detail: Value,
    at: i64,
) -> Result<Entry> {
    let changed = match kind.status() {
        Some(status) => tx.execute(
            "UPDATE items SET status = ?1, updated_at = ?2 WHERE id = ?3",
            params![status, at, item],
        )?,
        None => tx.execute(
            "UPDATE items SET updated_at = ?1 WHERE id = ?2",
            params![at, item],
        )?,
    };
    if changed == 0 {
        return Err(Error::UnknownItem(item.to_owned()));
    }
    append(tx, item, kind, detail, at)
}

type RawEntry = (i64, i64, String, String, String, String, String);

fn read_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

impl TryFrom<RawEntry> for Entry {
    type Error = Error;

    fn try_from((seq, at, item, kind, detail, prev, hash): RawEntry) -> Result<Self> {
        Ok(Self {
            seq,
            at,
            item,
            kind,
            detail: serde_json::from_str(&detail)?,
            prev,
            hash,
        })
    }
}

fn append(
    tx: &Transaction<'_>,
    item: &str,
    kind: EntryKind,
    detail: Value,
    at: i64,
) -> Result<Entry> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = last.map(|(s, h)| (s + 1, h)).unwrap_or((1, String::new()));
    let mut entry = Entry {
        seq,
        at,
        item: item.to_owned(),
        kind: kind.as_str().to_owned(),
        detail,
        prev,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry)?;
    tx.execute(
        "INSERT INTO entries (seq, at, item, kind, detail, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![entry.seq, entry.at, entry.item, entry.kind, serde_json::to_string(&entry.detail)?, entry.prev, entry.hash],
    )?;
    Ok(entry)
}

fn entry_hash(entry: &Entry) -> Result<String> {
    let linked = serde_json::json!({
        "seq": entry.seq,
        "at": entry.at,
        "item": entry.item,
        "kind": entry.kind,
        "detail": entry.detail,
        "prev": entry.prev,
    });
    Ok(b64url(&canonical_sha256(&linked)?))
}

/// Turns free text into an FTS5 query of quoted terms (all must match), so that user input is
/// never FTS5 syntax.
fn fts_query(text: &str) -> String {
    text.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}
