//! A simulated agent and its gateway: submitting calls, waiting for the owner, redeeming
//! grants; and running the whole fleet.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use countersign_protocol::ActionRequest;
use countersign_protocol::action::{
    ActionName, Actor, ActorChain, Context, DataTouched, Resource, Status, Subject,
};
use countersign_protocol::api::{
    EvaluationRequest, EvaluationResponse, Outcome, RedeemRequest, RequestStatus,
};
use countersign_protocol::grant::DeviceSigningKey;
use countersign_protocol::proof::{PROOF_HEADER, ProofRequest, sign_proof};
use countersign_protocol::spiffe::SpiffeId;

use super::fleet::{AgentSecret, FleetSecrets};
use super::scenarios::{CallOutcome, Scenario, scenarios};

/// A simulated agent talking to one broker.
#[derive(Debug, Clone)]
pub struct SimulatedAgent {
    http: reqwest::Client,
    broker: String,
    agent: AgentSecret,
    owner: String,
    /// Each gateway's secret, and its key when it has one.
    gateways: HashMap<String, (String, Option<std::sync::Arc<DeviceSigningKey>>)>,
}

impl SimulatedAgent {
    pub fn new(broker: &str, secrets: &FleetSecrets, agent: &AgentSecret) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
            broker: broker.trim_end_matches('/').to_owned(),
            agent: agent.clone(),
            owner: secrets.owner.clone(),
            gateways: secrets
                .gateways
                .iter()
                .map(|g| {
                    let key = g.signing_key()?.map(std::sync::Arc::new);
                    Ok((g.audience.clone(), (g.secret.clone(), key)))
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The call as the gateway will present it.
    pub fn request(&self, scenario: &Scenario) -> anyhow::Result<ActionRequest> {
        let data = scenario.data.as_ref().map(|(domain, classes)| DataTouched {
            domain: (*domain).to_owned(),
            classification: classes.iter().map(|c| (*c).to_owned()).collect(),
        });
        Ok(ActionRequest {
            subject: Subject {
                kind: "user".into(),
                id: self.owner.clone(),
                properties: None,
            },
            actor: Actor {
                id: SpiffeId::parse(&self.agent.id)?,
                act: self
                    .agent
                    .delegated_by
                    .as_deref()
                    .map(SpiffeId::parse)
                    .transpose()?
                    .map(|sub| ActorChain { sub, act: None }),
            },
            action: ActionName {
                name: "tools/call".into(),
                properties: None,
            },
            resource: Resource {
                kind: "tool".into(),
                id: scenario.tool.into(),
                properties: None,
            },
            context: Context {
                intent: scenario.intent.clone(),
                arguments: scenario.arguments.as_object().cloned().unwrap_or_default(),
                data,
                annotations: None,
            },
        })
    }

    /// Asks the broker.
    pub async fn evaluate(&self, request: &ActionRequest) -> anyhow::Result<EvaluationResponse> {
        let body = EvaluationRequest {
            subject: request.subject.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            context: request.context.clone(),
            actor: Some(request.actor.clone()),
        };
        let response = self
            .http
            .post(format!("{}/access/v1/evaluation", self.broker))
            .bearer_auth(&self.agent.secret)
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "evaluation refused: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json().await?)
    }

    /// Long-polls until the request leaves `pending` or `deadline` passes.
    pub async fn wait(&self, id: &str, deadline: Duration) -> anyhow::Result<RequestStatus> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .min(30);
            let response = self
                .http
                .get(format!("{}/v1/requests/{id}?wait={left}", self.broker))
                .bearer_auth(&self.agent.secret)
                .send()
                .await?
                .error_for_status()?;
            let status: RequestStatus = response.json().await?;
            if status.status != Status::Pending || left == 0 {
                return Ok(status);
            }
        }
    }

    /// Redeems `grant` for `request` as the gateway of `audience`.
    pub async fn redeem(
        &self,
        audience: &str,
        grant: &str,
        request: &ActionRequest,
    ) -> anyhow::Result<reqwest::StatusCode> {
        Ok(self.redeem_answer(audience, grant, request).await?.0)
    }

