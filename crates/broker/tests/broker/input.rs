//! Hostile and broken input gets a typed 4xx, and the service carries on.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{BILLING, OWNER, PAYMENTS, TestBroker, post_raw, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_unknown_and_mistyped_bodies_are_refused_with_codes() {
    let broker = TestBroker::start().await;
    let url = format!("{}/access/v1/evaluation", broker.url);
    let secret = broker.agent_secret(BILLING);
    let agent = broker.agent(BILLING);
    let good = agent.request(&scenario("calendar/events.list")).unwrap();
    let good_body = json!({"subject": good.subject, "action": good.action, "resource": good.resource, "context": good.context});

    let mut unknown = good_body.clone();
    unknown["context"]["hidden"] = json!("x");
    let mut spoofed = good_body.clone();
    spoofed["actor"] = json!({"id": "spiffe://example.com/agent/devops"});
    let duplicate =
        br#"{"subject":{"type":"user","id":"a"},"subject":{"type":"user","id":"b"}}"#.to_vec();
    let huge = serde_json::to_vec(&json!({"blob": "A".repeat(2 * 1024 * 1024)})).unwrap();
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let mut nested = good_body.clone();
    nested["context"]["arguments"]["deep"] = deep;

    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "not json",
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "unknown field",
            "application/json",
            serde_json::to_vec(&unknown).unwrap(),
            StatusCode::BAD_REQUEST,
            "schema",
        ),
        (
            "duplicate key",
            "application/json",
            duplicate,
            StatusCode::BAD_REQUEST,
            "duplicate_key",
        ),
        (
            "oversized",
            "application/json",
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "too deep",
            "application/json",
            serde_json::to_vec(&nested).unwrap(),
            StatusCode::BAD_REQUEST,
            "too_deep",
        ),
        (
            "wrong content type",
            "text/plain",
            serde_json::to_vec(&good_body).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "spoofed actor",
            "application/json",
            serde_json::to_vec(&spoofed).unwrap(),
            StatusCode::FORBIDDEN,
            "actor_mismatch",
        ),
    ];
    for (name, content_type, body, status, code) in cases {
        let (got, body) = post_raw(&url, &secret, content_type, body).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }

    // Unauthenticated callers and unknown routes get typed answers too.
    let (status, body) = post_raw(
        &url,
        "not-a-secret",
        "application/json",
        serde_json::to_vec(&good_body).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, body) = post_raw(
        &format!("{}/v1/grants/redeem", broker.url),
        &secret,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "an agent is not a gateway"
    );
    let (status, body) = post_raw(
        &format!("{}/v1/nothing", broker.url),
        &secret,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = post_raw(
        &format!("{}/v1/grants/redeem", broker.url),
        &broker.gateway_secret(PAYMENTS),
        "application/json",
        serde_json::to_vec(&json!({"grant": "x", "action": good})).unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed"))
    );

    // The service is unaffected.
    let health = reqwest::get(format!("{}/healthz", broker.url))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(agent.evaluate(&good).await.unwrap().decision);
    let metrics = reqwest::get(format!("{}/metrics", broker.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("countersign_evaluations_total{outcome=\"allow\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_replayed_and_foreign_proofs_are_refused() {
    let broker = TestBroker::start().await;
    let approver = broker.approver(OWNER).await;
    let url = format!("{}/v1/approver/requests", broker.url);
    let http = reqwest::Client::new();
    let code = |r: reqwest::Response| async move {
        (
            r.status(),
            r.json::<serde_json::Value>().await.unwrap()["code"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };

    let unsigned = http.get(&url).send().await.unwrap();
    assert_eq!(
        code(unsigned).await,
        (StatusCode::UNAUTHORIZED, "proof_missing".into())
    );

    let proof = approver.proof("GET", "/v1/approver/requests", b"");
    let first = http
        .get(&url)
        .header("countersign-proof", &proof)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let replayed = http
        .get(&url)
        .header("countersign-proof", &proof)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(replayed).await,
        (StatusCode::UNAUTHORIZED, "proof_replayed".into())
    );

    let old = countersign_protocol::proof::sign_proof(
        &approver.dev.device,
        &approver.id,
        &countersign_protocol::proof::ProofRequest {
            method: "GET",
            url: &url,
            body: b"",
            now: countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock)
                - 600,
        },
    );
    let stale = http
        .get(&url)
        .header("countersign-proof", old)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(stale).await,
        (StatusCode::UNAUTHORIZED, "proof_stale".into())
    );

    let other_path = approver.proof("GET", "/v1/approver/stream", b"");
    let wrong = http
        .get(&url)
        .header("countersign-proof", other_path)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(wrong).await,
        (StatusCode::UNAUTHORIZED, "proof_wrong_request".into())
    );

    let stranger = crate::support::TestApprover::new(&broker.url, OWNER);
    let foreign = stranger
        .send(Method::GET, "/v1/approver/requests", None, &[])
        .await;
    assert_eq!(
        code(foreign).await,
        (StatusCode::UNAUTHORIZED, "proof_unknown_key".into())
    );

    // A body changed after signing.
    let signed_for = serde_json::to_vec(&json!({"agent": crate::support::DEVOPS})).unwrap();
    let proof = approver.proof("POST", "/v1/approver/agents/suspend", &signed_for);
    let tampered = http
        .post(format!("{}/v1/approver/agents/suspend", broker.url))
        .header("countersign-proof", proof)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"agent": BILLING})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(tampered).await,
        (StatusCode::UNAUTHORIZED, "proof_wrong_body".into())
    );
}
