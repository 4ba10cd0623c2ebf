//! Agents' endpoints: asking to make a call (`POST /access/v1/evaluation`, AuthZEN) and
//! following what became of it (`GET /v1/requests/{id}`, long-polled).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use countersign_protocol::action::{Actor, PendingParts, PolicyRef, Status, Timestamp};
use countersign_protocol::api::{
    ApprovalTicket, EvaluationContext, EvaluationRequest, EvaluationResponse, Outcome,
    RequestStatus,
};
use countersign_protocol::bounded::BoundedClaims;
use countersign_protocol::hash::random_b64url;
use countersign_protocol::json::Limits;
use countersign_protocol::spiffe::SpiffeId;
use countersign_protocol::{ActionRequest, PendingAction};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::{Body, IdPath, StrictQuery, json_body};
use crate::state::AppState;
use crate::store::{HoldOutcome, NewPending, StoredRequest};

/// `POST /access/v1/evaluation`: policy decides; a call that needs its owner is held as a
/// pending action (or merged into an identical one already waiting) and the answer says so.
pub(super) async fn evaluate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<axum::Json<EvaluationResponse>> {
    let agent = state.agent(&headers)?;
    let body: EvaluationRequest = json_body(&headers, &body, Limits::ACTION)?;
    let agent_id = SpiffeId::parse(&agent.id)
        .map_err(|e| ApiError::internal("configured agent id is not a SPIFFE ID", &e))?;
    // Identities come from credentials: the actor is the authenticated agent, and the human it
    // acts for is the agent's configured owner.
    let actor = match body.actor {
        Some(actor) if actor.id != agent_id => {
            return Err(ApiError::new(
                ErrorCode::ActorMismatch,
                "actor.id is not the authenticated agent",
            ));
        }
        Some(actor) => actor,
        None => Actor {
            id: agent_id,
            act: None,
        },
    };
    if body.subject.id != agent.owner || body.subject.kind != "user" {
        return Err(ApiError::new(
            ErrorCode::SubjectMismatch,
            format!(
                "subject must be {{\"type\": \"user\", \"id\": {:?}}}: the agent's configured owner",
                agent.owner
            ),
        ));
    }
    let standing = state.store.agent_state(&agent.id)?;
    if standing.quarantined {
        return Err(ApiError::new(
            ErrorCode::AgentQuarantined,
            "the agent is quarantined after repeated denials; its owner can release it",
        ));
    }
    if standing.suspended {
        return Err(ApiError::new(
            ErrorCode::AgentSuspended,
            "the agent is suspended by its owner",
        ));
    }
    state.rate_limit(&agent.id)?;
    let request = ActionRequest {
        subject: body.subject,
        actor,
        action: body.action,
        resource: body.resource,
        context: body.context,
    };
    request.validate()?;
    let catalog = state.config.tool(&request.resource.id).map(|t| t.facts());
    let verdict = state.policies.decide(&request, catalog.as_ref());
    let mut context = EvaluationContext {
        outcome: verdict.outcome,
        policy_id: Some(verdict.policy_id.clone()),
        reason: Some(verdict.reason.clone()),
        approval: None,
    };
    match verdict.outcome {
        Outcome::Allow => {
            state
                .metrics
                .evaluations_allow
                .fetch_add(1, Ordering::Relaxed);
            return Ok(axum::Json(EvaluationResponse {
                decision: true,
                context: Some(context),
            }));
        }
        Outcome::Deny => {
            state
                .metrics
                .evaluations_deny
                .fetch_add(1, Ordering::Relaxed);
            return Ok(axum::Json(EvaluationResponse {
                decision: false,
                context: Some(context),
            }));
        }
        Outcome::ApprovalRequired => {}
    }
    let audience = state.audience_for(&request.resource.id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoGateway,
            format!("no gateway is configured to run {}", request.resource.id),
        )
    })?;
    let now = state.now();
    let to_ts = |t| Timestamp::from_unix(t).map_err(ApiError::from);
    let pending = PendingAction::new(
        PendingParts {
            id: format!("pa_{}", random_b64url::<12>()),
            created_at: to_ts(now)?,
            expires_at: to_ts(now + state.config.pending_ttl_secs)?,
            audience,
            policy: PolicyRef {
                id: verdict.policy_id,
                reason: verdict.reason,
            },
            // Nothing verifies an agent's delegation chain yet: it is its claim.
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog,
        },
        request,
    )?;
    let new = NewPending {
        pending,
        owner: agent.owner.clone(),
        agent: agent.id.clone(),
    };
    if let Some(released) = release(&state, &new, now)? {
        state.events_written();
        let id = released.view.pending.id.clone();
        context.reason = Some(format!(
            "released without a prompt under the owner's bounded grant {}",
            released.view.bounded_grant.unwrap_or_default()
        ));
        context.approval = Some(ApprovalTicket {
            status_url: format!("/v1/requests/{id}"),
            expires_at: released.view.pending.expires_at.as_str().to_owned(),
            merged: released.view.merged,
            id,
        });
        return Ok(axum::Json(EvaluationResponse {
            decision: false,
            context: Some(context),
        }));
    }
    let stored = match state
        .store
        .hold(&new, state.config.max_pending_per_owner, now)?
    {
        HoldOutcome::Held(stored, _) => *stored,
        HoldOutcome::OverCap => {
            state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                ErrorCode::PendingCapReached,
                format!(
                    "{} already has {} pending requests; try again once some are decided",
                    agent.owner, state.config.max_pending_per_owner
                ),
            )
            .retry_after(30));
        }
    };
    if stored.view.merged > 1 {
        state.metrics.merged.fetch_add(1, Ordering::Relaxed);
    } else {
        state
            .metrics
            .evaluations_held
            .fetch_add(1, Ordering::Relaxed);
    }
    state.events_written();
    let id = stored.view.pending.id.clone();
    context.approval = Some(ApprovalTicket {
        status_url: format!("/v1/requests/{id}"),
        expires_at: stored.view.pending.expires_at.as_str().to_owned(),
        merged: stored.view.merged,
        id,
    });
    Ok(axum::Json(EvaluationResponse {
        decision: false,
        context: Some(context),
    }))
}

