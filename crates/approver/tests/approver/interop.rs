//! Real grants, made by the engine exactly as the app makes them, checked by a second,
//! independent implementation in another language (`tests/e2e/verify_grant.py`: py_webauthn as the
//! WebAuthn relying party with the exact origin, `cryptography` for the Ed25519 JWS, `rfc8785`
//! for the hashes). A relying party that compares origins exactly accepts them; tampering is
//! refused there too.

use std::path::PathBuf;
use std::process::Command;

use countersign_approver::authn::{Kind, Unattended};
use countersign_approver::engine::Engine;
use serde_json::{Value, json};

use crate::support::{GATEWAY, broker_config, code, grant_of, held, sim};

fn python_deps() -> PathBuf {
    let deps = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/python-deps"
    ));
    assert!(
        deps.join("webauthn").is_dir(),
        "{} is missing: run scripts/setup.sh (it installs the independent relying party)",
        deps.display()
    );
    deps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_grants_verify_with_an_independent_relying_party() {
    let deps = python_deps();
    let dir = tempfile::tempdir().unwrap();
    let broker = countersign_broker::spawn(broker_config(dir.path(), "127.0.0.1:0"))
        .await
        .unwrap();
    let url = format!("http://{}", broker.addr);
    let mut engine = Engine::open(
        &dir.path().join("app"),
        &format!("interop-{}", std::process::id()),
    )
    .unwrap();
    engine
        .enroll(Kind::Dev, "key", None, &Unattended)
        .await
        .unwrap();
    engine
        .pair(&url, &code(&broker), None, None, None, &Unattended)
        .await
        .unwrap();
    let agent = sim(&url);
    let mut grants = Vec::new();
    for scenario in [0, 2] {
        let request = agent
            .request(&countersign_broker::simulate::scenarios()[scenario])
            .unwrap();
        let id = held(&agent, &request).await;
        engine.sync().await.unwrap();
        engine.approve(&id, None, &Unattended).await.unwrap();
        grants.push((grant_of(&agent, &id).await, request));
    }
    let registry: Value = reqwest::get(format!("{url}/v1/registry"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let case = |name: &str,
                grant: &str,
                action: &countersign_protocol::ActionRequest,
                broker: &str| {
        json!({"name": name, "grant": grant, "action": action, "audience": GATEWAY, "broker": broker})
    };
    let (first, first_action) = &grants[0];
    let (second, second_action) = &grants[1];
    let mut changed = first_action.clone();
    changed
        .context
        .arguments
        .insert("amount".into(), json!("50000.00"));
    let mut flipped = first.clone().into_bytes();
    let at = first.find('.').unwrap() + 10;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    let cases = json!({
        "registry": registry,
        "now": crate::support::now(),
        "cases": [
            case("refund", first, first_action, &url),
            case("repository", second, second_action, &url),
            case("another action", first, &changed, &url),
            case("another broker", first, first_action, "https://other-broker.example.com"),
            case("a changed byte", &String::from_utf8(flipped).unwrap(), first_action, &url),
            case("another grant's action", second, first_action, &url),
        ],
    });
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/e2e/verify_grant.py"
        ))
        .arg(&file)
        .env("PYTHONPATH", &deps)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = |name: &str| {
        verdicts
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no verdict for {name}: {stdout}"))
    };
    assert_eq!(ok("refund")["ok"], true, "{stdout}");
    assert_eq!(ok("repository")["ok"], true, "{stdout}");
    for refused in [
        "another action",
        "another broker",
        "a changed byte",
        "another grant's action",
    ] {
        assert_eq!(ok(refused)["ok"], false, "{refused}: {stdout}");
    }
    broker.stop();
}
