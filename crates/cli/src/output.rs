//! Output: readable text by default, JSON with `--json`. Everything an agent wrote has been made
//! visible (see `countersign_approver::display`) before it gets here, and is printed as text.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "this module is the CLI's output"
)]

use std::fmt::Write as _;
use std::process::ExitCode;

use countersign_approver::Error;
use countersign_approver::client::DecisionOutcome;
use countersign_approver::display::{Review, visible};
use countersign_approver::engine::{Change, Engine, Enrolled, Paired, SyncReport};
use countersign_approver::history::{COUNT_CAP, Entry, ItemSummary, RiskContext};
use countersign_approver::outbox::Queued;
use countersign_protocol::action::Timestamp;
use countersign_protocol::api::Decision;
use serde::Serialize;
use serde_json::json;

pub(crate) const EXIT_FAILURE: u8 = 1;
pub(crate) const EXIT_NOT_FOUND: u8 = 3;
pub(crate) const EXIT_REFUSED: u8 = 4;
pub(crate) const EXIT_AUTHENTICATOR: u8 = 5;
pub(crate) const EXIT_UNREACHABLE: u8 = 6;
pub(crate) const EXIT_CHAIN: u8 = 7;
pub(crate) const EXIT_KEYRING: u8 = 8;

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    json: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// A command's result: JSON, or the text `text` makes.
    pub(crate) fn value<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: {e}"),
            }
        } else {
            println!("{}", text());
        }
    }

    /// One line of a live feed: a JSON line, or text.
    pub(crate) fn line(&self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }

    /// A remark for the person at the terminal (standard error, never in JSON output).
    pub(crate) fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    /// Reports `error` and returns its exit code. The message may carry a broker's words, so
    /// it goes through the same filter as agent text (no escape sequences reach the terminal).
    pub(crate) fn fail(&self, error: &Error) -> ExitCode {
        let message = error_text(error);
        if self.json {
            println!(
                "{}",
                json!({"error": {"code": error.code(), "message": message}})
            );
        } else {
            eprintln!("error: {message}");
        }
        ExitCode::from(exit_code(error))
    }
}

/// An error's message as printed: through [`visible`], so no escape sequence or line break a
/// broker put in it reaches the terminal.
fn error_text(error: &Error) -> String {
    visible(&error.to_string())
}

fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Http(_) | Error::BrokersNotTold { .. } => EXIT_UNREACHABLE,
        e @ Error::Broker { .. } if e.is_transient() => EXIT_UNREACHABLE,
        Error::UnknownItem(_)
        | Error::UnknownBroker(_)
        | Error::UnknownAuthenticator(_)
        | Error::NoAuthenticator => EXIT_NOT_FOUND,
        Error::Broker { .. }
        | Error::ApproverIdReused { .. }
        | Error::ItemCollision { .. }
        | Error::NotPending { .. }
        | Error::GrantStillLive { .. }
        | Error::HashMismatch(_)
        | Error::ReasonRequired
        | Error::BadBatch(_)
        | Error::BadBounds(_)
        | Error::GatewayKeyMissing(_)
        | Error::AlreadyPaired(_)
        | Error::DuplicateName(_)
        | Error::LastAuthenticator
        | Error::BadName(_)
        | Error::BadUrl(_)
        | Error::Protocol(_) => EXIT_REFUSED,
        Error::Authenticator { .. } | Error::Cancelled | Error::SelfCheck(_) | Error::Mint(_) => {
            EXIT_AUTHENTICATOR
        }
        Error::ChainBroken { .. } => EXIT_CHAIN,
        Error::KeyringUnavailable(_) | Error::KeyringCorrupt(_) => EXIT_KEYRING,
        _ => EXIT_FAILURE,
    }
}

fn when(unix: i64) -> String {
    Timestamp::from_unix(unix)
        .map(|t| t.as_str().to_owned())
        .unwrap_or_else(|_| unix.to_string())
}

