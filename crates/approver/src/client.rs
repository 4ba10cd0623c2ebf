//! The broker client: pairing, the owner's request listing, decisions, and the event stream with
//! reconnection and reconciliation. Every request carries a proof signed by the device key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_protocol::DeviceSigningKey;
use countersign_protocol::api::{
    ApproverEvent, Decision, ErrorBody, PairRequest, PairResponse, RequestList, RequestView,
};
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use countersign_protocol::registry::RegisteredCredential;
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::pin::{Fingerprint, PinningVerifier};

/// A paired broker.
#[derive(Debug)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
    approver_id: String,
    key: DeviceSigningKey,
    seen: Arc<Mutex<Option<Fingerprint>>>,
}

/// What a decision came to.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionOutcome {
    /// Recorded (or recorded earlier under the same idempotency key).
    Recorded(RequestView),
    /// Another decision came first; the item as it stands.
    AlreadyDecided(RequestView),
}

/// What the follower delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The listing after a (re)connection: every request as the broker sees it now.
    Reconciled(Vec<RequestView>),
    Event(Box<ApproverEvent>),
    /// The connection dropped; the follower retries after this long.
    Disconnected {
        retry_in: Duration,
        reason: String,
    },
}

impl BrokerClient {
    /// A client for an approver already paired as `approver_id` (https brokers verified with
    /// the public web PKI; see [`Self::pinned`]).
    pub fn new(base: &str, approver_id: &str, key: DeviceSigningKey) -> Result<Self> {
        Self::pinned(base, approver_id, key, None)
    }

    /// A client that reaches an https broker only when it presents the certificate `pin`
    /// names (without a pin: the public web PKI, recording the certificate seen).
    pub fn pinned(
        base: &str,
        approver_id: &str,
        key: DeviceSigningKey,
        pin: Option<Fingerprint>,
    ) -> Result<Self> {
        // The read timeout also catches a half-open event stream: brokers send a heartbeat
        // every 15 s, so 45 s of silence means the connection is gone.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(STREAM_SILENCE);
        let (verifier, seen) = PinningVerifier::new(pin)?;
        if base.starts_with("https://") {
            builder = builder.use_preconfigured_tls(verifier.client_config()?);
        }
        Ok(Self {
            http: builder.build().map_err(http)?,
            base: base.trim_end_matches('/').to_owned(),
            approver_id: approver_id.to_owned(),
            key,
            seen: pin.map_or(seen, |pin| Arc::new(Mutex::new(Some(pin)))),
        })
    }

