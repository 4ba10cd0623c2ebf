//! Receiving: applying brokers' views and events, local expiry, notifications, sync.

use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, RequestView};
use serde::Serialize;
use serde_json::json;

use crate::client::{BrokerClient, DecisionOutcome, Listing, Unreadable};
use crate::error::{Error, Result};
use crate::history::{EntryKind, ItemStatus};
use crate::notify::{Notice, Notifier};
use crate::outbox::{self};

use super::{Engine, Paired};

/// What the engine accepts of one pending action: more than a broker lets agents send
/// (256 KiB, 32 levels), so nothing a broker accepts is lost, but bounded.
pub const RECEIVE_LIMITS: countersign_protocol::json::Limits = countersign_protocol::json::Limits {
    max_bytes: 4 * 1024 * 1024,
    max_depth: 64,
};

/// What a sync with one broker changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub broker: String,
    /// Items seen for the first time.
    pub received: Vec<String>,
    /// Items seen for the first time and refused (their hash disagrees with what they show).
    pub refused: Vec<String>,
    /// Items whose status moved.
    pub updated: Vec<String>,
    /// Decisions from the outbox the broker acknowledged.
    pub delivered: Vec<String>,
    /// Decisions from the outbox the broker refused for good (the items are open again).
    pub rejected: Vec<ItemError>,
    /// Items of the listing this engine would not take (too large, too deep), with why. The
    /// rest of the listing is applied all the same.
    pub failed: Vec<ItemError>,
}

/// An item and what went wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemError {
    pub item: String,
    /// The error's stable code (see [`Error::code`]).
    pub code: String,
    pub error: String,
}

impl ItemError {
    pub(super) fn of(item: String, error: &Error) -> Self {
        Self {
            item,
            code: error.code().to_owned(),
            error: error.to_string(),
        }
    }
}

/// What sending the outbox to one broker did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flushed {
    /// Decisions the broker acknowledged.
    pub delivered: Vec<String>,
    /// Decisions the broker refused for good (the items are open again).
    pub rejected: Vec<ItemError>,
}

/// What applying a broker's view changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Received(String),
    Refused(String),
    Updated(String),
}

impl From<Unreadable> for ItemError {
    fn from(Unreadable { item, reason }: Unreadable) -> Self {
        Self {
            item,
            code: "unreadable".into(),
            error: reason,
        }
    }
}

impl Engine {
    /// Applies a broker's view of one request to the history: receives it if new, records
    /// any status change, and returns what changed (`None` when nothing did).
    pub fn apply(&mut self, broker: &str, view: &RequestView) -> Result<Option<Change>> {
        let now = self.now();
        let id = view.pending.id.clone();
        // Items are the broker's: one broker's view never touches another broker's item, even
        // one with the same id (a hostile broker that learnt it).
        if let Some(other) = self.history.item_broker(&id)?
            && other != broker
        {
            return Err(Error::ItemCollision {
                item: id,
                broker: broker.to_owned(),
                other,
            });
        }
        let Some((_, local)) = self.history.item(&id)? else {
            // Brokers already bound what agents send; a broker that does not is refused here.
            countersign_protocol::json::parse_value(
                &serde_json::to_vec(&view.pending)?,
                RECEIVE_LIMITS,
            )?;
            let entry = self.history.receive(broker, &view.pending, now)?;
            self.history.set_merged(&id, view.merged)?;
            let refused = entry.is_some_and(|e| e.kind == EntryKind::Refused);
            if !refused && view.status != Status::Pending {
                self.record_status(&id, view, now)?;
                self.record_outcome(&id, view, now)?;
            }
            return Ok(Some(if refused {
                Change::Refused(id)
            } else {
                Change::Received(id)
            }));
        };
        // Another identical request merged into the item: its count grows, nothing else.
        let merged = self.history.set_merged(&id, view.merged)?;
        let unchanged = Ok(merged.then_some(Change::Updated(id.clone())));
        if local == ItemStatus::Refused {
            return unchanged;
        }
        if local.as_str() == view.status.as_str() {
            return if self.record_outcome(&id, view, now)? {
                Ok(Some(Change::Updated(id)))
            } else {
                unchanged
            };
        }
        // A decision queued here and not yet delivered: the broker still shows it pending. And a
        // view behind what is known (a replayed "approved" after "redeemed", a cached answer)
        // never moves an item back.
        if view.status == Status::Pending || stage(view.status.as_str()) < stage(local.as_str()) {
            return unchanged;
        }
        // Anything else the broker reports wins, including another approver's decision that
        // reached it before ours (the history then says what really happened).
        self.record_status(&id, view, now)?;
        self.record_outcome(&id, view, now)?;
        Ok(Some(Change::Updated(id)))
    }

