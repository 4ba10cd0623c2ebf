//! Secrets from the OS keyring (the Secret Service on Linux), under the service
//! [`KEYRING_SERVICE`]. `countersign-gateway secret set NAME`
//! files one; nothing is ever kept in a file.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};

use crate::config::KEYRING_SERVICE;

/// Reads the entry `name`.
pub fn read(name: &str) -> Result<String, String> {
    let entry = entry(name)?;
    match entry.get_password() {
        Ok(secret) => Ok(secret),
        Err(keyring_core::Error::NoEntry) => Err(format!(
            "the OS keyring has no entry {name:?} under {KEYRING_SERVICE:?}; file it with \
             `countersign-gateway secret set {name}`"
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Files `secret` as the entry `name`.
pub fn write(name: &str, secret: &str) -> Result<(), String> {
    entry(name)?
        .set_password(secret)
        .map_err(|e| unavailable(&e))
}

fn entry(name: &str) -> Result<Entry, String> {
    let store = platform_store()?;
    Entry::new_in_store(&store, KEYRING_SERVICE, name).map_err(|e| unavailable(&e))
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        zbus_secret_service_keyring_store::Store::new().map_err(|e| unavailable(&e))?;
    Ok(store)
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        apple_native_keyring_store::keychain::Store::new().map_err(|e| unavailable(&e))?;
    Ok(store)
}

#[cfg(windows)]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        windows_native_keyring_store::Store::new().map_err(|e| unavailable(&e))?;
    Ok(store)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_store() -> Result<Arc<CredentialStore>, String> {
    Err("this build has no keyring store for this platform; use { env = \"VARIABLE\" }".into())
}

fn unavailable(e: &keyring_core::Error) -> String {
    format!(
        "the OS keyring is unavailable ({e}): on Linux, run a Secret Service (gnome-keyring or \
         KeePassXC) in your session and unlock it, or use {{ env = \"VARIABLE\" }}"
    )
}
