//! The Countersign desktop app: a thin Tauri shell over `countersign-approver`. Commands are
//! short adapters of engine calls ([`commands`]); the types they exchange with the UI are in
//! [`ipc`] and generated into TypeScript.

pub mod commands;
#[cfg(feature = "demo")]
pub mod demo;
pub mod ipc;
pub mod state;
#[cfg(test)]
mod tests;
mod tray;

use std::path::PathBuf;
use std::sync::Arc;

use tauri::{Manager as _, Runtime};

use crate::state::{AppState, Shared};

/// Registers the app's state, commands and plugins on `builder` (the real runtime, or the mock
/// runtime in tests).
pub fn app<R: Runtime>(builder: tauri::Builder<R>, state: Arc<AppState>) -> tauri::Builder<R> {
    builder
        .manage(Shared(state))
        .invoke_handler(commands::handler())
}

/// The profile directory: `$COUNTERSIGN_HOME`, or the platform's data directory.
fn profile_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("COUNTERSIGN_HOME") {
        return Some(PathBuf::from(home));
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .or_else(|| std::env::var_os("APPDATA").map(PathBuf::from))?;
    Some(base.join("countersign"))
}

/// Runs the app until it quits.
#[expect(
    clippy::print_stderr,
    reason = "the last word when the app cannot start"
)]
pub fn run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let demo =
        std::env::args().any(|a| a == "--demo") || std::env::var_os("COUNTERSIGN_DEMO").is_some();
    let state = match open_state(demo) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("countersign: {e}");
            std::process::exit(1);
        }
    };
    let builder = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tray::show_main(app);
        }))
        .setup(move |app| {
            tray::install(app.handle())?;
            state::start_following(app.handle().clone());
            Ok(())
        });
    let result = app(builder, state).run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("countersign: {e}");
        std::process::exit(1);
    }
}

fn open_state(demo: bool) -> Result<Arc<AppState>, String> {
    if demo {
        #[cfg(feature = "demo")]
        return tauri::async_runtime::block_on(demo::start()).map_err(|e| e.to_string());
        #[cfg(not(feature = "demo"))]
        return Err("this build has no demo mode (feature `demo`)".into());
    }
    let dir = profile_dir().ok_or("no profile directory: set COUNTERSIGN_HOME or HOME")?;
    let profile = std::env::var("COUNTERSIGN_PROFILE").unwrap_or_else(|_| "default".into());
    let engine =
        countersign_approver::engine::Engine::open(&dir, &profile).map_err(|e| e.to_string())?;
    Ok(Arc::new(AppState::new(engine, false)))
}

/// Shows the main window (from the tray, a second instance, or a notification).
pub fn show<R: Runtime>(app: &tauri::AppHandle<R>) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}
