//! The local history: chain, filters, search, export, and detection of an edited file.

use countersign_approver::Error;
use countersign_approver::history::{EntryKind, Filter, History, ItemStatus};
use countersign_protocol::PendingAction;
use countersign_protocol::action::{
    ActionName, ActionRequest, Actor, Context, PendingParts, PolicyRef, Resource, Subject,
    Timestamp,
};
use countersign_protocol::spiffe::SpiffeId;
use serde_json::json;

const BROKER: &str = "http://127.0.0.1:8470";

fn item(id: &str, agent: &str, tool: &str, intent: &str, at: i64) -> PendingAction {
    pending_with(
        id,
        agent,
        tool,
        intent,
        at,
        json!({"to": "orders@supplier.example.net", "note": "contains, \"quotes\" and commas"}),
    )
}

/// A pending action of `agent` (a name under `spiffe://example.com/agent/`) for `tool`.
pub fn pending_with(
    id: &str,
    agent: &str,
    tool: &str,
    intent: &str,
    at: i64,
    arguments: serde_json::Value,
) -> PendingAction {
    pending_to(
        "https://tools-gateway.example.com",
        id,
        agent,
        tool,
        intent,
        at,
        arguments,
    )
}

/// [`pending_with`] for the gateway `audience`.
pub fn pending_to(
    audience: &str,
    id: &str,
    agent: &str,
    tool: &str,
    intent: &str,
    at: i64,
    arguments: serde_json::Value,
) -> PendingAction {
    PendingAction::new(
        PendingParts {
            id: id.into(),
            created_at: Timestamp::from_unix(at).unwrap(),
            expires_at: Timestamp::from_unix(at + 300).unwrap(),
            audience: audience.into(),
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
            policy: PolicyRef {
                id: "p".into(),
                reason: "r".into(),
            },
        },
        ActionRequest {
            subject: Subject {
                kind: "user".into(),
                id: "alice@example.com".into(),
                properties: None,
            },
            actor: Actor {
                id: SpiffeId::parse(&format!("spiffe://example.com/agent/{agent}")).unwrap(),
                act: None,
            },
            action: ActionName {
                name: "tools/call".into(),
                properties: None,
            },
            resource: Resource {
                kind: "tool".into(),
                id: tool.into(),
                properties: None,
            },
            context: Context {
                intent: intent.into(),
                arguments: arguments.as_object().unwrap().clone(),
                data: None,
                annotations: None,
            },
        },
    )
    .unwrap()
}

fn filled(dir: &std::path::Path) -> History {
    let mut history = History::open(&dir.join("history.db")).unwrap();
    history
        .receive(
            BROKER,
            &item(
                "pa_1",
                "billing",
                "stripe/refunds.create",
                "Refund order 1234 after complaint",
                1000,
            ),
            1001,
        )
        .unwrap();
    history
        .receive(
            BROKER,
            &item(
                "pa_2",
                "devops",
                "github/repos.delete",
                "Delete the prototype repository",
                2000,
            ),
            2001,
        )
        .unwrap();
    history
        .receive(
            BROKER,
            &item(
                "pa_3",
                "billing",
                "gmail/send",
                "Send the signed contract to the supplier",
                3000,
            ),
            3001,
        )
        .unwrap();
    history
        .record("pa_1", EntryKind::Notified, json!({}), 1002)
        .unwrap();
    history
        .record("pa_1", EntryKind::Viewed, json!({}), 1003)
        .unwrap();
    history
        .record("pa_1", EntryKind::Approved, json!({"jti": "abc"}), 1004)
        .unwrap();
    history
        .record("pa_1", EntryKind::Redeemed, json!({}), 1005)
        .unwrap();
    history
        .record("pa_2", EntryKind::Denied, json!({"reason": "no"}), 2005)
        .unwrap();
    history
}

#[test]
fn every_state_change_is_chained_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let history = filled(dir.path());
    let entries = history.entries("pa_1").unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["received", "notified", "viewed", "approved", "redeemed"]
    );
    assert_eq!(history.item("pa_1").unwrap().unwrap().1, "redeemed");
    assert_eq!(history.item("pa_2").unwrap().unwrap().1, "denied");
    assert_eq!(history.verify().unwrap().entries, 8);
    // Survives reopening.
    drop(history);
    let history = History::open(&dir.path().join("history.db")).unwrap();
    assert_eq!(history.verify().unwrap().entries, 8);
}

