//! What both front ends show: the pending list, and one item opened for review (with the one
//! rule for recording that the owner looked at it).

use serde::Serialize;
use serde_json::json;

use crate::display::Review;
use crate::error::{Error, Result};
use crate::history::{Entry, EntryKind, Filter, ItemStatus, RiskContext};

use super::Engine;

/// The front end an item was opened in, recorded with the `viewed` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    App,
    Cli,
}

/// A pending item as the lists show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingReview {
    pub review: Review,
    /// How many identical requests of the agent it stands for (1: itself alone).
    pub merged: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// One item opened for review: what it shows, and everything that happened to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Opened {
    pub review: Review,
    /// What is unusual about it, from this history.
    pub context: RiskContext,
    pub entries: Vec<Entry>,
    /// Unix seconds (the review shows it as a date).
    pub expires_at: i64,
}

/// The most pending items a list holds (the broker caps one owner's pending items far lower).
const PENDING_LIMIT: usize = 10_000;

impl Engine {
    /// What waits for a decision, soonest expiry first.
    pub fn pending(&self) -> Result<Vec<PendingReview>> {
        let items = self.history.list(&Filter {
            status: Some(ItemStatus::Pending),
            limit: PENDING_LIMIT,
            ..Filter::default()
        })?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some((pending, status)) = self.history.item(&item.id)? else {
                continue;
            };
            out.push(PendingReview {
                review: Review::of(&pending, status),
                merged: item.merged,
                created_at: pending.created_at.unix(),
                expires_at: pending.expires_at.unix(),
            });
        }
        out.sort_by_key(|p| (p.expires_at, p.created_at));
        Ok(out)
    }

    /// Opens `id` for review. The first look at a pending item is recorded as `viewed` (with
    /// the front end it was seen in); looking again, or at a decided item, records nothing.
    pub fn open_item(&mut self, id: &str, via: Via) -> Result<Opened> {
        let (pending, status) = self
            .history
            .item(id)?
            .ok_or_else(|| Error::UnknownItem(id.to_owned()))?;
        let mut entries = self.history.entries(id)?;
        if status == ItemStatus::Pending && !entries.iter().any(|e| e.kind == EntryKind::Viewed) {
            let now = self.now();
            entries.push(
                self.history
                    .record(id, EntryKind::Viewed, json!({"via": via}), now)?,
            );
        }
        Ok(Opened {
            review: Review::of(&pending, status),
            context: self.history.risk_context(&pending)?,
            entries,
            expires_at: pending.expires_at.unix(),
        })
    }
}
