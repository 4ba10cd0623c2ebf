//! Deciding: the approve and deny flows, and the outbox that carries decisions to the broker.
//!
//! A decision is written to the outbox and the history in one transaction before anything is
//! sent, then sent with its idempotency key until the broker acknowledges it. The outbox holds
//! at most one decision per item (its primary key), so a crash at any point loses nothing and
//! can never produce two different grants for one item: after a restart the same stored grant is
//! sent again, and the broker answers a repeated key with its first answer. The approvals of
//! one batch ceremony share one key and always travel together: their grants carry one
//! assertion, which a broker accepts for all of them at once or for none.

use std::collections::BTreeSet;

use countersign_protocol::api::Decision;
use countersign_protocol::bounded::{BOUNDED_MAX_LIFETIME_SECS, BoundedDraft, Bounds};
use countersign_protocol::grant::Confirmation;
use countersign_protocol::grant::{
    BATCH_SIZES, BatchDraft, GrantDraft, GrantOptions, Issuer, MAX_SKEW_SECS,
};
use countersign_protocol::registry::RegisteredCredential;
use countersign_protocol::webauthn::WebAuthnAssertion;
use countersign_protocol::{DeviceSigningKey, Grant, MintError, PendingAction};
use serde_json::json;

use crate::client::{BrokerClient, DecisionOutcome};
use crate::error::{Error, Result};
pub use crate::history::Queued;
use crate::history::{Answer, EntryKind, History, ItemStatus};

/// An authenticator the owner verifies with (a security key, a platform authenticator, or the
/// development software authenticator). PIN, touch and user-verification prompts happen inside.
pub trait Authenticator {
    /// The credential it asserts with, as registered.
    fn credential(&self) -> &RegisteredCredential;
    /// A user-verified assertion over `challenge`.
    fn assert(&mut self, challenge: &[u8; 32]) -> Result<WebAuthnAssertion>;
}

/// What became of one queued decision that was sent.
#[derive(Debug)]
pub enum Sent {
    /// The broker acknowledged it: recorded, or the item was already decided.
    Acknowledged(Box<DecisionOutcome>),
    /// The broker refused it for good; recorded as `rejected` and the item is open again.
    Rejected(Error),
}

/// Approves `item`: recomputes its action hash (a mismatch is refused), builds the grant claims,
/// runs the ceremony over their hash, verifies the result locally, signs the grant, and queues
/// it with its history entry in one transaction. Returns what was queued — the earlier decision
/// if the item was already decided here.
pub fn approve(
    history: &mut History,
    item: &str,
    issuer: &Issuer,
    device: &DeviceSigningKey,
    authenticator: &mut dyn Authenticator,
    now: i64,
) -> Result<Queued> {
    if let Some(queued) = earlier(history, item, true, now)? {
        return Ok(queued);
    }
    let pending = approvable(history, item)?;
    let draft = GrantDraft::new(&pending, issuer, GrantOptions::at(now))?;
    let assertion = authenticator.assert(draft.challenge())?;
    let grant = draft.sign(assertion, device)?;
    let (decision, entry) = checked(&grant, &pending, issuer, device, authenticator, now)?;
    enqueue(history, item, &decision, entry.0, entry.1, now)
}

/// What a bounded approval is asked for: its bounds, and the key of the gateway it is bound to.
#[derive(Clone, Debug)]
pub struct Bounded {
    pub bounds: Bounds,
    /// The RFC 7638 thumbprint of the gateway's key, as its broker lists it.
    pub jkt: String,
}

/// Approves `item` and later calls like it within `bounds`, with a bounded grant bound to the
/// gateway key `jkt`: the bounds are checked against the reviewed call before the ceremony
/// (a bad bound asks nothing of the authenticator), the grant is queued like a single-use one,
/// and the broker decides whether its lifetime is within its own maximum (refused, never
/// shortened).
pub fn approve_bounded(
    history: &mut History,
    item: &str,
    bounded: &Bounded,
    issuer: &Issuer,
    device: &DeviceSigningKey,
    authenticator: &mut dyn Authenticator,
    now: i64,
) -> Result<Queued> {
    if let Some(queued) = earlier(history, item, true, now)? {
        return Ok(queued);
    }
    let pending = approvable(history, item)?;
    let draft = BoundedDraft::new(
        &pending,
        issuer,
        &bounded.bounds,
        Confirmation {
            jkt: bounded.jkt.clone(),
        },
        now,
        BOUNDED_MAX_LIFETIME_SECS,
    )
    .map_err(|e| match e {
        MintError::Bounds(why) => Error::BadBounds(why),
        MintError::LifetimeTooLong { requested, cap } => Error::BadBounds(format!(
            "a lifetime of {requested} s is not within 1 to {cap} s"
        )),
        other => Error::Mint(other),
    })?;
    let assertion = authenticator.assert(draft.challenge())?;
    let grant = draft.sign(assertion, device)?;
    // Checked as its gateway will check it before anything is queued.
    countersign_protocol::verify::check_minted_bounded(
        &grant,
        &pending,
        issuer,
        device.public_jwk(),
        authenticator.credential().clone(),
        now,
    )
    .map_err(|e| Error::SelfCheck(e.to_string()))?;
    let claims = &grant.claims().approval;
    let decision = Decision::Approve {
        grant: grant.token().to_owned(),
    };
    let detail = json!({
        "jti": claims.jti,
        "exp": claims.exp,
        "bounded": {"constraints": claims.constraints, "cnf": claims.cnf},
    });
    enqueue(history, item, &decision, EntryKind::Approved, detail, now)
}

