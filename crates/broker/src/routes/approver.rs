//! Approvers' endpoints: pairing, enrolment and credential removal, listing, decisions,
//! revocation, agent suspension. Every request carries a device-key proof, checked over the
//! exact bytes received (see [`crate::http`]); pairing's proof is signed by the key it registers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, FromRequest as _, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use countersign_protocol::action::Status;
use countersign_protocol::api::{
    AgentRef, BatchDecided, BatchDecision, BatchOutcome, BoundedGrantList, BoundedGrantView,
    Conflict, DEFAULT_PAGE, Decision, EnrollRequest, EventKind, GatewayKey, GatewayList, MAX_PAGE,
    PairRequest, PairResponse, RequestList, RequestView, enrollment_challenge,
};
use countersign_protocol::grant::BATCH_SIZES;
use countersign_protocol::proof::{PROOF_HEADER, ProofError, ProofRequest, verify_proof_with_key};
use countersign_protocol::registry::ApproverEntry;
use countersign_protocol::webauthn::{RelyingParty, verify_assertion};
use serde::Deserialize;

use crate::config::secret_hash;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::{
    ApproverCall, ApproverJson, BATCH_BODY, Body, IdPath, SMALL, StrictQuery, json_body,
};
use crate::pairing::normalize_code;
use crate::state::AppState;
use crate::store::{
    DecideOutcome, NewBounded, PairOutcome, StoredDecision, StoredRequest, UpdateOutcome,
};

/// `POST /v1/pair`. Everything is checked before anything is written: the client's address is
/// throttled, the proof verified (signed by the key being registered), the device key and
/// credential validated and checked against every registered one; then the code is used and the
/// approver stored in one transaction, so a refused pairing leaves the code and the registry as
/// they were.
pub(crate) async fn pair(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> ApiResult<axum::Json<PairResponse>> {
    // Served without connection info (a test's router), every caller shares one budget.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    state.pairing_limit(peer)?;
    let headers = request.headers().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Body(raw) = Body::from_request(request, &state).await?;
    let body: PairRequest = json_body(&headers, &raw, SMALL)?;
    let token = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ProofError::Missing)?;
    let url = format!("{}{path}", state.public_url);
    let now = state.now();
    let claims = verify_proof_with_key(
        token,
        &ProofRequest {
            method: "POST",
            url: &url,
            body: &raw,
            now,
        },
        &body.device_key,
    )?;
    body.device_key.validate()?;
    body.credential.validate()?;
    let entry = ApproverEntry {
        id: format!("apr_{}", countersign_protocol::hash::random_b64url::<12>()),
        // Set from the code when it is used.
        owner: "(pairing)".into(),
        device_keys: vec![body.device_key],
        credentials: vec![body.credential],
    };
    registration_conflict(&state, &entry)?;
    // The code before anything is written: a wrong guess costs the broker nothing.
    let code = secret_hash(&normalize_code(&body.code));
    if !state.store.pairing_code_valid(&code, now)? {
        return Err(code_invalid());
    }
    if !state
        .store
        .fresh_proof(&claims.jti, claims.keep_until(), now)?
    {
        return Err(ProofError::Replayed.into());
    }
    let entry = match state.store.pair(&code, &entry, now)? {
        PairOutcome::Paired(entry) => entry,
        PairOutcome::CodeInvalid => return Err(code_invalid()),
        PairOutcome::Conflict => {
            return Err(ApiError::new(
                ErrorCode::AlreadyPaired,
                "this device key or credential is already registered",
            ));
        }
    };
    state.reload_registry()?;
    tracing::info!(approver = %entry.id, owner = %entry.owner, "approver paired");
    Ok(axum::Json(PairResponse {
        approver_id: entry.id,
        owner: entry.owner,
    }))
}

fn code_invalid() -> ApiError {
    ApiError::new(
        ErrorCode::PairingCodeInvalid,
        "the pairing code is unknown, used or expired",
    )
}

