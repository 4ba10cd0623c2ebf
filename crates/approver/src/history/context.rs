//! What is unusual about a request, from the owner's own history: computed on this machine, so
//! the app and the CLI show the same facts and nothing leaves it.
//!
//! Every fact reads an index range, never the whole history: first requests are an `EXISTS`
//! on `(agent, tool, created_at)` and `(tool, created_at)`; amounts read `approved_numbers`
//! (one row per numeric argument of each approved item, written when it is approved); the
//! similar request is chosen among the agent's last [`SIMILAR_CANDIDATES`] decided requests for
//! the tool; the agent's last hour is a range of `(agent, created_at)`.
//!
//! Everything an agent chose (argument names and values, an earlier intent) is made
//! [`visible`] here, as the review's own fields are. The tool's annotations, the server's
//! unverified claims, are in the review itself (`server_claims`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use countersign_protocol::PendingAction;
use rusqlite::{OptionalExtension as _, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{History, ItemStatus};
use crate::display::{visible, visible_value};
use crate::error::Result;

/// How many of the agent's latest decided requests for the tool are compared with this one.
pub const SIMILAR_CANDIDATES: usize = 50;
/// How many of the latest approvals make the typical value.
pub const TYPICAL_OF: usize = 100;
/// Approvals are counted up to this many ("1000 or more").
pub const COUNT_CAP: u64 = 1000;

/// The facts shown beside a request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RiskContext {
    /// No earlier request of this agent for this tool.
    pub first_for_agent: bool,
    /// No earlier request of anyone for this tool.
    pub first_for_tool: bool,
    /// Each amount argument against the owner's past approvals of the tool.
    pub amounts: Vec<Amount>,
    /// The most similar earlier decided request of this agent for this tool.
    pub similar: Option<Similar>,
    /// This agent's other requests in the hour before this one.
    pub agent_last_hour: u64,
    /// Of those, how many the owner denied.
    pub agent_denied_last_hour: u64,
    /// Every request of this agent the owner ever denied, up to [`COUNT_CAP`].
    pub agent_denied: u64,
}

/// One amount argument (a number, or a decimal with a fraction in a string, `"5000.00"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Amount {
    pub name: String,
    /// As the request writes it.
    pub value: String,
    /// How many approvals of the tool had this argument, up to [`COUNT_CAP`].
    pub approved: u64,
    /// The largest value approved.
    pub largest: Option<f64>,
    /// The median of the latest [`TYPICAL_OF`] approved values.
    pub typical: Option<f64>,
    /// This value over the largest approved (`None` without approvals, or when the largest is
    /// not positive).
    pub times_largest: Option<f64>,
}

/// The earlier request most like this one, and how its arguments differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Similar {
    pub id: String,
    pub status: ItemStatus,
    pub intent: String,
    /// Unix seconds.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub created_at: i64,
    /// Arguments equal in both.
    pub same: Vec<String>,
    /// Arguments that differ or that only one has, in name order.
    pub differences: Vec<Difference>,
}

/// One argument that differs: its value here and there (left out where it is absent, so that
/// an absent argument and a JSON `null` stay apart).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Difference {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(type = "unknown", optional))]
    pub now: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(type = "unknown", optional))]
    pub then: Option<Value>,
}

// Each query names its index: without statistics SQLite may pick another one that serves the
// equality but not the range or the order, and read far more of the history.
const EARLIER_OF_AGENT: &str = "SELECT EXISTS(SELECT 1 FROM items INDEXED BY items_agent_tool
     WHERE agent = ?1 AND tool = ?2 AND created_at <= ?3 AND id != ?4)";
const EARLIER_OF_TOOL: &str = "SELECT EXISTS(SELECT 1 FROM items INDEXED BY items_tool
     WHERE tool = ?1 AND created_at <= ?2 AND id != ?3)";
// The item itself is in both counts when it is in the history: it is taken off after.
const LAST_HOUR: &str = "SELECT COUNT(*) FROM items INDEXED BY items_agent
     WHERE agent = ?1 AND created_at > ?2 AND created_at <= ?3";
const DENIED_LAST_HOUR: &str = "SELECT COUNT(*) FROM items INDEXED BY items_agent_status
     WHERE agent = ?1 AND status = 'denied' AND created_at > ?2 AND created_at <= ?3";
const ITSELF: &str = "SELECT agent, created_at, status FROM items WHERE id = ?1";
const DENIED: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM items INDEXED BY items_agent_status
     WHERE agent = ?1 AND status = 'denied' LIMIT ?2)";