/// Approves several `items` in one ceremony: each is checked as [`approve`] checks it, and
/// together they must be 2 to 50 distinct items for one gateway, all of one agent or all for
/// one tool. Their grants' claims go under one challenge ([`BatchDraft`]), the authenticator
/// asserts once, each grant is verified locally, and all are queued with their history
/// entries in one transaction under one idempotency key, so they go to the broker together.
/// The same batch asked for again (after a crash) comes back as queued.
pub fn approve_batch(
    history: &mut History,
    items: &[String],
    issuer: &Issuer,
    device: &DeviceSigningKey,
    authenticator: &mut dyn Authenticator,
    now: i64,
) -> Result<Vec<Queued>> {
    if !BATCH_SIZES.contains(&items.len()) {
        return Err(Error::BadBatch(format!(
            "a batch holds {} to {} items, not {}",
            BATCH_SIZES.start(),
            BATCH_SIZES.end(),
            items.len()
        )));
    }
    let distinct: BTreeSet<&String> = items.iter().collect();
    if distinct.len() != items.len() {
        return Err(Error::BadBatch("an item is listed twice".into()));
    }
    let earlier = items
        .iter()
        .map(|item| earlier(history, item, true, now))
        .collect::<Result<Vec<_>>>()?;
    if let Some(Some(first)) = earlier.first()
        && earlier.iter().all(|q| {
            q.as_ref()
                .is_some_and(|q| q.idempotency_key == first.idempotency_key)
        })
    {
        return Ok(earlier.into_iter().flatten().collect());
    }
    if let Some(queued) = earlier.iter().flatten().next() {
        return Err(Error::NotPending {
            item: queued.item.clone(),
            status: ItemStatus::Approved,
        });
    }
    let pendings = items
        .iter()
        .map(|item| approvable(history, item))
        .collect::<Result<Vec<_>>>()?;
    batchable(&pendings)?;
    let drafts = pendings
        .iter()
        .map(|pending| GrantDraft::new(pending, issuer, GrantOptions::at(now)))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = BatchDraft::new(drafts)?;
    let assertion = authenticator.assert(batch.challenge())?;
    let grants = batch.sign(assertion, device)?;
    let mut decisions = Vec::with_capacity(grants.len());
    for ((grant, pending), item) in grants.iter().zip(&pendings).zip(items) {
        let (decision, entry) = checked(grant, pending, issuer, device, authenticator, now)?;
        decisions.push((item.clone(), decision, entry));
    }
    history.enqueue_batch(decisions, &idempotency_key(), now)
}

/// `item` as it may be approved: known, pending, and showing exactly what its hash binds.
fn approvable(history: &History, item: &str) -> Result<PendingAction> {
    let (pending, status) = history
        .item(item)?
        .ok_or_else(|| Error::UnknownItem(item.to_owned()))?;
    if status != ItemStatus::Pending {
        return Err(Error::NotPending {
            item: item.to_owned(),
            status,
        });
    }
    if !pending.verify_hash() {
        return Err(Error::HashMismatch(item.to_owned()));
    }
    Ok(pending)
}

/// Whether `pendings` may share one ceremony: one gateway (whose broker verifies the batch as
/// a whole), and one agent or one tool, so the owner judges one kind of request at a time.
fn batchable(pendings: &[PendingAction]) -> Result<()> {
    let Some(first) = pendings.first() else {
        return Ok(());
    };
    if pendings.iter().any(|p| p.audience != first.audience) {
        return Err(Error::BadBatch(
            "the items are for different gateways".into(),
        ));
    }
    let one_agent = pendings.iter().all(|p| p.actor.id == first.actor.id);
    let one_tool = pendings.iter().all(|p| p.resource.id == first.resource.id);
    if !one_agent && !one_tool {
        return Err(Error::BadBatch(
            "the items are neither of one agent nor for one tool".into(),
        ));
    }
    Ok(())
}

