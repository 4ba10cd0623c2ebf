//! The commands the UI may call: short adapters of engine calls. Errors reach the UI as
//! [`CommandError`] (a stable code and a sentence).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use countersign_approver::Filter;
use countersign_approver::authn::Kind;
use countersign_approver::client::DecisionOutcome;
use countersign_approver::engine::{Engine, Opened, Via};
use countersign_approver::history::ExportFormat;
use countersign_approver::outbox::Queued;
use countersign_protocol::api::Decision;
use tauri::{AppHandle, Manager as _, Runtime, State};
use tauri_plugin_autostart::ManagerExt as _;

use crate::events::changed;
use crate::ipc::{
    ApproveAllRequest, ApproveBoundedRequest, ApproveRequest, AuthenticatorInfo, BoundedGrantInfo,
    BrokerInfo, CommandError, DecisionResult, DenyAllRequest, DenyRequest, EnrollRequest, Exported,
    HistoryEntry, HistoryQuery, HistoryRow, Integrity, ItemDetail, PairRequest, PendingItem,
    RenameRequest, Settings,
};
use crate::state::{AppState, GuiPrompt, Shared, pending_count};
use countersign_protocol::link::PairLink;

include!("command_names.rs");

type Reply<T> = Result<T, CommandError>;

/// Every command, for `invoke_handler`.
pub fn handler<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    macro_rules! generate {
        ($($name:ident),* $(,)?) => {
            tauri::generate_handler![$($name),*]
        };
    }
    with_commands!(generate)
}

fn pending_items(engine: &Engine) -> Reply<Vec<PendingItem>> {
    Ok(engine
        .pending()?
        .into_iter()
        .map(|p| PendingItem {
            id: p.review.id,
            agent: p.review.agent,
            tool: p.review.tool,
            intent: p.review.intent,
            // What the broker's catalog says the tool touches (what policy decided on), not
            // the agent's claim.
            classification: p
                .review
                .catalog
                .map(|c| c.classification)
                .unwrap_or_default(),
            policy_id: p.review.policy_id,
            merged: p.merged,
            created_at: p.created_at,
            expires_at: p.expires_at,
            fingerprint: p.review.fingerprint,
            hidden_characters: p.review.hidden_characters,
        })
        .collect())
}

/// What waits for a decision, soonest expiry first.
#[tauri::command]
async fn pending(state: State<'_, Shared>) -> Reply<Vec<PendingItem>> {
    pending_items(&*state.0.engine.lock().await)
}

/// Everything about one item; viewing a pending item is recorded.
#[tauri::command]
async fn item(state: State<'_, Shared>, id: String) -> Reply<ItemDetail> {
    let Opened {
        review,
        context,
        entries,
        expires_at: expires_at_unix,
    } = state.0.engine.lock().await.open_item(&id, Via::App)?;
    let history = entries
        .into_iter()
        .map(|e| HistoryEntry {
            seq: e.seq,
            at: e.at,
            kind: e.kind,
            detail: e.detail,
        })
        .collect();
    Ok(ItemDetail {
        review,
        expires_at_unix,
        context,
        history,
    })
}

fn result(queued: &Queued, outcome: Option<&DecisionOutcome>) -> DecisionResult {
    DecisionResult {
        item: queued.item.clone(),
        decision: match queued.decision {
            Decision::Approve { .. } => "approve".into(),
            Decision::Deny { .. } => "deny".into(),
        },
        delivered: outcome.is_some() || queued.acked,
        broker_status: outcome.map(|o| match o {
            DecisionOutcome::Recorded(v) | DecisionOutcome::AlreadyDecided(v) => {
                v.status.as_str().to_owned()
            }
        }),
    }
}

async fn refreshed<R: Runtime>(app: &AppHandle<R>, state: &Arc<AppState>) {
    let pending = pending_count(&*state.engine.lock().await);
    changed(app, pending);
}

