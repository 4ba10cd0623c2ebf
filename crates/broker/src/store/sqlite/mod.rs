//! [`Store`] on one SQLite file in WAL mode: migrations, requests with their events, grant ids,
//! sign counters, request-proof ids, idempotency keys and agent standing.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use super::{Result, SchemaState, StoreError};

mod agents;
mod bounded;
mod calls;
mod events;
mod registry;
mod replay;
mod requests;
mod rows;
mod schema;

/// The statuses an item ends in.
const FINAL_STATUSES: &str = "('denied', 'expired', 'cancelled', 'redeemed', 'revoked')";

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the file at `path` and of this broker, read without creating,
    /// migrating or writing anything.
    pub fn schema_state(path: &Path) -> Result<SchemaState> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let database: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(SchemaState {
            database,
            broker: schema::SCHEMA_VERSION,
        })
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock()?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > schema::MIGRATIONS.len() {
            // Written by a newer broker: an older one must not write to it.
            return Err(StoreError::SchemaTooNew {
                database: i64::try_from(version).unwrap_or(i64::MAX),
                broker: schema::SCHEMA_VERSION,
            });
        }
        let tx = conn.transaction()?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}
