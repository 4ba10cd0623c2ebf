//! The local history: every pending item the app received and every state change it went
//! through, in SQLite (WAL), with each entry committing to the previous one in a hash chain,
//! full-text search, filters, and export to JSON Lines and CSV.
//!
//! This module owns the profile database: no other module sees its connection or its SQL.
//! - `schema`: every table, as migrations;
//! - `items`: receiving items, their state changes, listing and search;
//! - `chain`: the hash chain (see [`Entry`]);
//! - `audit`: that the items shown agree with the chain ([`History::verify`]);
//! - `export`: JSON Lines and CSV;
//! - `settings`: enrolled authenticators, paired brokers, named settings;
//! - `status`: item statuses and entry kinds;
//! - `context`: what is unusual about a request, from this history (the review's risk context);
//! - `queue`: the outbox's rows (the decision flow is [`crate::outbox`]).
//!
//! Entry `n` stores `hash_n = b64url(SHA-256(JCS({seq, at, item, kind, detail, prev})))` with
//! `prev = hash_{n-1}` (the empty string for the first). Editing, deleting or reordering any
//! entry breaks every later link; [`History::verify`] names the first broken one.

mod audit;
mod chain;
mod context;
mod export;
mod items;
mod queue;
mod schema;
mod settings;
mod status;

use std::path::Path;

use rusqlite::Connection;

use crate::error::Result;

pub use chain::{ChainReport, Entry};
pub use context::{
    Amount, COUNT_CAP, Difference, RiskContext, SIMILAR_CANDIDATES, Similar, TYPICAL_OF,
};
pub use export::ExportFormat;
pub use items::{Filter, ItemSummary};
pub use queue::{Answer, Queued};
pub use settings::{Enrolled, Paired};
pub use status::{EntryKind, ItemStatus};

/// The history database.
#[derive(Debug)]
pub struct History {
    conn: Connection,
}

impl History {
    /// Opens (creating and migrating) the history at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a decision committed to the outbox survives a power cut before it is sent.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        Ok(Self { conn })
    }
}
