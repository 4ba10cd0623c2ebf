//! The profile database's schema: every table of `history.sqlite`, written here and nowhere
//! else, as an append-only list of migrations (`PRAGMA user_version` counts those applied).

use rusqlite::Connection;

use crate::error::Result;

/// Applied in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    // Items as received and the hash chain of everything that happened to them.
    "CREATE TABLE items (
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
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // The review's risk context (`context`): first requests per agent and tool, an agent's
    // denials, and the numeric arguments of approved items (filled from the items approved
    // before it, in this migration's transaction). Derived data: not chained.
    "CREATE INDEX items_agent_tool ON items(agent, tool, created_at);
    CREATE INDEX items_agent_status ON items(agent, status);
    CREATE TABLE approved_numbers (
        item TEXT NOT NULL,
        tool TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (item, name)
    );
    CREATE INDEX approved_numbers_value ON approved_numbers(tool, name, value);
    CREATE INDEX approved_numbers_at ON approved_numbers(tool, name, at);",
    // The risk context reads indexes only, never a row it does not show: the most similar
    // earlier request is looked for among decided items (with the status in the index, an
    // agent whose requests mostly wait undecided costs no walk past them); an agent's denials
    // are counted by time; the amounts carry the item they belong to.
    "CREATE INDEX items_agent_tool_status ON items(agent, tool, status, created_at);
    DROP INDEX items_agent_status;
    CREATE INDEX items_agent_status ON items(agent, status, created_at);
    DROP INDEX approved_numbers_value;
    CREATE INDEX approved_numbers_value ON approved_numbers(tool, name, value, item);
    DROP INDEX approved_numbers_at;
    CREATE INDEX approved_numbers_at ON approved_numbers(tool, name, at, value, item);",
];

/// The migration that creates `approved_numbers` (1-based), after which it is filled.
const APPROVED_NUMBERS: usize = 7;

/// Brings the database at `conn` up to the newest schema, in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        if i + 1 == APPROVED_NUMBERS {
            super::context::backfill(&tx)?;
        }
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}
