//! The PostgreSQL schema, as an append-only list of migrations, and running them.

use super::{PgConn, Result, StoreError};

/// The schema version this broker writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x0063_6f75_6e74_6572; // "counter"

const MIGRATIONS: &[&str] = &[
    // The same tables as the SQLite store's, with PostgreSQL's types; `seq` orders an owner's
    // requests for listing (SQLite's rowid); `event_seq` hands out event ids in commit order.
    "CREATE TABLE requests (
        seq BIGSERIAL UNIQUE,
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        agent TEXT NOT NULL,
        action_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        pending TEXT NOT NULL,
        merged BIGINT NOT NULL DEFAULT 1,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        grant_token TEXT,
        grant_jti TEXT,
        grant_exp BIGINT,
        reason TEXT,
        decided_by TEXT,
        decided_at BIGINT,
        redeemed_at BIGINT,
        outcome TEXT,
        outcome_detail TEXT
    );
    CREATE INDEX requests_owner_seq ON requests(owner, seq);
    CREATE INDEX requests_owner_status ON requests(owner, status);
    CREATE INDEX requests_merge ON requests(agent, action_hash, status);
    CREATE INDEX requests_expiry ON requests(status, expires_at);
    CREATE INDEX requests_decided ON requests(status, decided_at);
    CREATE TABLE event_seq (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), last BIGINT NOT NULL);
    INSERT INTO event_seq (last) VALUES (0);
    CREATE TABLE events (
        id BIGINT PRIMARY KEY,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        request TEXT,
        agent TEXT,
        detail TEXT,
        at BIGINT NOT NULL
    );
    CREATE INDEX events_owner ON events(owner, id);
    CREATE INDEX events_request ON events(request);
    CREATE INDEX events_at ON events(at);
    CREATE TABLE approvers (id TEXT PRIMARY KEY, owner TEXT NOT NULL, entry TEXT NOT NULL, updated_at BIGINT NOT NULL);
    CREATE TABLE approver_keys (kid TEXT PRIMARY KEY, approver TEXT NOT NULL);
    CREATE TABLE approver_credentials (id TEXT PRIMARY KEY, approver TEXT NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 1);
    CREATE TABLE pairing_codes (code_hash TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT);
    CREATE TABLE grant_ids (jti TEXT PRIMARY KEY, state TEXT NOT NULL, exp BIGINT NOT NULL);
    CREATE TABLE sign_counters (credential TEXT PRIMARY KEY, counter BIGINT NOT NULL);
    CREATE TABLE proof_ids (jti TEXT PRIMARY KEY, exp BIGINT NOT NULL);
    CREATE TABLE idempotency (approver TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (approver, key));
    CREATE INDEX idempotency_at ON idempotency(at);
    CREATE TABLE agents (id TEXT PRIMARY KEY, suspended BOOLEAN NOT NULL DEFAULT FALSE, quarantined BOOLEAN NOT NULL DEFAULT FALSE);
    CREATE TABLE denials (agent TEXT NOT NULL, at BIGINT NOT NULL);
    CREATE INDEX denials_agent ON denials(agent, at);",
    // Rate-limit buckets every instance takes from; `at` is the database's clock, in seconds.
    "CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX rate_buckets_at ON rate_buckets(at);",
    // Counting an owner's unexpired pending items (every hold does, for the cap) from the index.
    "CREATE INDEX requests_owner_pending ON requests(owner, status, expires_at);",
    // Bounded grants, their uses counted; a request approved under one names it.
    "CREATE TABLE bounded_grants (
        jti TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        agent TEXT NOT NULL,
        audience TEXT NOT NULL,
        tool TEXT NOT NULL,
        txn TEXT NOT NULL,
        approver TEXT NOT NULL,
        token TEXT NOT NULL,
        claims TEXT NOT NULL,
        uses BIGINT NOT NULL,
        used BIGINT NOT NULL DEFAULT 0,
        issued_at BIGINT NOT NULL,
        exp BIGINT NOT NULL,
        revoked_at BIGINT,
        CHECK (used <= uses)
    );
    CREATE INDEX bounded_grants_owner ON bounded_grants(owner, agent, exp);
    ALTER TABLE requests ADD COLUMN bounded_jti TEXT;
    CREATE INDEX requests_bounded ON requests(bounded_jti, status);",
];

/// The database's schema version (0 for an empty database).
pub(super) fn version(conn: &mut PgConn) -> Result<i64> {
    let exists: bool = conn
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(conn
        .query_opt("SELECT version FROM schema_version", &[])?
        .map_or(0, |r| r.get(0)))
}

/// Brings the schema up to date in one transaction; returns the versions before and after.
pub(super) fn migrate(conn: &mut PgConn) -> Result<(i64, i64)> {
    conn.batch("BEGIN")?;
    let out = run(conn);
    match out {
        Ok(versions) => {
            conn.batch("COMMIT")?;
            Ok(versions)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn run(conn: &mut PgConn) -> Result<(i64, i64)> {
    conn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    conn.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let before = version(conn)?;
    if before > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            database: before,
            broker: SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(usize::try_from(before).unwrap_or(0)) {
        conn.batch(sql)?;
    }
    conn.execute("DELETE FROM schema_version", &[])?;
    conn.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )?;
    Ok((before, SCHEMA_VERSION))
}
