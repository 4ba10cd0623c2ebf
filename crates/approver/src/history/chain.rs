//! The hash chain: every state change of every item is one entry committing to the one before.
//!
//! Entry `n` stores `hash_n = b64url(SHA-256(JCS({seq, at, item, kind, detail, prev})))` with
//! `prev = hash_{n-1}` (the empty string for the first). Editing, deleting or reordering any
//! entry breaks every later link; [`History::verify_chain`] names the first broken one.

use countersign_protocol::hash::{b64url, canonical_sha256};
use rusqlite::{OptionalExtension as _, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EntryKind, History};
use crate::error::{Error, Result};

/// One link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at: i64,
    pub item: String,
    pub kind: EntryKind,
    pub detail: Value,
    pub prev: String,
    pub hash: String,
}

/// The result of a successful integrity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
}

const ALL_ENTRIES: &str =
    "SELECT seq, at, item, kind, detail, prev, hash FROM entries ORDER BY seq";
const ITEM_ENTRIES: &str =
    "SELECT seq, at, item, kind, detail, prev, hash FROM entries WHERE item = ?1 ORDER BY seq";
const HEAD: &str = "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1";
const ENTRY_HASH: &str = "SELECT hash FROM entries WHERE seq = ?1";
const INSERT_ENTRY: &str = "INSERT INTO entries (seq, at, item, kind, detail, prev, hash)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

impl History {
    /// Every entry of one item, oldest first.
    pub fn entries(&self, item: &str) -> Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare_cached(ITEM_ENTRIES)?;
        let rows = stmt.query_map([item], read_entry)?;
        rows.map(|r| r.map_err(Error::from)?.try_into()).collect()
    }

    /// The newest entry's sequence number and hash, if any.
    pub fn head(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(HEAD, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// The stored hash of entry `seq`, if it exists.
    pub fn entry_hash(&self, seq: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(ENTRY_HASH, [seq], |r| r.get(0))
            .optional()?)
    }

    /// Checks every link of the chain, in order. The error names the first broken entry.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        let mut stmt = self.conn.prepare(ALL_ENTRIES)?;
        let mut rows = stmt.query([])?;
        let mut prev = String::new();
        let mut expected_seq = 1;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let raw = read_entry(row)?;
            let seq = raw.0;
            let entry: Entry = raw.try_into()?;
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
            if hash_of(&entry)? != entry.hash {
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

    /// Calls `f` with every entry, oldest first.
    pub(super) fn each_entry(&self, mut f: impl FnMut(&Entry) -> Result<()>) -> Result<()> {
        let mut stmt = self.conn.prepare(ALL_ENTRIES)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let entry: Entry = read_entry(row)?.try_into()?;
            f(&entry)?;
        }
        Ok(())
    }
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

    /// A row the chain's writer could not have written is a broken link.
    fn try_from((seq, at, item, kind, detail, prev, hash): RawEntry) -> Result<Self> {
        let broken = |reason: String| Error::ChainBroken { seq, reason };
        Ok(Self {
            seq,
            at,
            item,
            kind: EntryKind::parse(&kind)
                .ok_or_else(|| broken(format!("unknown kind {kind:?}")))?,
            detail: serde_json::from_str(&detail)
                .map_err(|_| broken("detail is not JSON".into()))?,
            prev,
            hash,
        })
    }
}

/// Appends one entry inside `tx`, linked to the newest.
pub(super) fn append(
    tx: &Transaction<'_>,
    item: &str,
    kind: EntryKind,
    detail: Value,
    at: i64,
) -> Result<Entry> {
    let last: Option<(i64, String)> = tx
        .query_row(HEAD, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = last.map(|(s, h)| (s + 1, h)).unwrap_or((1, String::new()));
    let mut entry = Entry {
        seq,
        at,
        item: item.to_owned(),
        kind,
        detail,
        prev,
        hash: String::new(),
    };
    entry.hash = hash_of(&entry)?;
    tx.execute(
        INSERT_ENTRY,
        params![
            entry.seq,
            entry.at,
            entry.item,
            entry.kind,
            serde_json::to_string(&entry.detail)?,
            entry.prev,
            entry.hash
        ],
    )?;
    Ok(entry)
}

fn hash_of(entry: &Entry) -> Result<String> {
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
