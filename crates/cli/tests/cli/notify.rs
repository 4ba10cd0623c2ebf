//! Notifications through the session's real notification server (dunst), read back from its
//! history: one per item, with details or, in privacy mode, only "Approval requested".

use std::time::Duration;

use serde_json::Value;

use crate::support::{App, agent, broker, held, submit, url};

/// Every notification dunst has shown, as (appname, summary, body).
async fn shown() -> Vec<(String, String, String)> {
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "notification tests need the session of scripts/session.sh (Xvfb and dunst installed)"
    );
    let close = tokio::process::Command::new("dunstctl")
        .arg("close-all")
        .status()
        .await
        .expect("dunstctl (install dunst)");
    assert!(close.success());
    let output = tokio::process::Command::new("dunstctl")
        .arg("history")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let history: Value = serde_json::from_slice(&output.stdout).unwrap();
    let field = |n: &Value, k: &str| n[k]["data"].as_str().unwrap_or_default().to_owned();
    history["data"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (field(n, "appname"), field(n, "summary"), field(n, "body")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_item_with_details_or_privacy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let agent = agent(&url(&broker));
    let detailed = App::paired(dir.path(), &broker).await;
    let private = App::paired(dir.path(), &broker).await;
    let intent = format!(
        "Refund <b>{}</b> for the notification test",
        std::process::id()
    );
    submit(&agent, &held(&intent)).await;

    detailed.ok(&["pending", "--notify"]).await;
    // Asking again notifies nothing new: one notification per item.
    detailed.ok(&["pending", "--notify"]).await;
    private.ok(&["pending", "--notify", "--private"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let all = shown().await;
    let ours: Vec<_> = all
        .iter()
        .filter(|(app, _, body)| {
            app == "Countersign" && body.contains(&std::process::id().to_string())
        })
        .collect();
    assert_eq!(ours.len(), 1, "{all:?}");
    let (_, summary, body) = ours[0];
    assert_eq!(
        summary,
        "spiffe://example.com/agent/billing wants stripe/refunds.create"
    );
    // Markup from the agent is escaped, never interpreted.
    assert!(body.contains("&lt;b&gt;") || body.contains("<b>"), "{body}");
    assert!(
        all.iter().any(|(app, summary, body)| app == "Countersign"
            && summary == "Approval requested"
            && body.is_empty()),
        "{all:?}"
    );
    // The history records the notification (and, as the app does, the first look at the item,
    // which this very `show` is).
    let items = detailed.ok(&["pending"]).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let kinds: Vec<String> = detailed.ok(&["show", &id]).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["received", "notified", "viewed"]);
}