pub(crate) fn brokers(brokers: &[Paired]) -> String {
    if brokers.is_empty() {
        return "No brokers paired. Pair with `countersign pair URL CODE`.".into();
    }
    let mut text = String::new();
    for b in brokers {
        let _ = writeln!(
            text,
            "{}  approver {}  owner {}  since {}",
            visible(&b.url),
            visible(&b.approver_id),
            visible(&b.owner),
            when(b.added_at)
        );
    }
    text.trim_end().to_owned()
}

pub(crate) fn authenticators(all: &[Enrolled]) -> String {
    if all.is_empty() {
        return "No authenticators enrolled. Add one with `countersign authenticators add --name NAME`.".into();
    }
    let mut text = String::new();
    for a in all {
        let warning = if a.kind == countersign_approver::authn::Kind::Dev {
            "  [DEVELOPMENT AUTHENTICATOR: tests and demos only]"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "{}  {}  credential {}…  since {}{warning}",
            a.name,
            a.kind,
            a.credential.id.chars().take(12).collect::<String>(),
            when(a.added_at)
        );
    }
    text.trim_end().to_owned()
}

pub(crate) fn pending(reviews: &[Review]) -> String {
    if reviews.is_empty() {
        return "Nothing pending.".into();
    }
    let mut text = String::new();
    for r in reviews {
        let _ = writeln!(
            text,
            "{}  {}  {} → {}  expires {}",
            r.id, r.fingerprint, r.agent, r.tool, r.expires_at
        );
        let _ = writeln!(text, "    {}", r.intent);
    }
    text.trim_end().to_owned()
}

pub(crate) fn review(r: &Review, context: &RiskContext, entries: &[Entry]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Item         {}  ({})", r.id, r.status);
    if !r.hash_matches {
        let _ = writeln!(
            t,
            "!! The action hash does NOT match what is shown: this item cannot be approved."
        );
    }
    if r.hidden_characters {
        let _ = writeln!(
            t,
            "!! Hidden, direction-changing or look-alike characters were found; they are shown \
             as [U+XXXX …]."
        );
    }
    if r.line_breaks {
        let _ = writeln!(
            t,
            "!  Line breaks in the agent's text are shown as [U+000A LF]: no value starts a line."
        );
    }
    // Every value below is one line: `visible` marked each line break in it.
    let _ = writeln!(t, "Intent       {}", r.intent);
    let _ = writeln!(
        t,
        "For          {}  ({}, the agent's owner, per the broker)",
        r.subject, r.subject_type
    );
    json_field(&mut t, "  claims", r.subject_properties.as_ref());
    let _ = writeln!(t, "Agent        {}  (authenticated by the broker)", r.agent);
    let source = if r.delegation_verified {
        "verified by the broker"
    } else {
        "claimed by the agent"
    };
    let _ = writeln!(t, "Delegation   {}  ({source})", r.delegation.join(" → "));
    let _ = writeln!(
        t,
        "Tool         {}  ({}; action {})",
        r.tool, r.resource_type, r.action
    );
    json_field(&mut t, "  tool props", r.resource_properties.as_ref());
    json_field(&mut t, "  action props", r.action_properties.as_ref());
    let _ = writeln!(t, "Arguments");
    let arguments = serde_json::to_string_pretty(&r.arguments).unwrap_or_default();
    for line in arguments.lines() {
        let _ = writeln!(t, "    {line}");
    }
    match &r.catalog {
        Some(c) => {
            let _ = writeln!(
                t,
                "Catalog      {}  {}  risk {}  (the broker's tool catalog)",
                c.domain.as_deref().unwrap_or("(no domain)"),
                c.classification.join(", "),
                c.risk.as_deref().unwrap_or("unrated")
            );
        }
        None => {
            let _ = writeln!(t, "Catalog      (the tool is not in the broker's catalog)");
        }
    }
    let _ = writeln!(
        t,
        "Data         {}  {}  (claimed by the agent)",
        r.data_domain.as_deref().unwrap_or("(none stated)"),
        r.classification.join(", ")
    );
    if !r.server_claims.is_empty() {
        let _ = writeln!(
            t,
            "Server says  {}  (the tool server's own claims, unverified)",
            r.server_claims.join("; ")
        );
    }
    let _ = writeln!(t, "Policy       {}: {}", r.policy_id, r.policy_reason);
    let _ = writeln!(t, "Gateway      {}", r.audience);
    let _ = writeln!(t, "Requested    {}", r.requested_at);
    let _ = writeln!(t, "Expires      {}", r.expires_at);
    let _ = writeln!(t, "Fingerprint  {}", r.fingerprint);
    risk_context(&mut t, context);
    if !entries.is_empty() {
        let _ = writeln!(t, "History");
    }
    for e in entries {
        let _ = writeln!(
            t,
            "    #{}  {}  {}  {}",
            e.seq,
            when(e.at),
            e.kind,
            visible(&e.detail.to_string())
        );
    }
    t.trim_end().to_owned()
}

