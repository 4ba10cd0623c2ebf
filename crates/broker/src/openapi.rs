//! The OpenAPI 3.1 document of the broker API, generated from the Rust types the handlers read
//! and write (their JSON Schemas come from `countersign-protocol`'s `schema` feature) and from
//! [`ENDPOINTS`], which names every route with the codes it can refuse with. Committed as
//! `openapi.json` (`countersign-broker openapi > crates/broker/openapi.json`); a test fails on
//! drift, and another sends each endpoint malformed requests and checks every refusal it gets
//! is listed here under the status it came with.

use std::collections::BTreeMap;

use countersign_protocol::api::{
    AgentRef, ApproverEvent, BatchDecided, BatchDecision, BoundedGrantList, BoundedGrantView,
    Conflict, Decision, EnrollRequest, ErrorBody, EvaluationRequest, EvaluationResponse,
    GatewayList, OutcomeReport, PairRequest, PairResponse, RedeemRequest, RedeemResponse,
    RequestList, RequestStatus, RequestView,
};
use countersign_protocol::proof::ProofError;
use countersign_protocol::registry::{ApproverEntry, RegistryDocument};
use countersign_protocol::{AssertionError, ParseError, VerifyError};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};

use crate::error::{ErrorCode, status_of};

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Anyone,
    /// A per-agent bearer secret.
    Agent,
    /// A per-gateway bearer secret.
    Gateway,
    /// A device-key request proof.
    Approver,
}

/// A family of refusal codes an endpoint can send.
#[derive(Clone, Copy, Debug)]
pub enum Codes {
    /// One of the broker's own.
    Own(ErrorCode),
    /// Every code of a malformed JSON document ([`ParseError`]).
    Document,
    /// Every code of a refused request proof ([`ProofError`]).
    Proof,
    /// Every code of a refused grant ([`VerifyError`], [`AssertionError`]).
    Grant,
    /// Every code of a refused WebAuthn assertion ([`AssertionError`]).
    Assertion,
}

