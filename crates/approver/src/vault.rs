//! Key custody: secrets (the device signing keys, one per paired broker, the history's anchored
//! head, the development authenticator's keys) live only in the OS keyring — the Secret Service on Linux. Nothing is
//! ever written to a file or the history database, and there is no plaintext fallback: without
//! a usable keyring the caller gets [`Error::KeyringUnavailable`] and a sentence saying what to
//! start.

use std::fmt;
use std::sync::Arc;

use countersign_protocol::DeviceSigningKey;
use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The keyring service every Countersign secret is filed under.
pub const SERVICE: &str = "dev.countersign.approver";

/// The OS keyring.
pub struct Vault {
    store: Arc<CredentialStore>,
    profile: String,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The platform keyring, with secrets of `profile` (several profiles can share one OS user,
    /// as tests and a second app instance do).
    pub fn platform(profile: &str) -> Result<Self> {
        let store = platform_store()?;
        let vault = Self {
            store,
            profile: profile.to_owned(),
        };
        // Reading a name that does not exist proves the store answers (a locked or absent
        // Secret Service fails here, not in the middle of an approval).
        vault.get("probe")?;
        Ok(vault)
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        Entry::new_in_store(&self.store, SERVICE, &format!("{}/{name}", self.profile))
            .map_err(unavailable)
    }

    /// Stores `secret` under `name`, replacing what was there.
    pub fn put(&self, name: &str, secret: &[u8]) -> Result<()> {
        self.entry(name)?.set_secret(secret).map_err(unavailable)
    }

    /// The secret under `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.entry(name)?.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletes the secret under `name`; deleting nothing is not an error.
    pub fn delete(&self, name: &str) -> Result<()> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The device signing key stored under `name` (each paired broker has its own, so that a
    /// hostile broker can never obtain a grant another broker accepts).
    pub fn device_key(&self, name: &str) -> Result<DeviceSigningKey> {
        let secret = self
            .get(name)?
            .ok_or_else(|| Error::KeyringCorrupt(format!("{name} is missing from the keyring")))?;
        let seed: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::KeyringCorrupt(format!("{name} is not 32 bytes")))?;
        Ok(DeviceSigningKey::from_secret(&seed))
    }

    /// A fresh device key, stored under a new name that is returned with it.
    pub fn new_device_key(&self) -> Result<(String, DeviceSigningKey)> {
        let name = format!(
            "device-key/{}",
            countersign_protocol::hash::random_b64url::<12>()
        );
        let key = DeviceSigningKey::generate();
        self.put(&name, key.secret().as_ref())?;
        Ok((name, key))
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<CredentialStore>> {
    let store = zbus_secret_service_keyring_store::Store::new().map_err(unavailable)?;
    Ok(store)
}

/// The login keychain (the "legacy keychain" store: usable by unsigned command-line tools too).
#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<CredentialStore>> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(unavailable)?;
    Ok(store)
}

/// The Windows Credential Manager.
#[cfg(windows)]
fn platform_store() -> Result<Arc<CredentialStore>> {
    let store = windows_native_keyring_store::Store::new().map_err(unavailable)?;
    Ok(store)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_store() -> Result<Arc<CredentialStore>> {
    Err(Error::KeyringUnavailable(
        "this build has no keyring store for this platform yet; secrets are never kept in files"
            .into(),
    ))
}

fn unavailable(e: keyring_core::Error) -> Error {
    Error::KeyringUnavailable(format!(
        "{e}. Countersign keeps its keys only in the OS keyring: on Linux, run a Secret Service \
         (gnome-keyring or KeePassXC) in your session and unlock it"
    ))
}
