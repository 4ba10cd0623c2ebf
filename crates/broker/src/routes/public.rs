//! What anyone may read: the approver registry and its JWK Set, health, metrics, and the
//! OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// `GET /v1/registry`: the paired approvers, their device keys and credentials.
pub(super) async fn registry(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.registry().document().clone()).into_response()
}

/// Every paired device key as a standard JWK Set (RFC 7517), for JOSE libraries.
pub(super) async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let keys: Vec<_> = state
        .registry()
        .document()
        .approvers
        .iter()
        .flat_map(|a| a.device_keys.iter().cloned())
        .collect();
    axum::Json(serde_json::json!({ "keys": keys })).into_response()
}

/// `GET /metrics`: counters in the Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render() + &state.hub.render(),
    )
        .into_response()
}

/// `GET /openapi.json`: this API's OpenAPI document.
pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::render(),
    )
        .into_response()
}
