//! What the app tells the UI and the tray when the history changes.

use tauri::{Emitter as _, Runtime};

use crate::ipc::Changed;

/// Tells the UI and the tray that something changed.
pub(crate) fn changed<R: Runtime>(app: &tauri::AppHandle<R>, pending: u32) {
    let _ = app.emit("changed", Changed { pending });
    crate::tray::set_pending(app, pending);
}
