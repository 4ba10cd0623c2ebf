//! Enrolling, listing, renaming and removing authenticators.

use countersign_protocol::api::enrollment_challenge;

use crate::authn::{Kind, Prompt};
use crate::error::{Error, Result};
use crate::history::Enrolled;

use super::Engine;

/// The local user handle authenticators are registered for.
const USER_HANDLE: &str = "countersign-owner";

impl Engine {
    /// The enrolled authenticators, oldest first.
    pub fn authenticators(&self) -> Result<Vec<Enrolled>> {
        self.history.authenticators()
    }

    /// The enrolled authenticator called `name` (or, with `None`, the first one enrolled).
    pub fn authenticator(&self, name: Option<&str>) -> Result<Enrolled> {
        let all = self.authenticators()?;
        match name {
            Some(name) => all
                .into_iter()
                .find(|a| a.name == name)
                .ok_or_else(|| Error::UnknownAuthenticator(name.to_owned())),
            None => all.into_iter().next().ok_or(Error::NoAuthenticator),
        }
    }

    /// Enrols a new authenticator of `kind` as `name`. The first needs nothing more; every later
    /// one must be vouched for by an assertion of an enrolled one (`voucher`, or the first), over
    /// the enrolment challenge of each paired broker, which each broker verifies too.
    pub async fn enroll(
        &mut self,
        kind: Kind,
        name: &str,
        voucher: Option<&str>,
        prompt: &dyn Prompt,
    ) -> Result<Enrolled> {
        let name = checked_name(name)?;
        let existing = self.authenticators()?;
        if existing.iter().any(|a| a.name == name) {
            return Err(Error::DuplicateName(name));
        }
        let voucher = if existing.is_empty() {
            None
        } else {
            Some(self.authenticator(voucher)?)
        };
        let credential = self.ceremonies(prompt).register(kind, USER_HANDLE)?;
        if existing.iter().any(|a| a.credential.id == credential.id) {
            return Err(Error::authenticator(
                crate::authn::AuthenticatorFailure::Failed,
                "this credential is already enrolled",
            ));
        }
        if let Some(voucher) = &voucher {
            let brokers = self.brokers()?;
            // Without brokers the local assertion is the whole check.
            if brokers.is_empty() {
                let challenge = enrollment_challenge("local", &credential)?;
                self.ceremonies(prompt)
                    .assert(voucher.kind, &voucher.credential, &challenge)?;
            }
            for broker in brokers {
                let challenge = enrollment_challenge(&broker.approver_id, &credential)?;
                let assertion = self.ceremonies(prompt).assert(
                    voucher.kind,
                    &voucher.credential,
                    &challenge,
                )?;
                self.client(&broker)?
                    .enroll(credential.clone(), assertion)
                    .await?;
            }
        }
        let enrolled = Enrolled {
            name,
            kind,
            credential,
            added_at: self.now(),
        };
        self.history.add_authenticator(&enrolled)?;
        Ok(enrolled)
    }

    /// Renames an enrolled authenticator.
    pub fn rename_authenticator(&mut self, name: &str, new_name: &str) -> Result<()> {
        let new_name = checked_name(new_name)?;
        if self.authenticators()?.iter().any(|a| a.name == new_name) {
            return Err(Error::DuplicateName(new_name));
        }
        if !self.history.rename_authenticator(name, &new_name)? {
            return Err(Error::UnknownAuthenticator(name.to_owned()));
        }
        Ok(())
    }

    /// Removes an authenticator: first at every paired broker (so it stops vouching for grants
    /// there at once), then here. When a broker cannot be told, nothing is removed here and the
    /// error names it, so the removal can be tried again. The last one cannot be removed while
    /// brokers are paired (nothing could approve any more).
    pub async fn remove_authenticator(&mut self, name: &str) -> Result<()> {
        let all = self.authenticators()?;
        let target = all
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::UnknownAuthenticator(name.to_owned()))?;
        let brokers = self.brokers()?;
        if all.len() == 1 && !brokers.is_empty() {
            return Err(Error::LastAuthenticator);
        }
        let mut untold = Vec::new();
        for broker in &brokers {
            let told = match self.client(broker) {
                Ok(client) => client.remove_credential(&target.credential.id).await,
                Err(e) => Err(e),
            };
            if let Err(e) = told {
                untold.push(format!("{} ({e})", broker.url));
            }
        }
        if !untold.is_empty() {
            return Err(Error::BrokersNotTold {
                brokers: untold.join(", "),
            });
        }
        self.history.delete_authenticator(name)
    }
}

fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadName(name.to_owned()));
    }
    Ok(name.to_owned())
}