// One arm per decided status, each newest first and limited, merged and limited again: a walk
// of `items_agent_tool` would step over every undecided item of the agent and tool.
static CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    let arms: Vec<String> = ItemStatus::ALL
        .iter()
        .filter(|s| !matches!(s, ItemStatus::Pending | ItemStatus::Refused))
        .map(|s| {
            format!(
                "SELECT * FROM (SELECT id, status, intent, created_at, pending
                 FROM items INDEXED BY items_agent_tool_status
                 WHERE agent = ?1 AND tool = ?2 AND status = '{}' AND created_at <= ?3
                   AND id != ?4 ORDER BY created_at DESC LIMIT ?5)",
                s.as_str()
            )
        })
        .collect();
    format!(
        "{} ORDER BY created_at DESC, id DESC LIMIT ?5",
        arms.join(" UNION ALL ")
    )
});
// The item itself never counts (a decided item opened again is not its own precedent).
// Newest first from the largest: `MAX` with the `item` condition would read every approval.
const LARGEST: &str = "SELECT value FROM approved_numbers INDEXED BY approved_numbers_value
     WHERE tool = ?1 AND name = ?2 AND item != ?3 ORDER BY value DESC LIMIT 1";
const APPROVED: &str = "SELECT COUNT(*) FROM
     (SELECT 1 FROM approved_numbers INDEXED BY approved_numbers_value
      WHERE tool = ?1 AND name = ?2 AND item != ?3 LIMIT ?4)";
const LATEST: &str = "SELECT value FROM approved_numbers INDEXED BY approved_numbers_at
     WHERE tool = ?1 AND name = ?2 AND item != ?3 ORDER BY at DESC LIMIT ?4";
const INSERT_NUMBER: &str = "INSERT OR IGNORE INTO approved_numbers (item, tool, name, value, at)
     VALUES (?1, ?2, ?3, ?4, ?5)";
const PENDING_OF: &str = "SELECT pending, tool FROM items WHERE id = ?1";

impl History {
    /// The facts to show beside `pending`.
    pub fn risk_context(&self, pending: &PendingAction) -> Result<RiskContext> {
        let agent = pending.actor.id.as_str();
        let tool = pending.resource.id.as_str();
        let at = pending.created_at.unix();
        let id = pending.id.as_str();
        let conn = &self.conn;
        let first_for_agent = !conn
            .prepare_cached(EARLIER_OF_AGENT)?
            .query_row(params![agent, tool, at, id], |r| r.get::<_, bool>(0))?;
        let first_for_tool = !conn
            .prepare_cached(EARLIER_OF_TOOL)?
            .query_row(params![tool, at, id], |r| r.get::<_, bool>(0))?;
        let hour = params![agent, at - 3600, at];
        let mut last_hour: i64 = conn
            .prepare_cached(LAST_HOUR)?
            .query_row(hour, |r| r.get(0))?;
        let mut denied_last_hour: i64 = conn
            .prepare_cached(DENIED_LAST_HOUR)?
            .query_row(hour, |r| r.get(0))?;
        let itself: Option<(String, i64, ItemStatus)> = conn
            .prepare_cached(ITSELF)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((its_agent, created_at, status)) = itself
            && its_agent == agent
            && created_at > at - 3600
            && created_at <= at
        {
            last_hour -= 1;
            if status == ItemStatus::Denied {
                denied_last_hour -= 1;
            }
        }
        let denied: i64 = conn
            .prepare_cached(DENIED)?
            .query_row(params![agent, cap()], |r| r.get(0))?;
        let mut amounts = Vec::new();
        for (name, value, number) in numbers(&pending.context.arguments) {
            amounts.push(self.amount(id, tool, name, value, number)?);
        }
        Ok(RiskContext {
            first_for_agent,
            first_for_tool,
            amounts,
            similar: self.similar(pending)?,
            agent_last_hour: count(last_hour),
            agent_denied_last_hour: count(denied_last_hour),
            agent_denied: count(denied),
        })
    }

