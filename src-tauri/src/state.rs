//! The app's state: the engine behind one lock, notification settings, the live connections,
//! and the follower that keeps the history current and tells the UI.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_approver::authn::{CeremonyStep, Prompt};
use countersign_approver::client::Delivery;
use countersign_approver::engine::{Connection, Engine};
use countersign_approver::notify::{DesktopNotifier, Notifier};
use tauri::{Emitter as _, Manager as _, Runtime};

use crate::events::changed;

/// Shared state, as managed by Tauri.
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<AppState>);

#[derive(Debug)]
pub struct AppState {
    pub engine: tokio::sync::Mutex<Engine>,
    /// Notifications show only "Approval requested".
    pub privacy: AtomicBool,
    /// Unix seconds until which notifications are paused.
    pub paused_until: Arc<AtomicI64>,
    pub demo: bool,
    /// Brokers with a live stream.
    pub connected: Mutex<HashSet<String>>,
    /// Where a PIN typed in the UI goes while a ceremony waits for it.
    pub pin: Mutex<Option<std::sync::mpsc::Sender<Option<String>>>>,
    /// The last pairing link opened, until the UI takes it.
    pub pair_link: Mutex<
        Option<Result<countersign_protocol::link::PairLink, countersign_protocol::link::LinkError>>,
    >,
    /// The task following every paired broker: one at a time, replaced after a pairing.
    follower: Mutex<Option<tauri::async_runtime::JoinHandle<()>>>,
}

/// The profile setting that keeps notification privacy across restarts.
pub const PRIVACY_SETTING: &str = "notifications.privacy";

impl AppState {
    pub fn new(engine: Engine, demo: bool) -> Self {
        // Privacy outlives a restart or a login autostart: the lock screen never shows details
        // the owner chose to hide.
        let privacy = matches!(
            engine.history().setting(PRIVACY_SETTING),
            Ok(Some(value)) if value == "on"
        );
        Self {
            engine: tokio::sync::Mutex::new(engine),
            privacy: AtomicBool::new(privacy),
            paused_until: Arc::new(AtomicI64::new(0)),
            demo,
            connected: Mutex::new(HashSet::new()),
            pin: Mutex::new(None),
            pair_link: Mutex::new(None),
            follower: Mutex::new(None),
        }
    }

    pub fn connected(&self, broker: &str) -> bool {
        self.connected
            .lock()
            .map(|c| c.contains(broker))
            .unwrap_or(false)
    }

    fn set_connected(&self, broker: &str, up: bool) {
        if let Ok(mut c) = self.connected.lock() {
            if up {
                c.insert(broker.to_owned());
            } else {
                c.remove(broker);
            }
        }
    }

    /// Notifies each new pending item once, unless notifications are paused; a click on a
    /// notification shows the window with its item.
    fn notify<R: Runtime>(&self, app: &tauri::AppHandle<R>, engine: &mut Engine) {
        if self.paused_until.load(Ordering::Relaxed) > engine.now() {
            return;
        }
        let app = app.clone();
        let notifier = DesktopNotifier::new(self.privacy.load(Ordering::Relaxed)).on_open(
            Arc::new(move |item: &str| {
                crate::window::show(&app);
                let _ = app.emit("open-item", item);
            }),
        );
        if let Err(e) = engine.notify_pending(&notifier as &dyn Notifier) {
            tracing::warn!(error = %e, "notification failed");
        }
    }
}

/// The number of pending items.
pub fn pending_count(engine: &Engine) -> u32 {
    engine
        .history()
        .count(countersign_approver::history::ItemStatus::Pending)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Follows every paired broker in the background: applies what arrives, notifies, expires,
/// sends queued decisions after each reconnection, and tells the UI. Called again (after a
/// pairing), it replaces the previous follower: one stream per broker, always.
pub fn start_following<R: Runtime>(app: tauri::AppHandle<R>) {
    let Some(shared) = app.try_state::<Shared>().map(|s| s.0.clone()) else {
        return;
    };
    let state = shared.clone();
    let task = tauri::async_runtime::spawn(async move {
        let followed = shared.engine.lock().await.follow();
        let mut rx = match followed {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the brokers");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                delivery = rx.recv() => {
                    let Some((broker, delivery)) = delivery else { break };
                    apply(&app, &shared, &broker, delivery).await;
                }
                _ = tick.tick() => {
                    let mut engine = shared.engine.lock().await;
                    if matches!(engine.expire(), Ok(expired) if !expired.is_empty()) {
                        let pending = pending_count(&engine);
                        drop(engine);
                        changed(&app, pending);
                    }
                }
            }
        }
    });
    // Dropping the old follower's receiver ends its streams at once.
    let previous = state
        .follower
        .lock()
        .ok()
        .and_then(|mut slot| slot.replace(task));
    if let Some(previous) = previous {
        previous.abort();
    }
}

async fn apply<R: Runtime>(
    app: &tauri::AppHandle<R>,
    shared: &Arc<AppState>,
    broker: &str,
    delivery: Delivery,
) {
    let mut engine = shared.engine.lock().await;
    match engine.apply_delivery(broker, delivery).await {
        Ok(applied) => {
            match &applied.connection {
                Some(Connection::Up) => shared.set_connected(broker, true),
                Some(Connection::Down { reason, retry_in }) => {
                    shared.set_connected(broker, false);
                    tracing::info!(%broker, %reason, ?retry_in, "disconnected");
                }
                None => {}
            }
            for failed in &applied.not_taken {
                tracing::warn!(%broker, item = %failed.item, error = %failed.error, "an item from the broker was refused");
            }
            if let Some(e) = &applied.deferred {
                tracing::info!(%broker, error = %e, "decisions stay queued");
            }
        }
        Err(e) => tracing::warn!(%broker, error = %e, "applying what the broker sent failed"),
    }
    shared.notify(app, &mut engine);
    let pending = pending_count(&engine);
    drop(engine);
    changed(app, pending);
}

/// The authenticator's prompts, shown by the UI: it hears `ceremony` events and answers a PIN
/// request with the `submit_pin` command.
#[derive(Debug)]
pub struct GuiPrompt<R: Runtime> {
    pub app: tauri::AppHandle<R>,
    pub state: Arc<AppState>,
}

impl<R: Runtime> Prompt for GuiPrompt<R> {
    fn pin(&self) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut slot) = self.state.pin.lock() {
            *slot = Some(tx);
        }
        let _ = self.app.emit("ceremony", CeremonyStep::Pin);
        let pin = rx.recv_timeout(Duration::from_secs(120)).ok().flatten();
        if let Ok(mut slot) = self.state.pin.lock() {
            *slot = None;
        }
        pin
    }

    fn touch(&self) {
        let _ = self.app.emit("ceremony", CeremonyStep::Touch);
    }

    fn processing(&self) {
        let _ = self.app.emit("ceremony", CeremonyStep::Processing);
    }
}
