//! A simulated agent fleet: agents submit a realistic mix of tool calls, wait for their owner's
//! decisions, and redeem grants the way their gateways would — for the demo and for tests.

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
use countersign_protocol::spiffe::SpiffeId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{AgentConfig, GatewayConfig, ToolConfig, secret_hash};

/// Plaintext secrets the simulator uses (written by `countersign-broker demo-init`; demo only).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSecrets {
    /// The owner the agents act for.
    pub owner: String,
    pub agents: Vec<AgentSecret>,
    pub gateways: Vec<GatewaySecret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSecret {
    pub id: String,
    pub secret: String,
    /// The agent that delegated to this one, if any.
    #[serde(default)]
    pub delegated_by: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySecret {
    pub audience: String,
    pub secret: String,
}

/// The demo fleet with fresh random secrets: three agents of `owner` (two of them acting for a
/// planner agent) and two gateways — payments for `stripe/*`, tools for everything. Returns the
/// simulator's secrets and the broker's configuration entries (secrets hashed).
pub fn demo_fleet(owner: &str) -> (FleetSecrets, Vec<AgentConfig>, Vec<GatewayConfig>) {
    let agents = [
        (
            "spiffe://example.com/agent/billing",
            Some("spiffe://example.com/agent/planner"),
        ),
        ("spiffe://example.com/agent/devops", None),
        (
            "spiffe://example.com/agent/assistant",
            Some("spiffe://example.com/agent/planner"),
        ),
    ];
    let gateways = [
        ("https://payments-gateway.example.com", "stripe/*"),
        ("https://tools-gateway.example.com", "*"),
    ];
    let mut secrets = FleetSecrets {
        owner: owner.to_owned(),
        agents: Vec::new(),
        gateways: Vec::new(),
    };
    let (mut agent_configs, mut gateway_configs) = (Vec::new(), Vec::new());
    for (id, delegated_by) in agents {
        let secret = random_secret();
        agent_configs.push(AgentConfig {
            id: id.to_owned(),
            owner: owner.to_owned(),
            secret_sha256: secret_hash(&secret),
        });
        secrets.agents.push(AgentSecret {
            id: id.to_owned(),
            secret,
            delegated_by: delegated_by.map(str::to_owned),
        });
    }
    for (audience, tools) in gateways {
        let secret = random_secret();
        gateway_configs.push(GatewayConfig {
            audience: audience.to_owned(),
            tools: vec![tools.to_owned()],
            secret_sha256: secret_hash(&secret),
        });
        secrets.gateways.push(GatewaySecret {
            audience: audience.to_owned(),
            secret,
        });
    }
    (secrets, agent_configs, gateway_configs)
}

/// The demo's tool catalog: what each demo tool touches and how risky it is. Policy decides on
/// these facts, not on the `data` agents claim in their requests.
pub fn demo_catalog() -> Vec<ToolConfig> {
    use countersign_protocol::action::Risk;
    let tool = |name: &str, domain: &str, classes: &[&str], risk| ToolConfig {
        name: name.into(),
        domain: Some(domain.into()),
        classification: classes.iter().map(|c| (*c).to_owned()).collect(),
        risk: Some(risk),
    };
    vec![
        tool(
            "stripe/refunds.create",
            "payments",
            &["financial"],
            Risk::High,
        ),
        tool(
            "github/repos.delete",
            "source",
            &["internal"],
            Risk::Critical,
        ),
        tool("postgres/query", "crm", &["pii"], Risk::Medium),
        tool("postgres/drop_database", "crm", &["pii"], Risk::Critical),
        tool("gmail/send", "mail", &["confidential"], Risk::Medium),
        tool("calendar/events.list", "calendar", &["internal"], Risk::Low),
    ]
}

/// A 256-bit random secret, base64url.
pub fn random_secret() -> String {
    countersign_protocol::hash::random_b64url::<32>()
}

/// What happened to one simulated call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Allowed,
    Denied {
        policy: String,
    },
    Approved {
        redeemed: bool,
        replay_refused: bool,
    },
    Refused {
        status: Status,
        reason: Option<String>,
    },
    TimedOut,
}

/// One scripted call.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub tool: &'static str,
    pub intent: String,
    pub arguments: Value,
    pub data: Option<(&'static str, Vec<&'static str>)>,
}

/// The realistic mix the demo cycles through.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            tool: "stripe/refunds.create",
            intent: "Refund order 1234 after a complaint about a damaged parcel".into(),
            arguments: json!({"order": "1234", "amount": "5000.00", "currency": "EUR"}),
            data: Some(("payments", vec!["financial", "pii"])),
        },
        Scenario {
            tool: "stripe/refunds.create",
            intent: "Refund a duplicate charge on order 981".into(),
            arguments: json!({"order": "981", "amount": "19.99", "currency": "EUR"}),
            data: Some(("payments", vec!["financial"])),
        },
        Scenario {
            tool: "github/repos.delete",
            intent: "Delete the abandoned prototype repository after archiving it".into(),
            arguments: json!({"repository": "acme/prototype-2023"}),
            data: Some(("source", vec!["internal"])),
        },
        Scenario {
            tool: "postgres/query",
            intent: "Count customers per country for the quarterly report".into(),
            arguments: json!({"table": "customers", "query": "SELECT country, count(*) FROM customers GROUP BY 1"}),
            data: Some(("crm", vec!["pii"])),
        },
        Scenario {
            tool: "gmail/send",
            intent: "Send the signed contract to the supplier".into(),
            arguments: json!({"to": "orders@supplier.example.net", "subject": "Signed contract", "attachments": ["contract.pdf"]}),
            data: Some(("mail", vec!["confidential"])),
        },
        Scenario {
            tool: "gmail/send",
            intent: "Remind the team about Friday's retro".into(),
            arguments: json!({"to": "team@example.com", "subject": "Retro on Friday"}),
            data: None,
        },
        Scenario {
            tool: "postgres/drop_database",
            intent: "Free disk space by dropping the production database".into(),
            arguments: json!({"database": "prod"}),
            data: Some(("crm", vec!["pii"])),
        },
        Scenario {
            tool: "calendar/events.list",
            intent: "Check tomorrow's meetings".into(),
            arguments: json!({"day": "tomorrow"}),
            data: None,
        },
    ]
}

/// A simulated agent talking to one broker.
#[derive(Debug, Clone)]
pub struct SimulatedAgent {
    http: reqwest::Client,
    broker: String,
    agent: AgentSecret,
    owner: String,
    gateways: HashMap<String, String>,
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
                .map(|g| (g.audience.clone(), g.secret.clone()))
                .collect(),
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
        let secret = self
            .gateways
            .get(audience)
            .with_context(|| format!("no gateway secret for {audience}"))?;
        let body = RedeemRequest {
            grant: grant.to_owned(),
            action: request.clone(),
            presenter_jkt: None,
        };
        let response = self
            .http
            .post(format!("{}/v1/grants/redeem", self.broker))
            .bearer_auth(secret)
            .json(&body)
            .send()
            .await?;
        Ok(response.status())
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
