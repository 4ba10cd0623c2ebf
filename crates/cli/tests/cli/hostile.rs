//! Hostile pending actions: markup and script, bidirectional overrides, oversized and deeply
//! nested arguments. Shown inert (as text, hidden characters made visible) or refused with a
//! clear error, and everything keeps working.

use countersign_broker::simulate::Scenario;
use serde_json::{Value, json};

use crate::support::{App, agent, broker, held, submit, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_inert_and_oversized_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let app = App::paired(dir.path(), &broker).await;
    let agent = agent(&url(&broker));

    let script = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let scenario = Scenario {
        arguments: json!({
            "order": "1234",
            "amount": "5000.00",
            "currency": "EUR",
            "note": format!("{script} pay to \u{202E}moc.live\u{202C} now\u{200B}"),
        }),
        ..held(&format!("Refund {script} \u{2066}safe\u{2069}"))
    };
    let (_, id) = submit(&agent, &scenario).await;
    app.ok(&["sync"]).await;
    let review = app.ok(&["show", &id]).await["review"].clone();
    assert_eq!(review["hidden_characters"], true);
    let note = review["arguments"]["note"].as_str().unwrap();
    assert!(note.contains("[U+202E RLO]moc.live[U+202C PDF]"), "{note}");
    assert!(note.contains("[U+200B ZWSP]"), "{note}");
    assert!(note.contains(script), "markup is kept as text: {note}");
    let intent = review["intent"].as_str().unwrap();
    assert!(intent.contains("[U+2066 LRI]safe[U+2069 PDI]"), "{intent}");

    // The readable form carries no raw control characters at all.
    let text = String::from_utf8(app.run(&["show", &id]).await.stdout).unwrap();
    assert!(
        text.contains("Hidden or direction-changing characters"),
        "{text}"
    );
    assert!(
        !text
            .chars()
            .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}')),
        "{text}"
    );

    // A 1 MB argument and deep nesting are refused at the broker: the 1 MB body over its size
    // limit (413, or the connection closed while the client is still sending), the nesting
    // with a typed 400.
    let huge = Scenario {
        arguments: json!({"order": "1", "amount": "5000.00", "blob": "A".repeat(1 << 20)}),
        ..held("Refund with a huge argument")
    };
    let error = agent
        .evaluate(&agent.request(&huge).unwrap())
        .await
        .unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("413") || error.contains("error sending request"),
        "{error}"
    );
    // A fresh client: the refused upload may have left the pooled connection closed.
    let agent = crate::support::agent(&url(&broker));
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "n": deep });
    }
    let nested = Scenario {
        arguments: json!({"order": "1", "amount": "5000.00", "deep": deep}),
        ..held("Refund with deep nesting")
    };
    let error = agent
        .evaluate(&agent.request(&nested).unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("400"), "{error}");

    // The approver keeps working: the hostile item can still be denied.
    let pending = app.ok(&["pending"]).await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    let denied: Value = app.ok(&["deny", &id, "--reason", "phishing"]).await;
    assert_eq!(denied["broker_status"], "denied");
}
