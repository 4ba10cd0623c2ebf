//! The approver's side of security review 2: everything the action hash binds is shown (finding
//! 4), a member the app cannot show is refused with why, a hostile broker can neither borrow
//! another broker's identity nor touch its items (findings 10, 14), removed authenticators are
//! removed at every broker (finding 11), and notifications do not hold a thread each (14).

use std::collections::BTreeSet;
use std::sync::Arc;

use countersign_approver::authn::{Kind, Unattended};
use countersign_approver::display::{BOUND_MEMBERS, Review};
use countersign_approver::engine::{Change, Engine};
use countersign_approver::history::ItemStatus;
use countersign_approver::notify::{DesktopNotifier, Notice, Notifier as _};
use countersign_approver::{Error, Filter};
use countersign_protocol::ActionRequest;
use countersign_protocol::action::{
    ActionName, Actor, ActorChain, Context, DataTouched, Resource, Subject,
};
use countersign_protocol::registry::RegistryDocument;
use countersign_protocol::spiffe::SpiffeId;
use serde_json::{Value, json};

use crate::support::{OWNER, broker_config, code, grant_of, held, sim};

/// Every leaf path of a JSON Schema, following `$ref`s into `$defs`. A free-form object (a map
/// of any JSON) and a recursive reference end a path.
fn paths(
    schema: &Value,
    defs: &Value,
    prefix: &str,
    seen: &mut Vec<String>,
    out: &mut BTreeSet<String>,
) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap().to_owned();
        if seen.contains(&name) {
            out.insert(prefix.to_owned());
            return;
        }
        seen.push(name.clone());
        paths(&defs[&name], defs, prefix, seen, out);
        seen.pop();
        return;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(variants) = schema.get(key).and_then(Value::as_array) {
            for variant in variants {
                paths(variant, defs, prefix, seen, out);
            }
            return;
        }
    }
    match schema.get("properties").and_then(Value::as_object) {
        Some(properties) => {
            for (name, member) in properties {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                paths(member, defs, &path, seen, out);
            }
        }
        None if schema.get("type") == Some(&json!("null")) => {}
        None => {
            out.insert(prefix.to_owned());
        }
    }
}

/// An action with every member the schema allows, each value a marker of its own.
fn maximal() -> ActionRequest {
    let props = |tag: &str| {
        json!({ format!("{tag}-key"): format!("{tag}-value"), "nested": {"deep": format!("{tag}-deep")} })
            .as_object()
            .cloned()
    };
    ActionRequest {
        subject: Subject {
            kind: "user-kind-marker".into(),
            id: OWNER.into(),
            properties: props("subject-props"),
        },
        actor: Actor {
            id: SpiffeId::parse("spiffe://example.com/agent/actor-marker").unwrap(),
            act: Some(ActorChain {
                sub: SpiffeId::parse("spiffe://example.com/agent/first-delegator").unwrap(),
                act: Some(Box::new(ActorChain {
                    sub: SpiffeId::parse("spiffe://example.com/agent/second-delegator").unwrap(),
                    act: None,
                })),
            }),
        },
        action: ActionName {
            name: "action-name-marker".into(),
            properties: props("action-props"),
        },
        resource: Resource {
            kind: "resource-kind-marker".into(),
            id: "tool/name-marker".into(),
            properties: props("resource-props"),
        },
        context: Context {
            intent: "intent-marker".into(),
            arguments: json!({"argument-key": "argument-value", "list": ["argument-item"]})
                .as_object()
                .unwrap()
                .clone(),
            data: Some(DataTouched {
                domain: "domain-marker".into(),
                classification: vec!["class-marker".into()],
            }),
            annotations: Some(countersign_protocol::action::ToolAnnotations {
                title: Some("title-marker".into()),
                read_only_hint: Some(false),
                destructive_hint: Some(true),
                idempotent_hint: Some(false),
                open_world_hint: Some(true),
            }),
        },
    }
}