/// Verifies a grant just made exactly as a gateway would, then gives the decision to queue and
/// its history entry.
fn checked(
    grant: &Grant,
    pending: &PendingAction,
    issuer: &Issuer,
    device: &DeviceSigningKey,
    authenticator: &dyn Authenticator,
    now: i64,
) -> Result<(Decision, (EntryKind, serde_json::Value))> {
    countersign_protocol::verify::check_minted(
        grant,
        pending,
        issuer,
        device.public_jwk(),
        authenticator.credential().clone(),
        now,
    )
    .map_err(|e| Error::SelfCheck(e.to_string()))?;
    let approval = &grant.claims().approval;
    Ok((
        Decision::Approve {
            grant: grant.token().to_owned(),
        },
        (
            EntryKind::Approved,
            json!({"jti": approval.jti, "exp": approval.exp}),
        ),
    ))
}

/// Denies `item` with a reason (and optionally suspends its agent), queued like an approval.
/// Whether `item` can be denied with `reason`: known, open (pending, or refused by the broker
/// and so open again), and a reason given.
pub fn check_deniable(history: &History, item: &str, reason: &str) -> Result<()> {
    let (_, status) = history
        .item(item)?
        .ok_or_else(|| Error::UnknownItem(item.to_owned()))?;
    if status != ItemStatus::Pending && status != ItemStatus::Refused {
        return Err(Error::NotPending {
            item: item.to_owned(),
            status,
        });
    }
    if reason.trim().is_empty() {
        return Err(Error::ReasonRequired);
    }
    Ok(())
}

pub fn deny(
    history: &mut History,
    item: &str,
    reason: &str,
    suspend_agent: bool,
    now: i64,
) -> Result<Queued> {
    if let Some(queued) = earlier(history, item, false, now)? {
        return Ok(queued);
    }
    check_deniable(history, item, reason)?;
    let reason = reason.trim();
    let decision = Decision::Deny {
        reason: reason.to_owned(),
        suspend_agent,
    };
    enqueue(
        history,
        item,
        &decision,
        EntryKind::Denied,
        json!({"reason": reason, "suspend_agent": suspend_agent}),
        now,
    )
}

fn enqueue(
    history: &mut History,
    item: &str,
    decision: &Decision,
    kind: EntryKind,
    detail: serde_json::Value,
    now: i64,
) -> Result<Queued> {
    history.enqueue(item, decision, &idempotency_key(), (kind, detail), now)
}

/// The decision already taken here for `item`, when it is the same kind as the one asked for
/// (an approval repeated after a crash, say); the opposite decision is refused.
///
/// A decision the broker rejected is cleared so the owner can decide again — but a rejected
/// grant only once it can no longer be redeemed anywhere (its `exp` plus the verifiers' skew),
/// so that two live grants for one item never exist, whatever the broker claims.
fn earlier(history: &mut History, item: &str, approving: bool, now: i64) -> Result<Option<Queued>> {
    let Some(queued) = history.queued(item)? else {
        return Ok(None);
    };
    if queued.rejected {
        // Denying makes no grant, so it need not wait.
        if approving {
            let rejected_approval = matches!(queued.decision, Decision::Approve { .. });
            if let Some(until) = grant_valid_until(history, item, rejected_approval)?
                && now < until
            {
                return Err(Error::GrantStillLive {
                    item: item.to_owned(),
                    until,
                });
            }
        }
        history.clear_rejected(item)?;
        return Ok(None);
    }
    if matches!(queued.decision, Decision::Approve { .. }) == approving {
        return Ok(Some(queued));
    }
    Err(Error::NotPending {
        item: item.to_owned(),
        status: if approving {
            ItemStatus::Denied
        } else {
            ItemStatus::Approved
        },
    })
}

/// Sends every unacknowledged decision for `client`'s broker, oldest first, and records each
/// answer (see [`send`]); the approvals of one batch ceremony go together (see
/// [`send_batch`]). Stops at the first temporary failure and leaves the rest queued; a decision
/// the broker rejects for good does not hold up the ones after it.
pub async fn flush(
    history: &mut History,
    client: &BrokerClient,
    now: i64,
) -> Result<Vec<(String, Sent)>> {
    let unsent: Vec<Queued> = history
        .unsent()?
        .into_iter()
        .filter(|q| q.broker == client.base())
        .collect();
    let mut done = Vec::new();
    // A batch's approvals were queued in one transaction under one key: adjacent, and the
    // only decisions that share a key.
    let together = |a: &Queued, b: &Queued| {
        a.idempotency_key == b.idempotency_key
            && [a, b]
                .iter()
                .all(|q| matches!(q.decision, Decision::Approve { .. }))
    };
    for group in unsent.chunk_by(together) {
        if let [queued] = group
            && !history.in_batch(&queued.idempotency_key)?
        {
            let sent = send(history, client, queued, now).await?;
            done.push((queued.item.clone(), sent));
        } else {
            done.extend(send_batch(history, client, group, now).await?);
        }
    }
    Ok(done)
}

