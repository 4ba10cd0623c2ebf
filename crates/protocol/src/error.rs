//! Typed errors. Every failed check has its own variant and a stable machine-readable code, so a
//! broker or gateway can answer `{code, message}` without parsing strings.

/// Why a document (pending action, grant payload, registry, …) was refused before any
/// cryptography ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("document is {actual} bytes, over the limit of {limit}")]
    TooLarge { limit: usize, actual: usize },
    #[error("document nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("object has the key {key:?} twice")]
    DuplicateKey { key: String },
    #[error(
        "number {number} is outside the range every JSON implementation reads exactly \
         (±2^53-1); send it as a string"
    )]
    InexactNumber { number: String },
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("does not match the schema: {0}")]
    Schema(String),
    #[error("field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("not in canonical form: {0}")]
    NotCanonical(String),
}

impl ParseError {
    /// Every code [`Self::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "too_large",
        "too_deep",
        "duplicate_key",
        "inexact_number",
        "malformed_json",
        "schema",
        "invalid_field",
        "not_canonical",
    ];

    /// Stable code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooDeep { .. } => "too_deep",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::InexactNumber { .. } => "inexact_number",
            Self::Json(_) => "malformed_json",
            Self::Schema(_) => "schema",
            Self::InvalidField { .. } => "invalid_field",
            Self::NotCanonical(_) => "not_canonical",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// Why a grant could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error("the pending action's action_hash does not match its contents")]
    ActionHashMismatch,
    #[error("the pending action acts for someone other than the approver's owner")]
    SubjectNotOwner,
    #[error("grant lifetime of {requested} s is over the cap of {cap} s")]
    LifetimeTooLong { requested: i64, cap: i64 },
    #[error("the WebAuthn assertion was made for other claims")]
    AssertionForOtherClaims,
    #[error("the pending action is malformed: {0}")]
    Parse(#[from] ParseError),
    #[error("signing failed: {0}")]
    Signer(String),
}

/// Why a grant was refused. Variants follow the verification order of the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    #[error("header typ is not countersign-grant+jwt")]
    WrongType,
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no registered device key has kid {0:?}")]
    UnknownKey(String),
    #[error("JWS signature does not verify")]
    BadSignature,
    #[error("claims are malformed: {0}")]
    Claims(ParseError),
    #[error("issuer {0:?} is not the approver that owns the signing key")]
    UnknownIssuer(String),
    #[error("sub is not the owner registered for this approver")]
    WrongSubject,
    #[error("audience {0:?} is not this verifier")]
    WrongAudience(String),
    #[error("the grant was accepted by broker {0:?}, not this verifier's broker")]
    WrongBroker(String),
    #[error("grant is not valid yet")]
    NotYetValid,
    #[error("grant has expired")]
    Expired,
    #[error("grant lifetime is over the cap or its times are inconsistent")]
    BadLifetime,
    #[error("the presented action does not match the grant's action_hash")]
    ActionHashMismatch,
    #[error("the presented action is malformed: {0}")]
    Action(ParseError),
    #[error("the presented action acts for someone other than the grant's sub")]
    SubjectMismatch,
    #[error("the grant's act chain does not name the presented agent")]
    ActorMismatch,
    #[error("the grant's authorization_details do not describe the presented call")]
    DetailsMismatch,
    #[error("WebAuthn assertion refused: {0}")]
    Assertion(#[from] AssertionError),
    #[error("the grant is bound to another key (cnf.jkt) than the presenter's")]
    ConfirmationMismatch,
    #[error("the grant was already redeemed")]
    Replayed,
    #[error("the grant was revoked")]
    Revoked,
    #[error("the replay store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl VerifyError {
    /// Every code [`Self::code`] can return (those of [`AssertionError`] included).
    pub const CODES: &'static [&'static str] = &[
        "malformed",
        "wrong_type",
        "algorithm_not_allowed",
        "unknown_key",
        "bad_signature",
        "malformed_claims",
        "unknown_issuer",
        "wrong_subject",
        "wrong_audience",
        "wrong_broker",
        "not_yet_valid",
        "expired",
        "bad_lifetime",
        "action_hash_mismatch",
        "malformed_action",
        "subject_mismatch",
        "actor_mismatch",
        "details_mismatch",
        "confirmation_mismatch",
        "replayed",
        "revoked",
        "store_unavailable",
    ];

    /// Stable code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongType => "wrong_type",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Claims(_) => "malformed_claims",
            Self::UnknownIssuer(_) => "unknown_issuer",
            Self::WrongSubject => "wrong_subject",
            Self::WrongAudience(_) => "wrong_audience",
            Self::WrongBroker(_) => "wrong_broker",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::BadLifetime => "bad_lifetime",
            Self::ActionHashMismatch => "action_hash_mismatch",
            Self::Action(_) => "malformed_action",
            Self::SubjectMismatch => "subject_mismatch",
            Self::ActorMismatch => "actor_mismatch",
            Self::DetailsMismatch => "details_mismatch",
            Self::Assertion(e) => e.code(),
            Self::ConfirmationMismatch => "confirmation_mismatch",
            Self::Replayed => "replayed",
            Self::Revoked => "revoked",
            Self::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

