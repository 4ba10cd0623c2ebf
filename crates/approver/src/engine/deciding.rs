//! Deciding: approve (the ceremony, the grant, the outbox) and deny, then delivery.

use std::collections::HashMap;

use countersign_protocol::DeviceSigningKey;
use countersign_protocol::api::{BoundedGrantView, Decision};
use countersign_protocol::bounded::Bounds;
use countersign_protocol::grant::Issuer;
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::WebAuthnAssertion;

use crate::authn::{Authenticators, Prompt};
use crate::client::DecisionOutcome;
use crate::error::{Error, Result};
use crate::history::{History, Paired};
use crate::outbox::{self, Authenticator, Queued};

use super::{Engine, Enrolled};

impl Engine {
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
        self.signing(
            &broker,
            with,
            prompt,
            |history, issuer, device, ceremony, now| {
                outbox::approve(history, item, issuer, device, ceremony, now)
            },
        )
    }

    /// Approves `item` and later calls like it within `bounds`, with a bounded grant bound to
    /// the key of the item's gateway (asked of its broker first), then sends it.
    pub async fn approve_bounded(
        &mut self,
        item: &str,
        bounds: Bounds,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<(Queued, Option<DecisionOutcome>)> {
        let queued = self
            .approve_bounded_queued(item, bounds, with, prompt)
            .await?;
        self.deliver(queued).await
    }

    /// The local half of [`Self::approve_bounded`], after asking the broker for the gateway's
    /// key: ceremony, grant, outbox.
    pub async fn approve_bounded_queued(
        &mut self,
        item: &str,
        bounds: Bounds,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Queued> {
        let bounded = self.bounded_for(item, bounds).await?;
        self.approve_bounded_local(item, &bounded, with, prompt)
    }

    /// What a bounded approval of `item` needs from its broker: the key of the item's gateway.
    pub async fn bounded_for(&mut self, item: &str, bounds: Bounds) -> Result<outbox::Bounded> {
        let broker = self.item_broker(item)?;
        let (pending, _) = self
            .history
            .item(item)?
            .ok_or_else(|| Error::UnknownItem(item.to_owned()))?;
        let gateways = self.client(&broker)?.gateways().await?;
        let jkt = gateways
            .gateways
            .into_iter()
            .find(|g| g.audience == pending.audience)
            .and_then(|g| g.jkt)
            .ok_or_else(|| Error::GatewayKeyMissing(pending.audience.clone()))?;
        Ok(outbox::Bounded { bounds, jkt })
    }

    /// Ceremony, bounded grant and outbox for `item`, with nothing sent or fetched.
    pub fn approve_bounded_local(
        &mut self,
        item: &str,
        bounded: &outbox::Bounded,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Queued> {
        let broker = self.item_broker(item)?;
        self.signing(
            &broker,
            with,
            prompt,
            |history, issuer, device, ceremony, now| {
                outbox::approve_bounded(history, item, bounded, issuer, device, ceremony, now)
            },
        )
    }

    /// The owner's bounded grants that can still cover a call, at every paired broker.
    pub async fn bounded_grants(&mut self) -> Result<Vec<(String, BoundedGrantView)>> {
        let mut all = Vec::new();
        for broker in self.history.brokers()? {
            let client = self.client(&broker)?;
            for grant in client.bounded().await?.grants {
                all.push((broker.url.clone(), grant));
            }
        }
        Ok(all)
    }

    /// Revokes the bounded grant `jti` at whichever paired broker holds it.
    pub async fn revoke_bounded(&mut self, jti: &str) -> Result<BoundedGrantView> {
        let mut refusal = None;
        for broker in self.history.brokers()? {
            match self.client(&broker)?.revoke_bounded(jti).await {
                Ok(revoked) => return Ok(revoked),
                Err(e @ Error::Broker { status: 409, .. }) => refusal = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(refusal.unwrap_or_else(|| Error::UnknownBroker("no broker is paired".into())))
    }

    /// Approves several `items` in one ceremony with the authenticator called `with` (or the
    /// first), then sends their grants together (see [`outbox::approve_batch`]). They must be
    /// items of one broker.
    pub async fn approve_all(
        &mut self,
        items: &[String],
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Vec<(Queued, Option<DecisionOutcome>)>> {
        let queued = self.approve_all_queued(items, with, prompt)?;
        self.deliver_all(queued).await
    }

    /// The local half of [`Self::approve_all`]: ceremony, grants, outbox. Nothing is sent.
    pub fn approve_all_queued(
        &mut self,
        items: &[String],
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Vec<Queued>> {
        let first = items
            .first()
            .ok_or_else(|| Error::BadBatch("no item is listed".into()))?;
        let broker = self.item_broker(first)?;
        for item in items {
            if self.item_broker(item)?.url != broker.url {
                return Err(Error::BadBatch(
                    "the items are from different brokers".into(),
                ));
            }
        }
        self.signing(
            &broker,
            with,
            prompt,
            |history, issuer, device, ceremony, now| {
                outbox::approve_batch(history, items, issuer, device, ceremony, now)
            },
        )
    }

    /// Runs `approve` with what signing for `broker` takes: the history, this approver's
    /// issuer and device key at that broker, and the authenticator called `with` (or the
    /// first) ready for its ceremony.
    fn signing<T>(
        &mut self,
        broker: &Paired,
        with: Option<&str>,
        prompt: &dyn Prompt,
        approve: impl FnOnce(
            &mut History,
            &Issuer,
            &DeviceSigningKey,
            &mut dyn Authenticator,
            i64,
        ) -> Result<T>,
    ) -> Result<T> {
        let chosen = self.authenticator(with)?;
        let device = self.vault.device_key(&broker.key)?;
        let issuer = Self::issuer(broker);
        let now = self.now();
        let mut ceremony = Ceremony {
            authenticators: Authenticators::new(
                #[cfg(feature = "dev-authenticator")]
                &self.vault,
                prompt,
            ),
            enrolled: &chosen,
        };
        approve(&mut self.history, &issuer, &device, &mut ceremony, now)
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

    /// Denies several items with one reason (and optionally suspends their agents), then sends
    /// them together. Every item is checked first — known here, still open, a reason given — so
    /// one that cannot be denied denies none.
    pub async fn deny_all(
        &mut self,
        items: &[String],
        reason: &str,
        suspend_agent: bool,
    ) -> Result<Vec<(Queued, Option<DecisionOutcome>)>> {
        for item in items {
            // A denial queued before goes out as it is (denying is idempotent).
            let queued_before = self
                .history
                .queued(item)?
                .is_some_and(|q| !q.rejected && matches!(q.decision, Decision::Deny { .. }));
            if !queued_before {
                outbox::check_deniable(&self.history, item, reason)?;
            }
        }
        let now = self.now();
        let queued = items
            .iter()
            .map(|item| outbox::deny(&mut self.history, item, reason, suspend_agent, now))
            .collect::<Result<Vec<_>>>()?;
        self.deliver_all(queued).await
    }

    /// Sends a queued decision once. A temporary failure (unreachable, busy, failing broker)
    /// leaves it queued and is not an error: the next sync delivers it. A final refusal is
    /// recorded (the item is open again) and returned.
    pub async fn deliver(&mut self, queued: Queued) -> Result<(Queued, Option<DecisionOutcome>)> {
        let mut outcomes = self.send(std::slice::from_ref(&queued)).await?;
        let outcome = outcomes.remove(&queued.item);
        Ok((queued, outcome))
    }

    /// [`Self::deliver`] for several decisions: each broker's queue is sent once, and each
    /// decision comes back with what its broker answered.
    pub async fn deliver_all(
        &mut self,
        queued: Vec<Queued>,
    ) -> Result<Vec<(Queued, Option<DecisionOutcome>)>> {
        let mut outcomes = self.send(&queued).await?;
        Ok(queued
            .into_iter()
            .map(|q| {
                let outcome = outcomes.remove(&q.item);
                (q, outcome)
            })
            .collect())
    }

    /// Flushes the queue of every broker that holds one of `queued` not yet acknowledged; the
    /// broker's answers by item. The first final refusal of one of `queued` is returned.
    async fn send(&mut self, queued: &[Queued]) -> Result<HashMap<String, DecisionOutcome>> {
        let mut brokers: Vec<&str> = queued
            .iter()
            .filter(|q| !q.acked)
            .map(|q| q.broker.as_str())
            .collect();
        brokers.sort_unstable();
        brokers.dedup();
        let mut outcomes = HashMap::new();
        for broker in brokers {
            // The broker's queue goes out oldest first, these decisions with it: a newer grant
            // sent ahead of older ones would make their authenticator counters look replayed.
            let client = self.client(&self.broker(broker)?)?;
            let now = self.now();
            let sent = match outbox::flush(&mut self.history, &client, now).await {
                Ok(sent) => sent,
                Err(e) if e.is_transient() => continue,
                Err(e) => return Err(e),
            };
            for (item, sent) in sent {
                match sent {
                    outbox::Sent::Acknowledged(outcome) => {
                        self.settle(client.base(), &outcome)?;
                        outcomes.insert(item, *outcome);
                    }
                    outbox::Sent::Rejected(e) if queued.iter().any(|q| q.item == item) => {
                        return Err(e);
                    }
                    outbox::Sent::Rejected(_) => {}
                }
            }
        }
        Ok(outcomes)
    }
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