/// What is unusual about the request, from this machine's history.
fn risk_context(t: &mut String, c: &RiskContext) {
    let _ = writeln!(t, "Context      (from your history on this machine)");
    if c.first_for_tool {
        let _ = writeln!(t, "  !  first request for this tool, from any agent");
    } else if c.first_for_agent {
        let _ = writeln!(t, "  !  first time this agent asks for this tool");
    }
    for a in &c.amounts {
        let approved = capped(a.approved);
        match (a.largest, a.typical) {
            (Some(largest), Some(typical)) => {
                let beyond = a
                    .times_largest
                    .filter(|r| *r > 1.0)
                    .map(|r| format!("  !  ×{} the largest you approved", ratio(r)))
                    .unwrap_or_default();
                let _ = writeln!(
                    t,
                    "  {} = {}: you approved this tool {approved} time{} with it; largest {}, \
                     typical {}{beyond}",
                    a.name,
                    a.value,
                    if a.approved == 1 { "" } else { "s" },
                    number(largest),
                    number(typical)
                );
            }
            _ => {
                let _ = writeln!(
                    t,
                    "  {} = {}: no approval of this tool had it before",
                    a.name, a.value
                );
            }
        }
    }
    let _ = writeln!(
        t,
        "  this agent: {} other request{} in the hour before, {} denied; {} denied in all",
        c.agent_last_hour,
        if c.agent_last_hour == 1 { "" } else { "s" },
        c.agent_denied_last_hour,
        capped(c.agent_denied)
    );
    if let Some(s) = &c.similar {
        let _ = writeln!(
            t,
            "  most like {} ({}, {}): \"{}\"",
            s.id,
            s.status,
            when(s.created_at),
            s.intent
        );
        if !s.same.is_empty() {
            let _ = writeln!(t, "    same       {}", s.same.join(", "));
        }
        for d in &s.differences {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref()
                    .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
            };
            let _ = writeln!(
                t,
                "    differs    {}: {} now, {} then",
                d.name,
                show(&d.now),
                show(&d.then)
            );
        }
    }
}

/// A ratio as shown: one decimal below 10, whole above.
/// A count the risk context stops at [`COUNT_CAP`].
fn capped(n: u64) -> String {
    if n >= COUNT_CAP {
        format!("{COUNT_CAP}+")
    } else {
        n.to_string()
    }
}

fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

/// A number as shown: whole when it is, else two decimals.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

/// A free-form JSON member (properties the agent sent), indented under its label.
fn json_field(t: &mut String, label: &str, value: Option<&serde_json::Value>) {
    let Some(value) = value else { return };
    let _ = writeln!(t, "{label}");
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    for line in text.lines() {
        let _ = writeln!(t, "    {line}");
    }
}

pub(crate) fn items(items: &[ItemSummary]) -> String {
    if items.is_empty() {
        return "No matching items.".into();
    }
    let mut text = String::new();
    for i in items {
        let _ = writeln!(
            text,
            "{}  {:9}  {} → {}  {}",
            visible(&i.id),
            i.status,
            visible(&i.agent),
            visible(&i.tool),
            when(i.updated_at)
        );
        let _ = writeln!(text, "    {}", visible(&i.intent));
    }
    text.trim_end().to_owned()
}