/// Refuses an entry whose device key or credential is already registered (to anyone), or that
/// would not make a valid registry with the others.
fn registration_conflict(state: &AppState, entry: &ApproverEntry) -> ApiResult<()> {
    let registry = state.registry();
    for approver in &registry.document().approvers {
        if approver.id == entry.id {
            continue;
        }
        if approver
            .device_keys
            .iter()
            .any(|k| entry.device_keys.iter().any(|n| n.kid == k.kid))
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyPaired,
                "this device key is already paired",
            ));
        }
        if approver
            .credentials
            .iter()
            .any(|c| entry.credentials.iter().any(|n| n.id == c.id))
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyEnrolled,
                "this credential is already registered",
            ));
        }
    }
    registry.admits(entry)?;
    Ok(())
}

/// `POST /v1/approver/credentials`: a further authenticator, vouched for by an enrolled one.
pub(crate) async fn enroll(
    State(state): State<Arc<AppState>>,
    call: ApproverJson<EnrollRequest>,
) -> ApiResult<axum::Json<ApproverEntry>> {
    let (proof, request) = (call.proof, call.body);
    request.credential.validate()?;
    let registry = state.registry();
    let mut entry = registry
        .approver(&proof.approver_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("approver not registered"))?;
    if entry
        .credentials
        .iter()
        .any(|c| c.id == request.credential.id)
    {
        return Err(ApiError::new(
            ErrorCode::AlreadyEnrolled,
            "this credential is already enrolled",
        ));
    }
    entry.credentials.push(request.credential.clone());
    registration_conflict(&state, &entry)?;
    // An enrolled authenticator must vouch for the new one.
    let challenge = enrollment_challenge(&proof.approver_id, &request.credential)?;
    let asserted = verify_assertion(
        &request.assertion,
        &challenge,
        &RelyingParty::countersign(),
        |id| registry.credential_key(&proof.approver_id, id),
    )
    .map_err(countersign_protocol::VerifyError::from)?;
    let previous = countersign_protocol::replay::SignCounterStore::advance(
        state.store.as_ref(),
        &asserted.credential_id,
        asserted.sign_count,
    )
    .map_err(|e| ApiError::internal("sign counter", &e))?;
    countersign_protocol::verify::counter_advances(previous, asserted.sign_count)?;
    save(&state, &entry)?;
    Ok(axum::Json(entry))
}

/// `DELETE /v1/approver/credentials/{id}`: the owner removed an authenticator; it stops
/// vouching for anything at once. The last one cannot go (remove the approver instead).
pub(crate) async fn remove_credential(
    State(state): State<Arc<AppState>>,
    IdPath(credential): IdPath,
    call: ApproverCall,
) -> ApiResult<axum::Json<ApproverEntry>> {
    let registry = state.registry();
    let mut entry = registry
        .approver(&call.proof.approver_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("approver not registered"))?;
    if !entry.credentials.iter().any(|c| c.id == credential) {
        return Err(ApiError::not_found("no such credential for this approver"));
    }
    if entry.credentials.len() == 1 {
        return Err(ApiError::new(
            ErrorCode::LastCredential,
            "this is the approver's last credential",
        ));
    }
    entry.credentials.retain(|c| c.id != credential);
    save(&state, &entry)?;
    tracing::info!(approver = %entry.id, %credential, "credential removed by its owner");
    Ok(axum::Json(entry))
}

fn save(state: &AppState, entry: &ApproverEntry) -> ApiResult<()> {
    match state.store.update_approver(entry, state.now())? {
        UpdateOutcome::Updated => state.reload_registry(),
        UpdateOutcome::Conflict => Err(ApiError::new(
            ErrorCode::AlreadyEnrolled,
            "this credential is already registered",
        )),
        UpdateOutcome::NotFound => Err(ApiError::not_found("approver not registered")),
    }
}

/// `?status=&before=&limit=` of the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: Option<Status>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/approver/requests`: the owner's requests, newest first, a page at a time.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    StrictQuery(query): StrictQuery<ListQuery>,
    call: ApproverCall,
) -> ApiResult<axum::Json<RequestList>> {
    let owner = call.proof.owner;
    // The event id first: a stream resumed after it may repeat, but never miss, a change.
    let last_event_id = state.store.last_event_id(&owner)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = state
        .store
        .list(&owner, query.status, query.before, limit)?;
    Ok(axum::Json(RequestList {
        requests: page.requests,
        last_event_id,
        next: page.next.map(|n| n.to_string()),
    }))
}

