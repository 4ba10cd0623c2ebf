//! [`Store`](super::Store) on PostgreSQL, for several broker instances on one database.
//!
//! The store's trait is synchronous (the grant verifier calls its replay and sign-counter stores
//! from synchronous code), so each connection's protocol task runs on a small runtime the store
//! owns, and a call waits for its client's answer with a plain executor: it works from any
//! thread, inside the server's runtime or outside it, and never starts a runtime within one.
//!
//! What SQLite gets from one writer at a time, this store gets from row locks, held to commit:
//! - a request's state changes lock its row (`FOR UPDATE`), so the first decision, the one
//!   redemption and the one expiry win whichever instance they reach;
//! - holding a request takes a transaction-scoped advisory lock on its owner, so merging and
//!   the per-owner cap see every other instance's holds;
//! - each event takes its id from the `event_seq` counter row, locked until its transaction
//!   commits: ids commit in the order they are assigned, with no gaps, so a reader that has
//!   seen id `n` has seen everything below it (the stream's and the fan-out's invariant);
//! - each event is announced with `NOTIFY countersign_events, '<id>'`, delivered at commit to
//!   every instance's listener.
//!
//! A database that cannot be reached (down, restarting, out of connections) is
//! [`StoreError::Unavailable`]: the API answers 503 `store_unavailable`, and the next call
//! connects again.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{Result, SchemaState, StoreError};

mod agents;
mod bounded;
mod events;
mod registry;
mod requests;
mod rows;
mod schema;
mod target;

pub use schema::SCHEMA_VERSION;

/// The channel every event is announced on.
pub const CHANNEL: &str = "countersign_events";

/// How long a call waits for a free connection, and for a new one to be made.
const WAIT: Duration = Duration::from_secs(5);

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The PostgreSQL store.
pub struct PgStore {
    target: target::Target,
    runtime: Option<tokio::runtime::Runtime>,
    pool: Mutex<Vec<PgConn>>,
    free: Condvar,
    /// Connections made and not yet dropped.
    open: Mutex<usize>,
    max: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.target.config.get_hosts())
            .field("dbname", &self.target.config.get_dbname())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or a `key=value` string; with TLS, the server's
    /// certificate is always verified, against `sslrootcert` or the public roots) with at most
    /// `max_connections` connections, without touching the schema.
    pub fn connect(url: &str, max_connections: usize) -> Result<Self> {
        let mut target = target::Target::parse(url)?;
        let config = &mut target.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(WAIT);
        }
        config.application_name("countersign-broker");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("countersign-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("starting the database runtime: {e}")))?;
        let store = Self {
            target,
            runtime: Some(runtime),
            pool: Mutex::new(Vec::new()),
            free: Condvar::new(),
            open: Mutex::new(0),
            max: max_connections.max(2),
        };
        // Reach the database now: a wrong URL or a database that is down fails at start.
        drop(store.conn()?);
        Ok(store)
    }

    /// [`Self::connect`], then brings the schema up to date (under an advisory lock, so
    /// instances starting together migrate once). A database newer than this broker is an
    /// error: an older broker must not write to it.
    pub fn open(url: &str, max_connections: usize) -> Result<Self> {
        let store = Self::connect(url, max_connections)?;
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the database and of this broker.
    pub fn schema_state(&self) -> Result<SchemaState> {
        let mut conn = self.conn()?;
        Ok(SchemaState {
            database: schema::version(&mut conn)?,
            broker: SCHEMA_VERSION,
        })
    }

    /// Runs the migrations the database lacks; returns the versions before and after.
    pub fn migrate(&self) -> Result<(i64, i64)> {
        let mut conn = self.conn()?;
        schema::migrate(&mut conn)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Set from construction until drop.
        self.runtime.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// Listens for events written by any instance and calls `wake` for each, and once after
    /// every (re)connection of the listener: notifications sent while it was down are lost,
    /// and the caller reads what committed meanwhile.
    pub fn listen(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let target = self.target.clone();
        self.runtime().spawn(events::listen(target, wake));
    }

    /// A connection from the pool, or a new one.
    pub(super) fn conn(&self) -> Result<Pooled<'_>> {
        let deadline = std::time::Instant::now() + WAIT;
        let mut pool = self.lock(&self.pool)?;
        loop {
            while let Some(conn) = pool.pop() {
                if !conn.client.is_closed() {
                    return Ok(Pooled {
                        store: self,
                        conn: Some(conn),
                    });
                }
                self.closed_one();
            }
            {
                let mut open = self.lock(&self.open)?;
                if *open < self.max {
                    *open += 1;
                    drop(open);
                    drop(pool);
                    return match self.new_conn() {
                        Ok(conn) => Ok(Pooled {
                            store: self,
                            conn: Some(conn),
                        }),
                        Err(e) => {
                            self.closed_one();
                            Err(e)
                        }
                    };
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "all {} database connections stayed busy for {} s",
                    self.max,
                    WAIT.as_secs()
                )));
            }
            pool = self
                .free
                .wait_timeout(pool, left)
                .map_err(|_| StoreError::Poisoned)?
                .0;
        }
    }

    fn new_conn(&self) -> Result<PgConn> {
        let target = self.target.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime().spawn(async move {
            let made = match target.connect().await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "database connection closed");
                        }
                    });
                    Ok(client)
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(made);
        });
        let client = futures_executor::block_on(rx)
            .map_err(|_| StoreError::Unavailable("the database runtime stopped".into()))?
            .map_err(|e| {
                StoreError::Unavailable(format!("connecting to the database: {}", described(&e)))
            })?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }

    fn closed_one(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = open.saturating_sub(1);
        }
        self.free.notify_one();
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> Result<MutexGuard<'a, T>> {
        m.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Runs `f` in a transaction, committed when it returns `Ok`.
    pub(super) fn with_tx<T>(&self, mut f: impl FnMut(&mut PgConn) -> Result<T>) -> Result<T> {
        self.with_tx_or_rollback(|conn| f(conn).map(|out| (out, true)))
    }

    /// Runs `f` in a transaction, committed when it returns `Ok((_, true))`, rolled back
    /// otherwise. A deadlock or serialisation failure is retried (the transaction wrote
    /// nothing).
    pub(super) fn with_tx_or_rollback<T>(
        &self,
        mut f: impl FnMut(&mut PgConn) -> Result<(T, bool)>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.conn()?;
            conn.batch("BEGIN")?;
            match f(&mut conn) {
                Ok((out, true)) => match conn.batch("COMMIT") {
                    Ok(()) => return Ok(out),
                    Err(e) if retryable(&e) && attempt < 5 => {}
                    Err(e) => return Err(e),
                },
                Ok((out, false)) => {
                    conn.batch("ROLLBACK")?;
                    return Ok(out);
                }
                Err(e) => {
                    let _ = conn.batch("ROLLBACK");
                    if !(retryable(&e) && attempt < 5) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Ok(pool) = self.pool.get_mut() {
            pool.clear();
        }
        // Allowed inside another runtime, unlike dropping it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(e) if e.code().is_some_and(|c| {
        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    }))
}