/// Runs `approve` (a ceremony, and the outbox write) off the async threads: its prompts reach
/// the UI as `ceremony` events.
async fn ceremony<R: Runtime, T: Send + 'static>(
    app: &AppHandle<R>,
    shared: &Arc<AppState>,
    approve: impl FnOnce(&mut Engine, &GuiPrompt<R>) -> countersign_approver::Result<T> + Send + 'static,
) -> Reply<T> {
    let prompt = GuiPrompt {
        app: app.clone(),
        state: shared.clone(),
    };
    let local = shared.clone();
    Ok(tauri::async_runtime::spawn_blocking(move || {
        approve(&mut local.engine.blocking_lock(), &prompt)
    })
    .await
    .map_err(|e| CommandError {
        code: "internal".into(),
        message: e.to_string(),
    })??)
}

/// Approves with the authenticator `with` (default: the first enrolled). The ceremony runs
/// off the async threads; its prompts reach the UI as `ceremony` events.
#[tauri::command]
async fn approve<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: ApproveRequest,
) -> Reply<DecisionResult> {
    let ApproveRequest { id, with } = request;
    let shared = state.0.clone();
    let queued = ceremony(&app, &shared, move |engine, prompt| {
        engine.approve_queued(&id, with.as_deref(), prompt)
    })
    .await?;
    let (queued, outcome) = shared.engine.lock().await.deliver(queued).await?;
    refreshed(&app, &shared).await;
    Ok(result(&queued, outcome.as_ref()))
}

/// Denies with a reason, optionally suspending the agent.
#[tauri::command]
async fn deny<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: DenyRequest,
) -> Reply<DecisionResult> {
    let DenyRequest {
        id,
        reason,
        suspend_agent,
    } = request;
    let (queued, outcome) = state
        .0
        .engine
        .lock()
        .await
        .deny(&id, &reason, suspend_agent)
        .await?;
    refreshed(&app, &state.0).await;
    Ok(result(&queued, outcome.as_ref()))
}

/// Approves several items in one ceremony (each gets its own grant); their grants reach the
/// broker together.
#[tauri::command]
async fn approve_all<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: ApproveAllRequest,
) -> Reply<Vec<DecisionResult>> {
    let ApproveAllRequest { ids, with } = request;
    let shared = state.0.clone();
    let queued = ceremony(&app, &shared, move |engine, prompt| {
        engine.approve_all_queued(&ids, with.as_deref(), prompt)
    })
    .await?;
    let decided = shared.engine.lock().await.deliver_all(queued).await?;
    refreshed(&app, &shared).await;
    Ok(results(&decided))
}

/// Approves one item with a bounded grant: the gateway's key is asked of the broker, then the
/// ceremony runs as for `approve`.
#[tauri::command]
async fn approve_bounded<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: ApproveBoundedRequest,
) -> Reply<DecisionResult> {
    let ApproveBoundedRequest {
        id,
        with,
        uses,
        lifetime_secs,
        max,
        vary,
    } = request;
    let shared = state.0.clone();
    let bounds = countersign_protocol::bounded::Bounds {
        uses,
        lifetime_secs: i64::from(lifetime_secs),
        max,
        vary: vary.into_iter().collect(),
    };
    let bounded = shared.engine.lock().await.bounded_for(&id, bounds).await?;
    let queued = ceremony(&app, &shared, move |engine, prompt| {
        engine.approve_bounded_local(&id, &bounded, with.as_deref(), prompt)
    })
    .await?;
    let (queued, outcome) = shared.engine.lock().await.deliver(queued).await?;
    refreshed(&app, &shared).await;
    Ok(result(&queued, outcome.as_ref()))
}

/// The bounded grants that can still release calls, at every paired broker.
#[tauri::command]
async fn bounded_grants(state: State<'_, Shared>) -> Reply<Vec<BoundedGrantInfo>> {
    let grants = state.0.engine.lock().await.bounded_grants().await?;
    Ok(grants
        .into_iter()
        .map(|(broker, g)| BoundedGrantInfo {
            broker,
            jti: g.jti,
            txn: g.txn,
            agent: g.agent,
            tool: g.tool,
            uses: g.uses,
            used: g.used,
            released: g.released,
            expires_at: g.expires_at,
            constraints: g.constraints.to_string(),
        })
        .collect())
}

/// Revokes a bounded grant at once.
#[tauri::command]
async fn revoke_bounded<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    jti: String,
) -> Reply<()> {
    state.0.engine.lock().await.revoke_bounded(&jti).await?;
    refreshed(&app, &state.0).await;
    Ok(())
}