/// Why the WebAuthn assertion embedded in a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    #[error("assertion field {0} is not valid base64url")]
    Encoding(&'static str),
    #[error("clientDataJSON is malformed: {0}")]
    ClientData(String),
    #[error("clientDataJSON type is not webauthn.get")]
    WrongCeremony,
    #[error("clientDataJSON challenge is not the hash of these claims")]
    ChallengeMismatch,
    #[error("clientDataJSON origin {0:?} is not the Countersign origin")]
    OriginMismatch(String),
    #[error("the assertion was made in a cross-origin context")]
    CrossOrigin,
    #[error("authenticatorData is shorter than 37 bytes")]
    AuthenticatorDataTooShort,
    #[error("authenticatorData rpIdHash is not SHA-256 of the Countersign rp_id")]
    RpIdMismatch,
    #[error("the authenticator did not report user presence (UP)")]
    UserNotPresent,
    #[error("the authenticator did not report user verification (UV)")]
    UserNotVerified,
    #[error("credential {0:?} is not registered for this approver")]
    UnknownCredential(String),
    #[error("assertion signature does not verify with the registered credential key")]
    BadSignature,
    #[error(
        "sign counter {presented} does not advance past {stored}: possible cloned authenticator"
    )]
    CounterRegressed { stored: u32, presented: u32 },
}

