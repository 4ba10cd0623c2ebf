//! Gateways' endpoints: redeeming a grant before the call runs (`POST /v1/grants/redeem`) and
//! reporting what became of the call (`POST /v1/grants/outcome`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use countersign_protocol::Presentation;
use countersign_protocol::api::{
    MAX_OUTCOME_DETAIL, OutcomeReport, RedeemRequest, RedeemResponse, ReportedOutcome,
};
use countersign_protocol::json::Limits;

use countersign_protocol::proof::{PROOF_HEADER, ProofError, ProofRequest, verify_proof_with_key};

use crate::config::GatewayConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::{Body, json_body};
use crate::state::AppState;
use crate::store::{BoundedRedemption, RedeemOutcome, Redemption, ReportOutcome};

/// `POST /v1/grants/redeem`: the grant verified against what the broker recorded and spent
/// once, in one transaction, before the gateway runs the call.
pub(super) async fn redeem(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(raw): Body,
) -> ApiResult<axum::Json<RedeemResponse>> {
    let gateway = state.gateway(&headers)?;
    let body: RedeemRequest = json_body(&headers, &raw, Limits::ACTION)?;
    let refused = |e: ApiError| {
        state
            .metrics
            .redemptions_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(code = e.code, audience = %gateway.audience, "redemption refused");
        e
    };
    if countersign_protocol::bounded::is_bounded(&body.grant) {
        return redeem_bounded(&state, &headers, &raw, &gateway, &body)
            .map_err(refused)
            .map(axum::Json);
    }
    // Every check of the grant itself, then the broker's own record, and the consumption with
    // it, in one transaction.
    let presentation = Presentation {
        grant: &body.grant,
        action: &body.action,
        presenter_jkt: body.presenter_jkt.as_deref(),
    };
    let verified = match state.verifier(&gateway.audience).check(&presentation) {
        // An approver paired through another instance a moment ago: look again (the sweeper
        // may have reloaded the registry since this check read it, too).
        Err(countersign_protocol::VerifyError::UnknownKey(_)) => {
            state.refresh_registry()?;
            state.verifier(&gateway.audience).check(&presentation)
        }
        checked => checked,
    }
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
        RedeemOutcome::Redeemed(..) => {
            state.metrics.redemptions_ok.fetch_add(1, Ordering::Relaxed);
            state.events_written();
        }
        RedeemOutcome::Replayed => {
            return Err(refused(countersign_protocol::VerifyError::Replayed.into()));
        }
        RedeemOutcome::Revoked => {
            return Err(refused(countersign_protocol::VerifyError::Revoked.into()));
        }
        // Only bounded grants are counted.
        RedeemOutcome::Spent | RedeemOutcome::NotAccepted => {
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

/// A bounded grant presented for one call: the gateway proves it holds the key the grant is
/// bound to (a request proof signed with it, over this very request), the grant is checked
/// against the call (constraints, not the reviewed call's hash), then one use is counted and a
/// request released under the grant with this call's hash becomes `redeemed`, in one
/// transaction.
fn redeem_bounded(
    state: &AppState,
    headers: &HeaderMap,
    raw: &[u8],
    gateway: &GatewayConfig,
    body: &RedeemRequest,
) -> ApiResult<RedeemResponse> {
    let key = gateway.key.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::GatewayKeyMissing,
            "this gateway has no key configured, so it cannot present a bounded grant",
        )
    })?;
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ProofError::Missing)?;
    let now = state.now();
    let url = format!("{}/v1/grants/redeem", state.public_url);
    let request = ProofRequest {
        method: "POST",
        url: &url,
        body: raw,
        now,
    };
    let claims = verify_proof_with_key(proof, &request, key)?;
    if claims.iss != gateway.audience {
        return Err(ProofError::UnknownKey.into());
    }
    if !state
        .store
        .fresh_proof(&claims.jti, claims.keep_until(), now)?
    {
        return Err(ProofError::Replayed.into());
    }
    let presentation = Presentation {
        grant: &body.grant,
        action: &body.action,
        presenter_jkt: Some(&key.kid),
    };
    let verified = match state
        .verifier(&gateway.audience)
        .check_bounded(&presentation)
    {
        Err(countersign_protocol::VerifyError::UnknownKey(_)) => {
            state.refresh_registry()?;
            state
                .verifier(&gateway.audience)
                .check_bounded(&presentation)
        }
        checked => checked,
    }?;
    let claims = verified.claims.approval;
    let action_hash = body
        .action
        .action_hash()
        .map_err(countersign_protocol::VerifyError::Action)?;
    let redemption = BoundedRedemption {
        jti: &claims.jti,
        sub: &claims.sub,
        aud: &claims.aud,
        action_hash: action_hash.as_str(),
    };
    let txn = match state.store.redeem_bounded(&redemption, now)? {
        RedeemOutcome::Redeemed(request, _) => {
            state.metrics.redemptions_ok.fetch_add(1, Ordering::Relaxed);
            state.events_written();
            request.view.pending.id
        }
        RedeemOutcome::Revoked => return Err(countersign_protocol::VerifyError::Revoked.into()),
        RedeemOutcome::Spent => {
            return Err(ApiError::new(
                ErrorCode::BoundedSpent,
                "every use of this bounded grant is spent",
            ));
        }
        RedeemOutcome::Replayed | RedeemOutcome::NotAccepted => {
            return Err(ApiError::new(
                ErrorCode::GrantNotAccepted,
                "the broker released no call with this hash under this bounded grant (or it \
                 was redeemed already): the call must be evaluated first",
            ));
        }
    };
    Ok(RedeemResponse {
        status: "consumed".into(),
        txn,
        jti: claims.jti,
    })
}

/// `POST /v1/grants/outcome`: what became of a call whose grant this gateway redeemed. The first
/// report stands; the owner's approvers see it as an `outcome` event.
pub(super) async fn outcome(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<axum::http::StatusCode> {
    let gateway = state.gateway(&headers)?;
    let body: OutcomeReport = json_body(&headers, &body, Limits::ACTION)?;
    if body
        .detail
        .as_ref()
        .is_some_and(|d| d.len() > MAX_OUTCOME_DETAIL)
    {
        return Err(ApiError::new(
            ErrorCode::OutcomeInvalid,
            format!("the detail is over {MAX_OUTCOME_DETAIL} bytes"),
        ));
    }
    let reported = ReportedOutcome {
        outcome: body.outcome,
        detail: body.detail,
    };
    match state.store.report_outcome(
        &body.txn,
        &body.jti,
        &gateway.audience,
        &reported,
        state.now(),
    )? {
        ReportOutcome::Recorded(..) => {
            tracing::info!(txn = %body.txn, outcome = reported.outcome.as_str(), "outcome reported");
            state.events_written();
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        ReportOutcome::Refused => Err(ApiError::new(
            ErrorCode::OutcomeNotRedeemed,
            "this gateway redeemed no grant with that jti for that request, or its outcome is \
             reported already",
        )),
    }
}
