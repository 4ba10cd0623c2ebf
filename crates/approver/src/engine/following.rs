//! Following brokers: what a front end does with each delivery of the follower, once, here.
//! The command line and the app only render the [`Applied`] it returns.

use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use crate::client::{BrokerClient, Delivery};
use crate::error::{Error, Result};

use super::{Change, Engine, ItemError};

/// What applying one delivery did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Items received, refused on arrival, or whose status moved.
    pub changes: Vec<Change>,
    /// Items this engine would not take (too large, too deep, an id another broker holds),
    /// with why; the rest were applied all the same.
    pub not_taken: Vec<ItemError>,
    /// Queued decisions the broker acknowledged.
    pub delivered: Vec<String>,
    /// Queued decisions the broker refused for good (the items are open again).
    pub rejected: Vec<ItemError>,
    /// Why queued decisions stay queued (the broker could not be reached meanwhile).
    pub deferred: Option<Error>,
    /// The stream came up (after reconciling) or went down.
    pub connection: Option<Connection>,
}

/// A change of a broker's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    Up,
    Down { reason: String, retry_in: Duration },
}

impl Engine {
    /// Starts following every paired broker (see [`crate::client::follow_all`]).
    pub fn follow(&self) -> Result<Receiver<(String, Delivery)>> {
        Ok(crate::client::follow_all(self.clients()?))
    }

    /// Applies one delivery from `broker`: a listing is reconciled (and the outbox sent), an
    /// event applied, an unreadable item reported. An item the engine will not take, or a
    /// broker that cannot be reached while reconciling, is reported in the result; only a
    /// local failure (the history database, the keyring) is an error.
    pub async fn apply_delivery(&mut self, broker: &str, delivery: Delivery) -> Result<Applied> {
        let mut applied = Applied::default();
        match delivery {
            Delivery::Reconciled(listing) => {
                applied.connection = Some(Connection::Up);
                let client = match self.client_for(broker) {
                    Ok(client) => client,
                    // Forgotten since the follower started: nothing of it is applied.
                    Err(Error::UnknownBroker(_)) => return Ok(Applied::default()),
                    Err(e) => return Err(e),
                };
                match self.reconcile(&client, listing).await {
                    Ok(report) => {
                        applied.changes.extend(
                            report
                                .received
                                .into_iter()
                                .map(Change::Received)
                                .chain(report.refused.into_iter().map(Change::Refused))
                                .chain(report.updated.into_iter().map(Change::Updated)),
                        );
                        applied.not_taken = report.failed;
                        applied.delivered = report.delivered;
                        applied.rejected = report.rejected;
                    }
                    Err(e) if e.is_transient() => applied.deferred = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Delivery::Event(event) => {
                let id = event.request.as_ref().map(|r| r.pending.id.clone());
                match self.apply_event(broker, &event) {
                    Ok(change) => applied.changes.extend(change),
                    Err(e) if is_not_taken(&e) => {
                        applied
                            .not_taken
                            .push(ItemError::of(id.unwrap_or_default(), &e));
                    }
                    Err(e) => return Err(e),
                }
            }
            Delivery::Unreadable(unreadable) => applied.not_taken.push(unreadable.into()),
            Delivery::Disconnected { retry_in, reason } => {
                applied.connection = Some(Connection::Down { reason, retry_in });
            }
        }
        Ok(applied)
    }

    /// The client for one paired broker.
    pub fn client_for(&self, broker: &str) -> Result<BrokerClient> {
        self.client(&self.broker(broker)?)
    }
}

/// Errors that refuse one item from a broker and leave the others.
pub(super) fn is_not_taken(e: &Error) -> bool {
    matches!(
        e,
        Error::Protocol(_) | Error::Json(_) | Error::ItemCollision { .. }
    )
}