/// The success answer of an endpoint.
#[derive(Clone, Copy, Debug)]
pub enum Success {
    Json(u16, &'static str, fn(&mut SchemaGenerator) -> Value),
    Empty(u16, &'static str),
    Text(&'static str, &'static str),
    EventStream,
}

/// One operation of the API.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub caller: Caller,
    pub request: Option<fn(&mut SchemaGenerator) -> Value>,
    pub success: Success,
    pub parameters: &'static [Parameter],
    /// What it can refuse with, beyond what every endpoint can (405, 500, and 503 when it
    /// uses the store).
    pub codes: &'static [Codes],
}

/// A path, query or header parameter.
#[derive(Clone, Copy, Debug)]
pub struct Parameter {
    pub name: &'static str,
    pub location: &'static str,
    pub required: bool,
    pub schema: fn() -> Value,
    pub description: &'static str,
}

fn schema<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn string() -> Value {
    json!({"type": "string"})
}

const ID: Parameter = Parameter {
    name: "id",
    location: "path",
    required: true,
    schema: string,
    description: "An id",
};

use Codes::{Assertion, Document, Grant, Own, Proof};
use ErrorCode as E;

const BODY: [Codes; 3] = [Own(E::UnsupportedMediaType), Own(E::BodyTooLarge), Document];

/// Every route of the broker.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "post",
        path: "/access/v1/evaluation",
        summary: "AuthZEN 1.0 evaluation: allow, deny, or approval required (with the pending id and its status URL). `subject` must be the agent's configured owner; `actor.act` is shown to the owner as the agent's claim",
        caller: Caller::Agent,
        request: Some(schema::<EvaluationRequest>),
        success: Success::Json(200, "the decision", schema::<EvaluationResponse>),
        parameters: &[],
        codes: &[
            Own(E::Unauthenticated),
            BODY[0],
            BODY[1],
            BODY[2],
            Own(E::ActorMismatch),
            Own(E::SubjectMismatch),
            Own(E::AgentQuarantined),
            Own(E::AgentSuspended),
            Own(E::RateLimited),
            Own(E::PendingCapReached),
            Own(E::NoGateway),
        ],
    },
    Endpoint {
        method: "get",
        path: "/v1/requests/{id}",
        summary: "Status of a held call; long-polls up to `wait` seconds (at most 60) while pending",
        caller: Caller::Agent,
        request: None,
        success: Success::Json(200, "where the call stands", schema::<RequestStatus>),
        parameters: &[
            ID,
            Parameter {
                name: "wait",
                location: "query",
                required: false,
                schema: || json!({"type": "integer", "minimum": 0, "maximum": 60}),
                description: "Seconds to wait for a change",
            },
        ],
        codes: &[
            Own(E::Unauthenticated),
            Own(E::InvalidPath),
            Own(E::InvalidQuery),
            Own(E::NotFound),
        ],
    },
    Endpoint {
        method: "post",
        path: "/v1/grants/redeem",
        summary: "Verify a grant against the presented call and the broker's own record of the approved request, and consume it once",
        caller: Caller::Gateway,
        request: Some(schema::<RedeemRequest>),
        success: Success::Json(200, "consumed", schema::<RedeemResponse>),
        parameters: &[],
        codes: &[
            Own(E::Unauthenticated),
            BODY[0],
            BODY[1],
            BODY[2],
            Grant,
            Proof,
            Own(E::GrantNotAccepted),
            Own(E::BoundedSpent),
            Own(E::GatewayKeyMissing),
        ],
    },
    Endpoint {
        method: "post",
        path: "/v1/grants/outcome",
        summary: "Report what became of a redeemed call (succeeded, failed, never ran), once, so the owner's history shows it",
        caller: Caller::Gateway,
        request: Some(schema::<OutcomeReport>),
        success: Success::Empty(204, "recorded"),
        parameters: &[],
        codes: &[
            Own(E::Unauthenticated),
            BODY[0],
            BODY[1],
            BODY[2],
            Own(E::OutcomeInvalid),
            Own(E::OutcomeNotRedeemed),
        ],
    },
    Endpoint {
        method: "get",
        path: "/v1/registry",
        summary: "Approver device keys (JWK) and credential keys, for offline verification",
        caller: Caller::Anyone,
        request: None,
        success: Success::Json(200, "the registry", schema::<RegistryDocument>),
        parameters: &[],
        codes: &[],
    },
    Endpoint {
        method: "get",
        path: "/v1/registry/jwks.json",
        summary: "Every paired device key as a JWK Set (RFC 7517)",
        caller: Caller::Anyone,
        request: None,
        success: Success::Json(200, "JWK Set", jwk_set),
        parameters: &[],
        codes: &[],
    },
    Endpoint {
        method: "post",
        path: "/v1/pair",
        summary: "Pair a device with a one-time code; the request proof is signed by the key being registered. Throttled per client address",
        caller: Caller::Approver,
        request: Some(schema::<PairRequest>),
        success: Success::Json(200, "paired", schema::<PairResponse>),
        parameters: &[],
        codes: &[
            Own(E::RateLimited),
            BODY[0],
            BODY[1],
            BODY[2],
            Proof,
            Own(E::PairingCodeInvalid),
            Own(E::AlreadyPaired),
            Own(E::AlreadyEnrolled),
        ],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/credentials",
        summary: "Enrol a further authenticator, vouched for by an enrolled one",
        caller: Caller::Approver,
        request: Some(schema::<EnrollRequest>),
        success: Success::Json(200, "the approver's entry", schema::<ApproverEntry>),
        parameters: &[],
        codes: &[
            Proof,
            BODY[0],
            BODY[1],
            BODY[2],
            Own(E::NotFound),
            Own(E::AlreadyEnrolled),
            Assertion,
        ],
    },
    Endpoint {
        method: "delete",
        path: "/v1/approver/credentials/{id}",
        summary: "Remove one of the approver's credentials (a lost authenticator); it stops vouching at once",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "the approver's entry", schema::<ApproverEntry>),
        parameters: &[Parameter {
            name: "id",
            location: "path",
            required: true,
            schema: string,
            description: "The credential id (base64url)",
        }],
        codes: &[
            Proof,
            Own(E::InvalidPath),
            Own(E::NotFound),
            Own(E::LastCredential),
            Own(E::AlreadyEnrolled),
        ],
    },
    Endpoint {
        method: "get",
        path: "/v1/approver/stream",
        summary: "Server-Sent Events for the approver's owner; resume with Last-Event-ID. Each event carries its request as it stands now",
        caller: Caller::Approver,
        request: None,
        success: Success::EventStream,
        parameters: &[Parameter {
            name: "Last-Event-ID",
            location: "header",
            required: false,
            schema: || json!({"type": "integer"}),
            description: "Resume after this event id",
        }],
        codes: &[Proof],
    },
    Endpoint {
        method: "get",
        path: "/v1/approver/requests",
        summary: "The owner's requests, newest first, a page at a time (reconcile with status=pending after a reconnect)",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "one page", schema::<RequestList>),
        parameters: &[
            Parameter {
                name: "status",
                location: "query",
                required: false,
                schema: || json!({"type": "string", "enum": ["pending", "approved", "denied", "expired", "cancelled", "redeemed", "revoked"]}),
                description: "Only requests of this status",
            },
            Parameter {
                name: "before",
                location: "query",
                required: false,
                schema: || json!({"type": "integer"}),
                description: "The `next` cursor of the previous page",
            },
            Parameter {
                name: "limit",
                location: "query",
                required: false,
                schema: || json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 100}),
                description: "Page size",
            },
        ],
        codes: &[Proof, Own(E::InvalidQuery)],
    },
    Endpoint {
        method: "get",
        path: "/v1/approver/requests/{id}",
        summary: "One of the owner's requests, as it stands",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "the request", schema::<RequestView>),
        parameters: &[ID],
        codes: &[Proof, Own(E::InvalidPath), Own(E::NotFound)],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/requests/{id}/decision",
        summary: "Approve (with the grant) or deny (with a reason); the first decision wins, and a repeated Idempotency-Key gets the first answer again",
        caller: Caller::Approver,
        request: Some(schema::<Decision>),
        success: Success::Json(200, "recorded", schema::<RequestView>),
        parameters: &[
            ID,
            Parameter {
                name: "Idempotency-Key",
                location: "header",
                required: true,
                schema: || json!({"type": "string", "minLength": 1, "maxLength": 128}),
                description: "The same key for every attempt at one decision",
            },
        ],
        codes: &[
            Proof,
            BODY[0],
            BODY[1],
            BODY[2],
            Own(E::InvalidPath),
            Own(E::IdempotencyKeyMissing),
            Own(E::NotFound),
            Grant,
            Own(E::GrantMismatch),
            Own(E::GatewayKeyMissing),
            Own(E::ReasonInvalid),
            Own(E::AlreadyDecided),
        ],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/decisions",
        summary: "Approve 2 to 50 requests of one audience with the grants of one batch ceremony: all are verified before any is recorded; a request decided meanwhile comes back with recorded false",
        caller: Caller::Approver,
        request: Some(schema::<BatchDecision>),
        success: Success::Json(200, "each request as it stands", schema::<BatchDecided>),
        parameters: &[Parameter {
            name: "Idempotency-Key",
            location: "header",
            required: true,
            schema: || json!({"type": "string", "minLength": 1, "maxLength": 128}),
            description: "The same key for every attempt at one batch",
        }],
        codes: &[
            Proof,
            BODY[0],
            BODY[1],
            BODY[2],
            Own(E::IdempotencyKeyMissing),
            Own(E::BatchInvalid),
            Own(E::NotFound),
            Grant,
            Own(E::GrantMismatch),
        ],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/requests/{id}/revoke",
        summary: "Revoke an approved, unredeemed grant",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "revoked", schema::<RequestView>),
        parameters: &[ID],
        codes: &[Proof, Own(E::InvalidPath), Own(E::NotRevocable)],
    },
    Endpoint {
        method: "get",
        path: "/v1/approver/gateways",
        summary: "The gateways, and the key (thumbprint) a bounded grant for each is bound to",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "the gateways", schema::<GatewayList>),
        parameters: &[],
        codes: &[Proof],
    },
    Endpoint {
        method: "get",
        path: "/v1/approver/bounded",
        summary: "The owner's bounded grants that can still cover a call, with their uses counted",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "the active bounded grants", schema::<BoundedGrantList>),
        parameters: &[],
        codes: &[Proof],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/bounded/{id}/revoke",
        summary: "Revoke a bounded grant at once, with the calls it released that have not run",
        caller: Caller::Approver,
        request: None,
        success: Success::Json(200, "revoked", schema::<BoundedGrantView>),
        parameters: &[ID],
        codes: &[Proof, Own(E::InvalidPath), Own(E::NotRevocable)],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/agents/suspend",
        summary: "Suspend one of the owner's agents",
        caller: Caller::Approver,
        request: Some(schema::<AgentRef>),
        success: Success::Empty(204, "suspended"),
        parameters: &[],
        codes: &[Proof, BODY[0], BODY[1], BODY[2], Own(E::NotFound)],
    },
    Endpoint {
        method: "post",
        path: "/v1/approver/agents/resume",
        summary: "Resume a suspended or quarantined agent",
        caller: Caller::Approver,
        request: Some(schema::<AgentRef>),
        success: Success::Empty(204, "resumed"),
        parameters: &[],
        codes: &[Proof, BODY[0], BODY[1], BODY[2], Own(E::NotFound)],
    },
    Endpoint {
        method: "get",
        path: "/healthz",
        summary: "Liveness",
        caller: Caller::Anyone,
        request: None,
        success: Success::Text("text/plain", "ok"),
        parameters: &[],
        codes: &[],
    },
    Endpoint {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text exposition",
        caller: Caller::Anyone,
        request: None,
        success: Success::Text("text/plain", "metrics"),
        parameters: &[],
        codes: &[],
    },
    Endpoint {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        caller: Caller::Anyone,
        request: None,
        success: Success::Text("application/json", "OpenAPI 3.1"),
        parameters: &[],
        codes: &[],
    },
];

