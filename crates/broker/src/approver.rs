//! Approver endpoints: pairing, enrolment, listing, decisions, revocation, agent suspension.
//! Every request but pairing carries a device-key proof (see `AppState::approver`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use countersign_protocol::action::Status;
use countersign_protocol::api::{
    Decision, EnrollRequest, EventKind, PairRequest, PairResponse, RequestList, RequestView,
    enrollment_challenge,
};
use countersign_protocol::json::Limits;
use countersign_protocol::proof::{ProofRequest, verify_proof_with_key};
use countersign_protocol::registry::ApproverEntry;
use countersign_protocol::webauthn::{RelyingParty, verify_assertion};
use serde::{Deserialize, Serialize};

use crate::api::{body_bytes, json_body, random_id};
use crate::config::secret_hash;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{DecideOutcome, StoredDecision};

const SMALL: Limits = Limits {
    max_bytes: 64 * 1024,
    max_depth: 8,
};

fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned())
}

/// Issues a one-time pairing code for `owner`'s next approver, valid for `ttl_secs`: 10
/// characters from an alphabet without look-alikes (about 50 bits), stored only as a hash.
pub fn issue_pairing_code(
    store: &dyn crate::store::Store,
    owner: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<String, crate::store::StoreError> {
    use rand_core::RngCore as _;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 10];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let code = format!("{}-{}", &chars[..5], &chars[5..]);
    store.add_pairing_code(&secret_hash(&normalize_code(&code)), owner, now + ttl_secs)?;
    Ok(code)
}

/// Normalises a pairing code as typed by a person: case and separators do not matter.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub(crate) async fn pair(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<PairResponse>> {
    let raw = body_bytes(&body)?.clone();
    let request: PairRequest = json_body(&headers, &body, SMALL)?;
    // Possession of the device key: the proof is signed by the key being registered.
    let token = headers
        .get(countersign_protocol::proof::PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(countersign_protocol::proof::ProofError::Missing)?;
    let url = format!("{}{}", state.public_url, path_of(&uri));
    let proof_request = ProofRequest {
        method: "POST",
        url: &url,
        body: &raw,
        now: state.now(),
    };
    let claims = verify_proof_with_key(token, &proof_request, &request.device_key)?;
    if !state
        .store
        .fresh_proof(&claims.jti, claims.iat + 120, state.now())?
    {
        return Err(countersign_protocol::proof::ProofError::Replayed.into());
    }
    request.credential.public_key.to_key()?;
    let registry = state.registry();
    if registry.document().approvers.iter().any(|a| {
        a.device_keys
            .iter()
            .any(|k| k.kid == request.device_key.kid)
    }) {
        return Err(ApiError::conflict(
            "already_paired",
            "this device key is already paired",
        ));
    }
    let owner = state
        .store
        .use_pairing_code(&secret_hash(&normalize_code(&request.code)), state.now())?
        .ok_or_else(|| {
            ApiError::forbidden(
                "pairing_code_invalid",
                "the pairing code is unknown, used or expired",
            )
        })?;
    let entry = ApproverEntry {
        id: format!("apr_{}", random_id()),
        owner: owner.clone(),
        device_keys: vec![request.device_key],
        credentials: vec![request.credential],
    };
    state.store.save_approver(&entry, state.now())?;
    state.reload_registry()?;
    tracing::info!(approver = %entry.id, %owner, "approver paired");
    Ok(axum::Json(PairResponse {
        approver_id: entry.id,
        owner,
    }))
}

