//! Requests: holding, deciding, redeeming, revoking, expiring and purging them.

use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, EventKind, ReportedOutcome};
use rusqlite::{OptionalExtension as _, params};

use super::super::{
    DecideOutcome, HoldOutcome, NewPending, Page, Purged, RedeemOutcome, Redemption, ReportOutcome,
    Requests, Result, Retention, StoredDecision, StoredRequest, status_text,
};
use super::bounded::{insert_bounded, revoke_in};
use super::events::append_event;
use super::rows::{
    REQUEST_COLUMNS, load, load_existing, pending_count, read_request_at, set_status, to_request,
};
use super::{FINAL_STATUSES, SqliteStore};

impl Requests for SqliteStore {
    fn hold(&self, new: &NewPending, max_pending: u32, now: i64) -> Result<HoldOutcome> {
        self.with_tx(|tx| {
            let existing: Option<String> = tx
                .query_row(
                    // Named: without statistics SQLite would take the expiry index and read every
                    // pending row of every owner.
                    "SELECT id FROM requests INDEXED BY requests_merge
                     WHERE agent = ?1 AND action_hash = ?2 AND status = 'pending'
                     AND expires_at > ?3 ORDER BY created_at LIMIT 1",
                    params![new.agent, new.pending.action_hash.as_str(), now],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                tx.execute("UPDATE requests SET merged = merged + 1 WHERE id = ?1", [&id])?;
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
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
                params![
                    p.id,
                    new.owner,
                    new.agent,
                    p.action_hash.as_str(),
                    serde_json::to_string(p)?,
                    p.created_at.unix(),
                    p.expires_at.unix()
                ],
            )?;
            let request = load_existing(tx, &p.id)?;
            let event = append_event(tx, &new.owner, EventKind::Pending, Some(&request), None, None, now)?;
            Ok(HoldOutcome::Held(Box::new(request), Box::new(event)))
        })
    }

    fn request(&self, id: &str) -> Result<Option<StoredRequest>> {
        let conn = self.lock()?;
        load(&conn, id)
    }

