//! The enforcement point's core, shared by every front end: ask the broker (AuthZEN, as the
//! agent), wait for the owner's decision, verify the grant locally, spend it at the broker, and
//! report what became of the call.

use std::sync::Arc;
use std::time::Duration;

use countersign_protocol::DeviceSigningKey;
use countersign_protocol::action::{
    ActionName, Actor, Context, Resource, Status, Subject, ToolAnnotations,
};
use countersign_protocol::api::{
    ErrorBody, EvaluationRequest, EvaluationResponse, Outcome, OutcomeReport, RedeemRequest,
    RedeemResponse, RequestStatus, RunOutcome,
};
use countersign_protocol::clock::SystemClock;
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use countersign_protocol::registry::{ApproverRegistry, RegistryDocument};
use countersign_protocol::replay::{MemoryCounterStore, MemoryReplayStore};
use countersign_protocol::spiffe::SpiffeId;
use countersign_protocol::verify::{GrantVerifier, VerifierConfig};
use countersign_protocol::{ActionRequest, Presentation};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::{GatewayError, Result};

/// What the broker said of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow,
    /// Refuse it.
    Deny { policy: String, reason: String },
    /// Held for the owner as pending item `id`.
    Held { id: String, expires_at: String },
}

/// A grant verified here and spent at the broker: the call may run, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub txn: String,
    pub jti: String,
}

/// The core. Cheap to clone.
#[derive(Clone)]
pub struct Pep {
    config: Arc<Config>,
    http: reqwest::Client,
    base: String,
    agent_secret: Arc<Zeroizing<String>>,
    gateway_secret: Arc<Zeroizing<String>>,
    /// The key bounded grants are bound to, when the gateway has one.
    key: Option<Arc<DeviceSigningKey>>,
    agent_id: SpiffeId,
    sealer: crate::state::Sealer,
}

impl std::fmt::Debug for Pep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pep")
            .field("broker", &self.base)
            .field("agent", &self.agent_id.as_str())
            .finish_non_exhaustive()
    }
}

/// How long one long-poll of the broker waits (its cap is 60 s).
const POLL_SECS: u64 = 25;

impl Pep {
    /// The core for `config`, with its secrets read now.
    pub fn new(config: Config) -> Result<Self> {
        let agent_secret = config.agent.secret.resolve("agent.secret")?;
        let gateway_secret = config.gateway.secret.resolve("gateway.secret")?;
        let key = config
            .gateway
            .key
            .as_ref()
            .map(|k| k.resolve("gateway.key"))
            .transpose()?;
        let pep = Self::with_secrets(config, agent_secret, gateway_secret)?;
        match key {
            Some(key) => pep.with_key(&key),
            None => Ok(pep),
        }
    }