    /// Records what the gateway reported of a redeemed call, once; whether it was new.
    fn record_outcome(&mut self, id: &str, view: &RequestView, now: i64) -> Result<bool> {
        let Some(outcome) = view
            .outcome
            .as_ref()
            .filter(|_| view.status == Status::Redeemed)
        else {
            return Ok(false);
        };
        if self
            .history
            .entries(id)?
            .iter()
            .any(|e| e.kind == EntryKind::Outcome)
        {
            return Ok(false);
        }
        let detail = json!({
            "source": "gateway",
            "outcome": outcome.outcome.as_str(),
            "detail": outcome.detail,
        });
        self.history.record(id, EntryKind::Outcome, detail, now)?;
        Ok(true)
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
        let mut detail = json!({
            "source": "broker",
            "decided_by": view.decided_by,
            "reason": view.reason,
        });
        // Approved under a bounded grant (a call it released without a prompt, or the reviewed
        // call it was made from): the history says which.
        if let Some(jti) = &view.bounded_grant {
            detail["bounded_grant"] = json!(jti);
        }
        self.history.record(id, kind, detail, now)?;
        Ok(())
    }

    /// Applies one stream event.
    pub fn apply_event(&mut self, broker: &str, event: &ApproverEvent) -> Result<Option<Change>> {
        // Events without a request (agent suspended, resumed, quarantined) change no item.
        match &event.request {
            Some(view) => self.apply(broker, view),
            None => Ok(None),
        }
    }

    /// Marks pending items past their expiry as expired, locally (the broker does the same).
    pub fn expire(&mut self) -> Result<Vec<String>> {
        let now = self.now();
        let due = self.history.due_to_expire(now)?;
        for id in &due {
            self.history
                .record(id, EntryKind::Expired, json!({"source": "local"}), now)?;
        }
        Ok(due)
    }

    /// Notifies each pending item once (recorded as `notified`); returns the items notified.
    pub fn notify_pending(&mut self, notifier: &dyn Notifier) -> Result<Vec<String>> {
        let due = self.history.unnotified()?;
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

    /// Syncs with every paired broker (see [`Self::reconcile`]), then runs local expiry.
    /// Brokers that cannot be reached are reported, not fatal.
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
        // Queued decisions first (their grants are the ones ageing); a temporary failure leaves
        // them queued and the listing is still fetched.
        let flushed = match self.flush(&client).await {
            Ok(flushed) => flushed,
            Err(e) if e.is_transient() => Flushed::default(),
            Err(e) => return Err(e),
        };
        let listing = client.pending().await?;
        let mut report = self.reconcile(&client, listing).await?;
        report.delivered.extend(flushed.delivered);
        report.rejected.extend(flushed.rejected);
        Ok(report)
    }

    /// Brings this broker's items up to date after a (re)connection: applies the pending
    /// listing (every page), asks the broker for each item still open here that the listing no
    /// longer holds (decided elsewhere, expired, redeemed while this app was away), and sends
    /// the outbox. Items it will not take are reported with why; the rest are applied.
    pub async fn reconcile(
        &mut self,
        client: &BrokerClient,
        listing: Listing,
    ) -> Result<SyncReport> {
        let broker = client.base().to_owned();
        let mut report = SyncReport {
            broker: broker.clone(),
            ..SyncReport::default()
        };
        let listed: std::collections::HashSet<String> = listing
            .requests
            .iter()
            .map(|v| v.pending.id.clone())
            .collect();
        for view in &listing.requests {
            self.take(&broker, view, &mut report)?;
        }
        for unreadable in listing.unreadable {
            report.failed.push(unreadable.into());
        }
        // Calls released under a bounded grant were never pending: they are read from the
        // approved and redeemed listings, so the history records each under its grant even
        // when no stream was open.
        let mut taken = listed.clone();
        for status in ["approved", "redeemed"] {
            self.take_released(client, status, &mut taken, &mut report)
                .await?;
        }
        // Brokers keep decided items for 30 days by default; older ones are no longer there.
        let since = self.now() - 30 * 86_400;
        for id in self.history.open_items(&broker, since)? {
            if listed.contains(&id) {
                continue;
            }
            match client.request(&id).await? {
                Some(Ok(view)) => self.take(&broker, &view, &mut report)?,
                Some(Err(unreadable)) => report.failed.push(unreadable.into()),
                // Gone at the broker (retention): local expiry still ends a pending item.
                None => {}
            }
        }
        match self.flush(client).await {
            Ok(flushed) => {
                report.delivered.extend(flushed.delivered);
                report.rejected.extend(flushed.rejected);
            }
            Err(e) if e.is_transient() => {}
            Err(e) => return Err(e),
        }
        Ok(report)
    }