    fn list(
        &self,
        owner: &str,
        status: Option<Status>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page> {
        let conn = self.lock()?;
        let status = status.map(status_text).transpose()?;
        let limit = limit.clamp(1, countersign_protocol::api::MAX_PAGE);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT rowid, {REQUEST_COLUMNS} FROM requests
             WHERE owner = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR rowid < ?3)
             ORDER BY rowid DESC LIMIT ?4"
        ))?;
        // One more than asked for tells whether there is a next page.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![owner, status, before, fetch], |r| {
            Ok((r.get::<_, i64>(0)?, read_request_at(r, 1)?))
        })?;
        let mut requests = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for row in rows {
            let (rowid, row) = row?;
            if requests.len() == limit {
                more = true;
                break;
            }
            requests.push(to_request(row)?.view);
            last = Some(rowid);
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
            let Some(current) = load(tx, id)? else { return Ok(DecideOutcome::NotFound) };
            if current.owner != owner {
                return Ok(DecideOutcome::NotFound);
            }
            if !current.decidable(now) {
                return Ok(DecideOutcome::AlreadyFinal(Box::new(current)));
            }
            let kind = match decision {
                StoredDecision::Approve { grant, jti, exp } => {
                    tx.execute(
                        "UPDATE requests SET status = 'approved', grant_token = ?1, grant_jti = ?2, grant_exp = ?3,
                         decided_by = ?4, decided_at = ?5 WHERE id = ?6",
                        params![grant, jti, exp, approver, now, id],
                    )?;
                    EventKind::Approved
                }
                StoredDecision::Deny { reason } => {
                    tx.execute(
                        "UPDATE requests SET status = 'denied', reason = ?1, decided_by = ?2, decided_at = ?3 WHERE id = ?4",
                        params![reason, approver, now, id],
                    )?;
                    EventKind::Denied
                }
                StoredDecision::ApproveBounded(bounded) => {
                    insert_bounded(tx, bounded)?;
                    tx.execute(
                        "UPDATE requests SET status = 'approved', grant_token = ?1, grant_jti = ?2, grant_exp = ?3,
                         bounded_jti = ?2, decided_by = ?4, decided_at = ?5 WHERE id = ?6",
                        params![bounded.token, bounded.jti, bounded.exp, approver, now, id],
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
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM grant_ids WHERE jti = ?1",
                    [grant.jti],
                    |r| r.get(0),
                )
                .optional()?;
            match state.as_deref() {
                Some("revoked") => return Ok(RedeemOutcome::Revoked),
                Some(_) => return Ok(RedeemOutcome::Replayed),
                None => {}
            }
            let Some(item) = load(tx, grant.txn)? else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            let accepted = item.accepts(grant);
            if !accepted {
                return Ok(RedeemOutcome::NotAccepted);
            }
            tx.execute(
                "INSERT INTO grant_ids (jti, state, exp) VALUES (?1, 'consumed', ?2)",
                params![grant.jti, grant.exp],
            )?;
            tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = ?1 WHERE id = ?2",
                params![now, grant.txn],
            )?;
            let request = load_existing(tx, grant.txn)?;
            let event = append_event(
                tx,
                &request.owner,
                EventKind::Redeemed,
                Some(&request),
                None,
                None,
                now,
            )?;
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
                "UPDATE requests SET outcome = ?1, outcome_detail = ?2 \
                 WHERE id = ?3 AND status = 'redeemed' AND grant_jti = ?4 \
                 AND json_extract(pending, '$.audience') = ?5 AND outcome IS NULL",
                params![outcome.outcome.as_str(), outcome.detail, txn, jti, aud],
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
            let Some(current) = load(tx, id)? else { return Ok(None) };
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
                "INSERT INTO grant_ids (jti, state, exp) VALUES (?1, 'revoked', ?2) ON CONFLICT DO NOTHING",
                params![jti, exp],
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
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM requests WHERE status = 'pending' AND expires_at <= ?1 LIMIT 1000",
                )?;
                let rows = stmt.query_map([now], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                set_status(tx, &id, Status::Expired)?;
                let request = load_existing(tx, &id)?;
                let event = append_event(tx, &request.owner, EventKind::Expired, Some(&request), None, None, now)?;
                out.push((request, event));
            }
            // Forget what can no longer matter.
            tx.execute("DELETE FROM proof_ids WHERE exp < ?1", [now])?;
            tx.execute("DELETE FROM grant_ids WHERE exp < ?1", [now - 300])?;
            Ok(out)
        })
    }

    fn pending_count(&self, owner: &str, now: i64) -> Result<u32> {
        let conn = self.lock()?;
        pending_count(&conn, owner, now)
    }

    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged> {
        self.with_tx(|tx| {
            let before = now.saturating_sub(retention.items_secs);
            let gone: Vec<String> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT id FROM requests WHERE
                       (status IN {FINAL_STATUSES} AND COALESCE(redeemed_at, decided_at, expires_at) < ?1)
                       OR (status = 'approved' AND grant_exp < ?1)
                     LIMIT 5000"
                ))?;
                let rows = stmt.query_map([before], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut purged = Purged::default();
            for id in &gone {
                tx.execute("DELETE FROM events WHERE request = ?1", [id])?;
                purged.items += tx.execute("DELETE FROM requests WHERE id = ?1", [id])?;
            }
            purged.events = tx.execute(
                "DELETE FROM events WHERE at < ?1",
                [now.saturating_sub(retention.events_secs)],
            )?;
            purged.idempotency_keys = tx.execute(
                "DELETE FROM idempotency WHERE at < ?1",
                [now.saturating_sub(retention.idempotency_secs)],
            )?;
            tx.execute("DELETE FROM pairing_codes WHERE expires_at < ?1", [now - 86_400])?;
            Ok(purged)
        })
    }
}