    /// Presents `grant` for `request` as the gateway of `audience` would, with a proof of its
    /// key when it has one; the status and body of the broker's answer.
    pub async fn redeem_answer(
        &self,
        audience: &str,
        grant: &str,
        request: &ActionRequest,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let (secret, key) = self
            .gateways
            .get(audience)
            .with_context(|| format!("no gateway secret for {audience}"))?;
        let body = serde_json::to_vec(&RedeemRequest {
            grant: grant.to_owned(),
            action: request.clone(),
            presenter_jkt: None,
        })?;
        let url = format!("{}/v1/grants/redeem", self.broker);
        let mut call = self
            .http
            .post(&url)
            .bearer_auth(secret)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            let now =
                countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
            let proof = sign_proof(
                key,
                audience,
                &ProofRequest {
                    method: "POST",
                    url: &url,
                    body: &body,
                    now,
                },
            );
            call = call.header(PROOF_HEADER, proof);
        }
        let response = call.body(body).send().await?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    }

    /// One scripted call, end to end.
    pub async fn run(
        &self,
        scenario: &Scenario,
        deadline: Duration,
    ) -> anyhow::Result<CallOutcome> {
        let request = self.request(scenario)?;
        let answer = self.evaluate(&request).await?;
        let context = answer.context.context("evaluation without context")?;
        match context.outcome {
            Outcome::Allow => Ok(CallOutcome::Allowed),
            Outcome::Deny => Ok(CallOutcome::Denied {
                policy: context.policy_id.unwrap_or_default(),
            }),
            Outcome::ApprovalRequired => {
                let ticket = context
                    .approval
                    .context("approval required without a ticket")?;
                let status = self.wait(&ticket.id, deadline).await?;
                match (status.status, status.grant) {
                    (Status::Approved, Some(grant)) => {
                        let audience = self.audience_of(&grant)?;
                        let first = self.redeem(&audience, &grant, &request).await?;
                        let second = self.redeem(&audience, &grant, &request).await?;
                        Ok(CallOutcome::Approved {
                            redeemed: first.is_success(),
                            replay_refused: second == reqwest::StatusCode::CONFLICT,
                        })
                    }
                    (Status::Pending, _) => Ok(CallOutcome::TimedOut),
                    (status, _) => Ok(CallOutcome::Refused {
                        status,
                        reason: status_reason(status),
                    }),
                }
            }
        }
    }

    fn audience_of(&self, grant: &str) -> anyhow::Result<String> {
        let compact =
            countersign_protocol::jws::split(grant, countersign_protocol::verify::MAX_GRANT_BYTES)?;
        let payload = compact
            .payload()
            .context("grant payload is not base64url")?;
        let claims = countersign_protocol::json::parse_value(
            &payload,
            countersign_protocol::json::Limits::GRANT,
        )?;
        claims["aud"]
            .as_str()
            .map(str::to_owned)
            .context("grant without aud")
    }
}

fn status_reason(status: Status) -> Option<String> {
    match status {
        Status::Denied => Some("denied by the owner".into()),
        Status::Expired => Some("nobody decided in time".into()),
        _ => None,
    }
}

/// Runs the fleet: every agent cycles through the scenarios, `rounds` times (0 = forever),
/// starting a call every `pause`; calls wait for their decisions concurrently.
pub async fn run_fleet(
    broker: &str,
    secrets: &FleetSecrets,
    rounds: usize,
    pause: Duration,
) -> anyhow::Result<()> {
    let agents: Vec<SimulatedAgent> = secrets
        .agents
        .iter()
        .map(|a| SimulatedAgent::new(broker, secrets, a))
        .collect::<anyhow::Result<_>>()?;
    if agents.is_empty() {
        bail!("no agents in the simulator secrets");
    }
    let script = scenarios();
    let mut calls = tokio::task::JoinSet::new();
    let mut round = 0;
    while rounds == 0 || round < rounds {
        for (step, scenario) in script.iter().enumerate() {
            let agent = agents[(round + step) % agents.len()].clone();
            let scenario = scenario.clone();
            calls.spawn(async move {
                match agent.run(&scenario, Duration::from_secs(330)).await {
                    Ok(outcome) => tracing::info!(agent = %agent.agent.id, tool = scenario.tool, ?outcome, "call finished"),
                    Err(e) => tracing::warn!(agent = %agent.agent.id, tool = scenario.tool, error = %e, "call failed"),
                }
            });
            tokio::time::sleep(pause).await;
        }
        round += 1;
    }
    while calls.join_next().await.is_some() {}
    Ok(())
}
