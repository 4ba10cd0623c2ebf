//! The tray icon: the pending count, and a menu to open the window, pause notifications, or
//! quit. (On Linux the count shows as the icon's title where the panel supports it.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tauri::menu::{Menu, MenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Runtime};

const TRAY: &str = "countersign";

/// Installs the tray icon; pausing from its menu sets `paused_until` (Unix seconds).
pub(crate) fn install<R: Runtime>(
    app: &AppHandle<R>,
    paused_until: Arc<AtomicI64>,
) -> tauri::Result<()> {
    let open = MenuItem::with_id(app, "open", "Open Countersign", true, None::<&str>)?;
    let pause = MenuItem::with_id(
        app,
        "pause",
        "Pause notifications for 1 hour",
        true,
        None::<&str>,
    )?;
    let resume = MenuItem::with_id(app, "resume", "Resume notifications", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &pause, &resume, &quit])?;
    let mut builder = TrayIconBuilder::with_id(TRAY)
        .menu(&menu)
        .tooltip("Countersign")
        .on_menu_event(move |app, event| match event.id().as_ref() {
            "open" => crate::window::show(app),
            "pause" | "resume" => {
                let until = if event.id().as_ref() == "pause" {
                    now() + 3600
                } else {
                    0
                };
                paused_until.store(until, Ordering::Relaxed);
                tracing::info!(until, "notifications paused until");
            }
            "quit" => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    builder.build(app)?;
    Ok(())
}

/// Shows the pending count on the tray icon.
pub(crate) fn set_pending<R: Runtime>(app: &AppHandle<R>, pending: u32) {
    if let Some(tray) = app.tray_by_id(TRAY) {
        let text = if pending == 0 {
            String::new()
        } else {
            pending.to_string()
        };
        let _ = tray.set_title(Some(text));
        let _ = tray.set_tooltip(Some(format!("Countersign: {pending} pending")));
    }
    tracing::debug!(pending, "pending count");
}

fn now() -> i64 {
    countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock)
}
