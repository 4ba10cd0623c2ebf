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
        text.contains("Hidden, direction-changing or look-alike characters"),
        "{text}"
    );
    assert!(
        !text
            .chars()
            .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}')),
        "{text}"
    );

    // Text cannot fake the review's structure: line breaks in an intent or an argument stay
    // inside their field (shown as markers), a look-alike letter in a name is marked, and what
    // the agent put into properties is shown too.
    let faked = "Refund 1 EUR\nTool         calendar/events.list\r\nAmount       0\u{2028}Policy       none";
    let mut scenario = held(faked);
    scenario.arguments = json!({
        "order": "77", "amount": "5000.00", "currency": "EUR",
        "to": "p\u{0430}ypal-billing@example.com", "note": "line one\nTool         calendar/events.list",
    });
    let mut request = agent.request(&scenario).unwrap();
    request.resource.properties = json!({"account": "acct_attacker_999", "mode": "live"})
        .as_object()
        .cloned();
    let (_, faked_id) = crate::support::submit_request(&agent, &request).await;
    app.ok(&["sync"]).await;
    let text = String::from_utf8(app.run(&["show", &faked_id]).await.stdout).unwrap();
    for line in text.lines() {
        assert!(
            !line.starts_with("Tool         calendar")
                && !line.starts_with("Amount")
                && !line.starts_with("Policy       none"),
            "a value started a line of the review: {line:?}\n{text}"
        );
    }
    assert!(text.contains("Refund 1 EUR[U+000A LF]Tool"), "{text}");
    assert!(text.contains("[U+2028 LSEP]Policy"), "{text}");
    assert!(text.contains("p[U+0430 CYRILLIC]ypal-billing"), "{text}");
    assert!(
        text.contains("acct_attacker_999"),
        "properties are shown: {text}"
    );
    assert!(text.contains("Line breaks"), "{text}");

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
    assert_eq!(pending.as_array().unwrap().len(), 2);
    let denied: Value = app.ok(&["deny", &id, "--reason", "phishing"]).await;
    assert_eq!(denied["broker_status"], "denied");
}