/// Finding 4 and point 3: the review has a place for every member the action hash binds. The
/// schema of the bound object is walked; a member without a place fails this test.
#[test]
fn every_member_the_hash_binds_has_a_place_in_the_review() {
    let schema = schemars::schema_for!(ActionRequest);
    let value = schema.as_value();
    let defs = value.get("$defs").cloned().unwrap_or(Value::Null);
    let mut bound = BTreeSet::new();
    paths(value, &defs, "", &mut Vec::new(), &mut bound);
    assert!(bound.len() >= 14, "{bound:?}");
    let listed: BTreeSet<String> = BOUND_MEMBERS.iter().map(|(p, _)| (*p).to_owned()).collect();
    let unplaced: Vec<&String> = bound
        .iter()
        .filter(|path| {
            !listed
                .iter()
                .any(|l| *path == l || path.starts_with(&format!("{l}.")))
        })
        .collect();
    assert!(
        unplaced.is_empty(),
        "bound members without a place in the review: {unplaced:?}"
    );

    // Each place exists, and shows the member's value.
    let request = maximal();
    let pending = countersign_protocol::PendingAction::new(
        countersign_protocol::action::PendingParts {
            id: "pa_maximal".into(),
            created_at: countersign_protocol::action::Timestamp::from_unix(1_800_000_000).unwrap(),
            expires_at: countersign_protocol::action::Timestamp::from_unix(1_800_000_300).unwrap(),
            audience: "https://tools.example.com".into(),
            policy: countersign_protocol::action::PolicyRef {
                id: "p".into(),
                reason: "r".into(),
            },
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
        },
        request.clone(),
    )
    .unwrap();
    let review = serde_json::to_value(Review::of(&pending, ItemStatus::Pending)).unwrap();
    let bound_value = serde_json::to_value(&request).unwrap();
    for (path, field) in BOUND_MEMBERS {
        let shown = review
            .get(field)
            .unwrap_or_else(|| panic!("the review has no field {field} for {path}"));
        let pointer = format!("/{}", path.replace('.', "/"));
        let value = bound_value.pointer(&pointer).unwrap();
        let mut leaves = Vec::new();
        // In free-form members the keys are the agent's too; in the chain they are structure.
        let keys = path.ends_with("properties") || path.ends_with("arguments");
        collect_strings(value, keys, &mut leaves);
        for leaf in leaves {
            assert!(
                shown.to_string().contains(&leaf),
                "{path}: {leaf:?} is not shown in {field}: {shown}"
            );
        }
    }
    assert_eq!(review["delegation_verified"], false);
}

fn collect_strings(value: &Value, keys: bool, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, keys, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if keys {
                    out.push(k.clone());
                }
                collect_strings(v, keys, out);
            }
        }
        _ => {}
    }
}

/// A broker that answers as an attacker chooses: pairing with a chosen identity, a listing of
/// chosen items. It is the adversary of these tests, not a stand-in for the real broker.
async fn hostile_broker(
    approver_id: &str,
    listing: Value,
) -> (String, tokio::task::JoinHandle<()>) {
    let one = listing["requests"][0].to_string();
    raw_broker(approver_id, listing.to_string(), one).await
}

fn engine(dir: &std::path::Path, name: &str) -> Engine {
    let profile = format!("review-{name}-{}", std::process::id());
    Engine::open(dir, &profile).unwrap()
}

/// A pending view as JSON, with `edit` applied.
fn listed_item(id: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let request = sim("http://127.0.0.1:9")
        .request(&countersign_broker::simulate::scenarios()[0])
        .unwrap();
    let now = crate::support::now();
    let pending = countersign_protocol::PendingAction::new(
        countersign_protocol::action::PendingParts {
            id: id.into(),
            created_at: countersign_protocol::action::Timestamp::from_unix(now).unwrap(),
            expires_at: countersign_protocol::action::Timestamp::from_unix(now + 300).unwrap(),
            audience: "https://tools.example.com".into(),
            policy: countersign_protocol::action::PolicyRef {
                id: "p".into(),
                reason: "r".into(),
            },
            delegation: countersign_protocol::action::Delegation::ClaimedByAgent,
            catalog: None,
        },
        request,
    )
    .unwrap();
    let mut view = json!({"pending": pending, "status": "pending", "merged": 1});
    edit(&mut view);
    view
}

