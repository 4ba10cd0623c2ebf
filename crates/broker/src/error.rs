//! Typed HTTP errors: every refusal is `{code, message}` with the right status, and internal
//! failures are logged, never leaked.
//!
//! The broker's own codes are [`ErrorCode`]; refusals of a grant, a request proof or a document
//! carry the protocol crate's codes ([`VerifyError::CODES`], [`ProofError::CODES`],
//! [`ParseError::CODES`]). [`status_of`] gives the HTTP status of every code, and the OpenAPI
//! document lists, per endpoint, the codes it can return under their statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use countersign_protocol::api::ErrorBody;
use countersign_protocol::proof::ProofError;
use countersign_protocol::{ParseError, VerifyError};

use crate::store::StoreError;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident, $doc:literal;)*) => {
        /// The broker's own refusal codes, each with its HTTP status.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status it is sent with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// What it means, for the OpenAPI document.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                }
            }
        }
    };
}

error_codes! {
    Unauthenticated = "unauthenticated", UNAUTHORIZED, "No credential, or one the broker does not know.";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body is not application/json.";
    BodyTooLarge = "too_large", PAYLOAD_TOO_LARGE, "The body is over the broker's limit (512 KiB).";
    InvalidQuery = "invalid_query", BAD_REQUEST, "The query string has an unknown parameter or a malformed value.";
    InvalidPath = "invalid_path", BAD_REQUEST, "A path parameter is malformed.";
    NotFound = "not_found", NOT_FOUND, "No such endpoint, or nothing of that id for this caller.";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "The endpoint does not take this method.";
    ActorMismatch = "actor_mismatch", FORBIDDEN, "actor.id is not the authenticated agent.";
    SubjectMismatch = "subject_mismatch", FORBIDDEN, "subject is not the agent's configured owner.";
    AgentQuarantined = "agent_quarantined", FORBIDDEN, "The agent is quarantined after repeated denials.";
    AgentSuspended = "agent_suspended", FORBIDDEN, "The agent is suspended by its owner.";
    RateLimited = "rate_limited", TOO_MANY_REQUESTS, "Over a rate limit; Retry-After says when to try again.";
    PendingCapReached = "pending_cap_reached", TOO_MANY_REQUESTS, "The owner already has the most pending requests the broker holds for one owner.";
    NoGateway = "no_gateway", UNPROCESSABLE_ENTITY, "No gateway is configured to run this tool.";
    GrantNotAccepted = "grant_not_accepted", FORBIDDEN, "The broker never accepted this grant for an approved request of this owner and gateway.";
    OutcomeNotRedeemed = "outcome_not_redeemed", CONFLICT, "Only the gateway that redeemed a grant reports its outcome, once, for that grant's request.";
    OutcomeInvalid = "outcome_invalid", BAD_REQUEST, "An outcome's detail is at most 1024 bytes.";
    BoundedSpent = "bounded_spent", CONFLICT, "Every use of this bounded grant is spent.";
    GatewayKeyMissing = "gateway_key_missing", UNPROCESSABLE_ENTITY, "The gateway has no key configured, so no bounded grant can be bound to it or presented by it.";
    GrantMismatch = "grant_mismatch", FORBIDDEN, "The grant is for another request or approver.";
    IdempotencyKeyMissing = "idempotency_key_missing", BAD_REQUEST, "A decision needs an Idempotency-Key header (1 to 128 characters).";
    ReasonInvalid = "reason_invalid", BAD_REQUEST, "A denial needs a reason of 1 to 2000 bytes.";
    BatchInvalid = "batch_invalid", BAD_REQUEST, "A batch of decisions holds 2 to 50 approvals, of requests for one audience.";
    AlreadyDecided = "already_decided", CONFLICT, "Another decision came first; the body carries the request as it stands.";
    NotRevocable = "not_revocable", CONFLICT, "Only an approved, unredeemed grant can be revoked.";
    PairingCodeInvalid = "pairing_code_invalid", FORBIDDEN, "The pairing code is unknown, used or expired.";
    AlreadyPaired = "already_paired", CONFLICT, "This device key is already paired.";
    AlreadyEnrolled = "already_enrolled", CONFLICT, "This credential is already registered (to this or another approver).";
    LastCredential = "last_credential", CONFLICT, "An approver's last credential cannot be removed; remove the approver instead.";
    Internal = "internal", INTERNAL_SERVER_ERROR, "The broker failed; its log says why.";
}

/// The HTTP status of any code the broker sends: its own, or a protocol refusal's.
pub fn status_of(code: &str) -> StatusCode {
    if let Some(own) = ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
        return own.status();
    }
    if ProofError::CODES.contains(&code) {
        return StatusCode::UNAUTHORIZED;
    }
    match code {
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "replayed" => StatusCode::CONFLICT,
        "revoked" => StatusCode::GONE,
        "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "malformed" | "malformed_claims" | "malformed_action" => StatusCode::BAD_REQUEST,
        c if ParseError::CODES.contains(&c) => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    }
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A refusal with one of the broker's own codes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code: code.as_str(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// A refusal with a protocol code (see [`status_of`]).
    fn protocol(code: &'static str, message: String) -> Self {
        Self {
            status: status_of(code),
            code,
            message,
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(ErrorCode::Internal, "internal error; see the broker log")
    }

    /// Sets the `Retry-After` header, in seconds.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
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
        match e {
            // Nothing was decided: the client tries again (here, or at another instance).
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "the database is unavailable");
                Self::protocol(
                    "store_unavailable",
                    "the broker's database is unavailable; try again shortly".into(),
                )
                .retry_after(1)
            }
            e => Self::internal("storage failed", &e),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::protocol(e.code(), e.to_string())
    }
}

impl From<ProofError> for ApiError {
    fn from(e: ProofError) -> Self {
        Self::protocol(e.code(), e.to_string())
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        Self::protocol(e.code(), e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_protocol_statuses_are_what_refusals_send() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            // A code shared with the protocol means the same and has the same status.
            assert_eq!(status_of(code.as_str()), code.status());
        }
        assert_eq!(status_of("replayed"), StatusCode::CONFLICT);
        assert_eq!(status_of("revoked"), StatusCode::GONE);
        assert_eq!(status_of("too_large"), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status_of("proof_stale"), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of("wrong_audience"), StatusCode::FORBIDDEN);
        assert_eq!(status_of("schema"), StatusCode::BAD_REQUEST);
    }
}
