//! The broker client: pairing, the owner's request listing, decisions, and the event stream with
//! reconnection and reconciliation. Every request carries a proof signed by the device key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_protocol::DeviceSigningKey;
use countersign_protocol::api::{
    BatchApproval, BatchDecided, BatchDecision, BoundedGrantList, BoundedGrantView, Decision,
    ErrorBody, GatewayList, MAX_PAGE, PairRequest, PairResponse, RequestView,
};
use countersign_protocol::json::Limits;
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use countersign_protocol::registry::RegisteredCredential;
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::pin::{Fingerprint, PinningVerifier};

mod stream;

pub use stream::{Delivery, Streamed, backoff, follow_all};

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

/// Every pending request of the owner, as the broker lists them (all pages), with the items
/// this app will not take and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub requests: Vec<RequestView>,
    /// Items that could not be read (too large, too deep, or carrying a member this app cannot
    /// show): refused with their reason, never half-shown.
    pub unreadable: Vec<Unreadable>,
    /// The newest event id at the time of listing: resume the stream after it.
    pub last_event_id: i64,
}

/// An item a broker sent that this app will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Its id, when even that could be read.
    pub item: String,
    pub reason: String,
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
        let response: PairResponse = strict(
            client
                .send(Method::POST, "/v1/pair", Some(&body), None)
                .await?,
        )
        .await?;
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
        strict(
            self.send(Method::POST, "/v1/approver/credentials", Some(&body), None)
                .await?,
        )
        .await
    }

    pub fn approver_id(&self) -> &str {
        &self.approver_id
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every pending request of the owner: the listing, newest first, page after page. Items
    /// are read one by one, so one this app will not take is reported without losing the rest.
    pub async fn pending(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        let mut before: Option<String> = None;
        for page in 0.. {
            if page >= MAX_PAGES {
                return Err(Error::Http(format!(
                    "the broker listed more than {} pending requests",
                    MAX_PAGES * MAX_PAGE
                )));
            }
            let (one, next) = self.page("pending", before.as_deref()).await?;
            if page == 0 {
                listing.last_event_id = one.last_event_id;
            }
            listing.requests.extend(one.requests);
            listing.unreadable.extend(one.unreadable);
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        Ok(listing)
    }

    /// One page (up to [`MAX_PAGE`]) of the owner's requests of `status` (a status's wire
    /// name), newest first, older than the cursor `before` when one is given; with the cursor
    /// of the next page, if there is one.
    pub async fn page(
        &self,
        status: &str,
        before: Option<&str>,
    ) -> Result<(Listing, Option<String>)> {
        let mut path = format!(
            "/v1/approver/requests?status={}&limit={MAX_PAGE}",
            path_segment(status)
        );
        if let Some(cursor) = before {
            path.push_str("&before=");
            path.push_str(cursor);
        }
        let response = self.send::<()>(Method::GET, &path, None, None).await?;
        let raw: RawList = strict(response).await?;
        let mut listing = Listing {
            last_event_id: raw.last_event_id,
            ..Listing::default()
        };
        for value in raw.requests {
            match read_view(value) {
                Ok(view) => listing.requests.push(view),
                Err(unreadable) => listing.unreadable.push(unreadable),
            }
        }
        // A cursor must be a number; anything else ends the listing.
        let next = raw
            .next
            .filter(|next| !next.is_empty() && next.bytes().all(|b| b.is_ascii_digit()));
        Ok((listing, next))
    }

    /// One of the owner's requests, as the broker has it now (`None`: the broker no longer
    /// has it).
    pub async fn request(
        &self,
        id: &str,
    ) -> Result<Option<std::result::Result<RequestView, Unreadable>>> {
        let path = format!("/v1/approver/requests/{}", path_segment(id));
        match self.send::<()>(Method::GET, &path, None, None).await {
            Ok(response) => Ok(Some(read_view(strict(response).await?))),
            Err(Error::Broker { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes one of this approver's credentials at the broker (an authenticator the owner
    /// removed). A credential the broker does not hold is not an error.
    pub async fn remove_credential(&self, credential: &str) -> Result<()> {
        let path = format!("/v1/approver/credentials/{}", path_segment(credential));
        match self.send::<()>(Method::DELETE, &path, None, None).await {
            Ok(_) | Err(Error::Broker { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The broker's gateways and the keys bounded grants for them are bound to.
    pub async fn gateways(&self) -> Result<GatewayList> {
        let response = self
            .send::<()>(Method::GET, "/v1/approver/gateways", None, None)
            .await?;
        strict(response).await
    }

    /// The owner's bounded grants at this broker that can still cover a call.
    pub async fn bounded(&self) -> Result<BoundedGrantList> {
        let response = self
            .send::<()>(Method::GET, "/v1/approver/bounded", None, None)
            .await?;
        strict(response).await
    }

    /// Revokes the owner's bounded grant `jti` at once.
    pub async fn revoke_bounded(&self, jti: &str) -> Result<BoundedGrantView> {
        let path = format!("/v1/approver/bounded/{}/revoke", path_segment(jti));
        let response = self.send::<()>(Method::POST, &path, None, None).await?;
        strict(response).await
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
            Ok(r) => Ok(DecisionOutcome::Recorded(strict(r).await?)),
            // "Already decided" carries the item as the broker has it; a 409 without it (a
            // replayed grant) stays a refusal.
            Err(e) => {
                if let Error::Broker {
                    status: 409,
                    ref body,
                    ..
                } = e
                    && let Ok(mut answer) = parse_strict::<serde_json::Value>(body.as_bytes())
                    && let Some(request) = answer.get_mut("request")
                {
                    return Ok(DecisionOutcome::AlreadyDecided(serde_json::from_value(
                        request.take(),
                    )?));
                }
                Err(e)
            }
        }
    }

    /// Sends the approvals of one batch ceremony, `(item, grant)` in the order signed, with
    /// their shared idempotency key; safe to repeat until acknowledged. The broker checks them
    /// together and answers for each, in order.
    pub async fn decide_batch(
        &self,
        approvals: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Vec<DecisionOutcome>> {
        let body = BatchDecision {
            approvals: approvals
                .iter()
                .map(|(id, grant)| BatchApproval {
                    id: (*id).to_owned(),
                    grant: (*grant).to_owned(),
                })
                .collect(),
        };
        let response = self
            .send(
                Method::POST,
                "/v1/approver/decisions",
                Some(&body),
                Some(idempotency_key),
            )
            .await?;
        let mut answer: BatchDecided = strict(response).await?;
        // By id: a batch sent again after some of its answers were recorded here carries fewer
        // approvals than the first time, and the broker gives its first answer again, whole.
        approvals
            .iter()
            .map(|(id, _)| {
                let at = answer
                    .decided
                    .iter()
                    .position(|d| d.request.pending.id == *id)
                    .ok_or_else(|| {
                        Error::Http(format!("the broker's answer to a batch leaves out {id}"))
                    })?;
                let d = answer.decided.swap_remove(at);
                Ok(if d.recorded {
                    DecisionOutcome::Recorded(d.request)
                } else {
                    DecisionOutcome::AlreadyDecided(d.request)
                })
            })
            .collect()
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
}

/// A listing page as sent, its items read one by one.
#[derive(serde::Deserialize)]
struct RawList {
    requests: Vec<serde_json::Value>,
    last_event_id: i64,
    #[serde(default)]
    next: Option<String>,
}

/// Reads one item strictly: within the engine's limits, and with nothing this app cannot show
/// (the pending action's every member is known and rendered; an unknown one is refused here).
fn read_view(value: serde_json::Value) -> std::result::Result<RequestView, Unreadable> {
    let item = value
        .pointer("/pending/id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect::<String>();
    let refuse = |reason: String| Unreadable {
        item: item.clone(),
        reason,
    };
    let bytes = serde_json::to_vec(&value).map_err(|e| refuse(e.to_string()))?;
    countersign_protocol::json::parse_value(&bytes, crate::engine::RECEIVE_LIMITS)
        .map_err(|e| refuse(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| {
        refuse(format!(
            "it carries something this version of Countersign cannot show, so it is refused \
             rather than approved half-seen ({e})"
        ))
    })
}

/// The limits of one broker answer: a listing page holds many items, each within
/// [`RECEIVE_LIMITS`](crate::engine::RECEIVE_LIMITS), a few levels down.
const ANSWER_LIMITS: Limits = Limits {
    max_bytes: MAX_PAGE_BYTES,
    max_depth: crate::engine::RECEIVE_LIMITS.max_depth + 4,
};

/// The body of `response`, read as strict JSON (see [`parse_strict`]).
async fn strict<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    parse_strict(&bounded(response, MAX_PAGE_BYTES).await?)
}

/// A broker answer read as strict JSON, as the broker reads what agents send: a duplicate key,
/// an integer past 2^53 or nesting past the limits is refused, never resolved one way here and
/// another way elsewhere. (Reading leniently first would have merged duplicates before any
/// check could see them.)
pub(super) fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let value = countersign_protocol::json::parse_value(bytes, ANSWER_LIMITS)?;
    Ok(serde_json::from_value(value)?)
}

/// The body of `response`, refused past `max` bytes (a broker cannot make the app read without
/// end).
async fn bounded(response: reqwest::Response, max: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(http)?;
        if body.len() + chunk.len() > max {
            return Err(Error::Http(format!("a broker answer over {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An id as one URL path segment (ids are base64url or `pa_…`; anything else is escaped).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Pages of one listing a client reads at most: the broker caps pending items per owner far
/// below this, and a sync reads released calls back no further.
pub(crate) const MAX_PAGES: usize = 40;

/// The largest listing page or event a client reads.
const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long an event stream may stay silent before it counts as dropped (three heartbeats).
pub const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// The longest a single request (listing, decision, pairing) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