/// Point 3: an item carrying a member this app cannot render is refused with a clear error,
/// never approved half-seen; the rest of the listing is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_this_app_cannot_show_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = engine(dir.path(), "unshowable");
    engine
        .enroll(Kind::Dev, "key", None, &Unattended)
        .await
        .unwrap();
    let listing = json!({
        "requests": [
            listed_item("pa_sneaky", |v| v["pending"]["context"]["side_channel"] = json!({"account": "acct_attacker"})),
            listed_item("pa_fine", |_| {}),
        ],
        "last_event_id": 0,
    });
    let (url, _task) = hostile_broker("apr_hostile", listing).await;
    engine
        .pair(&url, "ANY-CODE", None, None, None, &Unattended)
        .await
        .unwrap();
    let reports = engine.sync().await.unwrap();
    let report = reports[0].as_ref().unwrap();
    assert_eq!(report.received, ["pa_fine"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].item, "pa_sneaky");
    assert!(
        report.failed[0].error.contains("cannot show")
            && report.failed[0].error.contains("side_channel"),
        "{}",
        report.failed[0].error
    );
    assert!(engine.history().item("pa_sneaky").unwrap().is_none());
}

/// The approver reads what brokers send as strictly as brokers read what agents send: a
/// listing whose item repeats a key (one intent for a lenient reader, another for a strict one)
/// is refused whole, with the key named, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_answer_with_a_repeated_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = engine(dir.path(), "duplicate");
    engine
        .enroll(Kind::Dev, "key", None, &Unattended)
        .await
        .unwrap();
    let listing = json!({
        "requests": [listed_item("pa_twofaced", |_| {})],
        "last_event_id": 0,
    });
    let text = serde_json::to_string(&listing).unwrap();
    assert!(text.contains("\"intent\":\""));
    let text = text.replacen(
        "\"intent\":\"",
        "\"intent\":\"Check the weather\",\"intent\":\"",
        1,
    );
    // What a lenient reader makes of it: one intent, the last; the repetition is gone.
    assert!(serde_json::from_str::<Value>(&text).is_ok());
    let (url, _task) = raw_broker("apr_twofaced", text, String::new()).await;
    engine
        .pair(&url, "ANY-CODE", None, None, None, &Unattended)
        .await
        .unwrap();
    let reports = engine.sync().await.unwrap();
    let (_, error) = reports[0].as_ref().unwrap_err();
    assert_eq!(error.code(), "duplicate_key", "{error}");
    assert!(error.to_string().contains("intent"), "{error}");
    assert!(engine.history().item("pa_twofaced").unwrap().is_none());
}

/// A broker whose listing and single item are the raw texts given (a repeated key, say, which
/// `axum::Json` could never send).
async fn raw_broker(
    approver_id: &str,
    listing: String,
    one: String,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::{get, post};
    let pairing = json!({"approver_id": approver_id, "owner": OWNER}).to_string();
    let answer = |body: String| {
        move || {
            std::future::ready((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.clone(),
            ))
        }
    };
    let app = axum::Router::new()
        .route("/v1/pair", post(answer(pairing)))
        .route("/v1/approver/requests", get(answer(listing)))
        .route("/v1/approver/requests/{id}", get(answer(one)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// Finding 10: each broker has its own device key, an approver id another paired broker uses
/// is refused, and a grant one broker accepted is refused by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_cannot_borrow_each_others_identity_or_grants() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("c")).unwrap();
    let a = countersign_broker::spawn(broker_config(&dir.path().join("a"), "127.0.0.1:0"))
        .await
        .unwrap();
    let c = countersign_broker::spawn(broker_config(&dir.path().join("c"), "127.0.0.1:0"))
        .await
        .unwrap();
    let (url_a, url_c) = (format!("http://{}", a.addr), format!("http://{}", c.addr));
    let mut engine = engine(&dir.path().join("app"), "identity");
    engine
        .enroll(Kind::Dev, "key", None, &Unattended)
        .await
        .unwrap();
    let paired_a = engine
        .pair(&url_a, &code(&a), None, None, None, &Unattended)
        .await
        .unwrap();
    engine
        .pair(&url_c, &code(&c), None, None, None, &Unattended)
        .await
        .unwrap();
    let kid = |url: &str| {
        let url = url.to_owned();
        async move {
            let registry: RegistryDocument = reqwest::get(format!("{url}/v1/registry"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            registry.approvers[0].device_keys[0].kid.clone()
        }
    };
    assert_ne!(kid(&url_a).await, kid(&url_c).await, "one key per broker");

    // A hostile broker answering with A's approver id (public in A's registry) is refused.
    let (hostile, _task) = hostile_broker(
        &paired_a.approver_id,
        json!({"requests": [], "last_event_id": 0}),
    )
    .await;
    let error = engine
        .pair(&hostile, "ANY-CODE", None, None, None, &Unattended)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::ApproverIdReused { .. }), "{error}");
    assert_eq!(engine.brokers().unwrap().len(), 2);

    // A grant C accepted, presented at A for the same audience: refused.
    let agent_c = sim(&url_c);
    let request = agent_c
        .request(&countersign_broker::simulate::scenarios()[0])
        .unwrap();
    let id = held(&agent_c, &request).await;
    engine.sync().await.unwrap();
    engine.approve(&id, None, &Unattended).await.unwrap();
    let grant = grant_of(&agent_c, &id).await;
    let claims = grant.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&countersign_protocol::hash::b64url_decode(claims).unwrap())
            .unwrap();
    assert_eq!(claims["broker"], url_c);
    let agent_a = sim(&url_a);
    let gateway = crate::support::GATEWAY;
    assert_eq!(
        agent_a.redeem(gateway, &grant, &request).await.unwrap(),
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        agent_c.redeem(gateway, &grant, &request).await.unwrap(),
        reqwest::StatusCode::OK
    );
    a.stop();
    c.stop();
}

/// Finding 14: an item is its broker's; another broker's view with the same id changes nothing.
#[test]
fn one_brokers_view_never_touches_another_brokers_item() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = engine(dir.path(), "collision");
    let view: countersign_protocol::api::RequestView =
        serde_json::from_value(listed_item("pa_shared", |_| {})).unwrap();
    assert_eq!(
        engine.apply("https://a.example", &view).unwrap(),
        Some(Change::Received("pa_shared".into()))
    );
    let mut hostile = view.clone();
    hostile.status = countersign_protocol::action::Status::Denied;
    let error = engine.apply("https://b.example", &hostile).unwrap_err();
    assert!(matches!(error, Error::ItemCollision { .. }), "{error}");
    let (_, status) = engine.history().item("pa_shared").unwrap().unwrap();
    assert_eq!(status, "pending");
    assert_eq!(
        engine
            .history()
            .list(&Filter {
                limit: 10,
                ..Filter::default()
            })
            .unwrap()
            .len(),
        1
    );
}