    /// This core with the gateway's private key (32 bytes, base64url), for bounded grants.
    pub fn with_key(mut self, key: &str) -> Result<Self> {
        let bytes = countersign_protocol::hash::b64url_decode(key.trim())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| GatewayError::Config("gateway.key: not 32 bytes of base64url".into()))?;
        self.key = Some(Arc::new(DeviceSigningKey::from_secret(&bytes)));
        Ok(self)
    }

    /// The core for `config` with secrets the embedding program read itself (the references
    /// in `config` are not read).
    pub fn with_secrets(
        config: Config,
        agent_secret: Zeroizing<String>,
        gateway_secret: Zeroizing<String>,
    ) -> Result<Self> {
        let agent_id = SpiffeId::parse(&config.agent.id)
            .map_err(|e| GatewayError::Config(format!("agent.id: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(POLL_SECS + 15))
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: config.broker.url.trim_end_matches('/').to_owned(),
            config: Arc::new(config),
            http,
            agent_secret: Arc::new(agent_secret),
            sealer: crate::state::Sealer::new(gateway_secret.as_bytes()),
            gateway_secret: Arc::new(gateway_secret),
            key: None,
            agent_id,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Seals and opens the request state this gateway hands to 2026-07-28 clients.
    pub fn sealer(&self) -> &crate::state::Sealer {
        &self.sealer
    }

    /// Unix seconds, from the system clock.
    pub fn now(&self) -> i64 {
        use countersign_protocol::clock::Clock as _;
        SystemClock.now()
    }

    /// The action the broker is asked about and the grant is bound to: the call of `resource`
    /// (the name policy knows the tool by) with exactly these `arguments`.
    pub fn action(
        &self,
        resource: &str,
        arguments: Map<String, Value>,
        intent: String,
        annotations: Option<ToolAnnotations>,
    ) -> Result<ActionRequest> {
        let action = ActionRequest {
            subject: Subject {
                kind: "user".into(),
                id: self.config.agent.owner.clone(),
                properties: None,
            },
            actor: Actor {
                id: self.agent_id.clone(),
                act: None,
            },
            action: ActionName {
                name: "tools/call".into(),
                properties: None,
            },
            resource: Resource {
                kind: "tool".into(),
                id: resource.to_owned(),
                properties: None,
            },
            context: Context {
                intent,
                arguments,
                data: None,
                annotations: annotations.filter(|a| *a != ToolAnnotations::default()),
            },
        };
        action
            .validate()
            .map_err(|e| GatewayError::Malformed(e.to_string()))?;
        Ok(action)
    }

    /// Asks the broker about `action`.
    pub async fn evaluate(&self, action: &ActionRequest) -> Result<Verdict> {
        let body = EvaluationRequest {
            subject: action.subject.clone(),
            action: action.action.clone(),
            resource: action.resource.clone(),
            context: action.context.clone(),
            actor: Some(action.actor.clone()),
        };
        let response = self
            .http
            .post(format!("{}/access/v1/evaluation", self.base))
            .bearer_auth(self.agent_secret.as_str())
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?;
        let answer: EvaluationResponse = read(response).await?;
        let context = answer.context.ok_or_else(|| {
            GatewayError::BrokerUnreachable("an evaluation answer without context".into())
        })?;
        Ok(match context.outcome {
            Outcome::Allow if answer.decision => Verdict::Allow,
            Outcome::Allow | Outcome::Deny => Verdict::Deny {
                policy: context.policy_id.unwrap_or_default(),
                reason: context.reason.unwrap_or_else(|| "no reason given".into()),
            },
            Outcome::ApprovalRequired => {
                let ticket = context.approval.ok_or_else(|| {
                    GatewayError::BrokerUnreachable("a hold without a ticket".into())
                })?;
                Verdict::Held {
                    id: ticket.id,
                    expires_at: ticket.expires_at,
                }
            }
        })
    }

    /// Waits up to `max` for the owner's decision on item `id`: the grant when approved, a
    /// typed refusal otherwise ([`GatewayError::StillPending`] when the wait ran out first).
    pub async fn wait(&self, id: &str, max: Duration) -> Result<String> {
        let until = tokio::time::Instant::now() + max;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let secs = left.as_secs().min(POLL_SECS);
            let response = self
                .http
                .get(format!("{}/v1/requests/{id}", self.base))
                .query(&[("wait", secs)])
                .bearer_auth(self.agent_secret.as_str())
                .send()
                .await
                .map_err(unreachable)?;
            let status: RequestStatus = read(response).await?;
            match status.status {
                Status::Pending if left.is_zero() || secs == 0 => {
                    // Sub-second rests: one last look after them.
                    if !left.is_zero() {
                        tokio::time::sleep(left).await;
                        continue;
                    }
                    return Err(GatewayError::StillPending {
                        id: id.to_owned(),
                        expires_at: status.expires_at,
                    });
                }
                Status::Pending => {}
                Status::Approved => {
                    return status.grant.ok_or_else(|| {
                        GatewayError::BrokerUnreachable("approved without a grant".into())
                    });
                }
                Status::Denied => {
                    return Err(GatewayError::OwnerDenied(
                        status.reason.unwrap_or_else(|| "no reason given".into()),
                    ));
                }
                Status::Expired => {
                    return Err(GatewayError::NotApproved(format!(
                        "nobody approved {id} before it expired at {}",
                        status.expires_at
                    )));
                }
                Status::Redeemed => {
                    return Err(GatewayError::NotApproved(format!(
                        "the grant of {id} is spent already: the call ran (or was released) once"
                    )));
                }
                other => {
                    return Err(GatewayError::NotApproved(format!(
                        "{id} is {}",
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_else(|| "no longer pending".into())
                    )));
                }
            }
        }
    }

    /// Verifies `grant` for exactly `action` here (the broker's pinned registry, this gateway's
    /// audience, the broker's identity), then spends it at the broker. Only after this may the
    /// call run, once.
    pub async fn release(&self, grant: &str, action: &ActionRequest) -> Result<Released> {
        let registry = self.registry().await?;
        let mut config = VerifierConfig::new(
            self.config.gateway.audience.clone(),
            self.config.broker_id().to_owned(),
        );
        // The broker that accepted a bounded grant held it to its own maximum lifetime.
        config.max_bounded_lifetime_secs = countersign_protocol::bounded::BOUNDED_MAX_LIFETIME_SECS;
        let verifier = GrantVerifier::new(
            config,
            registry,
            Arc::new(MemoryReplayStore::new()),
            Arc::new(MemoryCounterStore::new()),
            Arc::new(SystemClock),
        );
        let refused = |e: countersign_protocol::VerifyError| GatewayError::GrantRefused {
            code: e.code(),
            message: e.to_string(),
        };
        let url = format!("{}/v1/grants/redeem", self.base);
        let body = RedeemRequest {
            grant: grant.to_owned(),
            action: action.clone(),
            presenter_jkt: None,
        };
        let mut request = self
            .http
            .post(&url)
            .bearer_auth(self.gateway_secret.as_str());
        if countersign_protocol::bounded::is_bounded(grant) {
            // A bounded grant: bound to this gateway's key, whose possession the broker checks
            // on this very request.
            let key = self
                .key
                .as_ref()
                .ok_or_else(|| GatewayError::GrantRefused {
                    code: "gateway_key_missing",
                    message: "a bounded grant, and this gateway has no key (gateway.key)".into(),
                })?;
            verifier
                .check_bounded(&Presentation {
                    grant,
                    action,
                    presenter_jkt: Some(&key.public_jwk().kid),
                })
                .map_err(refused)?;
            let bytes = serde_json::to_vec(&body)
                .map_err(|e| GatewayError::Malformed(format!("the redemption: {e}")))?;
            let proof = sign_proof(
                key,
                &self.config.gateway.audience,
                &ProofRequest {
                    method: "POST",
                    url: &url,
                    body: &bytes,
                    now: self.now(),
                },
            );
            request = request
                .header(PROOF_HEADER, proof)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        } else {
            verifier
                .check(&Presentation {
                    grant,
                    action,
                    presenter_jkt: None,
                })
                .map_err(refused)?;
            request = request.json(&body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let redeemed: RedeemResponse = read(response).await?;
        Ok(Released {
            txn: redeemed.txn,
            jti: redeemed.jti,
        })
    }

    /// Tells the broker what became of a released call. Best effort: a failure is logged (the
    /// call's fate is decided already), and returned for callers that want to say so.
    pub async fn report(
        &self,
        released: &Released,
        outcome: RunOutcome,
        detail: Option<String>,
    ) -> Result<()> {
        let detail = detail.map(|d| clip(&d, countersign_protocol::api::MAX_OUTCOME_DETAIL));
        let result = async {
            let response = self
                .http
                .post(format!("{}/v1/grants/outcome", self.base))
                .bearer_auth(self.gateway_secret.as_str())
                .json(&OutcomeReport {
                    txn: released.txn.clone(),
                    jti: released.jti.clone(),
                    outcome,
                    detail,
                })
                .send()
                .await
                .map_err(unreachable)?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(refusal(response).await)
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::warn!(txn = %released.txn, error = %e, "the outcome could not be reported");
        }
        result
    }

    /// The broker's approver registry (device keys and credentials), fetched for each
    /// verification so a removed approver is never trusted from a cache.
    async fn registry(&self) -> Result<Arc<ApproverRegistry>> {
        let response = self
            .http
            .get(format!("{}/v1/registry", self.base))
            .send()
            .await
            .map_err(unreachable)?;
        let document: RegistryDocument = read(response).await?;
        let (registry, skipped) = ApproverRegistry::lenient(document);
        for (id, e) in skipped {
            tracing::warn!(approver = %id, error = %e, "a registry entry was skipped");
        }
        Ok(Arc::new(registry))
    }

    /// Whether the broker answers and knows both credentials: `(agent ok, gateway ok)` as
    /// sentences for `check`.
    pub async fn probe(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let health = self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .map_err(unreachable)?;
        if !health.status().is_success() {
            return Err(GatewayError::BrokerUnreachable(format!(
                "{}/healthz answered {}",
                self.base,
                health.status()
            )));
        }
        lines.push(format!("broker {} answers", self.base));
        // An id no request has: 404 means the credential is known, 401 that it is not.
        let agent = self
            .http
            .get(format!("{}/v1/requests/pa_countersign_check", self.base))
            .bearer_auth(self.agent_secret.as_str())
            .send()
            .await
            .map_err(unreachable)?;
        if agent.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refusal(agent).await);
        }
        lines.push(format!(
            "agent credential of {} accepted",
            self.agent_id.as_str()
        ));
        let gateway = self
            .http
            .post(format!("{}/v1/grants/outcome", self.base))
            .bearer_auth(self.gateway_secret.as_str())
            .json(&OutcomeReport {
                txn: "pa_countersign_check".into(),
                jti: "check".into(),
                outcome: RunOutcome::NotRun,
                detail: None,
            })
            .send()
            .await
            .map_err(unreachable)?;
        if gateway.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refusal(gateway).await);
        }
        lines.push(format!(
            "gateway credential of {} accepted",
            self.config.gateway.audience
        ));
        let registry = self.registry().await?;
        lines.push(format!(
            "{} paired approver(s) in the broker's registry",
            registry.document().approvers.len()
        ));
        Ok(lines)
    }
}

fn unreachable(e: reqwest::Error) -> GatewayError {
    GatewayError::BrokerUnreachable(e.to_string())
}

/// The body of a successful answer, or the broker's typed refusal.
async fn read<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    response
        .json()
        .await
        .map_err(|e| GatewayError::BrokerUnreachable(format!("an unreadable answer: {e}")))
}

async fn refusal(response: reqwest::Response) -> GatewayError {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => GatewayError::BrokerRefused {
            code: body.code,
            message: body.message,
        },
        Err(_) => GatewayError::BrokerUnreachable(format!("the broker answered {status}")),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
