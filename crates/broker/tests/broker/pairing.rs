//! Pairing with one-time codes, and enrolment of further authenticators only with an assertion
//! by an enrolled one.

use countersign_protocol::api::{EnrollRequest, enrollment_challenge};
use countersign_protocol::dev_authenticator::SoftAuthenticator;
use countersign_protocol::registry::RegistryDocument;
use countersign_protocol::webauthn::RelyingParty;
use reqwest::{Method, StatusCode};

use crate::support::{OWNER, TestApprover, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_code_works_once_and_pins_the_device_in_the_registry() {
    let broker = TestBroker::start().await;
    let code = broker.pairing_code(OWNER);
    assert_eq!(code.len(), 11, "XXXXX-XXXXX");
    let mut laptop = TestApprover::new(&broker.url, OWNER);
    let paired = laptop.pair(&code.to_lowercase()).await.unwrap();
    assert_eq!(paired.owner, OWNER);

    let mut phone = TestApprover::new(&broker.url, OWNER);
    let (status, body) = phone.pair(&code).await.unwrap_err();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("pairing_code_invalid"))
    );
    let (status, body) = phone.pair("AAAAA-BBBBB").await.unwrap_err();
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("pairing_code_invalid"))
    );

    let registry: RegistryDocument = reqwest::get(format!("{}/v1/registry", broker.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registry.approvers.len(), 1);
    assert_eq!(registry.approvers[0].id, paired.approver_id);
    assert_eq!(
        registry.approvers[0].device_keys[0],
        laptop.dev.device.public_jwk()
    );
    let jwks: serde_json::Value = reqwest::get(format!("{}/v1/registry/jwks.json", broker.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"][0]["kid"],
        laptop.dev.device.public_jwk().kid.as_str()
    );
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_authenticator_needs_an_assertion_by_the_first() {
    let broker = TestBroker::start().await;
    let mut approver = broker.approver(OWNER).await;
    let mut key = SoftAuthenticator::new(RelyingParty::countersign()).unwrap();
    let credential = key.register(OWNER).unwrap();

    // Vouched for by the new key itself: refused.
    let challenge = enrollment_challenge(&approver.id, &credential).unwrap();
    let self_signed = key.assert(&credential.id, &challenge, true).unwrap();
    let body = serde_json::to_value(EnrollRequest {
        credential: credential.clone(),
        assertion: self_signed,
    })
    .unwrap();
    let response = approver
        .send(Method::POST, "/v1/approver/credentials", Some(&body), &[])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        "assertion_unknown_credential"
    );

    // An assertion by the enrolled authenticator over another challenge: refused.
    let wrong = approver.dev.assert(&[7u8; 32]).unwrap();
    let body = serde_json::to_value(EnrollRequest {
        credential: credential.clone(),
        assertion: wrong,
    })
    .unwrap();
    let response = approver
        .send(Method::POST, "/v1/approver/credentials", Some(&body), &[])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Vouched for by the enrolled one: accepted, and the new key can then approve.
    let vouch = approver.dev.assert(&challenge).unwrap();
    let body = serde_json::to_value(EnrollRequest {
        credential: credential.clone(),
        assertion: vouch,
    })
    .unwrap();
    let response = approver
        .send(Method::POST, "/v1/approver/credentials", Some(&body), &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let registry: RegistryDocument = reqwest::get(format!("{}/v1/registry", broker.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registry.approvers[0].credentials.len(), 2);

    approver.dev.authenticator = key;
    approver.dev.credential = credential;
    let agent = broker.agent(crate::support::BILLING);
    agent
        .evaluate(&agent.request(&crate::support::big_refund()).unwrap())
        .await
        .unwrap();
    let view = approver.list(Some("pending")).await.requests.remove(0);
    assert_eq!(approver.approve(&view, "new-key").await.0, StatusCode::OK);
}
