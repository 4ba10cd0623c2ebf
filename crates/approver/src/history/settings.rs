//! The profile's non-secret settings: enrolled authenticators (public keys only), paired
//! brokers, and named values (notification privacy, say). Secrets stay in the OS keyring.

use countersign_protocol::registry::RegisteredCredential;
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use super::History;
use crate::authn::Kind;
use crate::error::Result;

/// An enrolled authenticator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enrolled {
    pub name: String,
    pub kind: Kind,
    pub credential: RegisteredCredential,
    pub added_at: i64,
}

/// A paired broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paired {
    pub url: String,
    pub approver_id: String,
    pub owner: String,
    pub added_at: i64,
    /// The pinned certificate fingerprint (https brokers).
    pub fingerprint: Option<String>,
    /// The keyring name of this broker's own device key.
    #[serde(skip)]
    pub key: String,
}

const SETTING: &str = "SELECT value FROM settings WHERE name = ?1";
const SET_SETTING: &str = "INSERT INTO settings (name, value) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";

const AUTHENTICATORS: &str =
    "SELECT name, kind, credential, added_at FROM authenticators ORDER BY added_at, rowid";
const INSERT_AUTHENTICATOR: &str =
    "INSERT INTO authenticators (name, kind, credential, added_at) VALUES (?1, ?2, ?3, ?4)";
const RENAME_AUTHENTICATOR: &str = "UPDATE authenticators SET name = ?1 WHERE name = ?2";
const DELETE_AUTHENTICATOR: &str = "DELETE FROM authenticators WHERE name = ?1";

const BROKERS: &str =
    "SELECT url, approver_id, owner, added_at, pin, key FROM brokers ORDER BY added_at, rowid";
const INSERT_BROKER: &str = "INSERT INTO brokers (url, approver_id, owner, added_at, pin, key)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const DELETE_BROKER: &str = "DELETE FROM brokers WHERE url = ?1";

impl History {
    /// The setting `name`, if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(SETTING, [name], |r| r.get(0))
            .optional()?)
    }

    /// Sets (and syncs to disk) the setting `name`.
    pub fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(SET_SETTING, params![name, value])?;
        Ok(())
    }

    /// The enrolled authenticators, oldest first.
    pub fn authenticators(&self) -> Result<Vec<Enrolled>> {
        let mut stmt = self.conn.prepare_cached(AUTHENTICATORS)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (name, kind, credential, added_at) = row?;
            Ok(Enrolled {
                name,
                kind: Kind::parse(&kind)?,
                credential: serde_json::from_str(&credential)?,
                added_at,
            })
        })
        .collect()
    }

    /// Stores a newly enrolled authenticator.
    pub(crate) fn add_authenticator(&mut self, enrolled: &Enrolled) -> Result<()> {
        self.conn.execute(
            INSERT_AUTHENTICATOR,
            params![
                enrolled.name,
                enrolled.kind.as_str(),
                serde_json::to_string(&enrolled.credential)?,
                enrolled.added_at
            ],
        )?;
        Ok(())
    }

    /// Renames an authenticator; returns whether one was called `name`.
    pub(crate) fn rename_authenticator(&mut self, name: &str, new_name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute(RENAME_AUTHENTICATOR, params![new_name, name])?
            > 0)
    }

    /// Forgets an authenticator.
    pub(crate) fn delete_authenticator(&mut self, name: &str) -> Result<()> {
        self.conn.execute(DELETE_AUTHENTICATOR, [name])?;
        Ok(())
    }

    /// The paired brokers, oldest first.
    pub fn brokers(&self) -> Result<Vec<Paired>> {
        let mut stmt = self.conn.prepare_cached(BROKERS)?;
        let rows = stmt.query_map([], |r| {
            Ok(Paired {
                url: r.get(0)?,
                approver_id: r.get(1)?,
                owner: r.get(2)?,
                added_at: r.get(3)?,
                fingerprint: r.get(4)?,
                key: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores a newly paired broker.
    pub(crate) fn add_broker(&mut self, paired: &Paired) -> Result<()> {
        self.conn.execute(
            INSERT_BROKER,
            params![
                paired.url,
                paired.approver_id,
                paired.owner,
                paired.added_at,
                paired.fingerprint,
                paired.key
            ],
        )?;
        Ok(())
    }

    /// Forgets a broker (its items stay).
    pub(crate) fn delete_broker(&mut self, url: &str) -> Result<()> {
        self.conn.execute(DELETE_BROKER, [url])?;
        Ok(())
    }
}