/// Finding 11: removing an authenticator removes it at every paired broker first; when one
/// cannot be told, nothing is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_authenticator_tells_every_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = countersign_broker::spawn(broker_config(dir.path(), "127.0.0.1:0"))
        .await
        .unwrap();
    let url = format!("http://{}", broker.addr);
    let mut engine = engine(&dir.path().join("app"), "removal");
    engine
        .enroll(Kind::Dev, "first", None, &Unattended)
        .await
        .unwrap();
    engine
        .pair(&url, &code(&broker), None, None, None, &Unattended)
        .await
        .unwrap();
    let second = engine
        .enroll(Kind::Dev, "second", None, &Unattended)
        .await
        .unwrap();
    let credentials = |url: String| async move {
        let registry: RegistryDocument = reqwest::get(format!("{url}/v1/registry"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        registry.approvers[0]
            .credentials
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        credentials(url.clone())
            .await
            .contains(&second.credential.id)
    );
    engine.remove_authenticator("second").await.unwrap();
    assert!(
        !credentials(url.clone())
            .await
            .contains(&second.credential.id)
    );
    assert_eq!(engine.authenticators().unwrap().len(), 1);

    // A broker that cannot be reached: the authenticator stays, and the error says where.
    engine
        .enroll(Kind::Dev, "third", None, &Unattended)
        .await
        .unwrap();
    broker.shut_down().await;
    let error = engine.remove_authenticator("third").await.unwrap_err();
    assert!(matches!(error, Error::BrokersNotTold { .. }), "{error}");
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(engine.authenticators().unwrap().len(), 2);
}

/// Threads of this process waiting for clicks on notifications (thread names are cut to 15
/// bytes by the kernel).
fn click_waiters() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("notification"))
        .count()
}

/// Finding 14: a notification on screen does not hold a thread of its own.
#[test]
fn notifications_share_one_thread_for_their_clicks() {
    let notifier = DesktopNotifier::new(false).on_open(Arc::new(|_: &str| {}));
    for i in 0..40 {
        notifier
            .notify(&Notice {
                item: format!("pa_{i}"),
                title: "agent wants tool".into(),
                body: "intent".into(),
            })
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(click_waiters(), 1, "40 notifications on screen, one thread");
    assert_eq!(countersign_approver::notify::click_threads(), 1);
}