/// `GET /v1/approver/requests/{id}`: one of the owner's requests.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    IdPath(id): IdPath,
    call: ApproverCall,
) -> ApiResult<axum::Json<RequestView>> {
    state
        .store
        .request(&id)?
        .filter(|r| r.owner == call.proof.owner)
        .map(|r| axum::Json(r.view))
        .ok_or_else(|| ApiError::not_found("no such request for this owner"))
}

pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    IdPath(id): IdPath,
    call: ApproverJson<Decision>,
) -> ApiResult<Response> {
    let (proof, decision) = (call.proof, call.body);
    let key = idempotency_key(&call.headers)?;
    if let Some(answer) = answered(&state, &proof.approver_id, &key)? {
        return Ok(answer);
    }
    let current = state
        .store
        .request(&id)?
        .filter(|r| r.owner == proof.owner)
        .ok_or_else(|| ApiError::not_found("no such request for this owner"))?;
    let stored = match &decision {
        Decision::Approve { grant } if countersign_protocol::bounded::is_bounded(grant) => {
            accept_bounded(&state, &current, &proof.approver_id, grant)?
        }
        Decision::Approve { grant } => {
            let verified = state
                .verifier(&current.view.pending.audience)
                .accept_issued(grant, &current.view.pending.request())?;
            let claims = &verified.claims.approval;
            if claims.txn != id || claims.iss != proof.approver_id {
                return Err(ApiError::new(
                    ErrorCode::GrantMismatch,
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
                return Err(ApiError::new(
                    ErrorCode::ReasonInvalid,
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
            DecideOutcome::Recorded { request, .. } => {
                state.events_written();
                after_decision(&state, &decision, &request.agent, &proof.owner, now)?;
                (StatusCode::OK, request.view)
            }
        };
    let body = if status == StatusCode::OK {
        serde_json::to_string(&view)
    } else {
        serde_json::to_string(&Conflict {
            code: ErrorCode::AlreadyDecided.as_str().into(),
            message: format!("the request is already {}", view.status.as_str()),
            request: view,
        })
    }
    .map_err(|e| ApiError::internal("encoding", &e))?;
    state
        .store
        .save_idempotent(&proof.approver_id, &key, status.as_u16(), &body, now)?;
    Ok(json_response(status, body))
}

/// A bounded grant made from the review of `current`: every check of the grant with the
/// reviewed call (its lifetime within this broker's maximum: refused, never shortened), made by
/// this approver for this request, and bound to the key of the request's gateway.
fn accept_bounded(
    state: &AppState,
    current: &StoredRequest,
    approver: &str,
    grant: &str,
) -> ApiResult<StoredDecision> {
    let pending = &current.view.pending;
    let jkt = state
        .credentials
        .gateway_of(&pending.audience)
        .and_then(|g| g.key.as_ref())
        .map(|k| k.kid.clone())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::GatewayKeyMissing,
                format!(
                    "the gateway {} has no key configured: approve this call once instead",
                    pending.audience
                ),
            )
        })?;
    let verified = state
        .verifier(&pending.audience)
        .accept_bounded(grant, &pending.request())?;
    let claims = verified.claims.approval;
    if claims.txn != pending.id || claims.iss != approver {
        return Err(ApiError::new(
            ErrorCode::GrantMismatch,
            "the grant is for another request or approver",
        ));
    }
    if claims.cnf.jkt != jkt {
        return Err(countersign_protocol::VerifyError::ConfirmationMismatch.into());
    }
    let encoded = serde_json::to_string(&claims).map_err(|e| ApiError::internal("encoding", &e))?;
    Ok(StoredDecision::ApproveBounded(Box::new(NewBounded {
        jti: claims.jti,
        owner: current.owner.clone(),
        agent: current.agent.clone(),
        audience: claims.aud,
        tool: pending.resource.id.clone(),
        txn: claims.txn,
        approver: claims.iss,
        token: grant.to_owned(),
        claims: encoded,
        uses: claims.constraints.uses,
        issued_at: claims.iat,
        exp: claims.exp,
    })))
}

/// `GET /v1/approver/gateways`: the gateways and the keys bounded grants for them are bound to.
pub(crate) async fn gateways(
    State(state): State<Arc<AppState>>,
    _call: ApproverCall,
) -> ApiResult<axum::Json<GatewayList>> {
    let mut gateways: Vec<GatewayKey> = state
        .config
        .gateways
        .iter()
        .map(|g| GatewayKey {
            audience: g.audience.clone(),
            jkt: g.key.as_ref().map(|k| k.kid.clone()),
        })
        .collect();
    gateways.sort_by(|a, b| a.audience.cmp(&b.audience));
    Ok(axum::Json(GatewayList { gateways }))
}

/// `GET /v1/approver/bounded`: the owner's bounded grants that can still cover a call.
pub(crate) async fn bounded(
    State(state): State<Arc<AppState>>,
    call: ApproverCall,
) -> ApiResult<axum::Json<BoundedGrantList>> {
    let grants = state
        .store
        .bounded_grants(&call.proof.owner, None, state.now())?
        .into_iter()
        .map(|g| g.view)
        .collect();
    Ok(axum::Json(BoundedGrantList { grants }))
}

/// `POST /v1/approver/bounded/{jti}/revoke`: the owner withdraws a bounded grant. It covers no
/// call from the moment this answers, and the calls it released that have not run are revoked
/// with it.
pub(crate) async fn revoke_bounded(
    State(state): State<Arc<AppState>>,
    IdPath(jti): IdPath,
    call: ApproverCall,
) -> ApiResult<axum::Json<BoundedGrantView>> {
    match state
        .store
        .revoke_bounded(&jti, &call.proof.owner, state.now())?
    {
        Some(revoked) => {
            state.events_written();
            tracing::info!(%jti, "bounded grant revoked by its owner");
            Ok(axum::Json(revoked.grant.view))
        }
        None => Err(ApiError::new(
            ErrorCode::NotRevocable,
            "the owner has no such bounded grant, or it is revoked already",
        )),
    }
}

/// `POST /v1/approver/decisions`: the approvals of one batch ceremony. Every grant is checked,
/// and that together they are exactly the batch the one assertion covers, before any is
/// recorded; the authenticator's counter moves once. Each is then recorded as a single
/// decision would be: the first decision of a request wins, so one decided meanwhile comes
/// back as it stands, with `recorded: false`.
pub(crate) async fn decide_batch(
    State(state): State<Arc<AppState>>,
    call: ApproverJson<BatchDecision, BATCH_BODY>,
) -> ApiResult<Response> {
    let (proof, batch) = (call.proof, call.body);
    let key = idempotency_key(&call.headers)?;
    if let Some(answer) = answered(&state, &proof.approver_id, &key)? {
        return Ok(answer);
    }
    let approvals = &batch.approvals;
    if !BATCH_SIZES.contains(&approvals.len()) {
        return Err(batch_invalid(format!(
            "a batch holds {} to {} approvals, not {}",
            BATCH_SIZES.start(),
            BATCH_SIZES.end(),
            approvals.len()
        )));
    }
    let mut requests = Vec::with_capacity(approvals.len());
    for approval in approvals {
        let request = state
            .store
            .request(&approval.id)?
            .filter(|r| r.owner == proof.owner)
            .ok_or_else(|| {
                ApiError::not_found(format!("no request {} for this owner", approval.id))
            })?;
        requests.push(request);
    }
    // One verifier judges the whole ceremony: it is the audience's.
    let audience = requests[0].view.pending.audience.clone();
    if requests.iter().any(|r| r.view.pending.audience != audience) {
        return Err(batch_invalid(
            "the requests of a batch are for one audience (gateway)",
        ));
    }
    let actions: Vec<_> = requests.iter().map(|r| r.view.pending.request()).collect();
    let grants: Vec<_> = approvals
        .iter()
        .zip(&actions)
        .map(|(approval, action)| (approval.grant.as_str(), action))
        .collect();
    let verified = state.verifier(&audience).accept_batch(&grants)?;
    if approvals.iter().zip(&verified).any(|(approval, v)| {
        v.claims.approval.txn != approval.id || v.claims.approval.iss != proof.approver_id
    }) {
        return Err(ApiError::new(
            ErrorCode::GrantMismatch,
            "a grant is for another request or approver",
        ));
    }
    let now = state.now();
    let mut decided = Vec::with_capacity(approvals.len());
    for ((approval, verified), held) in approvals.iter().zip(&verified).zip(requests) {
        let claims = &verified.claims.approval;
        let stored = StoredDecision::Approve {
            grant: approval.grant.clone(),
            jti: claims.jti.clone(),
            exp: claims.exp,
        };
        let outcome = match state.store.decide(
            &approval.id,
            &proof.owner,
            &proof.approver_id,
            &stored,
            now,
        )? {
            DecideOutcome::Recorded { request, .. } => {
                state.events_written();
                state
                    .metrics
                    .decisions_approve
                    .fetch_add(1, Ordering::Relaxed);
                BatchOutcome {
                    recorded: true,
                    request: request.view,
                }
            }
            DecideOutcome::AlreadyFinal(current) => BatchOutcome {
                recorded: false,
                request: current.view,
            },
            // Gone since it was read (retention): as it was then, not recorded.
            DecideOutcome::NotFound => BatchOutcome {
                recorded: false,
                request: held.view,
            },
        };
        decided.push(outcome);
    }
    let body = serde_json::to_string(&BatchDecided { decided })
        .map_err(|e| ApiError::internal("encoding", &e))?;
    state.store.save_idempotent(
        &proof.approver_id,
        &key,
        StatusCode::OK.as_u16(),
        &body,
        now,
    )?;
    Ok(json_response(StatusCode::OK, body))
}

fn batch_invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BatchInvalid, message)
}

/// A decision's `Idempotency-Key`, required.
fn idempotency_key(headers: &axum::http::HeaderMap) -> ApiResult<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdempotencyKeyMissing,
                "send an Idempotency-Key header (1 to 128 characters)",
            )
        })
}