#[test]
fn receiving_twice_records_once_and_a_mismatching_hash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = History::open(&dir.path().join("h.db")).unwrap();
    let pending = item("pa_1", "billing", "stripe/refunds.create", "Refund", 1000);
    assert!(history.receive(BROKER, &pending, 1).unwrap().is_some());
    assert!(history.receive(BROKER, &pending, 2).unwrap().is_none());
    let mut lying = item("pa_2", "billing", "stripe/refunds.create", "Refund", 1000);
    lying.context.intent = "Refund a small amount".into();
    let entry = history.receive(BROKER, &lying, 3).unwrap().unwrap();
    assert_eq!(entry.kind, "refused");
    assert_eq!(history.item("pa_2").unwrap().unwrap().1, "refused");
    assert!(matches!(
        history.record("pa_9", EntryKind::Viewed, json!({}), 4),
        Err(Error::UnknownItem(_))
    ));
}

#[test]
fn filters_and_full_text_search_find_the_right_items() {
    let dir = tempfile::tempdir().unwrap();
    let history = filled(dir.path());
    let ids = |f: Filter| {
        history
            .list(&Filter { limit: 100, ..f })
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Filter::default()), ["pa_3", "pa_2", "pa_1"]);
    assert_eq!(
        ids(Filter {
            agent: Some("spiffe://example.com/agent/billing".into()),
            ..Filter::default()
        }),
        ["pa_3", "pa_1"]
    );
    assert_eq!(
        ids(Filter {
            tool: Some("github/repos.delete".into()),
            ..Filter::default()
        }),
        ["pa_2"]
    );
    assert_eq!(
        ids(Filter {
            status: Some(ItemStatus::Pending),
            ..Filter::default()
        }),
        ["pa_3"]
    );
    assert_eq!(
        ids(Filter {
            since: Some(1500),
            until: Some(2500),
            ..Filter::default()
        }),
        ["pa_2"]
    );
    // Filters combine: each one given narrows the others.
    let billing = || Some("spiffe://example.com/agent/billing".to_owned());
    assert_eq!(
        ids(Filter {
            agent: billing(),
            since: Some(1500),
            ..Filter::default()
        }),
        ["pa_3"]
    );
    assert_eq!(
        ids(Filter {
            agent: billing(),
            until: Some(2500),
            status: Some(ItemStatus::Redeemed),
            ..Filter::default()
        }),
        ["pa_1"]
    );
    assert_eq!(
        ids(Filter {
            search: Some("contract supplier".into()),
            ..Filter::default()
        }),
        ["pa_3"]
    );
    assert_eq!(
        ids(Filter {
            search: Some("refund".into()),
            ..Filter::default()
        }),
        ["pa_1"]
    );
    assert_eq!(
        ids(Filter {
            search: Some("orders@supplier.example.net".into()),
            ..Filter::default()
        })
        .len(),
        3,
        "arguments are indexed"
    );
    // Search text is never FTS5 syntax.
    for hostile in [
        "\"",
        "NEAR(a b)",
        "a* OR b",
        "pa_1) --",
        "'; DROP TABLE items; --",
        "*",
    ] {
        history
            .list(&Filter {
                search: Some(hostile.into()),
                limit: 10,
                ..Filter::default()
            })
            .unwrap();
    }
    assert_eq!(
        ids(Filter {
            search: Some("refund".into()),
            status: Some(ItemStatus::Redeemed),
            ..Filter::default()
        }),
        ["pa_1"]
    );
}

#[test]
fn exports_hold_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let history = filled(dir.path());
    let mut jsonl = Vec::new();
    assert_eq!(history.export_jsonl(&mut jsonl).unwrap(), 8);
    let lines: Vec<serde_json::Value> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[5]["kind"], "approved");
    assert_eq!(lines[5]["prev"], lines[4]["hash"]);
    let mut csv = Vec::new();
    assert_eq!(history.export_csv(&mut csv).unwrap(), 8);
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["seq", "at", "item", "kind", "detail", "prev", "hash"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 8);
    assert_eq!(&records[7][3], "denied");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&records[7][4]).unwrap()["reason"],
        "no"
    );
}

