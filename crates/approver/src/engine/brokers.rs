//! Pairing with brokers, and reaching them (with their pinned certificates).

use countersign_protocol::api::enrollment_challenge;
use countersign_protocol::hash::canonical_sha256;
use rusqlite::params;
use serde::Serialize;
use serde_json::json;

use crate::authn::Prompt;
use crate::client::BrokerClient;
use crate::error::{Error, Result};
use crate::pin::Fingerprint;

use super::Engine;

/// A paired broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paired {
    pub url: String,
    pub approver_id: String,
    pub owner: String,
    pub added_at: i64,
    /// The pinned certificate fingerprint (https brokers).
    pub fingerprint: Option<String>,
}

impl Engine {
    /// The paired brokers.
    pub fn brokers(&self) -> Result<Vec<Paired>> {
        self.history.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT url, approver_id, owner, added_at, pin FROM brokers ORDER BY added_at, rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Paired {
                    url: r.get(0)?,
                    approver_id: r.get(1)?,
                    owner: r.get(2)?,
                    added_at: r.get(3)?,
                    fingerprint: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn broker(&self, url: &str) -> Result<Paired> {
        self.brokers()?
            .into_iter()
            .find(|b| b.url == url)
            .ok_or_else(|| Error::UnknownBroker(url.to_owned()))
    }

    pub(super) fn client(&self, broker: &Paired) -> Result<BrokerClient> {
        let pin = broker
            .fingerprint
            .as_deref()
            .map(Fingerprint::parse)
            .transpose()?;
        if pin.is_none() && broker.url.starts_with("https://") {
            return Err(Error::BadFingerprint(format!(
                "{} has no pinned certificate",
                broker.url
            )));
        }
        BrokerClient::pinned(&broker.url, &broker.approver_id, self.device_key()?, pin)
    }

    /// Pairs with the broker at `url` using its one-time `code`. Needs an enrolled
    /// authenticator, which asserts (with user verification) over this pairing before anything
    /// is sent; every other enrolled authenticator is then enrolled at the broker too. An https
    /// broker's certificate is pinned: to `fingerprint` when given (any issuer), otherwise to
    /// the certificate seen, which must then verify with the public web PKI.
    pub async fn pair(
        &mut self,
        url: &str,
        code: &str,
        fingerprint: Option<&str>,
        device_name: Option<String>,
        with: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Paired> {
        let url = checked_url(url)?;
        let pin = fingerprint.map(Fingerprint::parse).transpose()?;
        if self.brokers()?.iter().any(|b| b.url == url) {
            return Err(Error::AlreadyPaired(url));
        }
        let chosen = self.authenticator(with)?;
        let challenge = canonical_sha256(&json!({
            "type": "countersign-pair",
            "broker": url,
            "credential": chosen.credential.id,
        }))?;
        self.ceremonies(prompt)
            .assert(chosen.kind, &chosen.credential, &challenge)?;
        let (client, response) = BrokerClient::pair_pinned(
            &url,
            code,
            self.device_key()?,
            chosen.credential.clone(),
            device_name,
            pin,
        )
        .await?;
        for other in self.authenticators()? {
            if other.credential.id == chosen.credential.id {
                continue;
            }
            let challenge = enrollment_challenge(&response.approver_id, &other.credential)?;
            let assertion =
                self.ceremonies(prompt)
                    .assert(chosen.kind, &chosen.credential, &challenge)?;
            client.enroll(other.credential.clone(), assertion).await?;
        }
        let paired = Paired {
            fingerprint: url
                .starts_with("https://")
                .then(|| client.fingerprint().map(|f| f.to_string()))
                .flatten(),
            url,
            approver_id: response.approver_id,
            owner: response.owner,
            added_at: self.now(),
        };
        self.history.transaction(|tx| {
            tx.execute(
                "INSERT INTO brokers (url, approver_id, owner, added_at, pin) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    paired.url,
                    paired.approver_id,
                    paired.owner,
                    paired.added_at,
                    paired.fingerprint
                ],
            )?;
            Ok(())
        })?;
        Ok(paired)
    }

    /// Forgets a broker (its items stay in the history).
    pub fn remove_broker(&mut self, url: &str) -> Result<()> {
        let url = url.trim_end_matches('/');
        let changed = self
            .history
            .transaction(|tx| Ok(tx.execute("DELETE FROM brokers WHERE url = ?1", [url])?))?;
        if changed == 0 {
            return Err(Error::UnknownBroker(url.to_owned()));
        }
        Ok(())
    }
}

fn checked_url(url: &str) -> Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| Error::BadUrl(format!("{url}: {e}")))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
        return Err(Error::BadUrl(format!(
            "{url}: brokers are reached over https (plain http only on loopback)"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(Error::BadUrl(format!(
            "{url}: no query, fragment or credentials"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}
