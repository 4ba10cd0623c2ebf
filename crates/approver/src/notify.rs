//! Notifications: one per pending item, through a [`Notifier`]. The desktop implementation
//! talks to the session's notification server (org.freedesktop.Notifications on Linux, the
//! platform centre elsewhere) through notify-rust.

use countersign_protocol::PendingAction;

use crate::display::{clip, escape_markup, visible};
use crate::error::{Error, Result};

/// The text shown when details are hidden (privacy mode).
pub const PRIVATE_TITLE: &str = "Approval requested";

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub item: String,
    /// Agent and tool.
    pub title: String,
    /// The intent.
    pub body: String,
}

impl Notice {
    /// The notice for a pending action (untrusted text made visible and clipped).
    pub fn of(pending: &PendingAction) -> Self {
        Self {
            item: pending.id.clone(),
            title: clip(
                &visible(&format!(
                    "{} wants {}",
                    pending.actor.id.as_str(),
                    pending.resource.id
                )),
                120,
            ),
            body: clip(&visible(&pending.context.intent), 240),
        }
    }
}

/// Shows notifications.
pub trait Notifier: Send + Sync {
    fn notify(&self, notice: &Notice) -> Result<()>;
    /// Whether details are hidden.
    fn private(&self) -> bool;
}

/// Called with the item's id when the owner clicks its notification.
pub type OnOpen = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The desktop's notification server.
#[derive(Clone)]
pub struct DesktopNotifier {
    /// Show only [`PRIVATE_TITLE`], for lock screens and shared displays.
    pub private: bool,
    pub app_name: String,
    /// What a click on a notification does (Linux and the BSDs, where the notification server
    /// reports the click; elsewhere the platform opens the app).
    pub on_open: Option<OnOpen>,
}

impl std::fmt::Debug for DesktopNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesktopNotifier")
            .field("private", &self.private)
            .field("app_name", &self.app_name)
            .field("on_open", &self.on_open.is_some())
            .finish()
    }
}

impl DesktopNotifier {
    pub fn new(private: bool) -> Self {
        Self {
            private,
            app_name: "Countersign".into(),
            on_open: None,
        }
    }

    /// Opens the item when its notification is clicked.
    #[must_use]
    pub fn on_open(mut self, f: OnOpen) -> Self {
        self.on_open = Some(f);
        self
    }
}

impl Notifier for DesktopNotifier {
    fn notify(&self, notice: &Notice) -> Result<()> {
        let mut notification = notify_rust::Notification::new();
        notification.appname(&self.app_name);
        if self.private {
            notification.summary(PRIVATE_TITLE);
        } else {
            notification
                .summary(&notice.title)
                .body(&escape_markup(&notice.body));
        }
        #[cfg(all(unix, not(target_os = "macos")))]
        if self.on_open.is_some() {
            // The default action is what a click on the notification's body invokes.
            notification.action("default", "Review");
        }
        let handle = notification
            .show()
            .map_err(|e| Error::Notification(e.to_string()))?;
        #[cfg(all(unix, not(target_os = "macos")))]
        if let Some(on_open) = self.on_open.clone() {
            // The server reports the click, or the close, on the bus; one thread waits for
            // every notification on screen.
            clicks::watch(handle, notice.item.clone(), on_open)?;
        }
        #[cfg(not(all(unix, not(target_os = "macos"))))]
        drop(handle);
        Ok(())
    }

    fn private(&self) -> bool {
        self.private
    }
}

/// Clicks on notifications: one thread, whatever the number of notifications on screen, waits
/// for the notification server's answers (an `ActionInvoked` or `NotificationClosed` signal
/// each) as futures on a single-threaded runtime.
#[cfg(all(unix, not(target_os = "macos")))]
mod clicks {
    use std::sync::OnceLock;

    use notify_rust::NotificationHandle;
    use tokio::sync::mpsc;

    use super::OnOpen;
    use crate::error::{Error, Result};

    type Watch = (NotificationHandle, String, OnOpen);

    static WATCHER: OnceLock<mpsc::UnboundedSender<Watch>> = OnceLock::new();

    /// Calls `on_open(item)` when `handle`'s notification is clicked.
    pub(super) fn watch(handle: NotificationHandle, item: String, on_open: OnOpen) -> Result<()> {
        let sender = match WATCHER.get() {
            Some(sender) => sender,
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                std::thread::Builder::new()
                    .name("notification-clicks".into())
                    .spawn(move || run(rx))
                    .map_err(|e| Error::Notification(e.to_string()))?;
                WATCHER.get_or_init(|| tx)
            }
        };
        sender
            .send((handle, item, on_open))
            .map_err(|_| Error::Notification("the notification watcher stopped".into()))
    }

    fn run(mut rx: mpsc::UnboundedReceiver<Watch>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            while let Some((handle, item, on_open)) = rx.recv().await {
                tokio::task::spawn_local(async move {
                    handle
                        .wait_for_action_async(|response| {
                            if matches!(response, notify_rust::NotificationResponse::Default) {
                                on_open(&item);
                            }
                        })
                        .await;
                });
            }
        });
    }

    /// How many threads wait for notifications (for tests): at most one.
    pub(crate) fn threads() -> usize {
        usize::from(WATCHER.get().is_some())
    }
}

/// How many threads wait for clicks on notifications: one once any notification with a click
/// handler was shown, however many are on screen.
pub fn click_threads() -> usize {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        clicks::threads()
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    {
        0
    }
}
