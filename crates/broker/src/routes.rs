//! The HTTP API, one module per caller: `agent`, `gateway`, `approver` (with its event
//! `stream`) and `public`. Extractors and limits are in [`crate::http`]; every refusal is an
//! [`crate::error::ApiError`] with its [`crate::error::ErrorCode`].

mod agent;
pub(crate) mod approver;
mod gateway;
mod public;
pub(crate) mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::{ApiError, ErrorCode};
use crate::http::MAX_BODY;
use crate::state::AppState;

/// The broker's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/access/v1/evaluation", post(agent::evaluate))
        .route("/v1/requests/{id}", get(agent::request_status))
        .route("/v1/grants/redeem", post(gateway::redeem))
        .route("/v1/grants/outcome", post(gateway::outcome))
        .route("/v1/registry", get(public::registry))
        .route("/v1/registry/jwks.json", get(public::jwks))
        .route("/v1/pair", post(approver::pair))
        .route("/v1/approver/credentials", post(approver::enroll))
        .route(
            "/v1/approver/credentials/{id}",
            axum::routing::delete(approver::remove_credential),
        )
        .route("/v1/approver/stream", get(stream::stream))
        .route("/v1/approver/requests", get(approver::list))
        .route("/v1/approver/requests/{id}", get(approver::one))
        .route(
            "/v1/approver/requests/{id}/decision",
            post(approver::decide),
        )
        .route("/v1/approver/decisions", post(approver::decide_batch))
        .route("/v1/approver/requests/{id}/revoke", post(approver::revoke))
        .route("/v1/approver/gateways", get(approver::gateways))
        .route("/v1/approver/bounded", get(approver::bounded))
        .route(
            "/v1/approver/bounded/{id}/revoke",
            post(approver::revoke_bounded),
        )
        .route("/v1/approver/agents/suspend", post(approver::suspend))
        .route("/v1/approver/agents/resume", post(approver::resume))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(public::metrics))
        .route("/openapi.json", get(public::openapi))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
