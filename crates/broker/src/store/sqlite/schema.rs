//! The broker database's schema, as an append-only list of migrations.

/// The schema version this broker writes (SQLite's `user_version`).
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        agent TEXT NOT NULL,
        action_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        pending TEXT NOT NULL,
        merged INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        grant_token TEXT,
        grant_jti TEXT,
        grant_exp INTEGER,
        reason TEXT,
        decided_by TEXT,
        decided_at INTEGER,
        redeemed_at INTEGER
    );
    CREATE INDEX requests_owner_status ON requests(owner, status);
    CREATE INDEX requests_merge ON requests(agent, action_hash, status);
    CREATE INDEX requests_expiry ON requests(status, expires_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        body TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX events_owner ON events(owner, id);
    CREATE TABLE approvers (id TEXT PRIMARY KEY, owner TEXT NOT NULL, entry TEXT NOT NULL, updated_at INTEGER NOT NULL);
    CREATE TABLE pairing_codes (code_hash TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER);
    CREATE TABLE grant_ids (jti TEXT PRIMARY KEY, state TEXT NOT NULL, exp INTEGER NOT NULL);
    CREATE TABLE sign_counters (credential TEXT PRIMARY KEY, counter INTEGER NOT NULL);
    CREATE TABLE proof_ids (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);
    CREATE TABLE idempotency (approver TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (approver, key));
    CREATE TABLE agents (id TEXT PRIMARY KEY, suspended INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE denials (agent TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE INDEX denials_agent ON denials(agent, at);",
    // Approvers' device keys and credentials, one row each: no two approvers can share one, and
    // a bad entry can never be stored next to a good one. A version that every change bumps,
    // so instances reload their registry. Events reference their request instead of copying
    // it (an agent's 250 KiB item merged 30 times is stored once, not 31 times). Listing newest
    // first by owner.
    "CREATE TABLE approver_keys (kid TEXT PRIMARY KEY, approver TEXT NOT NULL);
    CREATE TABLE approver_credentials (id TEXT PRIMARY KEY, approver TEXT NOT NULL);
    INSERT OR IGNORE INTO approver_keys (kid, approver)
        SELECT k.value ->> '$.kid', a.id FROM approvers a, json_each(a.entry, '$.device_keys') k;
    INSERT OR IGNORE INTO approver_credentials (id, approver)
        SELECT c.value ->> '$.id', a.id FROM approvers a, json_each(a.entry, '$.credentials') c;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 1);
    CREATE TABLE events_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        request TEXT,
        agent TEXT,
        detail TEXT,
        at INTEGER NOT NULL
    );
    INSERT INTO events_v2 (id, owner, kind, request, agent, detail, at)
        SELECT id, owner, body ->> '$.kind', body ->> '$.request.pending.id', body ->> '$.agent',
               body ->> '$.detail', at FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_owner ON events(owner, id);
    CREATE INDEX events_request ON events(request);
    CREATE INDEX events_at ON events(at);
    CREATE INDEX requests_owner ON requests(owner);
    CREATE INDEX requests_decided ON requests(status, decided_at);
    CREATE INDEX idempotency_at ON idempotency(at);",
    // What became of a redeemed call, as its gateway reported it (once).
    "ALTER TABLE requests ADD COLUMN outcome TEXT;
    ALTER TABLE requests ADD COLUMN outcome_detail TEXT;",
    // Counting an owner's unexpired pending items (every hold does, for the cap) from the index
    // alone: reading each item's row for its expiry cost a page read per pending item.
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
        uses INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        issued_at INTEGER NOT NULL,
        exp INTEGER NOT NULL,
        revoked_at INTEGER,
        CHECK (used <= uses)
    );
    CREATE INDEX bounded_grants_owner ON bounded_grants(owner, agent, exp);
    ALTER TABLE requests ADD COLUMN bounded_jti TEXT;
    CREATE INDEX requests_bounded ON requests(bounded_jti, status);",
];
