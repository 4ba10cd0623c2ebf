//! Pairing with brokers, and reaching them (with their pinned certificates).

use countersign_protocol::api::enrollment_challenge;
use countersign_protocol::hash::canonical_sha256;
use serde_json::json;

use crate::authn::Prompt;
use crate::client::BrokerClient;
use crate::error::{Error, Result};
use crate::history::Paired;
use crate::pin::Fingerprint;

use super::Engine;

impl Engine {
    /// The paired brokers.
    pub fn brokers(&self) -> Result<Vec<Paired>> {
        self.history.brokers()
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
        BrokerClient::pinned(
            &broker.url,
            &broker.approver_id,
            self.vault.device_key(&broker.key)?,
            pin,
        )
    }

    /// The issuer of this broker's grants: its approver id, its owner, and the broker's URL.
    pub(super) fn issuer(broker: &Paired) -> countersign_protocol::grant::Issuer {
        countersign_protocol::grant::Issuer {
            approver_id: broker.approver_id.clone(),
            owner: broker.owner.clone(),
            broker: broker.url.clone(),
        }
    }

    /// Pairs with the broker at `url` using its one-time `code`. Needs an enrolled
    /// authenticator, which asserts (with user verification) over this pairing before anything
    /// is sent; every other enrolled authenticator is then enrolled at the broker too. An https
    /// broker's certificate is pinned: to `fingerprint` when given (any issuer), otherwise to
    /// the certificate seen, which must then verify with the public web PKI.
    ///
    /// Each broker gets a device key of its own, made here, so that no broker can obtain a
    /// grant another broker's registry accepts; and an approver id that another paired broker
    /// already uses is refused (a hostile broker answering with another broker's identity).
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
        let (key_name, key) = self.vault.new_device_key()?;
        let paired = self
            .pair_with_key(
                &url,
                code,
                key,
                &key_name,
                &chosen,
                device_name,
                pin,
                prompt,
            )
            .await;
        if paired.is_err() {
            // Nothing refers to the new key: it goes, whatever the broker kept.
            let _ = self.vault.delete(&key_name);
        }
        paired
    }

    #[expect(clippy::too_many_arguments, reason = "one private step of `pair`")]
    async fn pair_with_key(
        &mut self,
        url: &str,
        code: &str,
        key: countersign_protocol::DeviceSigningKey,
        key_name: &str,
        chosen: &super::Enrolled,
        device_name: Option<String>,
        pin: Option<Fingerprint>,
        prompt: &dyn Prompt,
    ) -> Result<Paired> {
        let (client, response) =
            BrokerClient::pair_pinned(url, code, key, chosen.credential.clone(), device_name, pin)
                .await?;
        if let Some(other) = self
            .brokers()?
            .into_iter()
            .find(|b| b.approver_id == response.approver_id)
        {
            return Err(Error::ApproverIdReused {
                approver: response.approver_id,
                broker: other.url,
            });
        }
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
            url: url.to_owned(),
            approver_id: response.approver_id,
            owner: response.owner,
            added_at: self.now(),
            key: key_name.to_owned(),
        };
        self.history.add_broker(&paired)?;
        Ok(paired)
    }

    /// Forgets a broker (its items stay in the history) and its device key.
    pub fn remove_broker(&mut self, url: &str) -> Result<()> {
        let url = url.trim_end_matches('/');
        let broker = self.broker(url)?;
        self.history.delete_broker(url)?;
        // The key shared by brokers paired before keys were per broker stays while any uses it.
        if !self.brokers()?.iter().any(|b| b.key == broker.key) {
            self.vault.delete(&broker.key)?;
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
