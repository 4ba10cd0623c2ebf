//! The states an item goes through and the kinds of entry that move it, as the profile
//! database stores them and the front ends show them (generated into TypeScript with the
//! `ts` feature).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Where an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting for the owner's decision.
    Pending,
    /// Approved; the grant is with the broker until the gateway redeems it.
    Approved,
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The agent or the broker withdrew it.
    Cancelled,
    /// The approved call ran: the gateway spent the grant.
    Redeemed,
    /// The grant was revoked before it was spent.
    Revoked,
    /// Refused on arrival: its hash disagreed with what it shows, so it was never offered.
    Refused,
}

impl ItemStatus {
    /// Every status, in the order a list offers them.
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Approved,
        Self::Denied,
        Self::Expired,
        Self::Cancelled,
        Self::Redeemed,
        Self::Revoked,
        Self::Refused,
    ];

    /// The stored and displayed name (`pending`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Redeemed => "redeemed",
            Self::Revoked => "revoked",
            Self::Refused => "refused",
        }
    }

    /// The status named `text`, if there is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ItemStatus {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| crate::Error::BadStatus(text.to_owned()))
    }
}

/// What happened to an item: one entry of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Received,
    Notified,
    Viewed,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Redeemed,
    Revoked,
    /// The item was refused on arrival (its hash disagreed with its contents).
    Refused,
    /// The broker refused the decision queued here for good (a grant that expired while the
    /// broker was unreachable, say); the item is open again.
    Rejected,
    /// The gateway that spent the grant reported what became of the call (succeeded, failed,
    /// never ran).
    Outcome,
}

impl EntryKind {
    const ALL: [Self; 12] = [
        Self::Received,
        Self::Notified,
        Self::Viewed,
        Self::Approved,
        Self::Denied,
        Self::Expired,
        Self::Cancelled,
        Self::Redeemed,
        Self::Revoked,
        Self::Refused,
        Self::Rejected,
        Self::Outcome,
    ];

    /// The item status this entry moves to, if it changes it.
    pub fn status(self) -> Option<ItemStatus> {
        match self {
            Self::Approved => Some(ItemStatus::Approved),
            Self::Denied => Some(ItemStatus::Denied),
            Self::Expired => Some(ItemStatus::Expired),
            Self::Cancelled => Some(ItemStatus::Cancelled),
            Self::Redeemed => Some(ItemStatus::Redeemed),
            Self::Revoked => Some(ItemStatus::Revoked),
            Self::Refused => Some(ItemStatus::Refused),
            Self::Received | Self::Rejected => Some(ItemStatus::Pending),
            Self::Notified | Self::Viewed | Self::Outcome => None,
        }
    }

    /// The stored name (`received`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Notified => "notified",
            Self::Viewed => "viewed",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Redeemed => "redeemed",
            Self::Revoked => "revoked",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
            Self::Outcome => "outcome",
        }
    }

    /// The kind named `text`, if there is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares by name: `status == "pending"`.
impl PartialEq<&str> for ItemStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Compares by name: `kind == "viewed"`.
impl PartialEq<&str> for EntryKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl ToSql for ItemStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ItemStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Self::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown item status {text:?}").into()))
    }
}

impl ToSql for EntryKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the serde names: what the database stores is what the UI receives.
    #[test]
    fn names_round_trip_and_match_serde() {
        for status in ItemStatus::ALL {
            assert_eq!(ItemStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert_eq!(ItemStatus::parse("Pending"), None);
        assert!(matches!(
            "approve".parse::<ItemStatus>(),
            Err(crate::Error::BadStatus(s)) if s == "approve"
        ));
    }
}
