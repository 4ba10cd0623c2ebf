//! The engine: one profile's history, keyring, authenticators and paired brokers, and the
//! operations both front ends offer (enrol, pair, sync, follow, approve, deny).
//!
//! A profile is a directory holding `history.sqlite` (items, the hash chain, the outbox, and
//! the non-secret settings: enrolled authenticators' public keys and paired brokers) plus the
//! keyring entries filed under the profile's name. Ceremonies block the calling thread until
//! the person answers; the network calls are async.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use countersign_protocol::DeviceSigningKey;
use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, EventKind, RequestView, enrollment_challenge};
use countersign_protocol::clock::{Clock, SystemClock};
use countersign_protocol::grant::Issuer;
use countersign_protocol::hash::canonical_sha256;
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::WebAuthnAssertion;
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;
use serde_json::json;

use crate::authn::{Authenticators, Kind, Prompt};
use crate::client::{BrokerClient, DecisionOutcome};
use crate::error::{Error, Result};
use crate::history::{EntryKind, History};
use crate::notify::{Notice, Notifier};
use crate::outbox::{self, Authenticator, Queued};
use crate::pin::Fingerprint;
use crate::vault::Vault;

/// What the engine accepts of one pending action: more than a broker lets agents send
/// (256 KiB, 32 levels), so nothing a broker accepts is lost, but bounded.
pub const RECEIVE_LIMITS: countersign_protocol::json::Limits = countersign_protocol::json::Limits {
    max_bytes: 4 * 1024 * 1024,
    max_depth: 64,
};

/// The keyring name of the history's anchored head.
const HEAD_SECRET: &str = "history-head";

/// The local user handle authenticators are registered for.
const USER_HANDLE: &str = "countersign-owner";

/// An enrolled authenticator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enrolled {
    pub name: String,
    pub kind: Kind,
    pub credential: RegisteredCredential,
    pub added_at: i64,
}

/// A paired broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paired {
    pub url: String,
    pub approver_id: String,
    pub owner: String,
    pub added_at: i64,
    /// The pinned certificate fingerprint (https brokers).
    pub fingerprint: Option<String>,
}

/// What a sync with one broker changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub broker: String,
    /// Items seen for the first time.
    pub received: Vec<String>,
    /// Items whose status moved.
    pub updated: Vec<String>,
    /// Decisions from the outbox the broker acknowledged.
    pub delivered: Vec<String>,
}

