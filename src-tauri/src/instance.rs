//! A second start of the app (a `countersign://` link opened from the browser, say) hands its
//! arguments to the running app and ends, before the toolkit is started.
//!
//! `tauri-plugin-single-instance` does the same from inside the toolkit's start-up and then calls
//! `std::process::exit` with GTK half initialised, which now and then crashes the second process
//! on its way out (SIGSEGV) after the arguments were delivered. So the check runs here first, over
//! the same D-Bus name and method the plugin serves in the running app; the plugin stays for the
//! case of two starts racing each other.

/// Hands this process's arguments to a running instance; `true` when one took them.
#[cfg(target_os = "linux")]
pub(crate) fn forward_to_running(identifier: &str) -> bool {
    use zbus::blocking::{Connection, fdo::DBusProxy};
    use zbus::names::BusName;

    // The name and object path the plugin serves (its `semver` feature is off).
    let name = format!("{identifier}.SingleInstance");
    let path = format!("/{}", name.replace('.', "/").replace('-', "_"));
    let Ok(connection) = Connection::session() else {
        return false;
    };
    let Ok(bus_name) = BusName::try_from(name.as_str()) else {
        return false;
    };
    let running = DBusProxy::new(&connection)
        .is_ok_and(|dbus| dbus.name_has_owner(bus_name).unwrap_or(false));
    if !running {
        return false;
    }
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let cwd = std::env::current_dir()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    match connection.call_method(
        Some(name.as_str()),
        path.as_str(),
        Some("org.SingleInstance.DBus"),
        "ExecuteCallback",
        &(args, cwd),
    ) {
        Ok(_) => true,
        Err(e) => {
            // The running app went away meanwhile: start as the one instance.
            tracing::warn!(error = %e, "the running instance did not take the arguments");
            false
        }
    }
}

/// Elsewhere the plugin's own check (a named mutex, a socket) runs before any window.
#[cfg(not(target_os = "linux"))]
pub(crate) fn forward_to_running(_identifier: &str) -> bool {
    false
}
