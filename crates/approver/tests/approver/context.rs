//! The review's risk context, each fact against a real history file: first requests, amounts
//! against past approvals (and the approvals a broker refused), the most similar earlier
//! request with its differences, an agent's last hour and denials, the approvals of a history
//! older than the context, and agent text made visible.

use countersign_approver::history::{
    EntryKind, History, ItemStatus, RiskContext, SIMILAR_CANDIDATES,
};
use countersign_protocol::PendingAction;
use serde_json::{Value, json};

use crate::history::pending_with;

const BROKER: &str = "http://127.0.0.1:8470";
const REFUNDS: &str = "stripe/refunds.create";

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    history: History,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let history = History::open(&path).unwrap();
        Self {
            _dir: dir,
            path,
            history,
        }
    }

    /// Receives a request; `decision` then records it (`None`: left pending).
    fn request(
        &mut self,
        id: &str,
        agent: &str,
        tool: &str,
        at: i64,
        arguments: Value,
        decision: Option<EntryKind>,
    ) -> PendingAction {
        let pending = pending_with(id, agent, tool, &format!("request {id}"), at, arguments);
        self.history.receive(BROKER, &pending, at).unwrap();
        if let Some(kind) = decision {
            self.history.record(id, kind, json!({}), at + 1).unwrap();
        }
        pending
    }

    /// [`Self::request`] of the billing agent for refunds.
    fn refund(
        &mut self,
        id: &str,
        at: i64,
        arguments: Value,
        decision: Option<EntryKind>,
    ) -> PendingAction {
        self.request(id, "billing", REFUNDS, at, arguments, decision)
    }

    fn context(&self, pending: &PendingAction) -> RiskContext {
        self.history.risk_context(pending).unwrap()
    }
}

#[test]
fn first_requests_of_an_agent_and_of_a_tool_are_flagged() {
    let mut f = Fixture::new();
    let first = f.refund("pa_1", 1000, json!({}), None);
    let c = f.context(&first);
    assert!(c.first_for_tool && c.first_for_agent);

    let again = f.refund("pa_2", 1100, json!({}), None);
    let c = f.context(&again);
    assert!(!c.first_for_tool && !c.first_for_agent);

    let other_agent = f.request("pa_3", "devops", REFUNDS, 1200, json!({}), None);
    let c = f.context(&other_agent);
    assert!(!c.first_for_tool && c.first_for_agent);

    let other_tool = f.request("pa_4", "billing", "gmail/send", 1300, json!({}), None);
    let c = f.context(&other_tool);
    assert!(c.first_for_tool && c.first_for_agent);

    // Only earlier requests count: the first stays the first.
    let c = f.context(&first);
    assert!(c.first_for_tool && c.first_for_agent);
}

#[test]
fn amounts_are_set_against_the_approvals_of_the_tool() {
    let mut f = Fixture::new();
    let approved = Some(EntryKind::Approved);
    f.refund(
        "pa_1",
        1000,
        json!({"amount": "100.00", "order": "17"}),
        approved,
    );
    let largest = f.refund("pa_2", 1010, json!({"amount": "250.00"}), approved);
    // Another agent's approval of the tool counts: the owner approved it.
    f.request(
        "pa_3",
        "devops",
        REFUNDS,
        1020,
        json!({"amount": 40}),
        approved,
    );
    // Denied, pending, or for another tool: not approvals of this one.
    f.refund(
        "pa_4",
        1030,
        json!({"amount": "90000.00"}),
        Some(EntryKind::Denied),
    );
    f.refund("pa_5", 1040, json!({"amount": "80000.00"}), None);
    f.request(
        "pa_6",
        "billing",
        "bank/transfer",
        1050,
        json!({"amount": "70000.00"}),
        approved,
    );

    let asked = f.refund(
        "pa_7",
        1060,
        json!({"amount": "1000.00", "quantity": 3, "note": "12 boxes", "order": "18"}),
        None,
    );
    let c = f.context(&asked);
    let names: Vec<&str> = c.amounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["amount", "quantity"],
        "numbers and decimals with a fraction only"
    );
    let amount = &c.amounts[0];
    assert_eq!(amount.value, "1000.00");
    assert_eq!(amount.approved, 3);
    assert_eq!(amount.largest, Some(250.0));
    assert_eq!(amount.typical, Some(100.0), "the median of 40, 100 and 250");
    assert_eq!(amount.times_largest, Some(4.0));
    let quantity = &c.amounts[1];
    assert_eq!(
        (
            quantity.approved,
            quantity.largest,
            quantity.typical,
            quantity.times_largest
        ),
        (0, None, None, None),
        "never approved with a quantity"
    );

    // An item is not its own precedent.
    let own = &f.context(&largest).amounts[0];
    assert_eq!((own.approved, own.largest), (2, Some(100.0)));

    // The broker refused the largest approval: it is open again, and no longer counts.
    f.history
        .record("pa_2", EntryKind::Rejected, json!({}), 1100)
        .unwrap();
    let amount = &f.context(&asked).amounts[0];
    assert_eq!((amount.approved, amount.largest), (2, Some(100.0)));
    assert_eq!(amount.typical, Some(70.0), "the median of 40 and 100");
}

