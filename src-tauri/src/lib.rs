//! The Countersign desktop app: a thin Tauri shell over `countersign-approver`. Commands are
//! short adapters of engine calls ([`commands`]); the types they exchange with the UI are in
//! [`ipc`] and generated into TypeScript.

pub mod commands;
#[cfg(feature = "demo")]
pub mod demo;
mod events;
mod instance;
pub mod ipc;
pub mod state;
#[cfg(test)]
mod tests;
mod tray;
mod window;

use std::sync::Arc;

use tauri::{Manager as _, Runtime};

use crate::state::{AppState, Shared};

/// Registers the app's state, commands and plugins on `builder` (the real runtime, or the mock
/// runtime in tests).
pub fn app<R: Runtime>(builder: tauri::Builder<R>, state: Arc<AppState>) -> tauri::Builder<R> {
    let demo = state.demo;
    with_commands(builder, demo).manage(Shared(state))
}

/// The commands, and the plugins they use. The plugins' own commands are not granted to the
/// webview (see `capabilities/default.json`).
fn with_commands<R: Runtime>(builder: tauri::Builder<R>, demo: bool) -> tauri::Builder<R> {
    // Started at login, the app waits in the tray; a demo build starts its demo again.
    let mut autostart = tauri_plugin_autostart::Builder::new()
        .app_name("Countersign")
        .arg(AUTOSTART_ARG);
    if demo {
        autostart = autostart.arg("--demo");
    }
    builder
        .plugin(autostart.build())
        .invoke_handler(commands::handler())
}

/// The argument a login start passes: the window stays hidden.
const AUTOSTART_ARG: &str = "--autostart";

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
    let hidden = std::env::args().any(|a| a == AUTOSTART_ARG);
    let context = tauri::generate_context!();
    if instance::forward_to_running(&context.config().identifier) {
        return;
    }
    // Two starts racing past that check: the plugin makes the later one hand its arguments over
    // and exit before opening anything; so the state is opened in `setup`, after its check.
    let builder = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            window::show(app);
        }))
        .plugin(tauri_plugin_deep_link::init());
    let builder = with_commands(builder, demo).setup(move |app| {
        let state = open_state(demo)?;
        let paused_until = state.paused_until.clone();
        app.manage(Shared(state));
        links(app);
        tray::install(app.handle(), paused_until)?;
        state::start_following(app.handle().clone());
        if hidden && let Some(window) = app.get_webview_window("main") {
            window.hide()?;
        }
        Ok(())
    });
    let result = builder.run(context);
    if let Err(e) = result {
        eprintln!("countersign: {e}");
        std::process::exit(1);
    }
}

/// Listens for `countersign://` links (a second instance's argument, the platform's open
/// request, or this instance's own argument) and offers each to the UI.
fn links<R: Runtime>(app: &tauri::App<R>) {
    use tauri_plugin_deep_link::DeepLinkExt as _;
    let handle = app.handle().clone();
    app.deep_link().on_open_url(move |event| {
        for url in event.urls() {
            offer_link(&handle, url.as_str());
        }
    });
    if let Ok(Some(urls)) = app.deep_link().get_current() {
        for url in urls {
            offer_link(app.handle(), url.as_str());
        }
    }
    // Installed packages register the scheme; an AppImage registers it when it runs.
    #[cfg(target_os = "linux")]
    if app.env().appimage.is_some()
        && let Err(e) = app.deep_link().register_all()
    {
        tracing::warn!(error = %e, "countersign:// links are not registered");
    }
}

/// Keeps a link (or why it was refused) for the UI, shows the window and tells the UI.
fn offer_link<R: Runtime>(app: &tauri::AppHandle<R>, url: &str) {
    use tauri::Emitter as _;
    let parsed = countersign_protocol::link::PairLink::parse(url);
    if let Err(e) = &parsed {
        tracing::warn!(error = %e, "a countersign:// link was refused");
    }
    if let Some(shared) = app.try_state::<Shared>()
        && let Ok(mut slot) = shared.0.pair_link.lock()
    {
        *slot = Some(parsed);
    }
    window::show(app);
    let _ = app.emit("pair-link", ());
}

fn open_state(demo: bool) -> Result<Arc<AppState>, String> {
    if demo {
        #[cfg(feature = "demo")]
        return tauri::async_runtime::block_on(demo::start()).map_err(|e| e.to_string());
        #[cfg(not(feature = "demo"))]
        return Err("this build has no demo mode (feature `demo`)".into());
    }
    let dir = countersign_approver::engine::default_profile_dir().map_err(|e| e.to_string())?;
    let profile = std::env::var("COUNTERSIGN_PROFILE").unwrap_or_else(|_| "default".into());
    let engine =
        countersign_approver::engine::Engine::open(&dir, &profile).map_err(|e| e.to_string())?;
    Ok(Arc::new(AppState::new(engine, false)))
}
