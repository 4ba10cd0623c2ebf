//! Typed HTTP errors: every refusal is `{code, message}` with the right status, and internal
//! failures are logged, never leaked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use countersign_protocol::api::ErrorBody;
use countersign_protocol::proof::ProofError;
use countersign_protocol::{ParseError, VerifyError};

use crate::store::StoreError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the broker log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal("storage failed", &e)
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        let status = match e {
            ParseError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<ProofError> for ApiError {
    fn from(e: ProofError) -> Self {
        Self::unauthorized(e.code(), e.to_string())
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        let status = match e {
            VerifyError::Replayed => StatusCode::CONFLICT,
            VerifyError::Revoked => StatusCode::GONE,
            VerifyError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            VerifyError::Malformed(_) | VerifyError::Claims(_) | VerifyError::Action(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::FORBIDDEN,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