/// Denies several items with one reason: each is checked first, so one that cannot be denied
/// denies none.
#[tauri::command]
async fn deny_all<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: DenyAllRequest,
) -> Reply<Vec<DecisionResult>> {
    let DenyAllRequest {
        ids,
        reason,
        suspend_agent,
    } = request;
    let decided = state
        .0
        .engine
        .lock()
        .await
        .deny_all(&ids, &reason, suspend_agent)
        .await?;
    refreshed(&app, &state.0).await;
    Ok(results(&decided))
}

fn results(decided: &[(Queued, Option<DecisionOutcome>)]) -> Vec<DecisionResult> {
    decided
        .iter()
        .map(|(queued, outcome)| result(queued, outcome.as_ref()))
        .collect()
}

/// The PIN the authenticator asked for (`None` cancels).
#[tauri::command]
fn submit_pin(state: State<'_, Shared>, pin: Option<String>) -> Reply<()> {
    let sender = state.0.pin.lock().ok().and_then(|mut slot| slot.take());
    match sender {
        Some(sender) => {
            let _ = sender.send(pin);
            Ok(())
        }
        None => Err(CommandError {
            code: "no_ceremony".into(),
            message: "no authenticator is waiting for a PIN".into(),
        }),
    }
}

/// The history, filtered.
#[tauri::command]
async fn history(state: State<'_, Shared>, query: HistoryQuery) -> Reply<Vec<HistoryRow>> {
    let HistoryQuery {
        search,
        status,
        agent,
        tool,
        limit,
    } = query;
    let engine = state.0.engine.lock().await;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let rows = engine.history().list(&Filter {
        search: nonempty(search),
        status,
        agent: nonempty(agent),
        tool: nonempty(tool),
        limit: limit.map_or(200, |l| l.min(10_000) as usize),
        ..Filter::default()
    })?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryRow {
            id: r.id,
            status: r.status,
            agent: countersign_approver::display::visible(&r.agent),
            tool: countersign_approver::display::visible(&r.tool),
            intent: countersign_approver::display::visible(&r.intent),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// The history's integrity (chain and anchored head).
#[tauri::command]
async fn verify_history(state: State<'_, Shared>) -> Reply<Integrity> {
    match state.0.engine.lock().await.verify_history() {
        Ok(report) => Ok(Integrity::Verified {
            entries: report.entries,
        }),
        Err(countersign_approver::Error::ChainBroken { seq, reason }) => {
            Ok(Integrity::Broken { entry: seq, reason })
        }
        Err(e) => Err(e.into()),
    }
}

/// Brokers, authenticators and notification settings.
#[tauri::command]
async fn settings<R: Runtime>(app: AppHandle<R>, state: State<'_, Shared>) -> Reply<Settings> {
    let engine = state.0.engine.lock().await;
    let authenticators = engine.authenticators()?;
    Ok(Settings {
        brokers: engine
            .brokers()?
            .into_iter()
            .map(|b| BrokerInfo {
                connected: state.0.connected(&b.url),
                url: b.url,
                approver_id: b.approver_id,
                owner: b.owner,
                fingerprint: b.fingerprint,
            })
            .collect(),
        dev_authenticator: authenticators.iter().any(|a| a.kind == Kind::Dev),
        authenticators: authenticators
            .into_iter()
            .map(|a| AuthenticatorInfo {
                name: a.name,
                kind: a.kind.as_str().to_owned(),
                credential: a.credential.id,
                added_at: a.added_at,
            })
            .collect(),
        privacy: state.0.privacy.load(Ordering::Relaxed),
        paused_until: state.0.paused_until.load(Ordering::Relaxed),
        demo: state.0.demo,
        autostart: app.autolaunch().is_enabled().unwrap_or(false),
    })
}

/// Starts the app (in the tray) when the owner logs in, or stops doing so.
#[tauri::command]
fn set_autostart<R: Runtime>(app: AppHandle<R>, on: bool) -> Reply<bool> {
    let manager = app.autolaunch();
    let done = if on {
        manager.enable()
    } else {
        manager.disable()
    };
    done.map_err(|e| CommandError::new("autostart_failed", e))?;
    manager
        .is_enabled()
        .map_err(|e| CommandError::new("autostart_failed", e))
}

/// The pairing link opened last (once): it fills in the pairing form, nothing more.
#[tauri::command]
fn take_pair_link(state: State<'_, Shared>) -> Reply<Option<PairLink>> {
    let taken = state.0.pair_link.lock().ok().and_then(|mut l| l.take());
    Ok(taken.transpose()?)
}

/// Writes the whole history (every chained entry) as JSON Lines or CSV into the download
/// folder; a temporary file is renamed into place, so a failed export leaves nothing behind.
#[tauri::command]
async fn export_history<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    format: String,
) -> Reply<Exported> {
    let format: ExportFormat = format.parse()?;
    let dir = app
        .path()
        .download_dir()
        .or_else(|_| app.path().home_dir())
        .map_err(|e| CommandError::new("export_failed", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| CommandError::new("export_failed", e))?;
    let engine = state.0.engine.lock().await;
    let path = dir.join(format!(
        "countersign-history-{}.{}",
        engine.now(),
        format.extension()
    ));
    let entries = engine.history().export_to(format, &path, false)?;
    Ok(Exported {
        path: path.display().to_string(),
        entries,
    })
}

/// Notification privacy, kept in the profile so it holds after a restart.
#[tauri::command]
async fn set_privacy(state: State<'_, Shared>, on: bool) -> Reply<()> {
    state
        .0
        .engine
        .lock()
        .await
        .history_mut()
        .set_setting(crate::state::PRIVACY_SETTING, if on { "on" } else { "off" })?;
    state.0.privacy.store(on, Ordering::Relaxed);
    Ok(())
}

/// Pauses notifications for `minutes` (0 resumes them).
#[tauri::command]
async fn pause_notifications(state: State<'_, Shared>, minutes: u32) -> Reply<i64> {
    let now = state.0.engine.lock().await.now();
    let until = if minutes == 0 {
        0
    } else {
        now + i64::from(minutes) * 60
    };
    state.0.paused_until.store(until, Ordering::Relaxed);
    Ok(until)
}

/// Pairs with a broker (the first enrolled authenticator asserts first).
#[tauri::command]
async fn pair<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: PairRequest,
) -> Reply<BrokerInfo> {
    let PairRequest {
        url,
        code,
        fingerprint,
    } = request;
    let prompt = GuiPrompt {
        app: app.clone(),
        state: state.0.clone(),
    };
    let fingerprint = fingerprint.filter(|f| !f.trim().is_empty());
    let paired = state
        .0
        .engine
        .lock()
        .await
        .pair(&url, &code, fingerprint.as_deref(), None, None, &prompt)
        .await?;
    crate::state::start_following(app);
    Ok(BrokerInfo {
        url: paired.url,
        approver_id: paired.approver_id,
        owner: paired.owner,
        fingerprint: paired.fingerprint,
        connected: false,
    })
}

#[tauri::command]
async fn remove_broker(state: State<'_, Shared>, url: String) -> Reply<()> {
    Ok(state.0.engine.lock().await.remove_broker(&url)?)
}

/// Enrols an authenticator (after the first, the first enrolled one vouches).
#[tauri::command]
async fn add_authenticator<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Shared>,
    request: EnrollRequest,
) -> Reply<AuthenticatorInfo> {
    let EnrollRequest { kind, name } = request;
    let prompt = GuiPrompt {
        app,
        state: state.0.clone(),
    };
    let kind = Kind::parse(&kind)?;
    let enrolled = state
        .0
        .engine
        .lock()
        .await
        .enroll(kind, &name, None, &prompt)
        .await?;
    Ok(AuthenticatorInfo {
        name: enrolled.name,
        kind: enrolled.kind.as_str().to_owned(),
        credential: enrolled.credential.id,
        added_at: enrolled.added_at,
    })
}

#[tauri::command]
async fn rename_authenticator(state: State<'_, Shared>, request: RenameRequest) -> Reply<()> {
    let RenameRequest { name, new_name } = request;
    Ok(state
        .0
        .engine
        .lock()
        .await
        .rename_authenticator(&name, &new_name)?)
}

#[tauri::command]
async fn remove_authenticator(state: State<'_, Shared>, name: String) -> Reply<()> {
    Ok(state
        .0
        .engine
        .lock()
        .await
        .remove_authenticator(&name)
        .await?)
}
