//! The main window.

use tauri::{Manager as _, Runtime};

/// Shows the main window (from the tray, a second instance, a link or a notification).
pub(crate) fn show<R: Runtime>(app: &tauri::AppHandle<R>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}
