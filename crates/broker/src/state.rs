//! Shared broker state: storage, policy, credentials, the pinned approver registry, the event
//! hub, rate limits and metrics.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, header};
use countersign_protocol::clock::{Clock, SystemClock};
use countersign_protocol::proof::{PROOF_HEADER, ProofError, ProofRequest, VerifiedProof};
use countersign_protocol::registry::RegistryDocument;
use countersign_protocol::{ApproverRegistry, GrantVerifier, VerifierConfig};

use crate::config::{AgentConfig, Config, Credentials, GatewayConfig};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::fanout::Hub;
use crate::policy::Policies;
use crate::store::{Store, StoreError};

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub credentials: Credentials,
    pub store: Arc<dyn Store>,
    pub policies: Policies,
    pub clock: Arc<dyn Clock>,
    registry: RwLock<Arc<ApproverRegistry>>,
    /// The store's registry version the registry was built from.
    registry_version: AtomicI64,
    /// Hands each committed event to its owner's open streams.
    pub hub: Arc<Hub>,
    limiter: Mutex<HashMap<String, Bucket>>,
    pairing_limiter: Mutex<HashMap<IpAddr, Bucket>>,
    pub metrics: Metrics,
    pub public_url: String,
    /// Set when the broker stops: open event streams end, so clients see the disconnect.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        policies: Policies,
    ) -> Result<Self, StoreError> {
        let registry_version = store.registry_version()?;
        let registry = build_registry(store.as_ref())?;
        let hub = Arc::new(Hub::new(store.last_event_id_overall()?));
        let waker = hub.clone();
        store.watch(Arc::new(move || waker.wake()));
        Ok(Self {
            credentials: Credentials::new(&config),
            public_url: config.public_url(),
            config,
            store,
            policies,
            clock: Arc::new(SystemClock),
            registry: RwLock::new(Arc::new(registry)),
            registry_version: AtomicI64::new(registry_version),
            hub,
            limiter: Mutex::new(HashMap::new()),
            pairing_limiter: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The pinned registry as of now.
    pub fn registry(&self) -> Arc<ApproverRegistry> {
        self.registry
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Rebuilds the registry after a change to approvers (here, or by an administrator's
    /// command against the database).
    pub fn reload_registry(&self) -> ApiResult<()> {
        let version = self.store.registry_version()?;
        let registry = Arc::new(build_registry(self.store.as_ref())?);
        match self.registry.write() {
            Ok(mut guard) => *guard = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
        self.registry_version.store(version, Ordering::Release);
        Ok(())
    }

    /// Reloads the registry when the store's version moved (an approver removed from the
    /// command line, say). Cheap enough to run every sweep.
    pub fn refresh_registry(&self) -> Result<bool, StoreError> {
        let version = self.store.registry_version()?;
        if version == self.registry_version.load(Ordering::Acquire) {
            return Ok(false);
        }
        let registry = Arc::new(build_registry(self.store.as_ref())?);
        match self.registry.write() {
            Ok(mut guard) => *guard = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
        self.registry_version.store(version, Ordering::Release);
        Ok(true)
    }

    /// A grant verifier acting for `audience`, accepting this broker's grants, over the
    /// broker's SQLite replay store.
    pub fn verifier(&self, audience: &str) -> GrantVerifier {
        let mut config = VerifierConfig::new(audience, self.public_url.clone());
        config.max_bounded_lifetime_secs = self.config.max_bounded_lifetime_secs;
        GrantVerifier::new(
            config,
            self.registry(),
            self.store.clone(),
            self.store.clone(),
            self.clock.clone(),
        )
    }

    /// The audience of the gateway that runs `tool`.
    pub fn audience_for(&self, tool: &str) -> Option<String> {
        self.credentials.audience_for(tool).map(str::to_owned)
    }

    /// Says that events were written: the hub reads them and hands them to their owners'
    /// streams (and wakes the long-polls of changed requests).
    pub fn events_written(&self) {
        self.hub.wake();
    }

    /// The agent a bearer secret belongs to.
    pub fn agent(&self, headers: &HeaderMap) -> ApiResult<AgentConfig> {
        let secret = bearer(headers)?;
        self.credentials
            .agent(secret)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "unknown agent credential"))
    }

    /// The gateway a bearer secret belongs to.
    pub fn gateway(&self, headers: &HeaderMap) -> ApiResult<GatewayConfig> {
        let secret = bearer(headers)?;
        self.credentials
            .gateway(secret)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "unknown gateway credential"))
    }

    /// The approver whose device signed this request's proof (fresh, unreplayed).
    pub fn approver(
        &self,
        headers: &HeaderMap,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> ApiResult<VerifiedProof> {
        let token = headers
            .get(PROOF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ProofError::Missing)?;
        let url = format!("{}{path_and_query}", self.public_url);
        let request = ProofRequest {
            method,
            url: &url,
            body,
            now: self.now(),
        };
        let proof = match self.registry().verify_proof(token, &request) {
            // Paired or enrolled through another instance a moment ago: look again (the
            // sweeper may have reloaded the registry since this check read it, too).
            Err(ProofError::UnknownKey) => {
                self.refresh_registry()?;
                self.registry().verify_proof(token, &request)?
            }
            checked => checked?,
        };
        let keep_until = proof.claims.keep_until();
        if !self
            .store
            .fresh_proof(&proof.claims.jti, keep_until, self.now())?
        {
            return Err(ProofError::Replayed.into());
        }
        Ok(proof)
    }

    /// Takes one token from `agent`'s bucket, or says how long to wait.
    pub fn rate_limit(&self, agent: &str) -> ApiResult<()> {
        let taken = self.take_token(
            &format!("agent:{agent}"),
            &self.limiter,
            agent.to_owned(),
            self.config.rate_limit,
        )?;
        taken.map_err(|wait| {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                ErrorCode::RateLimited,
                format!("agent {agent} is over its rate limit"),
            )
            .retry_after(wait)
        })
    }

    /// Takes one pairing attempt from `peer`'s bucket: guessing codes costs the guesser.
    pub fn pairing_limit(&self, peer: IpAddr) -> ApiResult<()> {
        let taken = self.take_token(
            &format!("pairing:{peer}"),
            &self.pairing_limiter,
            peer,
            self.config.pairing_rate_limit,
        )?;
        taken.map_err(|wait| {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                ErrorCode::RateLimited,
                "too many pairing attempts from this address",
            )
            .retry_after(wait)
        })
    }
}

impl AppState {
    /// Takes one token from a bucket every instance shares (`shared`, when the store keeps
    /// them), else from this instance's bucket `key` in `local`; `Err` says how many seconds
    /// until there is one.
    fn take_token<K: std::hash::Hash + Eq>(
        &self,
        shared: &str,
        local: &Mutex<HashMap<K, Bucket>>,
        key: K,
        limit: crate::config::RateLimit,
    ) -> ApiResult<Result<(), u64>> {
        if let Some(taken) = self
            .store
            .take_shared(shared, limit.burst, limit.per_minute)?
        {
            return Ok(taken);
        }
        let mut buckets = local.lock().unwrap_or_else(|p| p.into_inner());
        // Forget idle keys now and then, so the map cannot grow without bound.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| b.at.elapsed().as_secs() < 600);
        }
        Ok(take(&mut buckets, key, limit))
    }
}