/// Reports a decision and returns the exit code: success once the broker has it, 6 while it
/// waits in the outbox, 4 when another decision came first.
pub(crate) fn decision(
    out: &Out,
    queued: &Queued,
    outcome: Option<&DecisionOutcome>,
    verb: &str,
) -> ExitCode {
    let (value, text, code) = decision_report(queued, outcome, verb);
    out.value(&value, || text);
    code
}

/// Reports several decisions: one alone as [`decision`] does; several as a JSON array (a line
/// each in text), with the exit code of the first that did not succeed.
pub(crate) fn decisions(
    out: &Out,
    decided: &[(Queued, Option<DecisionOutcome>)],
    verb: &str,
) -> ExitCode {
    if let [(queued, outcome)] = decided {
        return decision(out, queued, outcome.as_ref(), verb);
    }
    let reports: Vec<_> = decided
        .iter()
        .map(|(queued, outcome)| decision_report(queued, outcome.as_ref(), verb))
        .collect();
    let values: Vec<&serde_json::Value> = reports.iter().map(|(v, _, _)| v).collect();
    out.value(&values, || {
        let lines: Vec<&str> = reports.iter().map(|(_, t, _)| t.as_str()).collect();
        lines.join("\n")
    });
    reports
        .iter()
        .map(|(_, _, code)| *code)
        .find(|code| *code != ExitCode::SUCCESS)
        .unwrap_or(ExitCode::SUCCESS)
}

fn decision_report(
    queued: &Queued,
    outcome: Option<&DecisionOutcome>,
    verb: &str,
) -> (serde_json::Value, String, ExitCode) {
    let decision = match &queued.decision {
        Decision::Approve { .. } => "approve",
        Decision::Deny { .. } => "deny",
    };
    let (delivered, status, code) = match outcome {
        Some(DecisionOutcome::Recorded(view)) => {
            (true, Some(view.status.as_str()), ExitCode::SUCCESS)
        }
        Some(DecisionOutcome::AlreadyDecided(view)) => (
            true,
            Some(view.status.as_str()),
            ExitCode::from(EXIT_REFUSED),
        ),
        None if queued.acked => (true, None, ExitCode::SUCCESS),
        None => (false, None, ExitCode::from(EXIT_UNREACHABLE)),
    };
    let value = json!({
        "item": queued.item,
        "decision": decision,
        "delivered": delivered,
        "broker_status": status,
        "already_decided": matches!(outcome, Some(DecisionOutcome::AlreadyDecided(_))),
    });
    let text = match outcome {
        Some(DecisionOutcome::Recorded(_)) => {
            format!("{verb} {}; the broker has it.", queued.item)
        }
        Some(DecisionOutcome::AlreadyDecided(view)) => format!(
            "{} was already {} at the broker; nothing changed.",
            queued.item,
            view.status.as_str()
        ),
        None if queued.acked => {
            format!("{} was already decided here and delivered.", queued.item)
        }
        None => format!(
            "{verb} {}, but the broker could not be reached: the decision is queued and \
             `countersign sync` sends it.",
            queued.item
        ),
    };
    (value, text, code)
}

pub(crate) fn sync(out: &Out, reports: &[Result<SyncReport, (String, Error)>]) -> ExitCode {
    let ok: Vec<&SyncReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let failed: Vec<serde_json::Value> = reports
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(url, e)| json!({"broker": url, "code": e.code(), "message": e.to_string()}))
        .collect();
    out.value(&json!({"synced": ok, "failed": failed}), || {
        let mut t = String::new();
        for r in &ok {
            let _ = writeln!(
                t,
                "{}: {} new, {} updated, {} decisions delivered",
                r.broker,
                r.received.len(),
                r.updated.len(),
                r.delivered.len()
            );
            for e in &r.rejected {
                let _ = writeln!(
                    t,
                    "  decision for {} refused by the broker ({}); the item is open again",
                    visible(&e.item),
                    visible(&e.error)
                );
            }
            for e in &r.failed {
                let _ = writeln!(
                    t,
                    "  item {} not taken: {}",
                    visible(&e.item),
                    visible(&e.error)
                );
            }
        }
        for f in &failed {
            let _ = writeln!(
                t,
                "{}: {}",
                f["broker"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            );
        }
        if t.is_empty() {
            t.push_str("No brokers paired.");
        }
        t.trim_end().to_owned()
    });
    sync_exit(reports)
}

