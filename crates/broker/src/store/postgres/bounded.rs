//! Bounded grants: storing them, releasing calls under them, counting their uses, revoking.
//! Every change to a grant's count happens under its row's lock, so concurrent redemptions on
//! any number of instances queue on it and each sees the count the one before left.

use countersign_protocol::action::Status;
use countersign_protocol::api::{ApproverEvent, BoundedGrantView, EventKind};
use tokio_postgres::Row;

use super::super::{
    BoundedGrants, BoundedRedemption, NewBounded, NewPending, RedeemOutcome, Result,
    RevokedBounded, StoredBounded, StoredRequest,
};
use super::events::append_event;
use super::rows::{load_existing, set_status};
use super::{PgConn, PgStore};

const BOUNDED_COLUMNS: &str = "b.jti, b.txn, b.agent, b.tool, b.audience, b.approver, b.uses, b.used, \
     (SELECT COUNT(*) FROM requests r WHERE r.bounded_jti = b.jti AND r.status = 'approved'), \
     b.issued_at, b.exp, b.revoked_at IS NOT NULL, b.claims, b.token, b.owner";

fn count(row: &Row, at: usize) -> Result<u32> {
    let n: i64 = row.try_get(at)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The grant, and its owner.
fn read_bounded(row: &Row) -> Result<(StoredBounded, String)> {
    let claims: String = row.try_get(12)?;
    let parsed: serde_json::Value = serde_json::from_str(&claims)?;
    Ok((
        StoredBounded {
            view: BoundedGrantView {
                jti: row.try_get(0)?,
                txn: row.try_get(1)?,
                agent: row.try_get(2)?,
                tool: row.try_get(3)?,
                audience: row.try_get(4)?,
                approver: row.try_get(5)?,
                uses: count(row, 6)?,
                used: count(row, 7)?,
                released: count(row, 8)?,
                issued_at: row.try_get(9)?,
                expires_at: row.try_get(10)?,
                revoked: row.try_get(11)?,
                constraints: parsed.get("constraints").cloned().unwrap_or_default(),
            },
            token: row.try_get(13)?,
            claims,
        },
        row.try_get(14)?,
    ))
}

/// The grant `jti` and its owner, its row locked until the transaction ends.
fn lock_bounded(conn: &mut PgConn, jti: &str) -> Result<Option<(StoredBounded, String)>> {
    // Lock first, then read: the count of released requests is read after the lock is held.
    if conn
        .query_opt(
            "SELECT 1 FROM bounded_grants WHERE jti = $1 FOR UPDATE",
            &[&jti],
        )?
        .is_none()
    {
        return Ok(None);
    }
    let row = conn.query_one(
        &format!("SELECT {BOUNDED_COLUMNS} FROM bounded_grants b WHERE b.jti = $1"),
        &[&jti],
    )?;
    read_bounded(&row).map(Some)
}

/// Stores a bounded grant the broker accepted (in the transaction that approves its request).
pub(super) fn insert_bounded(conn: &mut PgConn, new: &NewBounded) -> Result<()> {
    conn.execute(
        "INSERT INTO bounded_grants (jti, owner, agent, audience, tool, txn, approver, token, claims,
         uses, issued_at, exp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &new.jti,
            &new.owner,
            &new.agent,
            &new.audience,
            &new.tool,
            &new.txn,
            &new.approver,
            &new.token,
            &new.claims,
            &i64::from(new.uses),
            &new.issued_at,
            &new.exp,
        ],
    )?;
    Ok(())
}

