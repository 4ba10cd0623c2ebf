//! `countersign-broker serve` with a configured certificate speaks TLS (rustls) and nothing else.

use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_certificate_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\npolicies = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("b.db").display(),
            crate::support::demo_policies().display(),
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign-broker"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
        {
            answer = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain = reqwest::get(format!("http://localhost:{port}/healthz")).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answer, Some(reqwest::StatusCode::OK), "healthz over TLS");
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "no plaintext answer"
    );
}
