//! Demo mode (feature `demo`): an embedded broker on loopback with the demo policies and fleet,
//! simulated agents submitting a realistic mix, and the development authenticator — enrolled
//! and paired on start, in a profile of its own — so a newcomer sees the whole loop.

use std::sync::Arc;
use std::time::Duration;

use countersign_approver::authn::{Kind, Unattended};
use countersign_approver::engine::Engine;
use countersign_broker::simulate::{demo_fleet, run_fleet};

use crate::state::AppState;

const OWNER: &str = "alice@example.com";

/// Starts the broker and the agents, and opens the demo profile paired with them.
pub async fn start() -> anyhow::Result<Arc<AppState>> {
    let dir = std::env::var_os("COUNTERSIGN_DEMO_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("countersign-demo-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir)?;
    let (secrets, agents, gateways) = demo_fleet(OWNER);
    let config = countersign_broker::Config {
        listen: "127.0.0.1:0".parse()?,
        database: dir.join("broker.db"),
        // A demonstration broker: the built-in demo policies and tool catalog.
        demo: true,
        tools: countersign_broker::simulate::demo_catalog(),
        agents,
        gateways,
        ..countersign_broker::Config::default()
    };
    let broker = countersign_broker::spawn(config).await?;
    let url = format!("http://{}", broker.addr);
    let code = countersign_broker::pairing::issue_pairing_code(
        broker.state.store.as_ref(),
        OWNER,
        0,
        i64::MAX / 2,
    )?;
    let profile = format!("demo-{}", std::process::id());
    let mut engine = Engine::open(&dir.join("app"), &profile)?;
    if engine.authenticators()?.is_empty() {
        engine
            .enroll(Kind::Dev, "Demo key (development)", None, &Unattended)
            .await?;
    }
    engine
        .pair(&url, &code, None, Some("demo".into()), None, &Unattended)
        .await?;
    // The embedded broker's address and the agents' and gateways' demo secrets, so that other
    // tools (the end-to-end run, `countersign-broker simulate`, the gateway) can act as them.
    write_private(
        &dir.join("demo.json"),
        &serde_json::to_vec_pretty(&serde_json::json!({
            "broker": url,
            "owner": secrets.owner,
            "agents": secrets.agents.iter().map(|a| serde_json::json!({
                "id": a.id, "secret": a.secret, "delegated_by": a.delegated_by,
            })).collect::<Vec<_>>(),
            // For `countersign-gateway` in front of a demo MCP server (scripts/demo-app.sh).
            "gateways": secrets.gateways.iter().map(|g| serde_json::json!({
                "audience": g.audience, "secret": g.secret, "key": g.key,
            })).collect::<Vec<_>>(),
        }))?,
    )?;
    let pause = std::env::var("COUNTERSIGN_DEMO_PAUSE_MS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6000);
    tauri::async_runtime::spawn(async move {
        // The broker lives as long as the app.
        let _broker = broker;
        if let Err(e) = run_fleet(&url, &secrets, 0, Duration::from_millis(pause)).await {
            tracing::error!(error = %e, "the simulated agents stopped");
        }
    });
    Ok(Arc::new(AppState::new(engine, true)))
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    // Written aside and renamed: a reader polling for the file never sees half of it.
    let partial = path.with_extension("partial");
    options.open(&partial)?.write_all(bytes)?;
    std::fs::rename(&partial, path)
}
