//! History at scale: 1,000,000 items (each with its `received` entry in the hash chain; one in
//! ten approved). Prints the insert rate and p50/p95 of filtered listing, full-text search and
//! the review's risk context.
//!
//! `cargo bench -p countersign-approver --bench history` (`HISTORY_ROWS=N` for another size;
//! `HISTORY_DB=path` keeps the database, and a later run over it times the queries only).

#![expect(clippy::expect_used, clippy::print_stdout, reason = "a bench")]

use std::time::Instant;

use countersign_approver::history::{EntryKind, Filter, History, ItemStatus};
use countersign_protocol::PendingAction;
use countersign_protocol::action::{
    ActionName, ActionRequest, Actor, Context, DataTouched, PendingParts, PolicyRef, Resource,
    Subject, Timestamp,
};
use countersign_protocol::spiffe::SpiffeId;
use serde_json::json;

const AGENTS: [&str; 8] = [
    "billing",
    "devops",
    "assistant",
    "planner",
    "research",
    "sales",
    "support",
    "finance",
];
const TOOLS: [&str; 8] = [
    "stripe/refunds.create",
    "github/repos.delete",
    "postgres/query",
    "gmail/send",
    "calendar/events.create",
    "s3/objects.delete",
    "slack/messages.post",
    "hubspot/contacts.export",
];
const WORDS: [&str; 16] = [
    "refund",
    "invoice",
    "customer",
    "repository",
    "archive",
    "report",
    "quarterly",
    "contract",
    "supplier",
    "meeting",
    "export",
    "cleanup",
    "duplicate",
    "complaint",
    "migration",
    "backup",
];

fn item(n: usize, base: i64) -> PendingAction {
    let agent = AGENTS[n % AGENTS.len()];
    let tool = TOOLS[(n / 8) % TOOLS.len()];
    let intent = format!(
        "{} {} for {} number {n}",
        WORDS[n % 16],
        WORDS[(n / 16) % 16],
        WORDS[(n / 256) % 16]
    );
    let at = base + i64::try_from(n).expect("small");
    PendingAction::new(
        PendingParts {
            id: format!("pa_{n:08}"),
            created_at: Timestamp::from_unix(at).expect("time"),
            expires_at: Timestamp::from_unix(at + 300).expect("time"),
            audience: "https://tools-gateway.example.com".into(),
            policy: PolicyRef {
                id: "bench".into(),
                reason: "bench".into(),
            },
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
        },
        ActionRequest {
            subject: Subject {
                kind: "user".into(),
                id: "alice@example.com".into(),
                properties: None,
            },
            actor: Actor {
                id: SpiffeId::parse(&format!("spiffe://example.com/agent/{agent}")).expect("id"),
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
                intent,
                arguments: json!({"order": n.to_string(), "amount": format!("{}.00", n % 5000)})
                    .as_object()
                    .cloned()
                    .expect("object"),
                data: Some(DataTouched {
                    domain: "bench".into(),
                    classification: vec!["internal".into()],
                }),
                annotations: None,
            },
        },
    )
    .expect("pending")
}

fn quantiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize] * 1e3;
    (at(0.5), at(0.95))
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rows: usize = std::env::var("HISTORY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // `HISTORY_DB=path` keeps the database there; a later run with the same path and size
    // reuses it and only times the queries (building a million items takes ~25 minutes).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("HISTORY_DB")
        .map_or_else(|| dir.path().join("history.db"), std::path::PathBuf::from);
    let reuse = path.exists();
    let mut history = History::open(&path).expect("open");
    let base = 1_780_000_000;

    let start = Instant::now();
    for n in (0..rows).filter(|_| !reuse) {
        history
            .receive("http://127.0.0.1:8470", &item(n, base), base + 1)
            .expect("receive");
        // One in ten approved: the amounts the context compares with.
        if n % 10 == 0 {
            history
                .record(
                    &format!("pa_{n:08}"),
                    EntryKind::Approved,
                    json!({}),
                    base + 2,
                )
                .expect("approve");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if reuse {
        println!("insert: none, {} reused", path.display());
    } else {
        println!(
            "insert: {rows} items (one transaction each, hash-chained, FTS-indexed; one in ten then approved) in {secs:.1} s = {:.0} /s",
            rows as f64 / secs
        );
    }

    // Time windows scale with the size, so every query has matches.
    let step = i64::try_from(rows / 250).expect("small").max(1);
    let mut listing = Vec::new();
    for q in 0..200 {
        let filter = match q % 4 {
            0 => Filter {
                agent: Some(format!("spiffe://example.com/agent/{}", AGENTS[q % 8])),
                limit: 50,
                ..Filter::default()
            },
            1 => Filter {
                tool: Some(TOOLS[q % 8].into()),
                limit: 50,
                ..Filter::default()
            },
            2 => Filter {
                status: Some(ItemStatus::Pending),
                since: Some(base + (q as i64) * step),
                limit: 50,
                ..Filter::default()
            },
            _ => Filter {
                agent: Some(format!("spiffe://example.com/agent/{}", AGENTS[q % 8])),
                since: Some(base + (q as i64) * step * 3 / 4),
                until: Some(base + (q as i64) * step * 3 / 4 + step * 12),
                limit: 50,
                ..Filter::default()
            },
        };
        let t = Instant::now();
        let found = history.list(&filter).expect("list");
        listing.push(t.elapsed().as_secs_f64());
        assert!(!found.is_empty());
    }
    let mut search = Vec::new();
    for q in 0..200 {
        let text = format!("{} {}", WORDS[q % 16], WORDS[(q * 7 + 3) % 16]);
        let t = Instant::now();
        history
            .list(&Filter {
                search: Some(text),
                limit: 50,
                ..Filter::default()
            })
            .expect("search");
        search.push(t.elapsed().as_secs_f64());
    }
    // The risk context of items spread over the history (each reads its own indexes).
    let mut context = Vec::new();
    for q in 0..200 {
        let pending = item((q * 4999 + 17) % rows, base);
        let t = Instant::now();
        let facts = history.risk_context(&pending).expect("context");
        context.push(t.elapsed().as_secs_f64());
        assert!(!facts.amounts.is_empty());
    }
    let (c50, c95) = quantiles(context);
    let (l50, l95) = quantiles(listing);
    let (s50, s95) = quantiles(search);
    println!(
        "filtered listing (agent / tool / status+time / agent+time, 50 rows): p50 {l50:.2} ms, p95 {l95:.2} ms"
    );
    println!("full-text search (two words, 50 rows): p50 {s50:.2} ms, p95 {s95:.2} ms");
    println!(
        "risk context (first requests, amounts, similar request, the agent's hour): p50 {c50:.2} ms, p95 {c95:.2} ms"
    );
    let t = Instant::now();
    let report = history.verify().expect("verify");
    println!(
        "verify (chain of {} entries, every item against its entries): {:.1} s",
        report.entries,
        t.elapsed().as_secs_f64()
    );
    let wal = path.with_extension("db-wal");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    println!("database: {:.0} MiB", size as f64 / 1048576.0);
}