/// Releases a held call under the first of its owner's bounded grants for this agent that
/// covers it — same agent and delegation chain, same tool and gateway, every argument within
/// the constraints — with a use left; `None` when none does (the owner is asked).
fn release(state: &AppState, new: &NewPending, now: i64) -> ApiResult<Option<StoredRequest>> {
    let pending = &new.pending;
    for grant in state
        .store
        .bounded_grants(&new.owner, Some(&new.agent), now)?
    {
        let Ok(claims) = serde_json::from_str::<BoundedClaims>(&grant.claims) else {
            tracing::warn!(jti = %grant.view.jti, "a stored bounded grant does not parse");
            continue;
        };
        let covers = claims.aud == pending.audience
            && claims.act == pending.actor.to_act_claim()
            && claims.authorization_details == pending.authorization_details
            && claims.constraints.admit(&pending.context.arguments).is_ok();
        if !covers {
            continue;
        }
        if let Some((released, _)) = state.store.release(new, &grant.view.jti, now)? {
            tracing::info!(jti = %grant.view.jti, id = %released.view.pending.id, "released under a bounded grant");
            return Ok(Some(released));
        }
    }
    Ok(None)
}

/// `?wait=N`: how long to long-poll, in seconds (at most 60).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /v1/requests/{id}`: where the agent's own request stands, waiting up to `?wait=N`
/// seconds for a change.
pub(super) async fn request_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    StrictQuery(query): StrictQuery<WaitQuery>,
) -> ApiResult<axum::Json<RequestStatus>> {
    let agent = state.agent(&headers)?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(query.wait.unwrap_or(0).min(60));
    let mut changes = state.hub.changes();
    loop {
        let stored = state
            .store
            .request(&id)?
            .filter(|r| r.agent == agent.id)
            .ok_or_else(|| ApiError::not_found("no such request for this agent"))?;
        let status = RequestStatus {
            id: id.clone(),
            status: stored.view.status,
            grant: stored
                .grant
                .filter(|_| stored.view.status == Status::Approved),
            reason: stored.view.reason,
            expires_at: stored.view.pending.expires_at.as_str().to_owned(),
        };
        if status.status != Status::Pending {
            return Ok(axum::Json(status));
        }
        // Wake on a change to this request, or at the deadline.
        let woke = loop {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => break false,
                Ok(Ok(changed)) if changed == id => break true,
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break true,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break false,
            }
        };
        if !woke {
            return Ok(axum::Json(status));
        }
    }
}