/// The answer already given under `key`, given again.
fn answered(state: &AppState, approver: &str, key: &str) -> ApiResult<Option<Response>> {
    Ok(state
        .store
        .idempotent(approver, key)?
        .map(|(status, body)| {
            json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body)
        }))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
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
                state
                    .store
                    .agent_event(owner, agent, EventKind::AgentQuarantined, &detail, now)?;
                state.events_written();
            }
            if *suspend_agent {
                state.store.set_suspended(agent, true)?;
                state.store.agent_event(
                    owner,
                    agent,
                    EventKind::AgentSuspended,
                    "suspended by its owner",
                    now,
                )?;
                state.events_written();
            }
        }
    }
    Ok(())
}

pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    IdPath(id): IdPath,
    call: ApproverCall,
) -> ApiResult<axum::Json<RequestView>> {
    let owner = call.proof.owner;
    match crate::store::Requests::revoke(state.store.as_ref(), &id, &owner, state.now())? {
        Some((request, _)) => {
            state.events_written();
            Ok(axum::Json(request.view))
        }
        None => Err(ApiError::new(
            ErrorCode::NotRevocable,
            "only an approved, unredeemed grant can be revoked",
        )),
    }
}

pub(crate) async fn suspend(
    State(state): State<Arc<AppState>>,
    call: ApproverJson<AgentRef>,
) -> ApiResult<StatusCode> {
    set_agent(&state, call, true)
}

pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    call: ApproverJson<AgentRef>,
) -> ApiResult<StatusCode> {
    set_agent(&state, call, false)
}

fn set_agent(
    state: &AppState,
    call: ApproverJson<AgentRef>,
    suspend: bool,
) -> ApiResult<StatusCode> {
    let (proof, AgentRef { agent }) = (call.proof, call.body);
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
    state
        .store
        .agent_event(&proof.owner, &agent, kind, detail, now)?;
    state.events_written();
    Ok(StatusCode::NO_CONTENT)
}
