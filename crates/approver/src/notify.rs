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

/// The desktop's notification server.
#[derive(Debug, Clone)]
pub struct DesktopNotifier {
    /// Show only [`PRIVATE_TITLE`], for lock screens and shared displays.
    pub private: bool,
    pub app_name: String,
}

impl DesktopNotifier {
    pub fn new(private: bool) -> Self {
        Self {
            private,
            app_name: "Countersign".into(),
        }
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
        notification
            .show()
            .map(drop)
            .map_err(|e| Error::Notification(e.to_string()))
    }

    fn private(&self) -> bool {
        self.private
    }
}