/// One profile.
#[derive(Debug)]
pub struct Engine {
    dir: PathBuf,
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
            dir: dir.to_owned(),
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

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Checks the history's hash chain and that it still reaches the head anchored in the
    /// keyring, so that cutting off the newest entries (which leaves a valid, shorter chain)
    /// is detected too.
    pub fn verify_history(&self) -> Result<crate::history::ChainReport> {
        let report = self.history.verify()?;
        let Some(anchor) = self.vault.get(HEAD_SECRET)? else {
            return Ok(report);
        };
        let text = String::from_utf8_lossy(&anchor).into_owned();
        let (seq, hash) = text
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse::<i64>().ok()?, hash.to_owned())))
            .ok_or_else(|| Error::KeyringCorrupt(format!("{HEAD_SECRET} is not seq:hash")))?;
        match self.history.entry_hash(seq)? {
            Some(stored) if stored == hash => Ok(report),
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

    fn device_key(&self) -> Result<DeviceSigningKey> {
        self.vault.device_key()
    }

    fn ceremonies<'a>(&'a self, prompt: &'a dyn Prompt) -> Authenticators<'a> {
        Authenticators::new(
            #[cfg(feature = "dev-authenticator")]
            &self.vault,
            prompt,
        )
    }

    // ----- authenticators -----

    /// The enrolled authenticators, oldest first.
    pub fn authenticators(&self) -> Result<Vec<Enrolled>> {
        self.history.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT name, kind, credential, added_at FROM authenticators ORDER BY added_at, rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?;
            rows.map(|row| {
                let (name, kind, credential, added_at) = row?;
                Ok(Enrolled {
                    name,
                    kind: Kind::parse(&kind)?,
                    credential: serde_json::from_str(&credential)?,
                    added_at,
                })
            })
            .collect()
        })
    }

    /// The enrolled authenticator called `name` (or, with `None`, the first one enrolled).
    pub fn authenticator(&self, name: Option<&str>) -> Result<Enrolled> {
        let all = self.authenticators()?;
        match name {
            Some(name) => all
                .into_iter()
                .find(|a| a.name == name)
                .ok_or_else(|| Error::UnknownAuthenticator(name.to_owned())),
            None => all.into_iter().next().ok_or(Error::NoAuthenticator),
        }
    }

    /// Enrols a new authenticator of `kind` as `name`. The first needs nothing more; every later
    /// one must be vouched for by an assertion of an enrolled one (`voucher`, or the first), over
    /// the enrolment challenge of each paired broker, which each broker verifies too.
    pub async fn enroll(
        &mut self,
        kind: Kind,
        name: &str,
        voucher: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Enrolled> {
        let name = checked_name(name)?;
        let existing = self.authenticators()?;
        if existing.iter().any(|a| a.name == name) {
            return Err(Error::DuplicateName(name));
        }
        let voucher = if existing.is_empty() {
            None
        } else {
            Some(self.authenticator(voucher)?)
        };
        let credential = self.ceremonies(prompt).register(kind, USER_HANDLE)?;
        if existing.iter().any(|a| a.credential.id == credential.id) {
            return Err(Error::Authenticator(
                "this credential is already enrolled".into(),
            ));
        }
        if let Some(voucher) = &voucher {
            let brokers = self.brokers()?;
            // Without brokers the local assertion is the whole check.
            if brokers.is_empty() {
                let challenge = enrollment_challenge("local", &credential)?;
                self.ceremonies(prompt)
                    .assert(voucher.kind, &voucher.credential, &challenge)?;
            }
            for broker in brokers {
                let challenge = enrollment_challenge(&broker.approver_id, &credential)?;
                let assertion = self.ceremonies(prompt).assert(
                    voucher.kind,
                    &voucher.credential,
                    &challenge,
                )?;
                self.client(&broker)?
                    .enroll(credential.clone(), assertion)
                    .await?;
            }
        }
        let enrolled = Enrolled {
            name,
            kind,
            credential,
            added_at: self.now(),
        };
        self.history.transaction(|tx| {
            tx.execute(
                "INSERT INTO authenticators (name, kind, credential, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![enrolled.name, enrolled.kind.as_str(), serde_json::to_string(&enrolled.credential)?, enrolled.added_at],
            )?;
            Ok(())
        })?;
        Ok(enrolled)
    }

    /// Renames an enrolled authenticator.
    pub fn rename_authenticator(&mut self, name: &str, new_name: &str) -> Result<()> {
        let new_name = checked_name(new_name)?;
        if self.authenticators()?.iter().any(|a| a.name == new_name) {
            return Err(Error::DuplicateName(new_name));
        }
        let changed = self.history.transaction(|tx| {
            Ok(tx.execute(
                "UPDATE authenticators SET name = ?1 WHERE name = ?2",
                params![new_name, name],
            )?)
        })?;
        if changed == 0 {
            return Err(Error::UnknownAuthenticator(name.to_owned()));
        }
        Ok(())
    }

    /// Removes an authenticator from this device. The last one cannot be removed while brokers
    /// are paired (nothing could approve any more). Brokers keep the public key in their
    /// registry until their administrator removes it.
    pub fn remove_authenticator(&mut self, name: &str) -> Result<()> {
        let all = self.authenticators()?;
        if !all.iter().any(|a| a.name == name) {
            return Err(Error::UnknownAuthenticator(name.to_owned()));
        }
        if all.len() == 1 && !self.brokers()?.is_empty() {
            return Err(Error::LastAuthenticator);
        }
        self.history.transaction(|tx| {
            tx.execute("DELETE FROM authenticators WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    // ----- brokers -----

    /// The paired brokers.
    pub fn brokers(&self) -> Result<Vec<Paired>> {
        self.history.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT url, approver_id, owner, added_at, pin FROM brokers ORDER BY added_at, rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Paired {
                    url: r.get(0)?,
                    approver_id: r.get(1)?,
                    owner: r.get(2)?,
                    added_at: r.get(3)?,
                    fingerprint: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn broker(&self, url: &str) -> Result<Paired> {
        self.brokers()?
            .into_iter()
            .find(|b| b.url == url)
            .ok_or_else(|| Error::UnknownBroker(url.to_owned()))
    }

    fn client(&self, broker: &Paired) -> Result<BrokerClient> {
        let pin = broker
            .fingerprint
            .as_deref()
            .map(Fingerprint::parse)
            .transpose()?;
        if pin.is_none() && broker.url.starts_with("https://") {
            return Err(Error::BadFingerprint(format!(
                "{} has no pinned certificate",
                broker.url
            )));
        }
        BrokerClient::pinned(&broker.url, &broker.approver_id, self.device_key()?, pin)
    }

    /// Pairs with the broker at `url` using its one-time `code`. Needs an enrolled
    /// authenticator, which asserts (with user verification) over this pairing before anything
    /// is sent; every other enrolled authenticator is then enrolled at the broker too. An https
    /// broker's certificate is pinned: to `fingerprint` when given (any issuer), otherwise to
    /// the certificate seen, which must then verify with the public web PKI.
    pub async fn pair(
        &mut self,
        url: &str,
        code: &str,
        fingerprint: Option<&str>,
        device_name: Option<String>,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Paired> {
        let url = checked_url(url)?;
        let pin = fingerprint.map(Fingerprint::parse).transpose()?;
        if self.brokers()?.iter().any(|b| b.url == url) {
            return Err(Error::AlreadyPaired(url));
        }
        let chosen = self.authenticator(with)?;
        let challenge = canonical_sha256(&json!({
            "type": "countersign-pair",
            "broker": url,
            "credential": chosen.credential.id,
        }))?;
        self.ceremonies(prompt)
            .assert(chosen.kind, &chosen.credential, &challenge)?;
        let (client, response) = BrokerClient::pair_pinned(
            &url,
            code,
            self.device_key()?,
            chosen.credential.clone(),
            device_name,
            pin,
        )
        .await?;
        for other in self.authenticators()? {
            if other.credential.id == chosen.credential.id {
                continue;
            }
            let challenge = enrollment_challenge(&response.approver_id, &other.credential)?;
            let assertion =
                self.ceremonies(prompt)
                    .assert(chosen.kind, &chosen.credential, &challenge)?;
            client.enroll(other.credential.clone(), assertion).await?;
        }
        let paired = Paired {
            fingerprint: url
                .starts_with("https://")
                .then(|| client.fingerprint().map(|f| f.to_string()))
                .flatten(),
            url,
            approver_id: response.approver_id,
            owner: response.owner,
            added_at: self.now(),
        };
        self.history.transaction(|tx| {
            tx.execute(
                "INSERT INTO brokers (url, approver_id, owner, added_at, pin) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    paired.url,
                    paired.approver_id,
                    paired.owner,
                    paired.added_at,
                    paired.fingerprint
                ],
            )?;
            Ok(())
        })?;
        Ok(paired)
    }

    /// Forgets a broker (its items stay in the history).
    pub fn remove_broker(&mut self, url: &str) -> Result<()> {
        let url = url.trim_end_matches('/');
        let changed = self
            .history
            .transaction(|tx| Ok(tx.execute("DELETE FROM brokers WHERE url = ?1", [url])?))?;
        if changed == 0 {
            return Err(Error::UnknownBroker(url.to_owned()));
        }
        Ok(())
    }

    // ----- receiving -----

    /// Applies a broker's view of one request to the history: receives it if new, records
    /// any status change, and returns what changed (`None` when nothing did).
    pub fn apply(&mut self, broker: &str, view: &RequestView) -> Result<Option<Change>> {
        let now = self.now();
        let id = view.pending.id.clone();
        let Some((_, local)) = self.history.item(&id)? else {
            // Brokers already bound what agents send; a broker that does not is refused here.
            countersign_protocol::json::parse_value(
                &serde_json::to_vec(&view.pending)?,
                RECEIVE_LIMITS,
            )?;
            let entry = self.history.receive(broker, &view.pending, now)?;
            let refused = entry.is_some_and(|e| e.kind == "refused");
            if !refused && view.status != Status::Pending {
                self.record_status(&id, view, now)?;
            }
            return Ok(Some(if refused {
                Change::Refused(id)
            } else {
                Change::Received(id)
            }));
        };
        if local == view.status.as_str() || local == "refused" {
            return Ok(None);
        }
        // A decision of ours already moved the item; the broker confirming it adds nothing.
        if matches!(view.status, Status::Approved | Status::Denied)
            && matches!(local.as_str(), "approved" | "denied")
        {
            return Ok(None);
        }
        self.record_status(&id, view, now)?;
        Ok(Some(Change::Updated(id)))
    }

    fn record_status(&mut self, id: &str, view: &RequestView, now: i64) -> Result<()> {
        let kind = match view.status {
            Status::Pending => return Ok(()),
            Status::Approved => EntryKind::Approved,
            Status::Denied => EntryKind::Denied,
            Status::Expired => EntryKind::Expired,
            Status::Cancelled => EntryKind::Cancelled,
            Status::Redeemed => EntryKind::Redeemed,
            Status::Revoked => EntryKind::Revoked,
            _ => return Ok(()),
        };
        let detail = json!({
            "source": "broker",
            "decided_by": view.decided_by,
            "reason": view.reason,
        });
        self.history.record(id, kind, detail, now)?;
        Ok(())
    }

    /// Applies one stream event.
    pub fn apply_event(&mut self, broker: &str, event: &ApproverEvent) -> Result<Option<Change>> {
        match (&event.request, event.kind) {
            (Some(view), _) => self.apply(broker, view),
            (
                None,
                EventKind::AgentSuspended | EventKind::AgentQuarantined | EventKind::AgentResumed,
            ) => Ok(None),
            (None, _) => Ok(None),
        }
    }

    /// Marks pending items past their expiry as expired, locally (the broker does the same).
    pub fn expire(&mut self) -> Result<Vec<String>> {
        let now = self.now();
        let due: Vec<String> = self.history.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT id FROM items WHERE status = 'pending' AND expires_at <= ?1")?;
            let rows = stmt.query_map([now], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        for id in &due {
            self.history
                .record(id, EntryKind::Expired, json!({"source": "local"}), now)?;
        }
        Ok(due)
    }

    /// Notifies each pending item once (recorded as `notified`); returns the items notified.
    pub fn notify_pending(&mut self, notifier: &dyn Notifier) -> Result<Vec<String>> {
        let due: Vec<String> = self.history.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT i.id FROM items i WHERE i.status = 'pending' AND NOT EXISTS
                   (SELECT 1 FROM entries e WHERE e.item = i.id AND e.kind = 'notified')
                 ORDER BY i.created_at, i.rowid",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let mut done = Vec::new();
        for id in due {
            let Some((pending, _)) = self.history.item(&id)? else {
                continue;
            };
            notifier.notify(&Notice::of(&pending))?;
            self.history.record(
                &id,
                EntryKind::Notified,
                json!({"privacy": notifier.private()}),
                self.now(),
            )?;
            done.push(id);
        }
        Ok(done)
    }

    /// Syncs with every paired broker: the listing is applied, local expiry runs, and the
    /// outbox is flushed. Brokers that cannot be reached are reported, not fatal.
    pub async fn sync(&mut self) -> Result<Vec<std::result::Result<SyncReport, (String, Error)>>> {
        let mut reports = Vec::new();
        for broker in self.brokers()? {
            let result = self.sync_one(&broker).await;
            reports.push(result.map_err(|e| (broker.url.clone(), e)));
        }
        self.expire()?;
        Ok(reports)
    }

    async fn sync_one(&mut self, broker: &Paired) -> Result<SyncReport> {
        let client = self.client(broker)?;
        let mut report = SyncReport {
            broker: broker.url.clone(),
            ..SyncReport::default()
        };
        report.delivered = self.flush(&client).await?;
        let listing = client.list(None).await?;
        for view in &listing.requests {
            match self.apply(&broker.url, view)? {
                Some(Change::Received(id) | Change::Refused(id)) => report.received.push(id),
                Some(Change::Updated(id)) => report.updated.push(id),
                None => {}
            }
        }
        Ok(report)
    }

    /// Sends the outbox's decisions for `client`'s broker.
    pub async fn flush(&mut self, client: &BrokerClient) -> Result<Vec<String>> {
        let now = self.now();
        let done = outbox::flush(&mut self.history, client, now).await?;
        Ok(done.into_iter().map(|(item, _)| item).collect())
    }

    /// The paired broker an item came from.
    fn item_broker(&self, item: &str) -> Result<Paired> {
        let url: String = self.history.read(|conn| {
            conn.query_row("SELECT broker FROM items WHERE id = ?1", [item], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| Error::UnknownItem(item.to_owned()))
        })?;
        self.broker(&url)
    }

    /// A client per paired broker.
    pub fn clients(&self) -> Result<Vec<BrokerClient>> {
        self.brokers()?.iter().map(|b| self.client(b)).collect()
    }

    // ----- deciding -----

    /// Approves `item` with the authenticator called `with` (or the first): the ceremony runs,
    /// the grant is written to the outbox with its history entry, then sent until the broker
    /// acknowledges it. A crash after the write sends the same grant on the next run.
    pub async fn approve(
        &mut self,
        item: &str,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<(Queued, Option<DecisionOutcome>)> {
        let queued = self.approve_queued(item, with, prompt)?;
        self.deliver(queued).await
    }

    /// The local half of [`Self::approve`]: ceremony, grant, outbox. Nothing is sent.
    pub fn approve_queued(
        &mut self,
        item: &str,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Queued> {
        let broker = self.item_broker(item)?;
        let chosen = self.authenticator(with)?;
        let device = self.device_key()?;
        let issuer = Issuer {
            approver_id: broker.approver_id.clone(),
            owner: broker.owner,
        };
        let now = self.now();
        let mut ceremony = Ceremony {
            authenticators: Authenticators::new(
                #[cfg(feature = "dev-authenticator")]
                &self.vault,
                prompt,
            ),
            enrolled: &chosen,
        };
        outbox::approve(
            &mut self.history,
            item,
            &issuer,
            &device,
            &mut ceremony,
            now,
        )
    }

    /// Denies `item` with `reason` (and optionally suspends its agent), then sends it.
    pub async fn deny(
        &mut self,
        item: &str,
        reason: &str,
        suspend_agent: bool,
    ) -> Result<(Queued, Option<DecisionOutcome>)> {
        let now = self.now();
        let queued = outbox::deny(&mut self.history, item, reason, suspend_agent, now)?;
        self.deliver(queued).await
    }

    /// Sends a queued decision once; a transport failure leaves it queued (and is not an
    /// error: the next sync delivers it).
    pub async fn deliver(&mut self, queued: Queued) -> Result<(Queued, Option<DecisionOutcome>)> {
        if queued.acked {
            return Ok((queued, None));
        }
        let client = self.client(&self.broker(&queued.broker)?)?;
        match client
            .decide(&queued.item, &queued.decision, &queued.idempotency_key)
            .await
        {
            Ok(outcome) => {
                let now = self.now();
                outbox::acknowledge(&mut self.history, &queued.item, &outcome, now)?;
                Ok((queued, Some(outcome)))
            }
            Err(Error::Http(_)) => Ok((queued, None)),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Best effort: a failure leaves the previous (older, still valid) anchor.
        let _ = self.anchor();
    }
}

/// What applying a broker's view changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Received(String),
    Refused(String),
    Updated(String),
}

/// An enrolled authenticator ready for a ceremony, as the outbox's approve flow wants it.
struct Ceremony<'a> {
    authenticators: Authenticators<'a>,
    enrolled: &'a Enrolled,
}

impl Authenticator for Ceremony<'_> {
    fn credential(&self) -> &RegisteredCredential {
        &self.enrolled.credential
    }

    fn assert(&mut self, challenge: &[u8; 32]) -> Result<WebAuthnAssertion> {
        self.authenticators
            .assert(self.enrolled.kind, &self.enrolled.credential, challenge)
    }
}

fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadName(name.to_owned()));
    }
    Ok(name.to_owned())
}

fn checked_url(url: &str) -> Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err(Error::BadUrl(format!(
            "{url}: brokers are reached over https (plain http only on loopback)"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(Error::BadUrl(format!(
            "{url}: no query, fragment or credentials"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}