/// Takes one token from `key`'s bucket, or says how many seconds until there is one.
fn take<K: std::hash::Hash + Eq>(
    buckets: &mut HashMap<K, Bucket>,
    key: K,
    limit: crate::config::RateLimit,
) -> Result<(), u64> {
    let bucket = buckets.entry(key).or_insert_with(|| Bucket {
        tokens: f64::from(limit.burst),
        at: Instant::now(),
    });
    let rate = f64::from(limit.per_minute) / 60.0;
    let elapsed = bucket.at.elapsed().as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(limit.burst));
    bucket.at = Instant::now();
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        return Ok(());
    }
    Err(limit.wait_secs(bucket.tokens))
}

/// The registry of every stored approver that is valid; one that is not (stored by an older
/// broker, or edited by hand) is reported and skipped, never fatal.
fn build_registry(store: &dyn Store) -> Result<ApproverRegistry, StoreError> {
    let document = RegistryDocument {
        approvers: store.approvers()?,
    };
    let (registry, skipped) = ApproverRegistry::lenient(document);
    for (approver, error) in skipped {
        tracing::error!(
            %approver,
            %error,
            "skipping a stored approver that is not valid; remove it with \
             `countersign-broker approvers remove`"
        );
    }
    Ok(registry)
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing bearer credential"))
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub evaluations_allow: AtomicU64,
    pub evaluations_deny: AtomicU64,
    pub evaluations_held: AtomicU64,
    pub merged: AtomicU64,
    pub decisions_approve: AtomicU64,
    pub decisions_deny: AtomicU64,
    pub redemptions_ok: AtomicU64,
    pub redemptions_refused: AtomicU64,
    pub expired: AtomicU64,
    pub rate_limited: AtomicU64,
    pub streams: AtomicI64,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str, samples: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        family(
            "countersign_evaluations_total",
            "AuthZEN evaluations by outcome.",
            "counter",
            &[
                ("{outcome=\"allow\"}", c(&self.evaluations_allow)),
                ("{outcome=\"deny\"}", c(&self.evaluations_deny)),
                ("{outcome=\"approval_required\"}", c(&self.evaluations_held)),
            ],
        );
        family(
            "countersign_merged_total",
            "Requests merged into an identical pending one.",
            "counter",
            &[("", c(&self.merged))],
        );
        family(
            "countersign_decisions_total",
            "Owner decisions by kind.",
            "counter",
            &[
                ("{decision=\"approve\"}", c(&self.decisions_approve)),
                ("{decision=\"deny\"}", c(&self.decisions_deny)),
            ],
        );
        family(
            "countersign_redemptions_total",
            "Grant redemptions by result.",
            "counter",
            &[
                ("{result=\"consumed\"}", c(&self.redemptions_ok)),
                ("{result=\"refused\"}", c(&self.redemptions_refused)),
            ],
        );
        family(
            "countersign_expired_total",
            "Pending actions that expired.",
            "counter",
            &[("", c(&self.expired))],
        );
        family(
            "countersign_rate_limited_total",
            "Evaluations refused by rate limits.",
            "counter",
            &[("", c(&self.rate_limited))],
        );
        let streams = u64::try_from(self.streams.load(Ordering::Relaxed)).unwrap_or(0);
        family(
            "countersign_approver_streams",
            "Connected approver streams.",
            "gauge",
            &[("", streams)],
        );
        out
    }
}
