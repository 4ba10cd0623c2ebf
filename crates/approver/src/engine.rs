//! The engine: one profile's history, keyring, authenticators and paired brokers, and the
//! operations both front ends offer (enrol, pair, sync, follow, approve, deny).
//!
//! A profile is a directory holding `history.sqlite` (items, the hash chain, the outbox, and
//! the non-secret settings: enrolled authenticators' public keys and paired brokers) plus the
//! keyring entries filed under the profile's name. Ceremonies block the calling thread until
//! the person answers; the network calls are async.

mod authenticators;
mod brokers;
mod deciding;
mod following;
mod receiving;
mod reviewing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use countersign_protocol::clock::{Clock, SystemClock};

use crate::authn::{Authenticators, Prompt};
use crate::error::{Error, Result};
use crate::history::History;
use crate::vault::Vault;

pub use crate::history::{Enrolled, Paired};
pub use following::{Applied, Connection};
pub use receiving::{Change, Flushed, ItemError, RECEIVE_LIMITS, SyncReport};
pub use reviewing::{Opened, PendingReview, Via};

/// The keyring name of the history's anchored head.
const HEAD_SECRET: &str = "history-head";

/// The profile directory when none is given: `$COUNTERSIGN_HOME`, else `countersign` in the
/// platform's data directory (`$XDG_DATA_HOME`, `~/.local/share`, or `%APPDATA%`).
pub fn default_profile_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("COUNTERSIGN_HOME") {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .or_else(|| std::env::var_os("APPDATA").map(PathBuf::from))
        .map(|base| base.join("countersign"))
        .ok_or(Error::NoProfileDir)
}

/// One profile.
#[derive(Debug)]
pub struct Engine {
    history: History,
    vault: Vault,
    clock: Arc<dyn Clock>,
}

impl Engine {
    /// Opens (creating) the profile in `dir`, with its secrets filed under `profile` in the
    /// OS keyring. Fails with [`Error::KeyringUnavailable`] when there is no usable keyring.
    pub fn open(dir: &Path, profile: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let vault = Vault::platform(profile)?;
        let history = History::open(&dir.join("history.sqlite"))?;
        Ok(Self {
            history,
            vault,
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Checks the history's hash chain, that it still reaches the head anchored in the keyring
    /// (so that cutting off the newest entries, which leaves a valid, shorter chain, is detected
    /// too), and that every item still shows what its entries recorded.
    pub fn verify_history(&self) -> Result<crate::history::ChainReport> {
        // The chain, then the keyring's anchor (a cut-off tail is best named as such), then the
        // items against their entries.
        let report = self.history.verify_chain()?;
        self.verify_anchor(&report)?;
        self.history.verify_items()?;
        Ok(report)
    }

    fn verify_anchor(&self, report: &crate::history::ChainReport) -> Result<()> {
        let Some(anchor) = self.vault.get(HEAD_SECRET)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&anchor).into_owned();
        let (seq, hash) = text
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse::<i64>().ok()?, hash.to_owned())))
            .ok_or_else(|| Error::KeyringCorrupt(format!("{HEAD_SECRET} is not seq:hash")))?;
        match self.history.entry_hash(seq)? {
            Some(stored) if stored == hash => Ok(()),
            Some(_) => Err(Error::ChainBroken {
                seq,
                reason: "it differs from the entry anchored in the keyring".into(),
            }),
            None => Err(Error::ChainBroken {
                seq,
                reason: format!(
                    "the history ends at entry {} but the keyring anchored entry {seq}: the \
                     newest entries were removed",
                    report.entries
                ),
            }),
        }
    }

    /// Records the newest entry in the keyring (see [`Self::verify_history`]). Done when the
    /// engine closes; an anchor that lags after a crash is still a valid, older anchor.
    /// An anchor the file no longer matches is left in place, as evidence.
    pub fn anchor(&self) -> Result<()> {
        if let Some(anchor) = self.vault.get(HEAD_SECRET)? {
            let text = String::from_utf8_lossy(&anchor).into_owned();
            let matches = match text.split_once(':') {
                Some((seq, hash)) => seq
                    .parse::<i64>()
                    .ok()
                    .map(|seq| self.history.entry_hash(seq))
                    .transpose()?
                    .flatten()
                    .is_some_and(|stored| stored == hash),
                None => false,
            };
            if !matches {
                return Ok(());
            }
        }
        if let Some((seq, hash)) = self.history.head()? {
            self.vault
                .put(HEAD_SECRET, format!("{seq}:{hash}").as_bytes())?;
        }
        Ok(())
    }

    pub(super) fn ceremonies<'a>(&'a self, prompt: &'a dyn Prompt) -> Authenticators<'a> {
        Authenticators::new(
            #[cfg(feature = "dev-authenticator")]
            &self.vault,
            prompt,
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Best effort: a failure leaves the previous (older, still valid) anchor.
        let _ = self.anchor();
    }
}
