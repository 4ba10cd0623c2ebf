//! Bounded grants: storing them, releasing calls under them, counting their uses, revoking.

use countersign_protocol::api::{ApproverEvent, BoundedGrantView, EventKind};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::{
    BoundedGrants, BoundedRedemption, NewBounded, NewPending, RedeemOutcome, Result,
    RevokedBounded, StoredBounded, StoredRequest,
};
use super::SqliteStore;
use super::events::append_event;
use super::rows::{load_existing, set_status};

const BOUNDED_COLUMNS: &str = "b.jti, b.txn, b.agent, b.tool, b.audience, b.approver, b.uses, b.used, \
     (SELECT COUNT(*) FROM requests r WHERE r.bounded_jti = b.jti AND r.status = 'approved'), \
     b.issued_at, b.exp, b.revoked_at IS NOT NULL, b.claims, b.token";

fn read_bounded(row: &rusqlite::Row<'_>) -> rusqlite::Result<(BoundedGrantView, String, String)> {
    Ok((
        BoundedGrantView {
            jti: row.get(0)?,
            txn: row.get(1)?,
            agent: row.get(2)?,
            tool: row.get(3)?,
            audience: row.get(4)?,
            approver: row.get(5)?,
            uses: row.get(6)?,
            used: row.get(7)?,
            released: row.get(8)?,
            issued_at: row.get(9)?,
            expires_at: row.get(10)?,
            revoked: row.get(11)?,
            constraints: serde_json::Value::Null,
        },
        row.get(12)?,
        row.get(13)?,
    ))
}

fn to_stored(
    (mut view, claims, token): (BoundedGrantView, String, String),
) -> Result<StoredBounded> {
    let parsed: serde_json::Value = serde_json::from_str(&claims)?;
    view.constraints = parsed.get("constraints").cloned().unwrap_or_default();
    Ok(StoredBounded {
        view,
        token,
        claims,
    })
}

fn load_bounded(conn: &Connection, jti: &str) -> Result<Option<StoredBounded>> {
    conn.query_row(
        &format!("SELECT {BOUNDED_COLUMNS} FROM bounded_grants b WHERE b.jti = ?1"),
        [jti],
        read_bounded,
    )
    .optional()?
    .map(to_stored)
    .transpose()
}

/// Stores a bounded grant the broker accepted (in the transaction that approves its request).
pub(super) fn insert_bounded(tx: &Connection, new: &NewBounded) -> Result<()> {
    tx.execute(
        "INSERT INTO bounded_grants (jti, owner, agent, audience, tool, txn, approver, token, claims,
         uses, issued_at, exp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            new.jti,
            new.owner,
            new.agent,
            new.audience,
            new.tool,
            new.txn,
            new.approver,
            new.token,
            new.claims,
            new.uses,
            new.issued_at,
            new.exp
        ],
    )?;
    Ok(())
}

/// Revokes bounded grant `jti` of `owner` and every request released under it and not yet
/// redeemed, in the caller's transaction.
pub(super) fn revoke_in(
    tx: &Connection,
    jti: &str,
    owner: &str,
    now: i64,
) -> Result<Option<RevokedBounded>> {
    let revoked = tx.execute(
        "UPDATE bounded_grants SET revoked_at = ?1 WHERE jti = ?2 AND owner = ?3 AND revoked_at IS NULL",
        params![now, jti, owner],
    )?;
    if revoked == 0 {
        return Ok(None);
    }
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM requests WHERE bounded_jti = ?1 AND status = 'approved' ORDER BY created_at",
        )?;
        let rows = stmt.query_map([jti], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut requests = Vec::with_capacity(ids.len());
    for id in ids {
        set_status(tx, &id, countersign_protocol::action::Status::Revoked)?;
        let request = load_existing(tx, &id)?;
        let event = append_event(
            tx,
            owner,
            EventKind::Revoked,
            Some(&request),
            None,
            None,
            now,
        )?;
        requests.push((request, event));
    }
    let Some(grant) = load_bounded(tx, jti)? else {
        return Ok(None);
    };
    Ok(Some(RevokedBounded { grant, requests }))
}

impl BoundedGrants for SqliteStore {
    fn bounded_grants(
        &self,
        owner: &str,
        agent: Option<&str>,
        now: i64,
    ) -> Result<Vec<StoredBounded>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {BOUNDED_COLUMNS} FROM bounded_grants b
             WHERE b.owner = ?1 AND (?2 IS NULL OR b.agent = ?2) AND b.revoked_at IS NULL
             AND b.exp > ?3 AND b.used < b.uses ORDER BY b.issued_at DESC, b.jti LIMIT 500"
        ))?;
        let rows = stmt.query_map(params![owner, agent, now], read_bounded)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(to_stored(row?)?);
        }
        Ok(out)
    }

    fn release(
        &self,
        new: &NewPending,
        jti: &str,
        now: i64,
    ) -> Result<Option<(StoredRequest, ApproverEvent)>> {
        self.with_tx(|tx| {
            let Some(grant) = load_bounded(tx, jti)? else { return Ok(None) };
            let g = &grant.view;
            let room = g.used.saturating_add(g.released) < g.uses;
            if g.revoked || g.expires_at <= now || !room || g.agent != new.agent {
                return Ok(None);
            }
            let p = &new.pending;
            tx.execute(
                "INSERT INTO requests (id, owner, agent, action_hash, status, pending, created_at, expires_at,
                 grant_token, grant_jti, grant_exp, decided_by, decided_at, bounded_jti)
                 VALUES (?1, ?2, ?3, ?4, 'approved', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?9)",
                params![
                    p.id,
                    new.owner,
                    new.agent,
                    p.action_hash.as_str(),
                    serde_json::to_string(p)?,
                    p.created_at.unix(),
                    p.expires_at.unix(),
                    grant.token,
                    jti,
                    g.expires_at,
                    g.approver,
                    now
                ],
            )?;
            let request = load_existing(tx, &p.id)?;
            let event = append_event(tx, &new.owner, EventKind::Approved, Some(&request), None, None, now)?;
            Ok(Some((request, event)))
        })
    }

    fn redeem_bounded(&self, grant: &BoundedRedemption<'_>, now: i64) -> Result<RedeemOutcome> {
        self.with_tx(|tx| {
            let Some(stored) = load_bounded(tx, grant.jti)? else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            let owner: String = tx.query_row(
                "SELECT owner FROM bounded_grants WHERE jti = ?1",
                [grant.jti],
                |r| r.get(0),
            )?;
            if owner != grant.sub || stored.view.audience != grant.aud {
                return Ok(RedeemOutcome::NotAccepted);
            }
            if stored.view.revoked {
                return Ok(RedeemOutcome::Revoked);
            }
            if stored.view.used >= stored.view.uses {
                return Ok(RedeemOutcome::Spent);
            }
            let item: Option<String> = tx
                .query_row(
                    "SELECT id FROM requests WHERE bounded_jti = ?1 AND status = 'approved'
                     AND action_hash = ?2 ORDER BY created_at, id LIMIT 1",
                    params![grant.jti, grant.action_hash],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(item) = item else {
                return Ok(RedeemOutcome::NotAccepted);
            };
            // The count is the last word: a use is taken only while one is left.
            let counted = tx.execute(
                "UPDATE bounded_grants SET used = used + 1
                 WHERE jti = ?1 AND used < uses AND revoked_at IS NULL",
                [grant.jti],
            )?;
            if counted == 0 {
                return Ok(RedeemOutcome::Spent);
            }
            tx.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = ?1 WHERE id = ?2",
                params![now, item],
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