#[test]
fn the_most_similar_decided_request_is_shown_with_its_differences() {
    let mut f = Fixture::new();
    f.refund(
        "pa_1",
        1000,
        json!({"order": "17", "amount": "20.00", "currency": "EUR"}),
        Some(EntryKind::Approved),
    );
    f.refund(
        "pa_2",
        1010,
        json!({"order": "A-2", "amount": "5000.00", "currency": "EUR", "reason": null}),
        Some(EntryKind::Denied),
    );
    // More alike, but pending, another agent's, or another tool's: not candidates.
    let same = json!({"order": "A-9", "amount": "5000.00", "currency": "EUR", "speed": "instant"});
    f.refund("pa_3", 1020, same.clone(), None);
    f.request(
        "pa_4",
        "devops",
        REFUNDS,
        1030,
        same.clone(),
        Some(EntryKind::Approved),
    );
    f.request(
        "pa_5",
        "billing",
        "bank/transfer",
        1040,
        same.clone(),
        Some(EntryKind::Approved),
    );

    let asked = f.refund("pa_6", 1050, same, None);
    let similar = f
        .context(&asked)
        .similar
        .expect("a decided request of the agent");
    assert_eq!(similar.id, "pa_2");
    assert_eq!(similar.status, ItemStatus::Denied);
    assert_eq!(similar.intent, "request pa_2");
    assert_eq!(similar.created_at, 1010);
    assert_eq!(similar.same, ["amount", "currency"]);
    let differences: Vec<(&str, Option<&Value>, Option<&Value>)> = similar
        .differences
        .iter()
        .map(|d| (d.name.as_str(), d.now.as_ref(), d.then.as_ref()))
        .collect();
    assert_eq!(
        differences,
        [
            ("order", Some(&json!("A-9")), Some(&json!("A-2"))),
            ("reason", None, Some(&Value::Null)),
            ("speed", Some(&json!("instant")), None),
        ]
    );
    // Absent and null stay apart in what the front ends receive.
    let wire = serde_json::to_value(&similar.differences[1]).unwrap();
    assert_eq!(wire, json!({"name": "reason", "then": null}));

    // None without a decided request of the agent for the tool.
    let lone = f.request("pa_7", "research", REFUNDS, 1060, json!({}), None);
    assert!(f.context(&lone).similar.is_none());
}

/// The window is the agent's last [`SIMILAR_CANDIDATES`] decided requests whatever their
/// outcome, newest first, with the undecided ones between them skipped.
#[test]
fn the_similar_request_is_chosen_among_the_last_decided_of_every_outcome() {
    let outcomes = [EntryKind::Approved, EntryKind::Denied, EntryKind::Expired];
    let alike = json!({"order": "A-1", "amount": "1.00", "currency": "EUR"});
    let decided = SIMILAR_CANDIDATES + 10;
    let mut f = Fixture::new();
    for i in 0..decided {
        let at = 1000 + 10 * i64::try_from(i).unwrap();
        // The fully alike request is the oldest one in the window: the 50th newest decided.
        let arguments = if i == decided - SIMILAR_CANDIDATES {
            alike.clone()
        } else {
            json!({"order": format!("B-{i}"), "amount": "1.00"})
        };
        let kind = outcomes[i % outcomes.len()];
        f.refund(&format!("pa_{i:03}"), at, arguments, Some(kind));
        // Undecided requests in between, more alike still, never count.
        f.refund(&format!("pa_{i:03}_open"), at + 5, alike.clone(), None);
    }
    let asked = f.refund("pa_asked", 5000, alike, None);
    let similar = f.context(&asked).similar.unwrap();
    assert_eq!(
        similar.id,
        format!("pa_{:03}", decided - SIMILAR_CANDIDATES)
    );
    assert_eq!(similar.same, ["amount", "currency", "order"]);

    // One more decided request moves it out of the window: the newest, equally like
    // the others, is shown instead.
    f.refund(
        "pa_newest",
        4000,
        json!({"order": "C", "amount": "1.00"}),
        Some(EntryKind::Denied),
    );
    let similar = f.context(&asked).similar.unwrap();
    assert_eq!(similar.id, "pa_newest");
    assert_eq!(similar.same, ["amount"]);
}

