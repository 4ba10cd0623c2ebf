//! # countersign-protocol
//!
//! The contracts every Countersign component shares: the pending action a broker holds, the
//! canonical action hash, and the single-use grant a human approves with a WebAuthn
//! authenticator — minted here by the approver and verified here by any tool gateway. It depends
//! on no network, storage or GUI code, so brokers and gateways can embed it; it must never
//! depend on `tauri`, an HTTP stack or a database.
//!
//! ## Threat model
//!
//! A grant is presented by an agent — software we do not trust — to the gateway in front of a
//! tool. The agent, the network between the parts and the broker's storage may be hostile. What
//! we trust: the verifier's pinned [`ApproverRegistry`] (device keys and WebAuthn credential keys
//! registered at pairing), the authenticator (it signs only after the user is present and
//! verified), and the Countersign app as WebAuthn client *and* display: it shows exactly the
//! object whose hash it asks the authenticator to sign.
//!
//! From that, a valid grant proves that:
//! - a registered approver device issued it (Ed25519 JWS signature, key by `kid` from the
//!   registry, never from the token's `jku`/`x5u`/`jwk`/`x5c` headers);
//! - the device's human owner approved these exact claims with a registered authenticator and
//!   user verification (the WebAuthn challenge is `SHA-256(JCS(claims without webauthn))`);
//! - the claims bind one action: `action_hash` is `b64url(SHA-256(JCS({subject, actor, action,
//!   resource, context})))` of the call the gateway is about to run, for one audience, one agent
//!   chain, within a lifetime of at most 120 s;
//! - it is used once: the `jti` is consumed atomically in a [`ReplayStore`].
//!
//! Neither signature alone is enough: a stolen device key cannot produce the assertion, and a
//! stolen assertion is bound to claims whose JWS only the device key can produce.
//!
//! Beyond the agent: a hostile broker cannot make the app sign what it does not show, and
//! cannot obtain a grant another broker accepts (each paired broker has its own device key, and
//! the `broker` claim names the one that accepted the grant); a cloned authenticator can sign
//! valid grants offline, which is why a broker redeems only a grant it accepted itself, after
//! the sign counter was judged (see below). The action's `subject.id` must be the grant's `sub`:
//! a grant never covers an action on someone else's behalf.
//!
//! Input that standard parsers could read differently is refused before any check (see
//! [`json`]): duplicate keys, integers beyond ±(2^53−1), unknown fields, oversized or deeply
//! nested documents. Every refusal is a typed error variant with a stable code.
//!
//! ## Verification order (RFC 8725, fail closed)
//!
//! [`GrantVerifier`] checks, in this order, and stops at the first failure:
//! 1. compact JWS form and size; header `typ` exactly `countersign-grant+jwt`;
//! 2. `alg` from the allowlist (`EdDSA` only; `none`, HMAC and everything else refused);
//! 3. the key by `kid` from the pinned registry (unknown `kid` refused; `crit` refused);
//! 4. the Ed25519 signature over the signing input;
//! 5. the payload, parsed strictly; `iss` is the approver owning that key, `sub` its owner, `aud`
//!    exactly this verifier, `broker` exactly the broker this verifier trusts;
//! 6. `iat ≤ nbf < exp`, `exp − iat` ≤ the lifetime cap (120 s), and now within ±60 s skew:
//!    refused as not yet valid when `now < nbf − skew`, as expired when `now ≥ exp + skew`;
//! 7. the recomputed `action_hash` of the presented call equals the claim (constant time), the
//!    presented action's `subject.id` is the grant's `sub`, the `act` chain names the presented
//!    agent, and `authorization_details` describe the call;
//! 8. the WebAuthn assertion: type `webauthn.get`, challenge = hash of the claims, origin,
//!    not cross-origin, rpId hash, UP and UV flags, ES256 signature by a credential registered to
//!    the issuing approver;
//! 9. `cnf.jkt`, when present, equals the presenter's key thumbprint;
//! 10. not revoked; on [`GrantVerifier::redeem`], the `jti` consumed atomically (a revoked or
//!     consumed `jti` is refused).
//!
//! The sign counter (WebAuthn §7.2 step 22) is judged where the WebAuthn authentication
//! happens: when the broker accepts the owner's decision ([`GrantVerifier::accept_issued`]), it
//! atomically advances the credential's stored counter and refuses a counter that does not
//! exceed it (when either is non-zero). Ceremonies reach the broker in the order the
//! authenticator made them, so this is exact there; at redemption it would not be, because
//! independent agents redeem their grants in any order, and a strict check would refuse
//! legitimate grants. So a broker redeems only a grant it accepted itself: the item `txn` it
//! holds as approved, with that grant's `jti`, of the same owner and audience (a grant that is
//! cryptographically valid but never went through a decision is refused — this is what stops a
//! cloned authenticator from dodging the counter check).
//!
//! Revocation is folded into the atomic consumption (a revoked `jti` is a `jti` that can never
//! be consumed), so no redemption can slip between a revocation check and the consumption.
//!
//! ## Encodings chosen
//!
//! Binary values are base64url without padding. The assertion uses WebAuthn Level 3
//! `AuthenticationResponseJSON` member names (`id`, `authenticatorData`, `clientDataJSON`,
//! `signature`, `userHandle`). Device keys are RFC 8037 OKP JWKs whose `kid` is the RFC 7638
//! thumbprint; credential keys are EC P-256 JWKs. The WebAuthn rp_id and origin are
//! [`webauthn::RP_ID`] and [`webauthn::ORIGIN`].

#![warn(missing_docs)]

pub mod action;
pub mod api;
pub mod bounded;
pub mod clock;
#[cfg(feature = "dev-authenticator")]
pub mod dev_authenticator;
pub mod error;
pub mod grant;
pub mod hash;
pub mod json;
pub mod jws;
pub mod link;
pub mod proof;
pub mod registry;
pub mod replay;
#[cfg(feature = "schema")]
mod schema;
pub mod spiffe;
pub mod timestamp;
pub mod verify;
pub mod webauthn;

pub use action::{ActionRequest, PendingAction};
pub use bounded::{BoundedDraft, BoundedGrant, Bounds, Constraints};
pub use error::{AssertionError, MintError, ParseError, VerifyError};
pub use grant::{DeviceSigningKey, Grant, GrantDraft, GrantSigner};
pub use hash::ActionHash;
pub use registry::ApproverRegistry;
pub use replay::{MemoryReplayStore, ReplayStore};
pub use verify::{GrantVerifier, Presentation, VerifierConfig};
