//! The OpenAPI 3.1 document of the broker API, built here and committed as `openapi.json`
//! (`countersign-broker openapi > crates/broker/openapi.json`; a test fails on drift).

use serde_json::{Value, json};

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(description: &str, schema: Option<&str>) -> Value {
    match schema {
        Some(s) => {
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}})
        }
        None => json!({"description": description}),
    }
}

fn errors(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        out.insert((*code).to_owned(), ok("typed error", Some("Error")));
    }
    Value::Object(out)
}

fn op(
    summary: &str,
    security: &str,
    request: Option<&str>,
    response: Value,
    error_codes: &[&str],
) -> Value {
    let mut responses = errors(error_codes);
    if let (Some(map), Value::Object(r)) = (responses.as_object_mut(), response) {
        map.extend(r);
    }
    let mut operation = json!({"summary": summary, "responses": responses});
    if !security.is_empty() {
        operation["security"] = json!([{security: []}]);
    }
    if let Some(schema) = request {
        operation["requestBody"] = body(schema);
    }
    operation
}

fn string_id(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The document.
pub fn document() -> Value {
    let object = json!({"type": "object"});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Countersign broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Holds risky agent tool calls for their owner's approval and redeems the single-use grants that approval yields. Errors are {code, message}."
        },
        "paths": {
            "/access/v1/evaluation": {"post": op("AuthZEN 1.0 evaluation: allow, deny, or approval required (with the pending id and its status URL)", "agent", Some("EvaluationRequest"),
                json!({"200": ok("decision", Some("EvaluationResponse"))}), &["400", "401", "403", "413", "415", "422", "429"])},
            "/v1/requests/{id}": {"get": {
                "summary": "Status of a held call; long-polls up to `wait` seconds (max 60) while pending",
                "security": [{"agent": []}],
                "parameters": [string_id("id"), {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60}}],
                "responses": {"200": ok("status", Some("RequestStatus")), "401": ok("typed error", Some("Error")), "404": ok("typed error", Some("Error"))}
            }},
            "/v1/grants/redeem": {"post": op("Verify a grant against the presented call and consume it once", "gateway", Some("RedeemRequest"),
                json!({"200": ok("consumed", Some("RedeemResponse"))}), &["400", "401", "403", "409", "410", "413", "415", "503"])},
            "/v1/registry": {"get": op("Approver device keys (JWK) and credential keys, for offline verification", "", None,
                json!({"200": ok("registry", Some("Registry"))}), &[])},
            "/v1/registry/jwks.json": {"get": op("Every paired device key as a JWK Set (RFC 7517)", "", None,
                json!({"200": ok("JWK Set", None)}), &[])},
            "/v1/pair": {"post": op("Pair a device with a one-time code; the request proof is signed by the key being registered", "proof", Some("PairRequest"),
                json!({"200": ok("paired", Some("PairResponse"))}), &["400", "401", "403", "409", "415"])},
            "/v1/approver/credentials": {"post": op("Enrol a further authenticator, vouched for by an enrolled one", "proof", Some("EnrollRequest"),
                json!({"200": ok("updated approver entry", Some("ApproverEntry"))}), &["400", "401", "403", "409", "415"])},
            "/v1/approver/stream": {"get": {
                "summary": "Server-Sent Events for the approver's owner; resume with Last-Event-ID",
                "security": [{"proof": []}],
                "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ApproverEvent"}}}}, "401": ok("typed error", Some("Error"))}
            }},
            "/v1/approver/requests": {"get": {
                "summary": "The owner's requests, for reconciliation after a reconnect",
                "security": [{"proof": []}],
                "parameters": [{"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "approved", "denied", "expired", "cancelled", "redeemed", "revoked"]}}],
                "responses": {"200": ok("requests", Some("RequestList")), "401": ok("typed error", Some("Error"))}
            }},
            "/v1/approver/requests/{id}/decision": {"post": {
                "summary": "Approve (with the grant) or deny (with a reason); the first decision wins",
                "security": [{"proof": []}],
                "parameters": [string_id("id"), {"name": "Idempotency-Key", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 128}}],
                "requestBody": body("Decision"),
                "responses": {"200": ok("recorded", Some("RequestView")), "400": ok("typed error", Some("Error")), "401": ok("typed error", Some("Error")), "403": ok("typed error", Some("Error")), "404": ok("typed error", Some("Error")), "409": ok("already decided", Some("Error"))}
            }},
            "/v1/approver/requests/{id}/revoke": {"post": {
                "summary": "Revoke an approved, unredeemed grant",
                "security": [{"proof": []}],
                "parameters": [string_id("id")],
                "responses": {"200": ok("revoked", Some("RequestView")), "401": ok("typed error", Some("Error")), "409": ok("typed error", Some("Error"))}
            }},
            "/v1/approver/agents/suspend": {"post": op("Suspend one of the owner's agents", "proof", Some("AgentRef"), json!({"204": ok("suspended", None)}), &["400", "401", "404"])},
            "/v1/approver/agents/resume": {"post": op("Resume a suspended or quarantined agent", "proof", Some("AgentRef"), json!({"204": ok("resumed", None)}), &["400", "401", "404"])},
            "/healthz": {"get": op("Liveness", "", None, json!({"200": ok("ok", None)}), &[])},
            "/metrics": {"get": op("Prometheus text exposition", "", None, json!({"200": ok("metrics", None)}), &[])},
            "/openapi.json": {"get": op("This document", "", None, json!({"200": ok("OpenAPI 3.1", None)}), &[])}
        },
        "components": {
            "securitySchemes": {
                "agent": {"type": "http", "scheme": "bearer", "description": "per-agent secret from the broker configuration"},
                "gateway": {"type": "http", "scheme": "bearer", "description": "per-gateway secret from the broker configuration"},
                "proof": {"type": "apiKey", "in": "header", "name": "Countersign-Proof", "description": "JWS typ countersign-proof+jwt signed by the device key: htm, htu, iat, jti, bh"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                "EvaluationRequest": {"type": "object", "required": ["subject", "action", "resource", "context"], "additionalProperties": false,
                    "properties": {"subject": object, "action": object, "resource": object, "context": {"type": "object", "required": ["intent", "arguments"], "properties": {"intent": {"type": "string"}, "arguments": object, "data": object}}, "actor": object}},
                "EvaluationResponse": {"type": "object", "required": ["decision"], "properties": {"decision": {"type": "boolean"}, "context": {"type": "object", "properties": {
                    "outcome": {"type": "string", "enum": ["allow", "deny", "approval_required"]}, "policy_id": {"type": "string"}, "reason": {"type": "string"},
                    "approval": {"type": "object", "properties": {"id": {"type": "string"}, "expires_at": {"type": "string"}, "status_url": {"type": "string"}, "merged": {"type": "integer"}}}}}}},
                "RequestStatus": {"type": "object", "required": ["id", "status", "expires_at"], "properties": {"id": {"type": "string"}, "status": {"type": "string"}, "grant": {"type": "string"}, "reason": {"type": "string"}, "expires_at": {"type": "string"}}},
                "RedeemRequest": {"type": "object", "required": ["grant", "action"], "additionalProperties": false, "properties": {"grant": {"type": "string"}, "action": object, "presenter_jkt": {"type": "string"}}},
                "RedeemResponse": {"type": "object", "properties": {"status": {"const": "consumed"}, "txn": {"type": "string"}, "jti": {"type": "string"}}},
                "Registry": {"type": "object", "properties": {"approvers": {"type": "array", "items": {"$ref": "#/components/schemas/ApproverEntry"}}}},
                "ApproverEntry": {"type": "object", "properties": {"id": {"type": "string"}, "owner": {"type": "string"}, "device_keys": {"type": "array", "items": object}, "credentials": {"type": "array", "items": object}}},
                "PairRequest": {"type": "object", "required": ["code", "device_key", "credential"], "additionalProperties": false, "properties": {"code": {"type": "string"}, "device_key": object, "credential": object, "name": {"type": "string"}}},
                "PairResponse": {"type": "object", "properties": {"approver_id": {"type": "string"}, "owner": {"type": "string"}}},
                "EnrollRequest": {"type": "object", "required": ["credential", "assertion"], "additionalProperties": false, "properties": {"credential": object, "assertion": object}},
                "Decision": {"oneOf": [
                    {"type": "object", "required": ["decision", "grant"], "properties": {"decision": {"const": "approve"}, "grant": {"type": "string"}}},
                    {"type": "object", "required": ["decision", "reason"], "properties": {"decision": {"const": "deny"}, "reason": {"type": "string"}, "suspend_agent": {"type": "boolean"}}}]},
                "RequestView": {"type": "object", "properties": {"pending": object, "status": {"type": "string"}, "merged": {"type": "integer"}, "reason": {"type": "string"}, "decided_by": {"type": "string"}}},
                "RequestList": {"type": "object", "properties": {"requests": {"type": "array", "items": {"$ref": "#/components/schemas/RequestView"}}, "last_event_id": {"type": "integer"}}},
                "ApproverEvent": {"type": "object", "properties": {"id": {"type": "integer"}, "kind": {"type": "string"}, "request": {"$ref": "#/components/schemas/RequestView"}, "agent": {"type": "string"}, "detail": {"type": "string"}}},
                "AgentRef": {"type": "object", "required": ["agent"], "additionalProperties": false, "properties": {"agent": {"type": "string"}}}
            }
        }
    })
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
