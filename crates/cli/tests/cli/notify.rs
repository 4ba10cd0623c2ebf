//! Notifications through the session's real notification server (dunst), read back from its
//! history: one per item, with details or, in privacy mode, only "Approval requested".

use std::time::Duration;

use serde_json::Value;

use crate::support::{App, agent, broker, held, submit, url};

type Shown = Vec<(String, String, String)>;

/// Every notification dunst has shown, as (appname, summary, body), once `done` holds of them.
/// Dunst takes a notification in when it is sent, but shows it (and so can close it into its
/// history) only on a later turn of its loop, later still on a busy machine: this asks again
/// until `done` holds, for up to 30 s, and returns what it last saw.
async fn shown_once(done: impl Fn(&Shown) -> bool) -> Shown {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = shown().await;
        if done(&all) || tokio::time::Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every notification dunst has shown, as (appname, summary, body).
async fn shown() -> Shown {
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

    let pid = std::process::id().to_string();
    let ours = |all: &Shown| -> Vec<(String, String, String)> {
        all.iter()
            .filter(|(app, _, body)| app == "Countersign" && body.contains(&pid))
            .cloned()
            .collect()
    };
    let private_one = |all: &Shown| {
        all.iter().any(|(app, summary, body)| {
            app == "Countersign" && summary == "Approval requested" && body.is_empty()
        })
    };
    // Dunst shows notifications in the order they came, so once the private one (sent last) is
    // in the history, a second detailed one would be there too.
    let all = shown_once(|all| private_one(all) && !ours(all).is_empty()).await;
    assert!(private_one(&all), "{all:?}");
    let ours = ours(&all);
    assert_eq!(ours.len(), 1, "{all:?}");
    let (_, summary, body) = &ours[0];
    assert_eq!(
        summary,
        "spiffe://example.com/agent/billing wants stripe/refunds.create"
    );
    // Markup from the agent is escaped, never interpreted.
    assert!(body.contains("&lt;b&gt;") || body.contains("<b>"), "{body}");
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