/// Sends one queued decision and records the broker's answer: acknowledged, or rejected for
/// good. A temporary failure (see [`Error::is_transient`]) is returned and leaves it queued.
pub async fn send(
    history: &mut History,
    client: &BrokerClient,
    queued: &Queued,
    now: i64,
) -> Result<Sent> {
    match client
        .decide(&queued.item, &queued.decision, &queued.idempotency_key)
        .await
    {
        Ok(outcome) => {
            acknowledge(history, &queued.item, &outcome, now)?;
            Ok(Sent::Acknowledged(Box::new(outcome)))
        }
        Err(e) if e.refuses_item() => {
            reject(history, &queued.item, &e, now)?;
            Ok(Sent::Rejected(e))
        }
        Err(e) => Err(e),
    }
}

/// Sends the approvals of one batch ceremony in one call with their shared key and records
/// each answer. The broker records none of a batch it refuses, so a final refusal rejects
/// every approval of it; a temporary failure leaves them all queued.
pub async fn send_batch(
    history: &mut History,
    client: &BrokerClient,
    batch: &[Queued],
    now: i64,
) -> Result<Vec<(String, Sent)>> {
    let approvals: Vec<(&str, &str)> = batch
        .iter()
        .filter_map(|q| match &q.decision {
            Decision::Approve { grant } => Some((q.item.as_str(), grant.as_str())),
            Decision::Deny { .. } => None,
        })
        .collect();
    let key = batch
        .first()
        .map(|q| q.idempotency_key.as_str())
        .unwrap_or_default();
    match client.decide_batch(&approvals, key).await {
        Ok(outcomes) => {
            let answers: Vec<(&str, Answer)> = batch
                .iter()
                .zip(&outcomes)
                .map(|(queued, outcome)| (queued.item.as_str(), answer(outcome)))
                .collect();
            history.acknowledge(&answers, now)?;
            Ok(batch
                .iter()
                .zip(outcomes)
                .map(|(queued, outcome)| {
                    (queued.item.clone(), Sent::Acknowledged(Box::new(outcome)))
                })
                .collect())
        }
        Err(e) if e.refuses_item() => {
            let mut done = Vec::with_capacity(batch.len());
            for queued in batch {
                reject(history, &queued.item, &e, now)?;
                done.push((queued.item.clone(), Sent::Rejected(e.again())));
            }
            Ok(done)
        }
        Err(e) => Err(e),
    }
}

/// Records that the broker refused the decision for `item` for good, in one transaction: the
/// outbox row is closed and, if the item still shows that decision, a `rejected` entry opens it
/// again (an item refused on arrival goes back to `refused`). Nothing changes when the row was
/// acknowledged meanwhile (another sender got the broker's yes), and the item keeps a status
/// the broker reported since (expired, decided by another approver).
pub fn reject(history: &mut History, item: &str, error: &Error, now: i64) -> Result<()> {
    let status = match error {
        Error::Broker { status, .. } => Some(*status),
        _ => None,
    };
    let detail = json!({"rejected": true, "status": status, "code": error.code(), "message": error.to_string()});
    history.reject(item, detail, now)
}

/// Until when the newest grant made here for `item` can be redeemed by a verifier that allows
/// the largest clock skew (its `exp` + [`MAX_SKEW_SECS`]); `None` when no grant was made.
fn grant_valid_until(
    history: &History,
    item: &str,
    rejected_approval: bool,
) -> Result<Option<i64>> {
    let exp = history
        .entries(item)?
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Approved)
        .find_map(|e| e.detail["exp"].as_i64());
    Ok(match exp {
        Some(exp) => Some(exp.saturating_add(MAX_SKEW_SECS)),
        // An approval without its expiry on record cannot be judged: no second grant, ever.
        None if rejected_approval => Some(i64::MAX),
        None => None,
    })
}

/// Marks the decision for `item` acknowledged by the broker.
pub fn acknowledge(
    history: &mut History,
    item: &str,
    outcome: &DecisionOutcome,
    now: i64,
) -> Result<()> {
    history.acknowledge(&[(item, answer(outcome))], now)
}

fn answer(outcome: &DecisionOutcome) -> Answer {
    match outcome {
        DecisionOutcome::Recorded(_) => Answer::Recorded,
        DecisionOutcome::AlreadyDecided(_) => Answer::AlreadyDecided,
    }
}

fn idempotency_key() -> String {
    countersign_protocol::hash::random_b64url::<16>()
}