impl AssertionError {
    /// Every code [`Self::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "assertion_encoding",
        "assertion_client_data",
        "assertion_wrong_ceremony",
        "assertion_challenge_mismatch",
        "assertion_origin_mismatch",
        "assertion_cross_origin",
        "assertion_authenticator_data",
        "assertion_rp_id_mismatch",
        "assertion_user_not_present",
        "assertion_user_not_verified",
        "assertion_unknown_credential",
        "assertion_bad_signature",
        "assertion_counter_regressed",
    ];

    /// Stable code for APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Encoding(_) => "assertion_encoding",
            Self::ClientData(_) => "assertion_client_data",
            Self::WrongCeremony => "assertion_wrong_ceremony",
            Self::ChallengeMismatch => "assertion_challenge_mismatch",
            Self::OriginMismatch(_) => "assertion_origin_mismatch",
            Self::CrossOrigin => "assertion_cross_origin",
            Self::AuthenticatorDataTooShort => "assertion_authenticator_data",
            Self::RpIdMismatch => "assertion_rp_id_mismatch",
            Self::UserNotPresent => "assertion_user_not_present",
            Self::UserNotVerified => "assertion_user_not_verified",
            Self::UnknownCredential(_) => "assertion_unknown_credential",
            Self::BadSignature => "assertion_bad_signature",
            Self::CounterRegressed { .. } => "assertion_counter_regressed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant; the matches below are exhaustive, so a new variant does not compile
    /// until it is listed here, and its code must then be in `CODES`.
    #[test]
    fn every_code_is_listed() {
        let parse = [
            ParseError::TooLarge {
                limit: 0,
                actual: 0,
            },
            ParseError::TooDeep { limit: 0 },
            ParseError::DuplicateKey { key: String::new() },
            ParseError::InexactNumber {
                number: String::new(),
            },
            ParseError::Json(String::new()),
            ParseError::Schema(String::new()),
            ParseError::invalid("f", ""),
            ParseError::NotCanonical(String::new()),
        ];
        for e in &parse {
            match e {
                ParseError::TooLarge { .. }
                | ParseError::TooDeep { .. }
                | ParseError::DuplicateKey { .. }
                | ParseError::InexactNumber { .. }
                | ParseError::Json(_)
                | ParseError::Schema(_)
                | ParseError::InvalidField { .. }
                | ParseError::NotCanonical(_) => assert!(ParseError::CODES.contains(&e.code())),
            }
        }
        assert_eq!(parse.len(), ParseError::CODES.len());
        let assertion = [
            AssertionError::Encoding("x"),
            AssertionError::ClientData(String::new()),
            AssertionError::WrongCeremony,
            AssertionError::ChallengeMismatch,
            AssertionError::OriginMismatch(String::new()),
            AssertionError::CrossOrigin,
            AssertionError::AuthenticatorDataTooShort,
            AssertionError::RpIdMismatch,
            AssertionError::UserNotPresent,
            AssertionError::UserNotVerified,
            AssertionError::UnknownCredential(String::new()),
            AssertionError::BadSignature,
            AssertionError::CounterRegressed {
                stored: 0,
                presented: 0,
            },
        ];
        for e in &assertion {
            match e {
                AssertionError::Encoding(_)
                | AssertionError::ClientData(_)
                | AssertionError::WrongCeremony
                | AssertionError::ChallengeMismatch
                | AssertionError::OriginMismatch(_)
                | AssertionError::CrossOrigin
                | AssertionError::AuthenticatorDataTooShort
                | AssertionError::RpIdMismatch
                | AssertionError::UserNotPresent
                | AssertionError::UserNotVerified
                | AssertionError::UnknownCredential(_)
                | AssertionError::BadSignature
                | AssertionError::CounterRegressed { .. } => {
                    assert!(AssertionError::CODES.contains(&e.code()));
                }
            }
        }
        assert_eq!(assertion.len(), AssertionError::CODES.len());
        let verify = [
            VerifyError::Malformed(String::new()),
            VerifyError::WrongType,
            VerifyError::AlgorithmNotAllowed(String::new()),
            VerifyError::UnknownKey(String::new()),
            VerifyError::BadSignature,
            VerifyError::Claims(ParseError::Json(String::new())),
            VerifyError::UnknownIssuer(String::new()),
            VerifyError::WrongSubject,
            VerifyError::WrongAudience(String::new()),
            VerifyError::WrongBroker(String::new()),
            VerifyError::NotYetValid,
            VerifyError::Expired,
            VerifyError::BadLifetime,
            VerifyError::ActionHashMismatch,
            VerifyError::Action(ParseError::Json(String::new())),
            VerifyError::SubjectMismatch,
            VerifyError::ActorMismatch,
            VerifyError::DetailsMismatch,
            VerifyError::ConfirmationMismatch,
            VerifyError::Replayed,
            VerifyError::Revoked,
            VerifyError::StoreUnavailable(String::new()),
        ];
        for e in &verify {
            match e {
                VerifyError::Assertion(_) => unreachable!("listed with AssertionError"),
                VerifyError::Malformed(_)
                | VerifyError::WrongType
                | VerifyError::AlgorithmNotAllowed(_)
                | VerifyError::UnknownKey(_)
                | VerifyError::BadSignature
                | VerifyError::Claims(_)
                | VerifyError::UnknownIssuer(_)
                | VerifyError::WrongSubject
                | VerifyError::WrongAudience(_)
                | VerifyError::WrongBroker(_)
                | VerifyError::NotYetValid
                | VerifyError::Expired
                | VerifyError::BadLifetime
                | VerifyError::ActionHashMismatch
                | VerifyError::Action(_)
                | VerifyError::SubjectMismatch
                | VerifyError::ActorMismatch
                | VerifyError::DetailsMismatch
                | VerifyError::ConfirmationMismatch
                | VerifyError::Replayed
                | VerifyError::Revoked
                | VerifyError::StoreUnavailable(_) => {
                    assert!(VerifyError::CODES.contains(&e.code()));
                }
            }
        }
        assert_eq!(verify.len(), VerifyError::CODES.len());
    }
}