/// One connection and the statements prepared on it.
pub(super) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A connection borrowed from the pool; back to it when dropped, unless it closed.
pub(super) struct Pooled<'a> {
    store: &'a PgStore,
    conn: Option<PgConn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() {
            self.store.closed_one();
            return;
        }
        if let Ok(mut pool) = self.store.pool.lock() {
            pool.push(conn);
        }
        self.store.free.notify_one();
    }
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = wait(self.client.prepare(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        wait(self.client.query(&statement, params))
    }

    pub(super) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        let statement = self.statement(sql)?;
        wait(self.client.query_opt(&statement, params))
    }

    pub(super) fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row> {
        let statement = self.statement(sql)?;
        wait(self.client.query_one(&statement, params))
    }

    pub(super) fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64> {
        let statement = self.statement(sql)?;
        wait(self.client.execute(&statement, params))
    }

    /// Statements without parameters (transaction control, schema).
    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        wait(self.client.batch_execute(sql))
    }
}

/// Waits for a client call; its connection's task runs on the store's runtime.
fn wait<T>(call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
    futures_executor::block_on(call).map_err(classify)
}

/// A lost or refused connection is the database being unavailable; anything else is an error
/// of the statement.
/// An error with its causes (tokio-postgres keeps the reason, e.g. which certificate check
/// failed, in its source).
pub(super) fn described(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn classify(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("the database connection closed: {e}"));
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    match e.code() {
        None if io => StoreError::Unavailable(format!("the database: {e}")),
        None => StoreError::Postgres(e),
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (shutdown, restart);
            // 53: insufficient resources.
            if matches!(class, "08" | "57" | "53") {
                StoreError::Unavailable(format!("the database: {e}"))
            } else {
                StoreError::Postgres(e)
            }
        }
    }
}
