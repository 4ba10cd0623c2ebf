//! Typed errors. Every failed check has its own variant and a stable machine-readable code, so a
//! broker or gateway can answer `{code, message}` without parsing strings.

/// Why a document (pending action, grant payload, registry, …) was refused before any
/// cryptography ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The document is longer than the limit.
    #[error("document is {actual} bytes, over the limit of {limit}")]
    TooLarge {
        /// The largest accepted document, in bytes.
        limit: usize,
        /// The document's length, in bytes.
        actual: usize,
    },
    /// Arrays and objects nest deeper than the limit.
    #[error("document nests deeper than {limit} levels")]
    TooDeep {
        /// The deepest accepted nesting (the top level is depth 1).
        limit: usize,
    },
    /// An object has the same key twice, at any depth.
    #[error("object has the key {key:?} twice")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// An integer is beyond ±(2^53−1), where some JSON readers would round it.
    #[error(
        "number {number} is outside the range every JSON implementation reads exactly \
         (±2^53-1); send it as a string"
    )]
    InexactNumber {
        /// The integer, as written.
        number: String,
    },
    /// The bytes are not one well-formed JSON value (or, for a grant payload, not base64url);
    /// holds why.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The JSON does not fit the expected type (a missing, unknown or mistyped member); holds why.
    #[error("does not match the schema: {0}")]
    Schema(String),
    /// A member has the right type but breaks a rule of its own (blank, too long, bad format).
    #[error("field `{field}`: {reason}")]
    InvalidField {
        /// The member's path, such as `resource.id`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A typed document would not come back unchanged when re-encoded (a `null` for an absent
    /// member, a default spelled out), or a value could not be written as canonical JSON; holds
    /// why.
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
    /// The pending action's `action_hash` is not the hash of what it shows.
    #[error("the pending action's action_hash does not match its contents")]
    ActionHashMismatch,
    /// The pending action's `subject.id` is not the approver's owner.
    #[error("the pending action acts for someone other than the approver's owner")]
    SubjectNotOwner,
    /// The requested lifetime is not positive, or is over the cap.
    #[error("grant lifetime of {requested} s is over the cap of {cap} s")]
    LifetimeTooLong {
        /// The lifetime asked for, in seconds.
        requested: i64,
        /// The largest lifetime allowed, in seconds.
        cap: i64,
    },
    /// The assertion's challenge is unreadable or is not the hash of the draft's claims.
    #[error("the WebAuthn assertion was made for other claims")]
    AssertionForOtherClaims,
    /// A document could not be read or canonicalised (such as the claims, to compute the
    /// challenge).
    #[error("the pending action is malformed: {0}")]
    Parse(#[from] ParseError),
    /// The signer failed, or the claims could not be serialised; holds why.
    #[error("signing failed: {0}")]
    Signer(String),
    /// A batch holds fewer than two or more than fifty drafts; holds how many.
    #[error("a batch approves 2 to 50 actions, not {0}")]
    BatchSize(usize),
    /// A batch approves the same action twice.
    #[error("a batch names the same action twice")]
    BatchRepeats,
    /// The bounds asked for a bounded grant do not fit the reviewed call; holds why.
    #[error("the bounds do not fit this call: {0}")]
    Bounds(String),
}

/// Why a grant was refused. Variants follow the verification order of the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is over [`MAX_GRANT_BYTES`](crate::verify::MAX_GRANT_BYTES), not a compact JWS,
    /// has an unreadable header, or a header that names `crit`; holds why.
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    /// The header's `typ` is not the one of the kind of grant expected
    /// (`countersign-grant+jwt` or `countersign-bounded-grant+jwt`).
    #[error("header typ is not the expected grant type")]
    WrongType,
    /// The header's `alg` is not `EdDSA`; holds the `alg` given (empty when there is none).
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The header's `kid` names no device key in the pinned registry; holds the `kid`.
    #[error("no registered device key has kid {0:?}")]
    UnknownKey(String),
    /// The Ed25519 signature does not verify with the registered device key.
    #[error("JWS signature does not verify")]
    BadSignature,
    /// The payload is not a strict JSON object of grant claims with a `webauthn` member.
    #[error("claims are malformed: {0}")]
    Claims(ParseError),
    /// `iss` is not the approver that owns the signing key; holds the `iss`.
    #[error("issuer {0:?} is not the approver that owns the signing key")]
    UnknownIssuer(String),
    /// `sub` is not the owner registered for the issuing approver.
    #[error("sub is not the owner registered for this approver")]
    WrongSubject,
    /// `aud` is not this verifier's audience; holds the `aud`.
    #[error("audience {0:?} is not this verifier")]
    WrongAudience(String),
    /// `broker` is not the broker this verifier trusts; holds the `broker`.
    #[error("the grant was accepted by broker {0:?}, not this verifier's broker")]
    WrongBroker(String),
    /// The verifier's clock is before `nbf` or `iat` by more than the allowed skew.
    #[error("grant is not valid yet")]
    NotYetValid,
    /// The verifier's clock is at or past `exp` plus the allowed skew.
    #[error("grant has expired")]
    Expired,
    /// `nbf` is before `iat`, `exp` is not after `nbf`, or `exp - iat` is over the verifier's
    /// lifetime cap.
    #[error("grant lifetime is over the cap or its times are inconsistent")]
    BadLifetime,
    /// The presented action's hash is not the grant's `action_hash`.
    #[error("the presented action does not match the grant's action_hash")]
    ActionHashMismatch,
    /// The presented action could not be canonicalised to compute its hash.
    #[error("the presented action is malformed: {0}")]
    Action(ParseError),
    /// The presented action's `subject.id` is not the grant's `sub`.
    #[error("the presented action acts for someone other than the grant's sub")]
    SubjectMismatch,
    /// The grant's `act` chain is not the presented actor followed by its delegation chain.
    #[error("the grant's act chain does not name the presented agent")]
    ActorMismatch,
    /// `authorization_details` is empty, or an entry does not name the presented tool, action
    /// name and this verifier's audience.
    #[error("the grant's authorization_details do not describe the presented call")]
    DetailsMismatch,
    /// The embedded WebAuthn assertion was refused, or its sign counter did not advance.
    #[error("WebAuthn assertion refused: {0}")]
    Assertion(#[from] AssertionError),
    /// A bounded grant's `constraints` has a member this verifier does not know; holds its
    /// name. Refused, since the grant may limit calls in a way this verifier cannot check.
    #[error("the grant has a constraint this verifier does not know: {0:?}")]
    UnknownConstraint(String),
    /// The presented call is outside a bounded grant's constraints: an argument over its
    /// ceiling, changed, missing, or not covered at all.
    #[error("the presented call is outside the grant's {constraint} constraint on {argument:?}")]
    ConstraintViolated {
        /// The constraint refused: `max`, `equal` or `arguments` (an argument no constraint
        /// names).
        constraint: &'static str,
        /// The argument it concerns.
        argument: String,
    },
    /// The grant carries a `batch`, and the hash of its own claims is not in it (or the batch
    /// is malformed): the assertion approved other grants.
    #[error("the grant's claims are not among those its batch assertion approved")]
    NotInBatch,
    /// The grant has `cnf.jkt`, and the presenter's key thumbprint is missing or different.
    #[error("the grant is bound to another key (cnf.jkt) than the presenter's")]
    ConfirmationMismatch,
    /// The grant's `jti` was already consumed.
    #[error("the grant was already redeemed")]
    Replayed,
    /// The grant's `jti` was revoked.
    #[error("the grant was revoked")]
    Revoked,
    /// The replay or sign-counter store failed; holds why.
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
        "unknown_constraint",
        "constraint_violated",
        "not_in_batch",
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
            Self::UnknownConstraint(_) => "unknown_constraint",
            Self::ConstraintViolated { .. } => "constraint_violated",
            Self::NotInBatch => "not_in_batch",
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
    /// A member (`id`, `authenticatorData`, `clientDataJSON` or `signature`) is not base64url;
    /// holds its name.
    #[error("assertion field {0} is not valid base64url")]
    Encoding(&'static str),
    /// `clientDataJSON` is over 4096 bytes, or its `type`, `challenge` and `origin` cannot be
    /// read; holds why.
    #[error("clientDataJSON is malformed: {0}")]
    ClientData(String),
    /// The `clientDataJSON` `type` is not `webauthn.get`.
    #[error("clientDataJSON type is not webauthn.get")]
    WrongCeremony,
    /// The challenge in `clientDataJSON` is not the expected one (for a grant, the hash of its
    /// claims).
    #[error("clientDataJSON challenge is not the hash of these claims")]
    ChallengeMismatch,
    /// The `clientDataJSON` `origin` is not exactly the relying party's origin; holds it.
    #[error("clientDataJSON origin {0:?} is not the Countersign origin")]
    OriginMismatch(String),
    /// `clientDataJSON` has `crossOrigin` true or a `topOrigin`.
    #[error("the assertion was made in a cross-origin context")]
    CrossOrigin,
    /// `authenticatorData` is shorter than 37 bytes.
    #[error("authenticatorData is shorter than 37 bytes")]
    AuthenticatorDataTooShort,
    /// The rpIdHash in `authenticatorData` is not SHA-256 of the relying party's rp_id.
    #[error("authenticatorData rpIdHash is not SHA-256 of the Countersign rp_id")]
    RpIdMismatch,
    /// The user-present (UP) flag is not set.
    #[error("the authenticator did not report user presence (UP)")]
    UserNotPresent,
    /// The user-verified (UV) flag is not set.
    #[error("the authenticator did not report user verification (UV)")]
    UserNotVerified,
    /// The credential id is not registered to the approver; holds the id.
    #[error("credential {0:?} is not registered for this approver")]
    UnknownCredential(String),
    /// The ES256 signature over `authenticatorData || SHA-256(clientDataJSON)` does not verify
    /// with the registered credential key.
    #[error("assertion signature does not verify with the registered credential key")]
    BadSignature,
    /// The sign counter does not exceed the stored one while either is non-zero: the
    /// authenticator may have been cloned.
    #[error(
        "sign counter {presented} does not advance past {stored}: possible cloned authenticator"
    )]
    CounterRegressed {
        /// The highest counter stored for the credential.
        stored: u32,
        /// The counter in this assertion.
        presented: u32,
    },
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
            VerifyError::UnknownConstraint(String::new()),
            VerifyError::ConstraintViolated {
                constraint: "max",
                argument: String::new(),
            },
            VerifyError::NotInBatch,
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
                | VerifyError::UnknownConstraint(_)
                | VerifyError::ConstraintViolated { .. }
                | VerifyError::NotInBatch
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
