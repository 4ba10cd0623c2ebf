//! Single use: the `jti` of a grant is consumed atomically, and a revoked `jti` can never be
//! consumed. The broker keeps these in SQLite; [`MemoryReplayStore`] serves one process.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

/// Why a `jti` could not be consumed or revoked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The `jti` was already consumed.
    #[error("already consumed")]
    AlreadyConsumed,
    /// The `jti` was revoked.
    #[error("revoked")]
    Revoked,
    /// The store could not be read or written; holds why.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Remembers consumed and revoked grant ids until they expire.
///
/// `consume` must be atomic: of any number of concurrent calls for one `jti`, exactly one
/// returns `Ok`. Entries may be forgotten once `expires_at` plus the verifier's skew has passed,
/// because the grant's `exp` check refuses it from then on.
pub trait ReplayStore: Send + Sync + Debug {
    /// Marks `jti` consumed. `now` lets the store drop entries that can no longer matter.
    fn consume(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), ConsumeError>;
    /// Marks `jti` revoked; a consumed `jti` cannot be revoked any more.
    fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), ConsumeError>;
    /// Whether `jti` is revoked (for checks that must not consume).
    fn is_revoked(&self, jti: &str) -> Result<bool, ConsumeError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Consumed,
    Revoked,
}

/// An in-memory [`ReplayStore`] behind one mutex.
#[derive(Debug, Default)]
pub struct MemoryReplayStore {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, (State, i64)>,
    next_purge: usize,
}

/// How long after `exp` an entry is kept: the largest skew a verifier allows, and some.
const KEEP_AFTER_EXP: i64 = 2 * crate::grant::MAX_SKEW_SECS;

impl MemoryReplayStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mark(&self, jti: &str, expires_at: i64, now: i64, to: State) -> Result<(), ConsumeError> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| ConsumeError::Unavailable("poisoned".into()))?;
        if entries.map.len() >= entries.next_purge {
            entries
                .map
                .retain(|_, (_, exp)| *exp + KEEP_AFTER_EXP >= now);
            entries.next_purge = (entries.map.len() * 2).max(1024);
        }
        match entries.map.get(jti) {
            Some((State::Consumed, _)) => Err(ConsumeError::AlreadyConsumed),
            Some((State::Revoked, _)) => Err(ConsumeError::Revoked),
            None => {
                entries.map.insert(jti.to_owned(), (to, expires_at));
                Ok(())
            }
        }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn consume(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), ConsumeError> {
        self.mark(jti, expires_at, now, State::Consumed)
    }

    fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), ConsumeError> {
        self.mark(jti, expires_at, now, State::Revoked)
    }

    fn is_revoked(&self, jti: &str) -> Result<bool, ConsumeError> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| ConsumeError::Unavailable("poisoned".into()))?;
        Ok(matches!(entries.map.get(jti), Some((State::Revoked, _))))
    }
}

/// Remembers the highest WebAuthn sign counter seen per credential.
pub trait SignCounterStore: Send + Sync + Debug {
    /// Atomically stores `max(stored, counter)` and returns the previously stored value.
    fn advance(&self, credential_id: &str, counter: u32) -> Result<u32, ConsumeError>;
}

/// An in-memory [`SignCounterStore`].
#[derive(Debug, Default)]
pub struct MemoryCounterStore {
    counters: Mutex<HashMap<String, u32>>,
}

impl MemoryCounterStore {
    /// An empty store: every counter starts at 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SignCounterStore for MemoryCounterStore {
    fn advance(&self, credential_id: &str, counter: u32) -> Result<u32, ConsumeError> {
        let mut map = self
            .counters
            .lock()
            .map_err(|_| ConsumeError::Unavailable("poisoned".into()))?;
        let entry = map.entry(credential_id.to_owned()).or_insert(0);
        let previous = *entry;
        *entry = previous.max(counter);
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_once_then_replayed() {
        let store = MemoryReplayStore::new();
        assert_eq!(store.consume("a", 100, 0), Ok(()));
        assert_eq!(
            store.consume("a", 100, 0),
            Err(ConsumeError::AlreadyConsumed)
        );
        assert_eq!(
            store.revoke("a", 100, 0),
            Err(ConsumeError::AlreadyConsumed)
        );
    }

    #[test]
    fn revoked_cannot_be_consumed() {
        let store = MemoryReplayStore::new();
        assert_eq!(store.revoke("b", 100, 0), Ok(()));
        assert_eq!(store.is_revoked("b"), Ok(true));
        assert_eq!(store.consume("b", 100, 0), Err(ConsumeError::Revoked));
    }

    #[test]
    fn expired_entries_are_purged_but_live_ones_kept() {
        let store = MemoryReplayStore::new();
        for i in 0..1023 {
            store.consume(&format!("old{i}"), 100, 0).unwrap();
        }
        store.consume("live", 10_000, 0).unwrap();
        // Far past every old exp: the next write purges them, the live one stays.
        store.consume("new", 10_000, 5_000).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.consume("live", 10_000, 5_000),
            Err(ConsumeError::AlreadyConsumed)
        );
    }
}
