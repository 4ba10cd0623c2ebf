//! A broker over TLS: its certificate is pinned at pairing (by the fingerprint its
//! administrator hands over), and a broker presenting any other certificate is refused.

use std::path::Path;
use std::time::Duration;

use countersign_approver::pin::Fingerprint;
use countersign_broker::config::Tls;
use countersign_broker::store::SqliteStore;

use crate::support::{App, OWNER, broker_config};

struct Served {
    task: tokio::task::JoinHandle<()>,
    fingerprint: String,
}

async fn serve_tls(dir: &Path, port: u16, name: &str) -> Served {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = broker_config(dir, &format!("127.0.0.1:{port}"));
    config.public_url = Some(format!("https://localhost:{port}"));
    config.tls = Some(Tls {
        cert: cert_path,
        key: key_path,
    });
    let task = tokio::spawn(async move {
        let _ = countersign_broker::serve(config).await;
    });
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    // Served once it answers with this certificate (the client trusts no other): a broker
    // still starting, or the one before it still closing, is waited for, up to 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker with certificate {name} never answered on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Served {
        task,
        fingerprint: Fingerprint::of(cert.cert.der()).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_certificate_is_pinned_at_pairing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = serve_tls(dir.path(), port, "first").await;
    let url = format!("https://localhost:{port}");
    let store = SqliteStore::open(&dir.path().join("broker.db")).unwrap();
    let code =
        countersign_broker::pairing::issue_pairing_code(&store, OWNER, 0, i64::MAX / 2).unwrap();
    let app = App::new(dir.path());
    app.ok(&["authenticators", "add", "--kind", "dev", "--name", "laptop"])
        .await;

    // A self-signed certificate without a fingerprint: refused, and the code is not spent.
    let unknown = app.json(&["pair", &url, &code], 6).await;
    let message = unknown["error"]["message"].as_str().unwrap();
    assert!(message.contains("UnknownIssuer"), "{message}");
    // A wrong fingerprint: refused.
    let wrong = Fingerprint([7; 32]).to_string();
    let mismatch = app
        .json(&["pair", &url, &code, "--fingerprint", &wrong], 6)
        .await;
    let message = mismatch["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the pinned fingerprint"),
        "{message}"
    );

    // The right one: paired and pinned, and the broker is reached.
    let paired = app
        .ok(&[
            "pair",
            &url,
            &code,
            "--fingerprint",
            &served.fingerprint.to_lowercase(),
        ])
        .await;
    assert_eq!(paired["fingerprint"], served.fingerprint.as_str());
    app.ok(&["sync"]).await;

    // Another certificate on the same address (an impostor, or a renewal): refused.
    served.task.abort();
    let _ = served.task.await;
    let impostor = serve_tls(dir.path(), port, "second").await;
    let refused = app.json(&["sync"], 6).await;
    let message = refused["failed"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("does not match the pinned fingerprint"),
        "{message}"
    );
    impostor.task.abort();
}