    /// Takes the calls a bounded grant released from the owner's listing of `status`, newest
    /// first, page after page until a page reaches a request this history already had before
    /// this sync: older ones were seen while this app was in touch (and those still open here
    /// are asked for one by one). `taken` holds the items this sync has taken so far.
    async fn take_released(
        &mut self,
        client: &BrokerClient,
        status: &str,
        taken: &mut std::collections::HashSet<String>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let broker = client.base().to_owned();
        let mut before: Option<String> = None;
        for _ in 0..crate::client::MAX_PAGES {
            let (page, next) = client.page(status, before.as_deref()).await?;
            let mut reached_known = false;
            for view in &page.requests {
                let id = &view.pending.id;
                if taken.contains(id) {
                    continue;
                }
                if self.history.item_broker(id)?.as_deref() == Some(&broker) {
                    reached_known = true;
                }
                if view.bounded_grant.is_some() {
                    self.take(&broker, view, report)?;
                    taken.insert(id.clone());
                }
            }
            match next {
                Some(next) if !reached_known => before = Some(next),
                _ => break,
            }
        }
        Ok(())
    }

    /// Applies one view into `report`; an item this engine will not take is reported there.
    fn take(&mut self, broker: &str, view: &RequestView, report: &mut SyncReport) -> Result<()> {
        match self.apply(broker, view) {
            Ok(Some(Change::Received(id))) => report.received.push(id),
            Ok(Some(Change::Refused(id))) => report.refused.push(id),
            Ok(Some(Change::Updated(id))) => report.updated.push(id),
            Ok(None) => {}
            // One item the engine will not take must not stop the others.
            Err(e) if super::following::is_not_taken(&e) => {
                report
                    .failed
                    .push(ItemError::of(view.pending.id.clone(), &e));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Sends the outbox's decisions for `client`'s broker and applies what the broker says of
    /// items another approver decided first.
    pub async fn flush(&mut self, client: &BrokerClient) -> Result<Flushed> {
        let now = self.now();
        let mut flushed = Flushed::default();
        for (item, sent) in outbox::flush(&mut self.history, client, now).await? {
            match sent {
                outbox::Sent::Acknowledged(outcome) => {
                    self.settle(client.base(), &outcome)?;
                    flushed.delivered.push(item);
                }
                outbox::Sent::Rejected(e) => flushed.rejected.push(ItemError::of(item, &e)),
            }
        }
        Ok(flushed)
    }

    /// Applies the broker's view when it answered that the item was already decided.
    pub(super) fn settle(&mut self, broker: &str, outcome: &DecisionOutcome) -> Result<()> {
        if let DecisionOutcome::AlreadyDecided(view) = outcome {
            self.apply(broker, view)?;
        }
        Ok(())
    }

    /// The paired broker an item came from.
    pub(super) fn item_broker(&self, item: &str) -> Result<Paired> {
        let url = self
            .history
            .item_broker(item)?
            .ok_or_else(|| Error::UnknownItem(item.to_owned()))?;
        self.broker(&url)
    }

    /// A client per paired broker.
    pub fn clients(&self) -> Result<Vec<BrokerClient>> {
        self.brokers()?.iter().map(|b| self.client(b)).collect()
    }
}

/// How far along an item is: a broker's view from an earlier stage than the item's is stale.
/// Decisions (ours or another approver's) and expiry (maybe only by the local clock) share a
/// stage, so the broker's word replaces them; redemption, revocation and cancellation end an
/// item.
fn stage(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "approved" | "denied" | "expired" => 1,
        _ => 2,
    }
}
