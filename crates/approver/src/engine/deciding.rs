//! Deciding: approve (the ceremony, the grant, the outbox) and deny, then delivery.

use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::WebAuthnAssertion;

use crate::authn::{Authenticators, Prompt};
use crate::client::DecisionOutcome;
use crate::error::Result;
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
        let chosen = self.authenticator(with)?;
        let device = self.vault.device_key(&broker.key)?;
        let issuer = Self::issuer(&broker);
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

    /// Sends a queued decision once. A temporary failure (unreachable, busy, failing broker)
    /// leaves it queued and is not an error: the next sync delivers it. A final refusal is
    /// recorded (the item is open again) and returned.
    pub async fn deliver(&mut self, queued: Queued) -> Result<(Queued, Option<DecisionOutcome>)> {
        if queued.acked {
            return Ok((queued, None));
        }
        // The broker's queue goes out oldest first, this decision with it: a newer grant sent
        // ahead of older ones would make their authenticator counters look replayed.
        let client = self.client(&self.broker(&queued.broker)?)?;
        let now = self.now();
        let sent = match outbox::flush(&mut self.history, &client, now).await {
            Ok(sent) => sent,
            Err(e) if e.is_transient() => return Ok((queued, None)),
            Err(e) => return Err(e),
        };
        let mut mine = None;
        for (item, sent) in sent {
            match sent {
                outbox::Sent::Acknowledged(outcome) => {
                    self.settle(client.base(), &outcome)?;
                    if item == queued.item {
                        mine = Some(*outcome);
                    }
                }
                outbox::Sent::Rejected(e) if item == queued.item => return Err(e),
                outbox::Sent::Rejected(_) => {}
            }
        }
        Ok((queued, mine))
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
