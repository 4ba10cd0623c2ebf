//! Gateways' endpoint: redeeming a grant before the call runs (`POST /v1/grants/redeem`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use countersign_protocol::Presentation;
use countersign_protocol::api::{RedeemRequest, RedeemResponse};
use countersign_protocol::json::Limits;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::{Body, json_body};
use crate::state::AppState;
use crate::store::{RedeemOutcome, Redemption};

/// `POST /v1/grants/redeem`: the grant verified against what the broker recorded and spent
/// once, in one transaction, before the gateway runs the call.
pub(super) async fn redeem(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<axum::Json<RedeemResponse>> {
    let gateway = state.gateway(&headers)?;
    let body: RedeemRequest = json_body(&headers, &body, Limits::ACTION)?;
    let refused = |e: ApiError| {
        state
            .metrics
            .redemptions_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(code = e.code, audience = %gateway.audience, "redemption refused");
        e
    };
    // Every check of the grant itself, then the broker's own record, and the consumption with
    // it, in one transaction.
    let verified = state
        .verifier(&gateway.audience)
        .check(&Presentation {
            grant: &body.grant,
            action: &body.action,
            presenter_jkt: body.presenter_jkt.as_deref(),
        })
        .map_err(|e| refused(e.into()))?;
    let claims = verified.claims.approval;
    let redemption = Redemption {
        txn: &claims.txn,
        jti: &claims.jti,
        sub: &claims.sub,
        aud: &claims.aud,
        exp: claims.exp,
    };
    match state.store.redeem(&redemption, state.now())? {
        RedeemOutcome::Redeemed(request, event) => {
            state.metrics.redemptions_ok.fetch_add(1, Ordering::Relaxed);
            state.publish(&request.owner, *event);
        }
        RedeemOutcome::Replayed => {
            return Err(refused(countersign_protocol::VerifyError::Replayed.into()));
        }
        RedeemOutcome::Revoked => {
            return Err(refused(countersign_protocol::VerifyError::Revoked.into()));
        }
        RedeemOutcome::NotAccepted => {
            return Err(refused(ApiError::new(
                ErrorCode::GrantNotAccepted,
                "this broker never accepted this grant for an approved request of its owner \
                 and this gateway",
            )));
        }
    }
    Ok(axum::Json(RedeemResponse {
        status: "consumed".into(),
        txn: claims.txn,
        jti: claims.jti,
    }))
}
