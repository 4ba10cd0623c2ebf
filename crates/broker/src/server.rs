//! Running the broker: storage, policy, the HTTP listener (TLS with rustls when configured) and
//! the expiry sweeper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::policy::Policies;
use crate::state::AppState;
use crate::store::{PgStore, SqliteStore, Store};

/// Builds the state for `config`: loads and validates policies, opens the database.
pub fn build(config: Config) -> anyhow::Result<Arc<AppState>> {
    let policies = match &config.policies {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Policies::load(&text).with_context(|| format!("loading {}", path.display()))?
        }
        None if config.demo => Policies::demo()?,
        None => bail!(
            "no policy file: set `policies = \"/path/to/policies.cedar\"` in the configuration \
             (crates/broker/policies/template.cedar is a default-deny starting point). Only a \
             demo broker (`demo = true`) runs the built-in demo policies."
        ),
    };
    let store = open_store(&config)?;
    Ok(Arc::new(AppState::new(config, store, policies)?))
}

/// Opens the configured store, migrating its schema: PostgreSQL when `[store] url` is set,
/// else the SQLite file.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store.url {
        Some(url) => Arc::new(
            PgStore::open(url, config.store.max_connections())
                .context("opening the PostgreSQL store")?,
        ),
        None => Arc::new(
            SqliteStore::open(&config.database)
                .with_context(|| format!("opening {}", config.database.display()))?,
        ),
    })
}

/// A running broker on a bound address.
#[derive(Debug)]
pub struct RunningBroker {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Stops serving, and ends open event streams as a stopped process would.
    pub fn stop(self) {
        self.state.closing.send_replace(true);
        self.task.abort();
    }

    /// [`Self::stop`], then waits until the listener is closed, so that the address can be
    /// bound again at once (a restart on the same port).
    pub async fn shut_down(self) {
        self.state.closing.send_replace(true);
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Binds `config.listen` (port 0 picks a free port) and serves in the background; plain HTTP.
pub async fn spawn(config: Config) -> anyhow::Result<RunningBroker> {
    // SO_REUSEADDR: a restart binds its address again at once, even while connections of the
    // previous run linger in TIME_WAIT.
    let socket = if config.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener: TcpListener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    let state = build(config)?;
    let app = crate::routes::router(state.clone());
    let background = start_background(&state);
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(no_delay(listener), service).await {
            tracing::error!(error = %e, "server stopped");
        }
        for task in background {
            task.abort();
        }
    });
    Ok(RunningBroker { addr, state, task })
}

/// Serves until interrupted, with TLS when configured.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let tls = config.tls.clone();
    let listen = config.listen;
    let state = build(config)?;
    let app = crate::routes::router(state.clone());
    let _background = start_background(&state);
    tracing::info!(%listen, public_url = %state.public_url, tls = tls.is_some(), "broker listening");
    match tls {
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .context("loading the TLS certificate and key")?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            axum_server::bind(listen)
                .acceptor(acceptor)
                .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                .await?;
        }
        None => {
            let listener = TcpListener::bind(listen).await?;
            axum::serve(
                no_delay(listener),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown())
            .await?;
        }
    }
    Ok(())
}

/// Sends each response write at once (`TCP_NODELAY`). With Nagle's algorithm, an SSE event
/// written while the previous one is unacknowledged waits for that acknowledgement, which the
/// client delays by up to 40 ms: every event after the first of a burst would pay it.
fn no_delay(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut TcpStream)> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
    })
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}

/// How often the hub looks for events it was not told about (written by another instance
/// whose notification was lost).
const CATCH_UP: Duration = Duration::from_secs(1);

/// The instance's background work: the expiry sweeper and the event hub.
fn start_background(state: &Arc<AppState>) -> [tokio::task::JoinHandle<()>; 2] {
    [
        tokio::spawn(sweep(state.clone())),
        tokio::spawn(state.hub.clone().run(state.store.clone(), CATCH_UP)),
    ]
}

/// Expires pending actions whose time has passed, and tells their owners and agents; reloads
/// the approver registry when an administrator changed it; applies retention once a minute.
async fn sweep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        match state.store.expire_due(state.now()) {
            Ok(expired) => {
                if !expired.is_empty() {
                    state
                        .metrics
                        .expired
                        .fetch_add(expired.len() as u64, Ordering::Relaxed);
                    state.events_written();
                }
            }
            Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
        }
        match state.refresh_registry() {
            Ok(true) => tracing::info!("approver registry reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "reloading the approver registry failed"),
        }
        if last_purge.elapsed() >= Duration::from_secs(60) {
            last_purge = tokio::time::Instant::now();
            let retention = state.config.retention.into();
            match state.store.purge(&retention, state.now()) {
                Ok(purged) if purged != crate::store::Purged::default() => {
                    tracing::info!(?purged, "retention applied");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
        }
    }
}