fn jwk_set(generator: &mut SchemaGenerator) -> Value {
    let key = schema::<countersign_protocol::registry::DeviceJwk>(generator);
    json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": key}}})
}

impl Endpoint {
    /// Every code this endpoint can send, with its status: its own list, plus 405 and 500, and
    /// 503 `store_unavailable` where it uses the store.
    pub fn refusals(&self) -> BTreeMap<u16, Vec<&'static str>> {
        let mut out: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
        let mut add = |code: &'static str| {
            let list = out.entry(status_of(code).as_u16()).or_default();
            if !list.contains(&code) {
                list.push(code);
            }
        };
        for family in self.codes {
            match family {
                Own(code) => add(code.as_str()),
                Document => ParseError::CODES.iter().for_each(|c| add(c)),
                Proof => ProofError::CODES.iter().for_each(|c| add(c)),
                Assertion => AssertionError::CODES.iter().for_each(|c| add(c)),
                Grant => {
                    VerifyError::CODES.iter().for_each(|c| add(c));
                    AssertionError::CODES.iter().for_each(|c| add(c));
                }
            }
        }
        add(E::MethodNotAllowed.as_str());
        add(E::Internal.as_str());
        // Whatever reads or writes the store answers 503 while its database is unreachable.
        if !matches!(
            self.path,
            "/v1/registry" | "/v1/registry/jwks.json" | "/healthz" | "/metrics" | "/openapi.json"
        ) {
            add("store_unavailable");
        }
        out
    }
}

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas".into())
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let conflict = schema::<Conflict>(&mut generator);
    schema::<ApproverEvent>(&mut generator);
    let mut paths = serde_json::Map::new();
    for endpoint in ENDPOINTS {
        let mut responses = serde_json::Map::new();
        match endpoint.success {
            Success::Json(status, description, of) => {
                responses.insert(
                    status.to_string(),
                    json!({"description": description, "content": {"application/json": {"schema": of(&mut generator)}}}),
                );
            }
            Success::Empty(status, description) => {
                responses.insert(status.to_string(), json!({"description": description}));
            }
            Success::Text(content, description) => {
                responses.insert(
                    "200".into(),
                    json!({"description": description, "content": {content: {"schema": {"type": "string"}}}}),
                );
            }
            Success::EventStream => {
                let event = schema::<ApproverEvent>(&mut generator);
                responses.insert(
                    "200".into(),
                    json!({"description": "event stream: `id` is the event id, `event` its kind, `data` the event as JSON", "content": {"text/event-stream": {"schema": event}}}),
                );
            }
        }
        for (status, codes) in endpoint.refusals() {
            let body = if codes == [E::AlreadyDecided.as_str()] {
                conflict.clone()
            } else {
                json!({"allOf": [error.clone(), {"properties": {"code": {"enum": codes}}}]})
            };
            let described: Vec<String> = codes
                .iter()
                .map(|c| match E::ALL.iter().find(|e| e.as_str() == *c) {
                    Some(own) => format!("`{c}`: {}", own.description()),
                    None => format!("`{c}`"),
                })
                .collect();
            responses.insert(
                status.to_string(),
                json!({"description": described.join("; "), "content": {"application/json": {"schema": body}}}),
            );
        }
        let mut operation = json!({"summary": endpoint.summary, "responses": responses});
        let security = match endpoint.caller {
            Caller::Anyone => None,
            Caller::Agent => Some("agent"),
            Caller::Gateway => Some("gateway"),
            Caller::Approver => Some("proof"),
        };
        if let Some(scheme) = security {
            operation["security"] = json!([{scheme: []}]);
        }
        if let Some(of) = endpoint.request {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": of(&mut generator)}}});
        }
        if !endpoint.parameters.is_empty() {
            operation["parameters"] = endpoint
                .parameters
                .iter()
                .map(|p| {
                    json!({"name": p.name, "in": p.location, "required": p.required, "description": p.description, "schema": (p.schema)()})
                })
                .collect();
        }
        let path = paths.entry(endpoint.path).or_insert_with(|| json!({}));
        path[endpoint.method] = operation;
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Countersign broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Holds risky agent tool calls for their owner's approval and redeems the single-use grants that approval yields. Every refusal is {code, message}; each operation lists the codes it can return under their statuses."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "agent": {"type": "http", "scheme": "bearer", "description": "per-agent secret from the broker configuration"},
                "gateway": {"type": "http", "scheme": "bearer", "description": "per-gateway secret from the broker configuration"},
                "proof": {"type": "apiKey", "in": "header", "name": "Countersign-Proof", "description": "JWS typ countersign-proof+jwt signed by the device key: htm, htu, iat, jti, bh"}
            },
            "schemas": schemas
        }
    })
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