/// Revokes bounded grant `jti` of `owner` and every request released under it and not yet
/// redeemed, in the caller's transaction.
pub(super) fn revoke_in(
    conn: &mut PgConn,
    jti: &str,
    owner: &str,
    now: i64,
) -> Result<Option<RevokedBounded>> {
    let Some((_, grant_owner)) = lock_bounded(conn, jti)? else {
        return Ok(None);
    };
    if grant_owner != owner {
        return Ok(None);
    }
    let revoked = conn.execute(
        "UPDATE bounded_grants SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL",
        &[&now, &jti],
    )?;
    if revoked == 0 {
        return Ok(None);
    }
    let ids: Vec<String> = conn
        .query(
            "SELECT id FROM requests WHERE bounded_jti = $1 AND status = 'approved'
             ORDER BY created_at FOR UPDATE",
            &[&jti],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut requests = Vec::with_capacity(ids.len());
    for id in ids {
        set_status(conn, &id, Status::Revoked)?;
        let request = load_existing(conn, &id)?;
        let event = append_event(
            conn,
            owner,
            EventKind::Revoked,
            Some(&request),
            None,
            None,
            now,
        )?;
        requests.push((request, event));
    }
    let Some((grant, _)) = lock_bounded(conn, jti)? else {
        return Ok(None);
    };
    Ok(Some(RevokedBounded { grant, requests }))
}

impl BoundedGrants for PgStore {
    fn bounded_grants(
        &self,
        owner: &str,
        agent: Option<&str>,
        now: i64,
    ) -> Result<Vec<StoredBounded>> {
        let mut conn = self.conn()?;
        let rows = conn.query(
            &format!(
                "SELECT {BOUNDED_COLUMNS} FROM bounded_grants b
                 WHERE b.owner = $1 AND ($2::TEXT IS NULL OR b.agent = $2) AND b.revoked_at IS NULL
                 AND b.exp > $3 AND b.used < b.uses ORDER BY b.issued_at DESC, b.jti LIMIT 500"
            ),
            &[&owner, &agent, &now],
        )?;
        rows.iter()
            .map(|row| read_bounded(row).map(|(grant, _)| grant))
            .collect()
    }

    fn release(
        &self,
        new: &NewPending,
        jti: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let Some((grant, owner)) = lock_bounded(tx, jti)? else { return Ok(None) };
            let g = &grant.view;
            let room = g.used.saturating_add(g.released) < g.uses;
            if g.revoked || g.expires_at <= now || !room || g.agent != new.agent || owner != new.owner {
                return Ok(None);
            }
            let p = &new.pending;
            tx.execute(
                "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at,
                 grant_token, grant_jti, grant_exp, decided_by, decided_at, bounded_jti)
                 VALUES ($1, $2, $3, $4, 'approved', $5, $6, $7, $8, $9, $10, $11, $12, $9)",
                &[
                    &p.id,
                    &new.owner,
                    &new.agent,
                    &p.action_hash.as_str(),
                    &serde_json::to_string(p)?,
                    &p.created_at.unix(),
                    &p.expires_at.unix(),
                    &grant.token,
                    &jti,
                    &g.expires_at,
                    &g.approver,
                    &now,
                ],
            )?;
            let request = load_existing(tx, &p.id)?;
            let event = append_event(tx, &new.owner, EventKind::Approved, Some(&request), None, None, now)?;
            Ok(Some((request, event)))
        })
    }

    fn redeem_bounded(&self, grant: &BoundedRedemption<'_>, now: i64) -> Result<RedeemOutcome> {
        self.with_tx(|tx| {
            let Some((stored, owner)) = lock_bounded(tx, grant.jti)? else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            if owner != grant.sub || stored.view.audience != grant.aud {
                return Ok(RedeemOutcome::NotAccepted);
            }
            if stored.view.revoked {
                return Ok(RedeemOutcome::Revoked);
            }
            if stored.view.used >= stored.view.uses {
                return Ok(RedeemOutcome::Spent);
            }
            let Some(item) = tx.query_opt(
                "SELECT id FROM requests WHERE bounded_jti = $1 AND status = 'approved'
                 AND action_hash = $2 ORDER BY created_at, id LIMIT 1 FOR UPDATE",
                &[&grant.jti, &grant.action_hash],
            )?
            else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            let item: String = item.get(0);
            // The count is the last word: a use is taken only while one is left.
            let counted = tx.execute(
                "UPDATE bounded_grants SET used = used + 1
                 WHERE jti = $1 AND used < uses AND revoked_at IS NULL",
                &[&grant.jti],
            )?;
            if counted == 0 {
                return Ok(RedeemOutcome::Spent);
            }
            tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = $1 WHERE id = $2",
                &[&now, &item],
            )?;
            let request = load_existing(tx, &item)?;
            let event = append_event(
                tx,
                &owner,
                EventKind::Redeemed,
                Some(&request),
                None,
                None,
                now,
            )?;
            Ok(RedeemOutcome::Redeemed(Box::new(request), Box::new(event)))
        })
    }

    fn revoke_bounded(&self, jti: &str, owner: &str, now: i64) -> Result<Option<RevokedBounded>> {
        self.with_tx(|tx| revoke_in(tx, jti, owner, now))
    }
}