pub(crate) async fn enroll(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<ApproverEntry>> {
    let raw = body_bytes(&body)?;
    let proof = state.approver(&headers, "POST", &path_of(&uri), raw)?;
    let request: EnrollRequest = json_body(&headers, &body, SMALL)?;
    request.credential.public_key.to_key()?;
    let registry = state.registry();
    let mut entry = registry
        .approver(&proof.approver_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("approver not registered"))?;
    if registry
        .document()
        .approvers
        .iter()
        .any(|a| a.credentials.iter().any(|c| c.id == request.credential.id))
    {
        return Err(ApiError::conflict(
            "already_enrolled",
            "this credential is already enrolled",
        ));
    }
    // An enrolled authenticator must vouch for the new one.
    let challenge = enrollment_challenge(&proof.approver_id, &request.credential)?;
    let asserted = verify_assertion(
        &request.assertion,
        &challenge,
        &RelyingParty::countersign(),
        |id| registry.credential_key(&proof.approver_id, id),
    )
    .map_err(|e| ApiError::forbidden(e.code(), e.to_string()))?;
    let previous = state
        .store
        .advance(&asserted.credential_id, asserted.sign_count)
        .map_err(|e| ApiError::internal("sign counter", &e))?;
    if (previous != 0 || asserted.sign_count != 0) && asserted.sign_count <= previous {
        return Err(ApiError::forbidden(
            "assertion_counter_regressed",
            "sign counter did not advance",
        ));
    }
    entry.credentials.push(request.credential);
    state.store.save_approver(&entry, state.now())?;
    state.reload_registry()?;
    Ok(axum::Json(entry))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: Option<Status>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<axum::Json<RequestList>> {
    let proof = state.approver(&headers, "GET", &path_of(&uri), b"")?;
    // The event id first: a stream resumed after it may repeat, but never miss, a change.
    let last_event_id = state.store.last_event_id(&proof.owner)?;
    let requests = state.store.list(&proof.owner, query.status)?;
    Ok(axum::Json(RequestList {
        requests,
        last_event_id,
    }))
}

pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let raw = body_bytes(&body)?;
    let proof = state.approver(&headers, "POST", &path_of(&uri), raw)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_missing",
                "send an Idempotency-Key header (1 to 128 characters)",
            )
        })?
        .to_owned();
    if let Some((status, body)) = state.store.idempotent(&proof.approver_id, &key)? {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return Ok((
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response());
    }
    let decision: Decision = json_body(&headers, &body, SMALL)?;
    let current = state
        .store
        .request(&id)?
        .filter(|r| r.owner == proof.owner)
        .ok_or_else(|| ApiError::not_found("no such request for this owner"))?;
    let stored = match &decision {
        Decision::Approve { grant } => {
            let verified = state
                .verifier(&current.view.pending.audience)
                .accept_issued(grant, &current.view.pending.request())?;
            let claims = &verified.claims.approval;
            if claims.txn != id || claims.iss != proof.approver_id {
                return Err(ApiError::forbidden(
                    "grant_mismatch",
                    "the grant is for another request or approver",
                ));
            }
            StoredDecision::Approve {
                grant: grant.clone(),
                jti: claims.jti.clone(),
                exp: claims.exp,
            }
        }
        Decision::Deny { reason, .. } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.len() > 2000 {
                return Err(ApiError::bad_request(
                    "reason_invalid",
                    "a denial needs a reason of 1 to 2000 bytes",
                ));
            }
            StoredDecision::Deny {
                reason: reason.to_owned(),
            }
        }
    };
    let now = state.now();
    let (status, view) =
        match state
            .store
            .decide(&id, &proof.owner, &proof.approver_id, &stored, now)?
        {
            DecideOutcome::NotFound => {
                return Err(ApiError::not_found("no such request for this owner"));
            }
            DecideOutcome::AlreadyFinal(current) => (StatusCode::CONFLICT, current.view),
            DecideOutcome::Recorded { request, event } => {
                state.publish(&proof.owner, *event);
                after_decision(&state, &decision, &request.agent, &proof.owner, now)?;
                (StatusCode::OK, request.view)
            }
        };
    let body = if status == StatusCode::OK {
        serde_json::to_string(&view)
    } else {
        serde_json::to_string(&Conflict {
            code: "already_decided".into(),
            message: format!("the request is already {:?}", view.status).to_lowercase(),
            request: view,
        })
    }
    .map_err(|e| ApiError::internal("encoding", &e))?;
    state
        .store
        .save_idempotent(&proof.approver_id, &key, status.as_u16(), &body, now)?;
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A 409 for a decision that came second: the error fields plus the request as it stands.
#[derive(Debug, Serialize)]
struct Conflict {
    code: String,
    message: String,
    request: RequestView,
}

fn after_decision(
    state: &AppState,
    decision: &Decision,
    agent: &str,
    owner: &str,
    now: i64,
) -> ApiResult<()> {
    match decision {
        Decision::Approve { .. } => {
            state
                .metrics
                .decisions_approve
                .fetch_add(1, Ordering::Relaxed);
        }
        Decision::Deny { suspend_agent, .. } => {
            state.metrics.decisions_deny.fetch_add(1, Ordering::Relaxed);
            let q = state.config.quarantine;
            if state
                .store
                .record_denial(agent, now, q.window_secs, q.denials)?
            {
                let detail = format!("{} denials within {} s", q.denials, q.window_secs);
                let event = state.store.agent_event(
                    owner,
                    agent,
                    EventKind::AgentQuarantined,
                    &detail,
                    now,
                )?;
                state.publish(owner, event);
            }
            if *suspend_agent {
                state.store.set_suspended(agent, true)?;
                let event = state.store.agent_event(
                    owner,
                    agent,
                    EventKind::AgentSuspended,
                    "suspended by its owner",
                    now,
                )?;
                state.publish(owner, event);
            }
        }
    }
    Ok(())
}

pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<RequestView>> {
    let raw = body_bytes(&body)?;
    let proof = state.approver(&headers, "POST", &path_of(&uri), raw)?;
    match crate::store::Store::revoke(state.store.as_ref(), &id, &proof.owner, state.now())? {
        Some((request, event)) => {
            state.publish(&proof.owner, event);
            Ok(axum::Json(request.view))
        }
        None => Err(ApiError::conflict(
            "not_revocable",
            "only an approved, unredeemed grant can be revoked",
        )),
    }
}

/// `{agent}` for suspend and resume.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    pub agent: String,
}

pub(crate) async fn suspend(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    set_agent(&state, &uri, &headers, &body, true)
}

pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    set_agent(&state, &uri, &headers, &body, false)
}

fn set_agent(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
    suspend: bool,
) -> ApiResult<StatusCode> {
    let raw = body_bytes(body)?;
    let proof = state.approver(headers, "POST", &path_of(uri), raw)?;
    let AgentRef { agent } = json_body(headers, body, SMALL)?;
    if state.credentials.owner_of(&agent) != Some(proof.owner.as_str()) {
        return Err(ApiError::not_found("no such agent for this owner"));
    }
    let now = state.now();
    let (kind, detail) = if suspend {
        state.store.set_suspended(&agent, true)?;
        (EventKind::AgentSuspended, "suspended by its owner")
    } else {
        state.store.release_agent(&agent)?;
        (EventKind::AgentResumed, "released by its owner")
    };
    let event = state
        .store
        .agent_event(&proof.owner, &agent, kind, detail, now)?;
    state.publish(&proof.owner, event);
    Ok(StatusCode::NO_CONTENT)
}