    /// The fingerprint of the broker's certificate: the pin, or the one seen (https only).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.seen.lock().ok().and_then(|seen| *seen)
    }

    /// Pairs `key` and `credential` with the broker at `base` using a one-time `code`.
    pub async fn pair(
        base: &str,
        code: &str,
        key: DeviceSigningKey,
        credential: RegisteredCredential,
        name: Option<String>,
    ) -> Result<(Self, PairResponse)> {
        Self::pair_pinned(base, code, key, credential, name, None).await
    }

    /// [`Self::pair`] with the broker's certificate pinned to `pin` (https only).
    pub async fn pair_pinned(
        base: &str,
        code: &str,
        key: DeviceSigningKey,
        credential: RegisteredCredential,
        name: Option<String>,
        pin: Option<Fingerprint>,
    ) -> Result<(Self, PairResponse)> {
        let mut client = Self::pinned(base, "", key, pin)?;
        let body = PairRequest {
            code: code.to_owned(),
            device_key: client.key.public_jwk(),
            credential,
            name,
        };
        let response: PairResponse = client
            .send(Method::POST, "/v1/pair", Some(&body), None)
            .await?
            .json()
            .await
            .map_err(http)?;
        client.approver_id.clone_from(&response.approver_id);
        Ok((client, response))
    }

    /// Enrols another credential for this approver, vouched for by an assertion of an enrolled
    /// one over [`countersign_protocol::api::enrollment_challenge`].
    pub async fn enroll(
        &self,
        credential: RegisteredCredential,
        assertion: countersign_protocol::webauthn::WebAuthnAssertion,
    ) -> Result<countersign_protocol::registry::ApproverEntry> {
        let body = countersign_protocol::api::EnrollRequest {
            credential,
            assertion,
        };
        self.send(Method::POST, "/v1/approver/credentials", Some(&body), None)
            .await?
            .json()
            .await
            .map_err(http)
    }

    pub fn approver_id(&self) -> &str {
        &self.approver_id
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The owner's requests (all, or of one status).
    pub async fn list(&self, status: Option<&str>) -> Result<RequestList> {
        let path = match status {
            Some(s) => format!("/v1/approver/requests?status={s}"),
            None => "/v1/approver/requests".to_owned(),
        };
        self.send::<()>(Method::GET, &path, None, None)
            .await?
            .json()
            .await
            .map_err(http)
    }

    /// Sends a decision with its idempotency key; safe to repeat until acknowledged.
    pub async fn decide(
        &self,
        id: &str,
        decision: &Decision,
        idempotency_key: &str,
    ) -> Result<DecisionOutcome> {
        let path = format!("/v1/approver/requests/{id}/decision");
        let response = self
            .send(Method::POST, &path, Some(decision), Some(idempotency_key))
            .await;
        match response {
            Ok(r) => Ok(DecisionOutcome::Recorded(r.json().await.map_err(http)?)),
            // "Already decided" carries the item as the broker has it; a 409 without it (a
            // replayed grant) stays a refusal.
            Err(Error::Broker {
                status: 409,
                ref body,
                ..
            }) if serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("request").is_some()) =>
            {
                let value: serde_json::Value = serde_json::from_str(body)?;
                Ok(DecisionOutcome::AlreadyDecided(serde_json::from_value(
                    value["request"].clone(),
                )?))
            }
            Err(e) => Err(e),
        }
    }

    async fn send<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let url = format!("{}{path}", self.base);
        let proof = self.proof(method.as_str(), &url, &bytes);
        let mut request = self
            .http
            .request(method, &url)
            .timeout(REQUEST_TIMEOUT)
            .header(PROOF_HEADER, proof);
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .body(bytes);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(http)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_str(&text).ok();
        Err(Error::Broker {
            status: status.as_u16(),
            code: parsed
                .as_ref()
                .map(|b| b.code.clone())
                .unwrap_or_else(|| status_code(status)),
            message: parsed.map(|b| b.message).unwrap_or(text.clone()),
            body: text,
        })
    }

    /// A fresh request proof, signed by the device key.
    fn proof(&self, method: &str, url: &str, body: &[u8]) -> String {
        let now =
            countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
        sign_proof(
            &self.key,
            &self.approver_id,
            &ProofRequest {
                method,
                url,
                body,
                now,
            },
        )
    }

    /// Opens the event stream after `last_event_id`; events arrive on the channel until the
    /// connection ends (then the channel closes with the error, if any).
    pub async fn stream(
        &self,
        last_event_id: i64,
    ) -> Result<mpsc::Receiver<Result<ApproverEvent>>> {
        let path = "/v1/approver/stream";
        let url = format!("{}{path}", self.base);
        let proof = self.proof("GET", &url, b"");
        let response = self
            .http
            .get(&url)
            .header(PROOF_HEADER, proof)
            .header("last-event-id", last_event_id.to_string())
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(Error::Broker {
                status: response.status().as_u16(),
                code: status_code(response.status()),
                message: "the stream was refused".into(),
                body: response.text().await.unwrap_or_default(),
            });
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            while let Some(item) = events.next().await {
                let message = match item {
                    Ok(event) if event.data.is_empty() => continue,
                    Ok(event) => {
                        serde_json::from_str::<ApproverEvent>(&event.data).map_err(Error::from)
                    }
                    Err(e) => Err(Error::Http(e.to_string())),
                };
                let stop = message.is_err();
                if tx.send(message).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Follows the broker for good: reconcile with the listing, then stream from the listing's
    /// event id; on any failure wait (capped exponential backoff with full jitter) and start
    /// over. Ends when the receiver of `out` is dropped.
    pub async fn follow(&self, out: mpsc::Sender<Delivery>) {
        let mut attempt: u32 = 0;
        loop {
            let mut healthy = false;
            let reason = match self.follow_once(&out, &mut healthy).await {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            // Backoff starts over only after a connection that worked, so a broker (or proxy)
            // that accepts and drops at once is not hammered.
            if healthy {
                attempt = 0;
            }
            let retry_in = backoff(attempt);
            attempt = attempt.saturating_add(1);
            if out
                .send(Delivery::Disconnected { retry_in, reason })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(retry_in).await;
        }
    }

    /// One connection. `Ok` only when the receiver is gone. `healthy` is set once an event
    /// arrived or the stream stayed open for [`HEALTHY_AFTER`].
    async fn follow_once(&self, out: &mpsc::Sender<Delivery>, healthy: &mut bool) -> Result<()> {
        let listing = self.list(None).await?;
        let mut events = self.stream(listing.last_event_id).await?;
        let opened = tokio::time::Instant::now();
        if out
            .send(Delivery::Reconciled(listing.requests))
            .await
            .is_err()
        {
            return Ok(());
        }
        while let Some(event) = events.recv().await {
            *healthy |= opened.elapsed() >= HEALTHY_AFTER;
            let event = event?;
            *healthy = true;
            if out.send(Delivery::Event(Box::new(event))).await.is_err() {
                return Ok(());
            }
        }
        *healthy |= opened.elapsed() >= HEALTHY_AFTER;
        Err(Error::Http("the event stream ended".into()))
    }
}

/// Follows every client at once (see [`BrokerClient::follow`]); deliveries arrive tagged with
/// their broker's base URL. Must be called inside a Tokio runtime; the followers stop when the
/// receiver is dropped.
pub fn follow_all(clients: Vec<BrokerClient>) -> mpsc::Receiver<(String, Delivery)> {
    let (tx, rx) = mpsc::channel(256);
    for client in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            let base = client.base().to_owned();
            let (inner_tx, mut inner_rx) = mpsc::channel(64);
            let follower = tokio::spawn(async move { client.follow(inner_tx).await });
            while let Some(delivery) = inner_rx.recv().await {
                if tx.send((base.clone(), delivery)).await.is_err() {
                    break;
                }
            }
            follower.abort();
        });
    }
    rx
}

/// How long an event stream may stay silent before it counts as dropped (three heartbeats).
pub const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// The longest a single request (listing, decision, pairing) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stream must have stayed open for the backoff to start over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Capped exponential backoff with full jitter: uniform in [0, min(30 s, 250 ms × 2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    use rand_core::RngCore as _;
    let cap = Duration::from_secs(30).as_millis() as u64;
    let ceiling = 250u64.saturating_mul(1u64 << attempt.min(16)).min(cap);
    Duration::from_millis(rand_core::OsRng.next_u64() % (ceiling + 1))
}

fn status_code(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}

/// A transport error with its causes (a refused certificate says why).
fn http(e: reqwest::Error) -> Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Http(text)
}
