//! `countersign`: the headless approver, for servers, SSH sessions and scripts. Every command is
//! a thin adapter of a `countersign-approver` engine call; readable output by default, `--json`
//! for scripts, and the exit codes below.

mod output;
mod prompt;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand, ValueEnum};
use countersign_approver::authn::Kind;
use countersign_approver::display::Review;
use countersign_approver::engine::{Applied, Change, Connection, Engine, Via, default_profile_dir};
use countersign_approver::history::ExportFormat;
use countersign_approver::notify::DesktopNotifier;
use countersign_approver::{Error, Filter};
use countersign_protocol::bounded::Bounds;
use serde_json::json;

use crate::output::Out;

/// A bounded grant's lifetime when --for is not given.
const DEFAULT_BOUNDED_SECS: i64 = 30 * 60;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure not listed below
  2  usage error
  3  not found (item, broker or authenticator), or nothing enrolled yet
  4  refused (by the broker, or here: not pending, hash mismatch, bad input, a refused
     grant still live)
  5  the authenticator failed or the ceremony was cancelled
  6  the broker could not be reached, or failed or was busy (a decision stays queued;
     `countersign sync` sends it)
  7  the history failed its integrity check
  8  no usable OS keyring";

/// Countersign: review and countersign your agents' high-risk actions.
#[derive(Debug, Parser)]
#[command(name = "countersign", version, after_help = EXIT_CODES)]
struct Cli {
    /// The profile directory (history database and settings; secrets stay in the OS keyring).
    #[arg(long, env = "COUNTERSIGN_HOME", global = true)]
    home: Option<PathBuf>,
    /// The keyring profile the secrets are filed under.
    #[arg(
        long,
        env = "COUNTERSIGN_PROFILE",
        default_value = "default",
        global = true
    )]
    profile: String,
    /// Machine-readable output (one JSON document; errors as {"error": {code, message}}).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair with a broker using the one-time code its administrator issued (needs an
    /// enrolled authenticator, which asserts over the pairing first).
    Pair {
        /// The broker's address, e.g. `https://broker.example:8443` (http only on loopback).
        url: String,
        /// The one-time pairing code.
        code: String,
        /// The broker certificate's SHA-256 fingerprint, from its administrator
        /// (`countersign-broker pair` prints it). Without it, an https broker must have a
        /// certificate from a public CA; either way the certificate is pinned.
        #[arg(long)]
        fingerprint: Option<String>,
        /// A name for this device, shown to the broker's administrator.
        #[arg(long)]
        device_name: Option<String>,
        /// The authenticator that vouches (default: the first enrolled).
        #[arg(long)]
        with: Option<String>,
    },
    /// Paired brokers.
    #[command(subcommand)]
    Brokers(BrokersCommand),
    /// Enrolled authenticators.
    #[command(subcommand)]
    Authenticators(AuthenticatorsCommand),
    /// Fetch from every broker, send queued decisions, and list what is pending.
    Pending {
        /// Keep following the brokers and print each change as it arrives.
        #[arg(long)]
        live: bool,
        /// With --live: a desktop notification per new item.
        #[arg(long)]
        notify: bool,
        /// With --notify: show only "Approval requested", no details.
        #[arg(long)]
        private: bool,
    },
    /// Everything about one item: what the agent wants, why policy stopped it, and its history.
    Show { id: String },
    /// Approve an item with a user-verified WebAuthn assertion; the signed grant is sent to
    /// the broker. Several items (2 to 50, of one agent or for one tool, for one gateway) are
    /// approved in one ceremony after each is shown, each with its own single-use grant.
    ///
    /// With --uses, one item is approved with a bounded grant instead: this call and later
    /// calls like it — same agent, same tool, same gateway, every argument equal to this
    /// call's unless capped with --max or left free with --vary — up to N calls in all, for
    /// --for (default 30m; the broker refuses more than its maximum, one hour unless
    /// configured). Such calls then run without asking you; `countersign grants` lists them.
    Approve {
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        /// The authenticator to use (default: the first enrolled).
        #[arg(long)]
        with: Option<String>,
        /// Approve with a bounded grant covering this many calls in all, this one included.
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
        /// How long the bounded grant lasts: 90s, 30m, 1h.
        #[arg(long = "for", value_name = "DURATION", requires = "uses", value_parser = duration_secs)]
        lifetime: Option<i64>,
        /// A ceiling on a numeric argument, as NAME=DECIMAL (repeatable).
        #[arg(long, value_name = "NAME=DECIMAL", requires = "uses", value_parser = ceiling)]
        max: Vec<(String, String)>,
        /// An argument later calls may change freely (repeatable).
        #[arg(long, value_name = "NAME", requires = "uses")]
        vary: Vec<String>,
    },
    /// The bounded grants that can still release calls, and revoking them.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Deny one item, or several with the same reason (each is checked first: one that cannot
    /// be denied denies none).
    Deny {
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        /// Why (the agent's owner and the broker's log see it).
        #[arg(long)]
        reason: String,
        /// Also suspend the agent until its owner resumes it.
        #[arg(long)]
        suspend_agent: bool,
    },
    /// Send queued decisions and reconcile with every broker.
    Sync,
    /// Search, filter and export the local history.
    History {
        /// Full-text search over intent, tool, agent and arguments.
        #[arg(long)]
        search: Option<String>,
        /// pending, approved, denied, expired, cancelled, redeemed, revoked or refused.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Export every entry instead of listing items.
        #[arg(long, value_parser = export_format())]
        export: Option<ExportFormat>,
        /// Where to write the export (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Check the history's hash chain; names the first broken link.
    VerifyHistory,
}