#[test]
fn the_agents_last_hour_and_denials_are_counted() {
    let mut f = Fixture::new();
    let t = 100_000;
    let denied = Some(EntryKind::Denied);
    f.refund("pa_1", t - 4000, json!({}), denied);
    f.request("pa_2", "billing", "gmail/send", t - 3700, json!({}), denied);
    f.refund("pa_3", t - 100, json!({}), Some(EntryKind::Approved));
    f.request("pa_4", "billing", "gmail/send", t - 50, json!({}), denied);
    f.request("pa_5", "devops", REFUNDS, t - 40, json!({}), denied);
    let asked = f.refund("pa_6", t, json!({}), None);
    // A later request does not count for this one's hour.
    f.refund("pa_7", t + 10, json!({}), denied);
    let c = f.context(&asked);
    assert_eq!(
        (c.agent_last_hour, c.agent_denied_last_hour, c.agent_denied),
        (2, 1, 4),
        "pa_3 and pa_4 in the hour; pa_1, pa_2, pa_4, pa_7 denied in all"
    );
    // A denied request opened again is not in its own hour; it still counts in all.
    let reopened = pending_with(
        "pa_4",
        "billing",
        "gmail/send",
        "request pa_4",
        t - 50,
        json!({}),
    );
    let c = f.context(&reopened);
    assert_eq!(
        (c.agent_last_hour, c.agent_denied_last_hour, c.agent_denied),
        (1, 0, 4),
        "pa_3 in pa_4's hour"
    );
}

/// A history written before the context existed: its approvals are found when it is opened.
#[test]
fn approvals_made_before_the_context_existed_are_counted() {
    let mut f = Fixture::new();
    f.refund(
        "pa_1",
        1000,
        json!({"amount": "300.00"}),
        Some(EntryKind::Approved),
    );
    f.refund(
        "pa_2",
        1010,
        json!({"amount": "900.00"}),
        Some(EntryKind::Approved),
    );
    f.history
        .record("pa_2", EntryKind::Rejected, json!({}), 1020)
        .unwrap();
    let asked = f.refund("pa_3", 1030, json!({"amount": "600.00"}), None);
    drop(f.history);
    {
        // As the previous version left it.
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch(
            "DROP TABLE approved_numbers; DROP INDEX items_agent_tool;
             DROP INDEX items_agent_status; DROP INDEX items_agent_tool_status;
             PRAGMA user_version = 6;",
        )
        .unwrap();
    }
    f.history = History::open(&f.path).unwrap();
    let amount = &f.context(&asked).amounts[0];
    assert_eq!(
        (amount.approved, amount.largest, amount.times_largest),
        (1, Some(300.0), Some(2.0)),
        "pa_1 counts; pa_2's approval was rejected"
    );
    f.history.verify().unwrap();
}

#[test]
fn agent_text_in_the_context_is_made_visible() {
    let mut f = Fixture::new();
    let name = "amo\u{202e}unt";
    f.refund(
        "pa_1",
        1000,
        json!({name: "5.0", "to": "x\u{200b}y"}),
        Some(EntryKind::Approved),
    );
    let asked = f.refund("pa_2", 1010, json!({name: "7.0", "to": "z"}), None);
    let c = f.context(&asked);
    assert_eq!(c.amounts[0].name, "amo[U+202E RLO]unt");
    let similar = c.similar.unwrap();
    assert_eq!(similar.same, Vec::<String>::new());
    let to = similar.differences.iter().find(|d| d.name == "to").unwrap();
    assert_eq!(to.then, Some(json!("x[U+200B ZWSP]y")));
}
