//! The HTTP API: routes, and the handlers for agents, gateways and operators.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use countersign_protocol::action::{
    ActionName, Actor, Context, PendingParts, PolicyRef, Resource, Status, Subject, Timestamp,
};
use countersign_protocol::api::{
    ApprovalTicket, EvaluationContext, EvaluationResponse, Outcome, RedeemRequest, RedeemResponse,
    RequestStatus,
};
use countersign_protocol::json::{self, Limits};
use countersign_protocol::spiffe::SpiffeId;
use countersign_protocol::{ActionRequest, PendingAction, Presentation};
use serde::{Deserialize, Serialize};

use crate::approver;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::NewPending;

/// Largest accepted request body.
pub const MAX_BODY: usize = 512 * 1024;

/// The broker's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/access/v1/evaluation", post(evaluate))
        .route("/v1/requests/{id}", get(request_status))
        .route("/v1/grants/redeem", post(redeem))
        .route("/v1/registry", get(registry))
        .route("/v1/registry/jwks.json", get(jwks))
        .route("/v1/pair", post(approver::pair))
        .route("/v1/approver/credentials", post(approver::enroll))
        .route("/v1/approver/stream", get(crate::stream::stream))
        .route("/v1/approver/requests", get(approver::list))
        .route(
            "/v1/approver/requests/{id}/decision",
            post(approver::decide),
        )
        .route("/v1/approver/requests/{id}/revoke", post(approver::revoke))
        .route("/v1/approver/agents/suspend", post(approver::suspend))
        .route("/v1/approver/agents/resume", post(approver::resume))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Reads a JSON body strictly: content type, size, then [`countersign_protocol::json`].
pub fn json_body<T: serde::de::DeserializeOwned + Serialize>(
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
    limits: Limits,
) -> ApiResult<T> {
    let body = body_bytes(body)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json",
        ));
    }
    Ok(json::from_slice(body, limits)?)
}

/// The body bytes, or a typed 413 when over [`MAX_BODY`].
pub fn body_bytes(body: &Result<Bytes, BytesRejection>) -> ApiResult<&Bytes> {
    body.as_ref().map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body refused: {e}"),
        )
    })
}

/// AuthZEN evaluation request. `actor` is optional; when present its `id` must be the
/// authenticated agent, and its `act` chain is shown to the owner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    pub subject: Subject,
    pub action: ActionName,
    pub resource: Resource,
    pub context: Context,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

async fn evaluate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<EvaluationResponse>> {
    let agent = state.agent(&headers)?;
    let body: EvaluationRequest = json_body(&headers, &body, Limits::ACTION)?;
    let agent_id = SpiffeId::parse(&agent.id)
        .map_err(|e| ApiError::internal("configured agent id is not a SPIFFE ID", &e))?;
    let actor = match body.actor {
        Some(actor) if actor.id != agent_id => {
            return Err(ApiError::forbidden(
                "actor_mismatch",
                "actor.id is not the authenticated agent",
            ));
        }
        Some(actor) => actor,
        None => Actor {
            id: agent_id,
            act: None,
        },
    };
    let standing = state.store.agent_state(&agent.id)?;
    if standing.quarantined {
        return Err(ApiError::forbidden(
            "agent_quarantined",
            "the agent is quarantined after repeated denials; its owner can release it",
        ));
    }
    if standing.suspended {
        return Err(ApiError::forbidden(
            "agent_suspended",
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
    let verdict = state.policies.decide(&request);
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
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_gateway",
            format!("no gateway is configured to run {}", request.resource.id),
        )
    })?;
    let now = state.now();
    let to_ts = |t| Timestamp::from_unix(t).map_err(ApiError::from);
    let pending = PendingAction::new(
        PendingParts {
            id: format!("pa_{}", random_id()),
            created_at: to_ts(now)?,
            expires_at: to_ts(now + state.config.pending_ttl_secs)?,
            audience,
            policy: PolicyRef {
                id: verdict.policy_id,
                reason: verdict.reason,
            },
        },
        request,
    )?;
    let new = NewPending {
        pending,
        owner: agent.owner.clone(),
        agent: agent.id.clone(),
    };
    let (stored, event) = state.store.hold(&new, now)?;
    if stored.view.merged > 1 {
        state.metrics.merged.fetch_add(1, Ordering::Relaxed);
    } else {
        state
            .metrics
            .evaluations_held
            .fetch_add(1, Ordering::Relaxed);
    }
    state.publish(&agent.owner, event);
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

#[derive(Debug, Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<u64>,
}

async fn request_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> ApiResult<axum::Json<RequestStatus>> {
    let agent = state.agent(&headers)?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(query.wait.unwrap_or(0).min(60));
    let mut changes = state.changes.subscribe();
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

async fn redeem(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<RedeemResponse>> {
    let gateway = state.gateway(&headers)?;
    let body: RedeemRequest = json_body(&headers, &body, Limits::ACTION)?;
    let verifier = state.verifier(&gateway.audience);
    let presentation = Presentation {
        grant: &body.grant,
        action: &body.action,
        presenter_jkt: body.presenter_jkt.as_deref(),
    };
    let verified = match verifier.redeem(&presentation) {
        Ok(v) => v,
        Err(e) => {
            state
                .metrics
                .redemptions_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(code = e.code(), audience = %gateway.audience, "redemption refused");
            return Err(e.into());
        }
    };
    state.metrics.redemptions_ok.fetch_add(1, Ordering::Relaxed);
    let claims = verified.claims.approval;
    if let Some((request, event)) = state.store.redeemed(&claims.txn, state.now())? {
        state.publish(&request.owner, event);
    }
    Ok(axum::Json(RedeemResponse {
        status: "consumed".into(),
        txn: claims.txn,
        jti: claims.jti,
    }))
}

async fn registry(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.registry().document().clone()).into_response()
}

/// Every paired device key as a standard JWK Set (RFC 7517), for JOSE libraries.
async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let keys: Vec<_> = state
        .registry()
        .document()
        .approvers
        .iter()
        .flat_map(|a| a.device_keys.iter().cloned())
        .collect();
    axum::Json(serde_json::json!({ "keys": keys })).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::render(),
    )
        .into_response()
}

/// 96 random bits, base64url.
pub fn random_id() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut bytes);
    countersign_protocol::hash::b64url(&bytes)
}