#[derive(Debug, Subcommand)]
enum GrantsCommand {
    /// Every bounded grant at every paired broker with a use left, and how many.
    List,
    /// Withdraw a bounded grant at once: no call runs under it after this answers, and the
    /// calls it released that have not run are revoked with it.
    Revoke { jti: String },
}

/// `90s`, `30m`, `1h` (or plain seconds) as seconds.
fn duration_secs(text: &str) -> Result<i64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m or 1h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    n.checked_mul(scale)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

/// `NAME=DECIMAL`.
fn ceiling(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAME=DECIMAL")),
    }
}

#[derive(Debug, Subcommand)]
enum BrokersCommand {
    List,
    /// Forget a broker (its items stay in the history).
    Remove {
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuthenticatorsCommand {
    /// Enrol an authenticator. After the first, an enrolled one must vouch for it.
    Add {
        /// A name to tell it by.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = KindArg::SecurityKey)]
        kind: KindArg,
        /// The enrolled authenticator that vouches (default: the first enrolled).
        #[arg(long)]
        with: Option<String>,
    },
    List,
    Rename {
        name: String,
        new_name: String,
    },
    /// Remove an authenticator: at every paired broker first (it stops vouching there at
    /// once), then on this device.
    Remove {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    /// A FIDO2 security key over USB.
    SecurityKey,
    /// Windows Hello.
    WindowsHello,
    /// The development software authenticator (builds with the dev-authenticator feature).
    Dev,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return out.fail(&Error::Io(e)),
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(code) => code,
        Err(e) => out.fail(&e),
    }
}

fn home(cli: &Cli) -> Result<PathBuf, Error> {
    cli.home.clone().map_or_else(default_profile_dir, Ok)
}

/// `jsonl` or `csv`, listed in the help.
fn export_format() -> impl TypedValueParser<Value = ExportFormat> {
    clap::builder::PossibleValuesParser::new(["jsonl", "csv"])
        .try_map(|s| s.parse::<ExportFormat>())
}

async fn run(cli: Cli, out: &Out) -> Result<ExitCode, Error> {
    let mut engine = Engine::open(&home(&cli)?, &cli.profile)?;
    let prompt = prompt::Terminal;
    match cli.command {
        Command::Pair {
            url,
            code,
            fingerprint,
            device_name,
            with,
        } => {
            let paired = engine
                .pair(
                    &url,
                    &code,
                    fingerprint.as_deref(),
                    device_name,
                    with.as_deref(),
                    &prompt,
                )
                .await?;
            out.value(&paired, || {
                let pin = paired
                    .fingerprint
                    .as_ref()
                    .map(|f| format!("\nCertificate pinned: SHA-256 {f}"))
                    .unwrap_or_default();
                format!(
                    "Paired with {} as approver {} (owner {}).{pin}",
                    paired.url, paired.approver_id, paired.owner
                )
            });
        }
        Command::Brokers(BrokersCommand::List) => {
            let brokers = engine.brokers()?;
            out.value(&brokers, || output::brokers(&brokers));
        }
        Command::Brokers(BrokersCommand::Remove { url }) => {
            engine.remove_broker(&url)?;
            out.value(&json!({"removed": url}), || format!("Forgot broker {url}."));
        }
        Command::Authenticators(command) => authenticators(&mut engine, command, out).await?,
        Command::Pending {
            live,
            notify,
            private,
        } => {
            return pending(
                &mut engine,
                live,
                notify.then(|| DesktopNotifier::new(private)),
                out,
            )
            .await;
        }
        Command::Show { id } => {
            let opened = engine.open_item(&id, Via::Cli)?;
            out.value(
                &json!({"review": opened.review, "context": opened.context, "history": opened.entries}),
                || output::review(&opened.review, &opened.context, &opened.entries),
            );
        }
        Command::Approve {
            ids,
            with,
            uses: Some(uses),
            lifetime,
            max,
            vary,
        } => {
            let [id] = ids.as_slice() else {
                return Err(Error::BadBounds(
                    "a bounded grant is made from the review of one item".into(),
                ));
            };
            let opened = engine.open_item(id, Via::Cli)?;
            if opened.review.status == countersign_approver::history::ItemStatus::Pending {
                out.note(&output::review(&opened.review, &opened.context, &[]));
            }
            let bounds = Bounds {
                uses,
                lifetime_secs: lifetime.unwrap_or(DEFAULT_BOUNDED_SECS),
                max: max.into_iter().collect(),
                vary: vary.into_iter().collect(),
            };
            out.note(&output::bounds(&bounds, &opened.review));
            let queued = engine
                .approve_bounded_queued(id, bounds, with.as_deref(), &prompt)
                .await?;
            hold_before_send();
            let (queued, outcome) = engine.deliver(queued).await?;
            return Ok(output::decision(
                out,
                &queued,
                outcome.as_ref(),
                "Approved with a bounded grant",
            ));
        }
        Command::Grants(GrantsCommand::List) => {
            let grants = engine.bounded_grants().await?;
            let now = engine.now();
            out.value(
                &grants
                    .iter()
                    .map(|(broker, g)| json!({"broker": broker, "grant": g}))
                    .collect::<Vec<_>>(),
                || output::bounded_grants(&grants, now),
            );
        }
        Command::Grants(GrantsCommand::Revoke { jti }) => {
            let revoked = engine.revoke_bounded(&jti).await?;
            out.value(&revoked, || {
                format!(
                    "Revoked bounded grant {}: it covered {} of {} calls; nothing more runs under it.",
                    countersign_approver::display::visible(&revoked.jti),
                    revoked.used,
                    revoked.uses
                )
            });
        }
        Command::Approve { ids, with, .. } => {
            // What is signed is shown first, in full: approving an ID never read is blind.
            // Shown is viewed: the first look is recorded as it is for `show`.
            let mut shown = Vec::new();
            for id in &ids {
                let opened = engine.open_item(id, Via::Cli)?;
                if opened.review.status == countersign_approver::history::ItemStatus::Pending {
                    out.note(&output::review(&opened.review, &opened.context, &[]));
                    shown.push(countersign_approver::display::visible(id));
                }
            }
            if !shown.is_empty() {
                out.note(&format!(
                    "\nApproving {}: your authenticator will ask you to confirm{}.",
                    shown.join(", "),
                    if ids.len() > 1 {
                        " once, for all of them"
                    } else {
                        ""
                    }
                ));
            }
            if let [id] = ids.as_slice() {
                let queued = engine.approve_queued(id, with.as_deref(), &prompt)?;
                hold_before_send();
                let (queued, outcome) = engine.deliver(queued).await?;
                return Ok(output::decision(out, &queued, outcome.as_ref(), "Approved"));
            }
            let queued = engine.approve_all_queued(&ids, with.as_deref(), &prompt)?;
            hold_before_send();
            let decided = engine.deliver_all(queued).await?;
            return Ok(output::decisions(out, &decided, "Approved"));
        }
        Command::Deny {
            ids,
            reason,
            suspend_agent,
        } => {
            let decided = engine.deny_all(&ids, &reason, suspend_agent).await?;
            return Ok(output::decisions(out, &decided, "Denied"));
        }
        Command::Sync => {
            let reports = engine.sync().await?;
            return Ok(output::sync(out, &reports));
        }
        Command::History {
            search,
            status,
            agent,
            tool,
            limit,
            export,
            output: path,
        } => {
            if let Some(format) = export {
                match &path {
                    Some(path) => {
                        let rows = engine.history().export_to(format, path, true)?;
                        out.value(&json!({"exported": rows}), || {
                            format!("Exported {rows} entries.")
                        });
                    }
                    None => {
                        let mut stdout = std::io::stdout().lock();
                        engine.history().export(format, &mut stdout)?;
                        stdout.flush()?;
                    }
                }
            } else {
                let items = engine.history().list(&Filter {
                    status: status.as_deref().map(str::parse).transpose()?,
                    agent,
                    tool,
                    search,
                    limit,
                    ..Filter::default()
                })?;
                out.value(&items, || output::items(&items));
            }
        }
        Command::VerifyHistory => {
            let report = engine.verify_history()?;
            out.value(
                &json!({"verified": true, "entries": report.entries}),
                || {
                    format!(
                        "History verified: {} entries, chain intact.",
                        report.entries
                    )
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn authenticators(
    engine: &mut Engine,
    command: AuthenticatorsCommand,
    out: &Out,
) -> Result<(), Error> {
    match command {
        AuthenticatorsCommand::Add { name, kind, with } => {
            let kind = match kind {
                KindArg::SecurityKey => Kind::SecurityKey,
                KindArg::WindowsHello => Kind::WindowsHello,
                KindArg::Dev => Kind::Dev,
            };
            if kind == Kind::Dev {
                out.note("WARNING: the development authenticator is for tests and demos only.");
            }
            let enrolled = engine
                .enroll(kind, &name, with.as_deref(), &prompt::Terminal)
                .await?;
            out.value(&enrolled, || {
                format!("Enrolled {} ({}).", enrolled.name, enrolled.kind)
            });
        }
        AuthenticatorsCommand::List => {
            let all = engine.authenticators()?;
            out.value(&all, || output::authenticators(&all));
        }
        AuthenticatorsCommand::Rename { name, new_name } => {
            engine.rename_authenticator(&name, &new_name)?;
            out.value(&json!({"renamed": name, "to": new_name}), || {
                format!("Renamed {name} to {new_name}.")
            });
        }
        AuthenticatorsCommand::Remove { name } => {
            engine.remove_authenticator(&name).await?;
            out.value(&json!({"removed": name}), || format!("Removed {name}."));
        }
    }
    Ok(())
}

/// Renders what applying one delivery did: the connection, decisions delivered or refused,
/// items not taken, then each change.
fn applied(out: &Out, engine: &Engine, broker: &str, applied: &Applied) -> Result<(), Error> {
    use countersign_approver::display::visible;
    if let Some(Connection::Down { reason, retry_in }) = &applied.connection {
        let reason = visible(reason);
        out.line(&json!({"event": "disconnected", "broker": broker, "reason": reason, "retry_in_ms": retry_in.as_millis()}), || {
            format!("{broker}: disconnected ({reason}); retrying in {} ms", retry_in.as_millis())
        });
    }
    for item in &applied.delivered {
        out.line(&json!({"event": "delivered", "item": item}), || {
            format!("delivered decision for {item}")
        });
    }
    for rejected in &applied.rejected {
        let item = visible(&rejected.item);
        let error = visible(&rejected.error);
        out.line(
            &json!({"event": "rejected", "item": item, "code": rejected.code, "message": error}),
            || {
                format!(
                    "decision for {item} refused by the broker ({error}); the item is open again"
                )
            },
        );
    }
    if let Some(e) = &applied.deferred {
        let message = visible(&e.to_string());
        out.line(
            &json!({"event": "queued", "code": e.code(), "message": message}),
            || format!("{broker}: {message}"),
        );
    }
    for failed in &applied.not_taken {
        let item = visible(&failed.item);
        let error = visible(&failed.error);
        out.line(
            &json!({"event": "not_taken", "item": item, "code": failed.code, "message": error}),
            || format!("item {item} not taken: {error}"),
        );
    }
    for change in &applied.changes {
        output::change(out, engine, change)?;
    }
    Ok(())
}

/// Lists what is pending; with `live`, follows every broker until interrupted.
async fn pending(
    engine: &mut Engine,
    live: bool,
    notifier: Option<DesktopNotifier>,
    out: &Out,
) -> Result<ExitCode, Error> {
    let reports = engine.sync().await?;
    for failed in reports.iter().filter_map(|r| r.as_ref().err()) {
        out.note(&format!("{}: {}", failed.0, failed.1));
    }
    if let Some(notifier) = &notifier {
        engine.notify_pending(notifier)?;
    }
    let pending: Vec<Review> = engine.pending()?.into_iter().map(|p| p.review).collect();
    if !live {
        out.value(&pending, || output::pending(&pending));
        return Ok(output::sync_exit(&reports));
    }
    out.line(&json!({"event": "listing", "pending": pending}), || {
        output::pending(&pending)
    });
    let mut rx = engine.follow()?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            delivery = rx.recv() => {
                let Some((broker, delivery)) = delivery else { break };
                let done = engine.apply_delivery(&broker, delivery).await?;
                applied(out, engine, &broker, &done)?;
                if let Some(notifier) = &notifier {
                    engine.notify_pending(notifier)?;
                }
            }
            _ = tick.tick() => {
                for id in engine.expire()? {
                    output::change(out, engine, &Change::Updated(id))?;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fault injection for the crash tests (only in builds with the development authenticator):
/// with `COUNTERSIGN_HOLD_BEFORE_SEND` set, stop after the decision is safely in the outbox and
/// before it is sent, and wait there to be killed.
fn hold_before_send() {
    if Kind::Dev.available() && std::env::var_os("COUNTERSIGN_HOLD_BEFORE_SEND").is_some() {
        #[expect(clippy::print_stderr, reason = "the test waits for this line")]
        {
            eprintln!("held before send");
        }
        loop {
            std::thread::park();
        }
    }
}
