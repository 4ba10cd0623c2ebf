//! Every refusal is typed and documented: malformed query strings, path parameters, methods and
//! bodies get `{code, message}`, and every code an endpoint answers with is listed in the
//! OpenAPI document for that endpoint, under the status it came with.

use countersign_broker::openapi::{Caller, ENDPOINTS, Endpoint};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{BILLING, OWNER, PAYMENTS, TestApprover, TestBroker};

/// One probe: what was sent, and what came back.
struct Answer {
    probe: String,
    status: StatusCode,
    body: String,
}

async fn send(
    broker: &TestBroker,
    approver: &TestApprover,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    credentials: bool,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, String) {
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("{}{path}", broker.url));
    if credentials {
        request = match endpoint.caller {
            Caller::Agent => request.bearer_auth(broker.agent_secret(BILLING)),
            Caller::Gateway => request.bearer_auth(broker.gateway_secret(PAYMENTS)),
            Caller::Approver => {
                let bytes = body.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
                request.header(
                    countersign_protocol::proof::PROOF_HEADER,
                    approver.proof(method.as_str(), path, &bytes),
                )
            }
            Caller::Anyone => request,
        };
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    // A success (the event stream never ends) is not read: only refusals are checked.
    if status.is_success() {
        return (status, String::new());
    }
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_typed_and_listed_for_its_endpoint() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let mut checked = 0;
    for endpoint in ENDPOINTS {
        let path = endpoint.path.replace("{id}", "pa_nothing");
        let method = Method::from_bytes(endpoint.method.to_uppercase().as_bytes()).unwrap();
        let json_body = |bytes: &[u8]| Some(("application/json", bytes.to_vec()));
        let empty = if endpoint.request.is_some() {
            json_body(b"{}")
        } else {
            None
        };
        let mut answers = Vec::new();
        let mut probe = |name: &str, (status, body): (StatusCode, String)| {
            answers.push(Answer {
                probe: name.to_owned(),
                status,
                body,
            });
        };
        probe(
            "no credentials",
            send(
                &broker,
                &approver,
                endpoint,
                method.clone(),
                &path,
                false,
                empty.clone(),
            )
            .await,
        );
        probe(
            "unknown query parameter",
            send(
                &broker,
                &approver,
                endpoint,
                method.clone(),
                &format!("{path}?bogus=1"),
                true,
                empty.clone(),
            )
            .await,
        );
        if endpoint.path.contains("{id}") {
            let bad = endpoint.path.replace("{id}", "%FF%FE");
            probe(
                "malformed path",
                send(
                    &broker,
                    &approver,
                    endpoint,
                    method.clone(),
                    &bad,
                    true,
                    empty.clone(),
                )
                .await,
            );
        }
        if endpoint.request.is_some() {
            for (name, content_type, bytes) in [
                ("wrong content type", "text/plain", b"{}".to_vec()),
                ("malformed JSON", "application/json", b"{not json".to_vec()),
                ("empty object", "application/json", b"{}".to_vec()),
                (
                    "oversized",
                    "application/json",
                    serde_json::to_vec(&json!({"x": "A".repeat(600 * 1024)})).unwrap(),
                ),
            ] {
                probe(
                    name,
                    send(
                        &broker,
                        &approver,
                        endpoint,
                        method.clone(),
                        &path,
                        true,
                        Some((content_type, bytes)),
                    )
                    .await,
                );
            }
        }
        probe(
            "wrong method",
            send(&broker, &approver, endpoint, Method::PUT, &path, true, None).await,
        );
        let refusals = endpoint.refusals();
        for answer in answers {
            if answer.status.is_success() {
                continue;
            }
            // A refused oversized body may end in a closed connection rather than a 413.
            let body: Value = serde_json::from_str(&answer.body).unwrap_or_else(|_| {
                panic!(
                    "{} {} ({}): not a typed error: {}",
                    endpoint.method, endpoint.path, answer.probe, answer.body
                )
            });
            let code = body["code"].as_str().unwrap_or_default();
            assert!(body["message"].is_string(), "{body}");
            let listed = refusals
                .get(&answer.status.as_u16())
                .is_some_and(|codes| codes.contains(&code));
            assert!(
                listed,
                "{} {} ({}): {} {code} is not in the document: {refusals:?}",
                endpoint.method, endpoint.path, answer.probe, answer.status
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} refusals checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_queries_paths_and_methods_get_the_same_typed_body() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let agent = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", broker.url))
            .bearer_auth(broker.agent_secret(BILLING))
            .send()
    };
    let code = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        code(agent("/v1/requests/pa_x?wait=soon").await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "invalid_query".into())
    );
    assert_eq!(
        code(agent("/v1/requests/%FF").await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "invalid_path".into())
    );
    assert_eq!(
        code(
            approver
                .send(Method::GET, "/v1/approver/requests?status=bogus", None, &[])
                .await
        )
        .await,
        (StatusCode::BAD_REQUEST, "invalid_query".into())
    );
    assert_eq!(
        code(
            approver
                .send(Method::GET, "/v1/approver/requests?limit=-1", None, &[])
                .await
        )
        .await,
        (StatusCode::BAD_REQUEST, "invalid_query".into())
    );
    let put = reqwest::Client::new()
        .put(format!("{}/v1/pair", broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(put).await,
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    assert_eq!(
        code(
            reqwest::get(format!("{}/nowhere", broker.url))
                .await
                .unwrap()
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

/// The document is generated from the wire types: the registry's keys and credentials, the
/// pending action and the grant's wire bodies are typed, not bare objects.
#[test]
fn the_document_types_the_wire() {
    let document = countersign_broker::openapi::document();
    let schemas = &document["components"]["schemas"];
    for (schema, member) in [
        ("ApproverEntry", "device_keys"),
        ("ApproverEntry", "credentials"),
        ("PendingAction", "action_hash"),
        ("PendingAction", "delegation"),
        ("EvaluationRequest", "subject"),
        ("RegisteredCredential", "public_key"),
    ] {
        assert!(
            schemas[schema]["properties"][member].is_object(),
            "{schema}.{member}: {}",
            schemas[schema]
        );
    }
    assert_eq!(
        schemas["DeviceJwk"]["required"],
        json!(["kty", "crv", "x", "kid"])
    );
    // Every code of the broker's own is listed for some endpoint.
    for code in countersign_broker::error::ErrorCode::ALL {
        assert!(
            ENDPOINTS
                .iter()
                .any(|e| e.refusals().values().any(|c| c.contains(&code.as_str()))),
            "{} is listed nowhere",
            code.as_str()
        );
    }
}
