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
            // The server reports the click, or the close, on the bus: one short-lived thread
            // per notification on screen waits for it.
            let item = notice.item.clone();
            std::thread::Builder::new()
                .name("notification".into())
                .spawn(move || {
                    handle.wait_for_action(|action| {
                        if action == "default" {
                            on_open(&item);
                        }
                    });
                })
                .map_err(|e| Error::Notification(e.to_string()))?;
        }
        #[cfg(not(all(unix, not(target_os = "macos"))))]
        drop(handle);
        Ok(())
    }

    fn private(&self) -> bool {
        self.private
    }
}