/// Edits made with another SQLite client, as an attacker with the file would.
/// Fills a history, runs `sql` on its file, and expects `verify` to name entry `seq` with a
/// reason containing `reason`.
fn assert_detected(sql: &str, seq: i64, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).verify().unwrap();
    tamper(dir.path(), sql);
    let history = History::open(&dir.path().join("history.db")).unwrap();
    let outcome = history.verify();
    assert!(
        matches!(&outcome, Err(Error::ChainBroken { seq: at, reason: why }) if *at == seq && why.contains(reason)),
        "{sql}: expected entry {seq} ({reason}), got {outcome:?}"
    );
}

fn tamper(dir: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("history.db")).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn an_edited_history_file_is_detected_at_the_first_broken_entry() {
    let cases = [
        (
            "UPDATE entries SET detail = '{\"jti\":\"other\"}' WHERE seq = 6",
            6,
            "changed",
        ),
        (
            "UPDATE entries SET kind = 'denied' WHERE seq = 6",
            6,
            "changed",
        ),
        ("UPDATE entries SET at = at + 1 WHERE seq = 2", 2, "changed"),
        ("DELETE FROM entries WHERE seq = 5", 5, "missing"),
        // Cutting off the newest entry leaves a valid shorter chain, but the item it moved
        // still shows the status it set.
        ("DELETE FROM entries WHERE seq = 8", 2, "reads denied"),
        (
            "UPDATE entries SET item = 'pa_3' WHERE seq = 7",
            7,
            "changed",
        ),
    ];
    for (sql, seq, reason) in cases {
        assert_detected(sql, seq, reason);
    }
    // Recomputing one entry's hash does not help: the next entry's link breaks.
    let dir = tempfile::tempdir().unwrap();
    drop(filled(dir.path()));
    let history = History::open(&dir.path().join("history.db")).unwrap();
    let mut entries = history.entries("pa_1").unwrap();
    drop(history);
    let forged = &mut entries[3];
    forged.detail = json!({"jti": "forged"});
    tamper(
        dir.path(),
        &format!(
            "UPDATE entries SET detail = '{{\"jti\":\"forged\"}}', hash = 'recomputed-{}' WHERE seq = 6",
            forged.seq
        ),
    );
    let history = History::open(&dir.path().join("history.db")).unwrap();
    assert!(matches!(
        history.verify(),
        Err(Error::ChainBroken { seq: 6, .. })
    ));
}

#[test]
fn an_edited_item_is_detected_against_its_entries() {
    // What the app shows and approves from is the items table: a forged action (with a hash
    // recomputed to match it), a status set back, a removed or an invented item are all caught.
    let forged = item(
        "pa_3",
        "billing",
        "gmail/send",
        "Send the signed contract to someone else",
        3000,
    );
    let forged = serde_json::to_string(&forged).unwrap().replace('\'', "''");
    let cases = [
        (
            format!("UPDATE items SET pending = '{forged}' WHERE id = 'pa_3'"),
            3,
            "shows an action other than the one this entry recorded",
        ),
        (
            "UPDATE items SET status = 'pending' WHERE id = 'pa_2'".to_owned(),
            8,
            "reads pending, but this entry made it denied",
        ),
        (
            "UPDATE items SET broker = 'https://elsewhere.example' WHERE id = 'pa_3'".to_owned(),
            3,
            "shows an action other than the one this entry recorded",
        ),
        (
            "UPDATE items SET intent = 'Nothing to see' WHERE id = 'pa_3'".to_owned(),
            3,
            "shows an action other than the one this entry recorded",
        ),
        (
            "DELETE FROM items WHERE id = 'pa_3'".to_owned(),
            3,
            "was removed",
        ),
        (
            "INSERT INTO items (id, broker, status, agent, tool, intent, pending, created_at, expires_at, updated_at)
             SELECT 'pa_9', broker, status, agent, tool, intent, pending, created_at, expires_at, updated_at
             FROM items WHERE id = 'pa_3'"
                .to_owned(),
            0,
            "has no entry",
        ),
    ];
    for (sql, seq, reason) in cases {
        assert_detected(&sql, seq, reason);
    }
}