/// The exit code of a sync: 0 when every broker synced; otherwise the first error's code that
/// is not "unreachable" (a refusal, a local failure), or 6 when brokers were only unreachable.
pub(crate) fn sync_exit(reports: &[Result<SyncReport, (String, Error)>]) -> ExitCode {
    let codes: Vec<u8> = reports
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(_, e)| exit_code(e))
        .collect();
    let code = codes
        .iter()
        .find(|&&c| c != EXIT_UNREACHABLE)
        .or(codes.first())
        .copied()
        .unwrap_or(0);
    ExitCode::from(code)
}

/// One change in the live feed.
pub(crate) fn change(out: &Out, engine: &Engine, change: &Change) -> Result<(), Error> {
    let (kind, id) = match change {
        Change::Received(id) => ("received", id),
        Change::Refused(id) => ("refused", id),
        Change::Updated(id) => ("updated", id),
    };
    let Some((pending, status)) = engine.history().item(id)? else {
        return Ok(());
    };
    let review = Review::of(&pending, status);
    out.line(&json!({"event": kind, "item": review}), || match change {
        Change::Refused(_) => format!(
            "REFUSED {}: its action hash does not match its contents",
            review.id
        ),
        _ => format!(
            "{:8} {}  {}  {} → {}: {}",
            review.status, review.id, review.fingerprint, review.agent, review.tool, review.intent
        ),
    });
    Ok(())
}

/// What a bounded grant about to be signed covers, in words, before the ceremony.
pub(crate) fn bounds(bounds: &countersign_protocol::bounded::Bounds, review: &Review) -> String {
    let mut lines = vec![format!(
        "\nApproving {} with a BOUNDED GRANT: up to {} calls in all (this one included) to {} \
         by {}, for {} minutes, without asking you again.",
        visible(&review.id),
        bounds.uses,
        visible(&review.tool),
        visible(&review.agent),
        bounds.lifetime_secs / 60
    )];
    for (name, ceiling) in &bounds.max {
        lines.push(format!("  {} at most {}", visible(name), visible(ceiling)));
    }
    for name in &bounds.vary {
        lines.push(format!("  {} may be anything", visible(name)));
    }
    lines.push("  every other argument exactly as shown above".into());
    lines.push("Your authenticator will ask you to confirm.".into());
    lines.join("\n")
}

/// The active bounded grants, one per line.
pub(crate) fn bounded_grants(
    grants: &[(String, countersign_protocol::api::BoundedGrantView)],
    now: i64,
) -> String {
    if grants.is_empty() {
        return "No bounded grant can release a call now.".into();
    }
    let mut lines = Vec::new();
    for (broker, g) in grants {
        let left = g.uses.saturating_sub(g.used).saturating_sub(g.released);
        lines.push(format!(
            "{}  uses left: {} of {} ({} used, {} released)  {} by {}  expires in {} min  at {}",
            visible(&g.jti),
            left,
            g.uses,
            g.used,
            g.released,
            visible(&g.tool),
            visible(&g.agent),
            (g.expires_at - now).max(0) / 60,
            visible(broker),
        ));
        lines.push(format!(
            "    constraints: {}",
            visible(&g.constraints.to_string())
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brokers_words_reach_the_terminal_as_text() {
        let error = Error::Broker {
            status: 403,
            code: "x".into(),
            message: "\u{1b}[2J\u{1b}[31mrefused\nerror: everything is fine".into(),
            body: String::new(),
        };
        let text = error_text(&error);
        assert!(!text.contains('\u{1b}') && !text.contains('\n'), "{text}");
        assert!(text.contains("[U+001B][2J"), "{text}");
        assert!(text.contains("refused[U+000A LF]error"), "{text}");
    }
}
