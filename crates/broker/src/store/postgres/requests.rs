//! Requests: holding, deciding, redeeming, revoking, expiring and purging them, each state
//! change under its row's lock and with its event.

use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, EventKind, ReportedOutcome};

use super::super::{
    DecideOutcome, HoldOutcome, NewPending, Page, Purged, RedeemOutcome, Redemption, ReportOutcome,
    Requests, Result, Retention, StoredDecision, StoredRequest, status_text,
};
use super::PgStore;
use super::bounded::{insert_bounded, revoke_in};
use super::events::append_event;
use super::rows::{
    REQUEST_COLUMNS, load, load_existing, pending_count, read_request_at, set_status,
};

/// The statuses an item ends in.
const FINAL_STATUSES: &str = "('denied', 'expired', 'cancelled', 'redeemed', 'revoked')";

/// Items expired per sweep and instance.
const EXPIRE_BATCH: i64 = 1000;

impl Requests for PgStore {
    fn hold(&self, new: &NewPending, max_pending: u32, now: i64) -> Result<HoldOutcome> {
        self.with_tx(|tx| {
            // One hold per owner at a time, across instances: the merge and the cap see every
            // other hold.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('owner:' || $1, 0))",
                &[&new.owner],
            )?;
            let existing = tx.query_opt(
                "SELECT id FROM requests WHERE agent = $1 AND action_hash = $2 AND status = 'pending'
                 AND expires_at > $3 ORDER BY created_at LIMIT 1 FOR UPDATE",
                &[&new.agent, &new.pending.action_hash.as_str(), &now],
            )?;
            if let Some(row) = existing {
                let id: String = row.get(0);
                tx.execute("UPDATE requests SET merged = merged + 1 WHERE id = $1", &[&id])?;
                let request = load_existing(tx, &id)?;
                let event = append_event(tx, &new.owner, EventKind::Merged, Some(&request), None, None, now)?;
                return Ok(HoldOutcome::Held(Box::new(request), Box::new(event)));
            }
            if pending_count(tx, &new.owner, now)? >= max_pending {
                return Ok(HoldOutcome::OverCap);
            }
            let p = &new.pending;
            tx.execute(
                "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)",
                &[
                    &p.id,
                    &new.owner,
                    &new.agent,
                    &p.action_hash.as_str(),
                    &serde_json::to_string(p)?,
                    &p.created_at.unix(),
                    &p.expires_at.unix(),
                ],
            )?;
            let request = load_existing(tx, &p.id)?;
            let event = append_event(tx, &new.owner, EventKind::Pending, Some(&request), None, None, now)?;
            Ok(HoldOutcome::Held(Box::new(request), Box::new(event)))
        })
    }

    fn request(&self, id: &str) -> Result<Option<StoredRequest>> {
        let mut conn = self.conn()?;
        load(&mut conn, id, false)
    }

    fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page> {
        let status = status.map(status_text).transpose()?;
        let limit = limit.clamp(1, countersign_protocol::api::MAX_PAGE);
        // One more than asked for tells whether there is a next page.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = self.conn()?.query(
            &format!(
                "SELECT seq, {REQUEST_COLUMNS} FROM requests
                 WHERE owner = $1 AND ($2::TEXT IS NULL OR status = $2) AND ($3::BIGINT IS NULL OR seq < $3)
                 ORDER BY seq DESC LIMIT $4"
            ),
            &[&owner, &status, &before, &fetch],
        )?;
        let mut requests = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for row in rows {
            if requests.len() == limit {
                more = true;
                break;
            }
            requests.push(read_request_at(&row, 1)?.view);
            last = Some(row.try_get::<_, i64>(0)?);
        }
        Ok(Page {
            requests,
            next: if more { last } else { None },
        })
    }

    fn decide(
        &self,
        id: &str,
        owner: &str,
        approver: &str,
        decision: &StoredDecision,
        now: i64,
    ) -> Result<DecideOutcome> {
        self.with_tx(|tx| {
            // The row lock makes the first decision win, whichever instance it reached; the
            // second reads the first's result after it commits.
            let Some(current) = load(tx, id, true)? else { return Ok(DecideOutcome::NotFound) };
            if current.owner != owner {
                return Ok(DecideOutcome::NotFound);
            }
            if !current.decidable(now) {
                return Ok(DecideOutcome::AlreadyFinal(Box::new(current)));
            }
            let kind = match decision {
                StoredDecision::Approve { grant, jti, exp } => {
                    tx.execute(
                        "UPDATE requests SET status = 'approved', grant_token = $1, grant_jti = $2, grant_exp = $3,
                         decided_by = $4, decided_at = $5 WHERE id = $6",
                        &[grant, jti, exp, &approver, &now, &id],
                    )?;
                    EventKind::Approved
                }
                StoredDecision::Deny { reason } => {
                    tx.execute(
                        "UPDATE requests SET status = 'denied', reason = $1, decided_by = $2, decided_at = $3 WHERE id = $4",
                        &[reason, &approver, &now, &id],
                    )?;
                    EventKind::Denied
                }
                StoredDecision::ApproveBounded(bounded) => {
                    insert_bounded(tx, bounded)?;
                    tx.execute(
                        "UPDATE requests SET status = 'approved', grant_token = $1, grant_jti = $2, grant_exp = $3,
                         bounded_jti = $2, decided_by = $4, decided_at = $5 WHERE id = $6",
                        &[&bounded.token, &bounded.jti, &bounded.exp, &approver, &now, &id],
                    )?;
                    EventKind::Approved
                }
            };
            let request = load_existing(tx, id)?;
            let event = append_event(tx, owner, kind, Some(&request), None, None, now)?;
            Ok(DecideOutcome::Recorded { request: Box::new(request), event: Box::new(event) })
        })
    }

    fn redeem(&self, grant: &Redemption<'_>, now: i64) -> Result<RedeemOutcome> {
        self.with_tx(|tx| {
            // Concurrent redemptions of one grant queue on its item's row; the first consumes
            // the `jti`, the others then find it consumed.
            let item = load(tx, grant.txn, true)?;
            let state = tx.query_opt("SELECT state FROM grant_ids WHERE jti = $1", &[&grant.jti])?;
            match state.as_ref().map(|r| r.get::<_, &str>(0)) {
                Some("revoked") => return Ok(RedeemOutcome::Revoked),
                Some(_) => return Ok(RedeemOutcome::Replayed),
                None => {}
            }
            let Some(item) = item else { return Ok(RedeemOutcome::NotAccepted) };
            let accepted = item.accepts(grant);
            if !accepted {
                return Ok(RedeemOutcome::NotAccepted);
            }
            // The primary key is the last word: a `jti` is inserted once, whatever raced.
            let inserted = tx.execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES ($1, 'consumed', $2) ON CONFLICT DO NOTHING",
                &[&grant.jti, &grant.exp],
            )?;
            if inserted == 0 {
                return Ok(RedeemOutcome::Replayed);
            }
            tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = $1 WHERE id = $2",
                &[&now, &grant.txn],
            )?;
            let request = load_existing(tx, grant.txn)?;
            let event = append_event(tx, &request.owner, EventKind::Redeemed, Some(&request), None, None, now)?;
            Ok(RedeemOutcome::Redeemed(Box::new(request), Box::new(event)))
        })
    }

    fn report_outcome(
        &self,
        txn: &str,
        jti: &str,
        aud: &str,
        outcome: &ReportedOutcome,
        now: i64,
    ) -> Result<ReportOutcome> {
        self.with_tx(|tx| {
            // Only the redeemed item of this grant and audience, and only once.
            let updated = tx.execute(
                "UPDATE requests SET outcome = $1, outcome_detail = $2
                 WHERE id = $3 AND status = 'redeemed' AND grant_jti = $4
                 AND (pending::JSONB ->> 'audience') = $5 AND outcome IS NULL",
                &[&outcome.outcome.as_str(), &outcome.detail, &txn, &jti, &aud],
            )?;
            if updated == 0 {
                return Ok(ReportOutcome::Refused);
            }
            let request = load_existing(tx, txn)?;
            let event = append_event(
                tx,
                &request.owner,
                EventKind::Outcome,
                Some(&request),
                None,
                None,
                now,
            )?;
            Ok(ReportOutcome::Recorded(Box::new(request), Box::new(event)))
        })
    }

    fn revoke(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let Some(current) = load(tx, id, true)? else { return Ok(None) };
            if current.owner != owner || current.view.status != Status::Approved {
                return Ok(None);
            }
            // A request approved under a bounded grant: the grant itself goes, and every call
            // it released with it.
            if let Some(jti) = &current.view.bounded_grant {
                let Some(revoked) = revoke_in(tx, jti, owner, now)? else { return Ok(None) };
                return Ok(revoked.requests.into_iter().find(|(request, _)| request.view.pending.id == id));
            }
            let (Some(jti), Some(exp)) = (&current.grant_jti, current.grant_exp) else { return Ok(None) };
            let inserted = tx.execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES ($1, 'revoked', $2) ON CONFLICT DO NOTHING",
                &[jti, &exp],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            set_status(tx, id, Status::Revoked)?;
            let request = load_existing(tx, id)?;
            let event = append_event(tx, owner, EventKind::Revoked, Some(&request), None, None, now)?;
            Ok(Some((request, event)))
        })
    }

    fn expire_due(&self, now: i64) -> Result<Vec<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            // Every instance sweeps: rows another sweeper (or a decision) holds are skipped,
            // so each item expires once, with one event.
            let ids: Vec<String> = tx
                .query(
                    "SELECT id FROM requests WHERE status = 'pending' AND expires_at <= $1
                     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&now, &EXPIRE_BATCH],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                set_status(tx, &id, Status::Expired)?;
                let request = load_existing(tx, &id)?;
                let event = append_event(
                    tx,
                    &request.owner,
                    EventKind::Expired,
                    Some(&request),
                    None,
                    None,
                    now,
                )?;
                out.push((request, event));
            }
            // Forget what can no longer matter.
            tx.execute("DELETE FROM proof_ids WHERE exp < $1", &[&now])?;
            tx.execute("DELETE FROM grant_ids WHERE exp < $1", &[&(now - 300)])?;
            Ok(out)
        })
    }

    fn pending_count(&self, owner: &str, now: i64) -> Result<u32> {
        let mut conn = self.conn()?;
        pending_count(&mut conn, owner, now)
    }

    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged> {
        self.with_tx(|tx| {
            let before = now.saturating_sub(retention.items_secs);
            let gone: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT id FROM requests WHERE
                           (status IN {FINAL_STATUSES} AND COALESCE(redeemed_at, decided_at, expires_at) < $1)
                           OR (status = 'approved' AND grant_exp < $1)
                         LIMIT 5000 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&before],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut purged = Purged::default();
            if !gone.is_empty() {
                tx.execute("DELETE FROM events WHERE request = ANY($1)", &[&gone])?;
                purged.items = count(tx.execute("DELETE FROM requests WHERE id = ANY($1)", &[&gone])?);
            }
            purged.events = count(tx.execute(
                "DELETE FROM events WHERE at < $1",
                &[&now.saturating_sub(retention.events_secs)],
            )?);
            purged.idempotency_keys = count(tx.execute(
                "DELETE FROM idempotency WHERE at < $1",
                &[&now.saturating_sub(retention.idempotency_secs)],
            )?);
            tx.execute("DELETE FROM pairing_codes WHERE expires_at < $1", &[&(now - 86_400)])?;
            // A bucket idle for an hour is full again: forgetting it changes nothing.
            tx.execute(
                "DELETE FROM rate_buckets WHERE at < EXTRACT(EPOCH FROM clock_timestamp())::FLOAT8 - 3600",
                &[],
            )?;
            Ok(purged)
        })
    }
}

fn count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}