    fn amount(
        &self,
        item: &str,
        tool: &str,
        name: &str,
        value: String,
        number: f64,
    ) -> Result<Amount> {
        let conn = &self.conn;
        let largest: Option<f64> = conn
            .prepare_cached(LARGEST)?
            .query_row(params![tool, name, item], |r| r.get(0))
            .optional()?;
        let approved: i64 = conn
            .prepare_cached(APPROVED)?
            .query_row(params![tool, name, item, cap()], |r| r.get(0))?;
        let mut latest: Vec<f64> = conn
            .prepare_cached(LATEST)?
            .query_map(
                params![tool, name, item, i64::try_from(TYPICAL_OF).unwrap_or(100)],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        latest.sort_by(f64::total_cmp);
        let typical = match latest.len() {
            0 => None,
            n if n % 2 == 1 => Some(latest[n / 2]),
            n => Some((latest[n / 2 - 1] + latest[n / 2]) / 2.0),
        };
        Ok(Amount {
            name: visible(name),
            value: visible(&value),
            approved: count(approved),
            largest,
            typical,
            times_largest: largest.filter(|l| *l > 0.0).map(|l| number / l),
        })
    }

    fn similar(&self, pending: &PendingAction) -> Result<Option<Similar>> {
        let mut stmt = self.conn.prepare_cached(&CANDIDATES)?;
        let rows = stmt.query_map(
            params![
                pending.actor.id.as_str(),
                pending.resource.id,
                pending.created_at.unix(),
                pending.id,
                i64::try_from(SIMILAR_CANDIDATES).unwrap_or(50)
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, ItemStatus>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )?;
        let now = &pending.context.arguments;
        let mut best: Option<(usize, Similar)> = None;
        // Newest first: among equally similar requests, the latest wins.
        for row in rows {
            let (id, status, intent, created_at, json) = row?;
            let Ok(then) = serde_json::from_str::<PendingAction>(&json) else {
                continue;
            };
            let (same, differences) = compare(now, &then.context.arguments);
            if best.as_ref().is_none_or(|(score, _)| same.len() > *score) {
                best = Some((
                    same.len(),
                    Similar {
                        id: visible(&id),
                        status,
                        intent: visible(&intent),
                        created_at,
                        same,
                        differences,
                    },
                ));
            }
        }
        Ok(best.map(|(_, similar)| similar))
    }
}

/// Records the numeric arguments of `item`, just approved, for later requests' amounts.
pub(super) fn record_approval(tx: &Transaction<'_>, item: &str, at: i64) -> Result<()> {
    let Some((json, tool)) = tx
        .query_row(PENDING_OF, [item], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
    else {
        return Ok(());
    };
    let pending: PendingAction = serde_json::from_str(&json)?;
    let mut insert = tx.prepare_cached(INSERT_NUMBER)?;
    for (name, _, number) in numbers(&pending.context.arguments) {
        insert.execute(params![item, tool, name, number, at])?;
    }
    Ok(())
}

/// Forgets the numbers of `item`, whose approval the broker refused (it is open again).
pub(super) fn forget_approval(tx: &Transaction<'_>, item: &str) -> Result<()> {
    tx.execute("DELETE FROM approved_numbers WHERE item = ?1", [item])?;
    Ok(())
}

/// Fills `approved_numbers` from the items approved before it existed (the migration that
/// creates it calls this in its transaction).
pub(super) fn backfill(tx: &Transaction<'_>) -> Result<()> {
    // Approved, and not rejected by the broker since.
    let approved: Vec<(String, i64)> = tx
        .prepare(
            "SELECT e.item, e.at FROM entries e WHERE e.kind = 'approved' AND e.seq =
             (SELECT MAX(x.seq) FROM entries x
              WHERE x.item = e.item AND x.kind IN ('approved', 'rejected'))",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (item, at) in approved {
        record_approval(tx, &item, at)?;
    }
    Ok(())
}

/// The top-level arguments that are amounts: JSON numbers, and strings that are decimals with a
/// fractional part (`5000.00`, `-12.5`); with the text shown and the value. A string of digits
/// alone is most often an identifier (an order, an account, a postcode), not an amount.
fn numbers(arguments: &Map<String, Value>) -> Vec<(&str, String, f64)> {
    arguments
        .iter()
        .filter_map(|(name, value)| {
            let (text, number) = match value {
                Value::Number(n) => (n.to_string(), n.as_f64()?),
                Value::String(s) if is_decimal_amount(s) => (s.clone(), s.parse().ok()?),
                _ => return None,
            };
            number.is_finite().then_some((name.as_str(), text, number))
        })
        .collect()
}

/// `-?[0-9]+\.[0-9]+`, at most 40 characters.
fn is_decimal_amount(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let Some((whole, fraction)) = digits.split_once('.') else {
        return false;
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    s.len() <= 40 && all_digits(whole) && all_digits(fraction)
}

/// The arguments equal in both, and the others with their two values.
fn compare(now: &Map<String, Value>, then: &Map<String, Value>) -> (Vec<String>, Vec<Difference>) {
    let names: BTreeSet<&String> = now.keys().chain(then.keys()).collect();
    let mut same = Vec::new();
    let mut differences = Vec::new();
    for name in names {
        let (a, b) = (now.get(name), then.get(name));
        if a == b {
            same.push(visible(name));
        } else {
            differences.push(Difference {
                name: visible(name),
                now: a.map(visible_value),
                then: b.map(visible_value),
            });
        }
    }
    (same, differences)
}

fn cap() -> i64 {
    i64::try_from(COUNT_CAP).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_strings_are_decimals_with_a_fraction() {
        for yes in ["0.0", "5000.00", "-12.5"] {
            assert!(is_decimal_amount(yes), "{yes}");
        }
        for no in [
            "", "-", "1234", "-12", ".5", "5.", "1e9", "1,000.00", "+3.0", " 3.0", "0x10", "NaN",
            "12.5.1",
        ] {
            assert!(!is_decimal_amount(no), "{no}");
        }
    }
}
