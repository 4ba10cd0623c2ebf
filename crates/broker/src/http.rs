//! Request parsing every handler shares, each refusal typed: strict JSON bodies, query strings
//! and path parameters, and the approvers' proof-checked calls, whose proof is always verified
//! over the exact bytes that are then parsed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use countersign_protocol::json::{self, Limits};
use countersign_protocol::proof::VerifiedProof;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY: usize = 512 * 1024;

/// The largest batch of decisions: fifty grants, each carrying the batch's list of hashes.
pub const BATCH_BODY: usize = MAX_BODY;

/// Limits of the small bodies approvers send (decisions, pairing, enrolment).
pub const SMALL: Limits = Limits {
    max_bytes: 64 * 1024,
    max_depth: 8,
};

/// Parses a JSON body strictly: content type, then [`countersign_protocol::json`].
pub fn json_body<T: DeserializeOwned + serde::Serialize>(
    headers: &HeaderMap,
    body: &[u8],
    limits: Limits,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json",
        ));
    }
    Ok(json::from_slice(body, limits)?)
}

/// The body, whole, or a typed 413 when it is over [`MAX_BODY`].
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BodyTooLarge,
                    format!("request body refused: {e}"),
                )
            })
    }
}

/// A query string parsed into `T`; a malformed value or (with `deny_unknown_fields`) an unknown
/// parameter is a typed 400 `invalid_query`.
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| StrictQuery(q))
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// The `{id}` path parameter; a malformed one is a typed 400 `invalid_path`.
#[derive(Debug)]
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidPath, e.body_text()))?;
        if id.is_empty() || id.len() > 256 {
            return Err(ApiError::new(
                ErrorCode::InvalidPath,
                "an id is 1 to 256 bytes",
            ));
        }
        Ok(IdPath(id))
    }
}

/// The path and query of a request, as its proof's `htu` names it (after the broker's URL).
fn path_of(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned())
}

/// Reads the whole body and checks the approver's proof over the method, the URL and exactly
/// those bytes (fresh and unreplayed).
async fn proved(
    req: Request,
    state: &Arc<AppState>,
) -> Result<(VerifiedProof, HeaderMap, Bytes), ApiError> {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let path = path_of(req.uri());
    let Body(bytes) = Body::from_request(req, state).await?;
    let proof = state.approver(&headers, method.as_str(), &path, &bytes)?;
    Ok((proof, headers, bytes))
}

/// An approver's call without a JSON body (a GET, the stream, a revocation): the device-key
/// proof, checked (fresh and unreplayed) over the method, the URL and the bytes received.
#[derive(Debug)]
pub struct ApproverCall {
    pub proof: VerifiedProof,
    pub headers: HeaderMap,
}

impl FromRequest<Arc<AppState>> for ApproverCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (proof, headers, _) = proved(req, state).await?;
        Ok(Self { proof, headers })
    }
}

/// An approver's call with a JSON body: the proof is checked over the exact bytes received,
/// then those same bytes are parsed strictly into `T`. No handler can parse a body its proof
/// did not cover.
#[derive(Debug)]
pub struct ApproverJson<T, const MAX_BYTES: usize = { SMALL.max_bytes }> {
    pub proof: VerifiedProof,
    pub headers: HeaderMap,
    pub body: T,
}

impl<T: DeserializeOwned + serde::Serialize, const MAX_BYTES: usize> FromRequest<Arc<AppState>>
    for ApproverJson<T, MAX_BYTES>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (proof, headers, bytes) = proved(req, state).await?;
        let limits = Limits {
            max_bytes: MAX_BYTES,
            ..SMALL
        };
        let body = json_body(&headers, &bytes, limits)?;
        Ok(Self {
            proof,
            headers,
            body,
        })
    }
}
