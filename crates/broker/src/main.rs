//! `countersign-broker`: serve, pair approvers, check policies, release agents, simulate agents.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool prints"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use countersign_broker::config::{Config, secret_hash};
use countersign_broker::open_store;
use countersign_broker::simulate::{FleetSecrets, run_fleet};
use countersign_broker::store::{PgStore, SqliteStore};

#[derive(Debug, Parser)]
#[command(
    name = "countersign-broker",
    version,
    about = "Countersign reference broker"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, env = "COUNTERSIGN_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// Database file (overrides the configuration).
    #[arg(long, global = true, env = "COUNTERSIGN_BROKER_DATABASE")]
    database: Option<PathBuf>,
    /// PostgreSQL URL of the store (overrides `[store] url` in the configuration).
    #[arg(long, global = true, env = "COUNTERSIGN_STORE_URL")]
    store_url: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "COUNTERSIGN_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (loopback by default).
    Serve {
        /// Address to listen on (overrides the configuration).
        #[arg(long, env = "COUNTERSIGN_BROKER_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Bring the database's schema up to date (PostgreSQL; `serve` does it too at start).
    Migrate,
    /// Check that the store is reachable and its schema is what this broker writes; exits
    /// non-zero otherwise (for deployment scripts and health checks).
    Check,
    /// Print a one-time pairing code for an owner's new approver.
    Pair {
        #[arg(long)]
        owner: String,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Agent administration.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Paired approvers: list them, remove one, or remove one of their credentials.
    Approvers {
        #[command(subcommand)]
        command: ApproversCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print the stored form of a secret (for [[agents]] and [[gateways]]).
    HashSecret { secret: String },
    /// Write a demo configuration and its simulator secrets into a directory.
    DemoInit {
        dir: PathBuf,
        #[arg(long, default_value = "alice@example.com")]
        owner: String,
    },
    /// Run simulated agents against a broker.
    Simulate {
        /// Broker base URL.
        #[arg(long, default_value = "http://127.0.0.1:8470")]
        broker: String,
        /// Simulator secrets written by demo-init.
        #[arg(long)]
        secrets: PathBuf,
        /// Rounds through the scenarios (0 = forever).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Pause between calls, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        pause_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Parse a policy file and validate it against the schema.
    Check { file: PathBuf },
    /// Print a default-deny policy file to start from.
    Template,
}

#[derive(Debug, Subcommand)]
enum ApproversCommand {
    /// Every paired approver: id, owner, device keys and credentials.
    List {
        /// As JSON (the registry document).
        #[arg(long)]
        json: bool,
    },
    /// Remove an approver (a lost or retired device): its grants stop verifying at once.
    Remove { approver: String },
    /// Remove one credential (a lost authenticator) from whichever approver holds it.
    RemoveCredential { credential: String },
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Release an agent from suspension or quarantine.
    Release { agent: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let postgres = cli.store_url.is_some()
        || cli.config.as_ref().is_some_and(|path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| Config::from_toml(&text).ok())
                .is_some_and(|config| config.store.url.is_some())
        });
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if postgres {
        // A store call waits for its database in the worker that makes it: with PostgreSQL,
        // more workers keep more calls in flight (the store's connections bound them).
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        runtime.worker_threads((cores * 4).max(8));
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let mut config = match &cli.config {
        Some(path) => Config::from_toml(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => Config::default(),
    };
    if let Some(database) = cli.database {
        config.database = database;
    }
    if let Some(url) = cli.store_url {
        config.store.url = Some(url);
    }
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            countersign_broker::serve(config).await
        }
        Command::Pair { owner } => pair(&config, &owner),
        Command::Migrate => migrate(&config),
        Command::Check => check(&config),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            countersign_broker::policy::Policies::load(&text)?;
            println!(
                "{}: policies parse and validate against the schema",
                file.display()
            );
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Template,
        } => {
            print!("{}", countersign_broker::policy::TEMPLATE_POLICIES);
            Ok(())
        }
        Command::Approvers { command } => approvers(&config, command),
        Command::Agents {
            command: AgentsCommand::Release { agent },
        } => {
            let store = open_store(&config)?;
            store.release_agent(&agent)?;
            println!("released {agent}");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", countersign_broker::openapi::render());
            Ok(())
        }
        Command::HashSecret { secret } => {
            println!("{}", secret_hash(&secret));
            Ok(())
        }
        Command::DemoInit { dir, owner } => demo_init(&dir, &owner),
        Command::Simulate {
            broker,
            secrets,
            rounds,
            pause_ms,
        } => {
            let text = std::fs::read_to_string(&secrets)
                .with_context(|| format!("reading {}", secrets.display()))?;
            let secrets: FleetSecrets = toml::from_str(&text)?;
            run_fleet(&broker, &secrets, rounds, Duration::from_millis(pause_ms)).await
        }
    }
}

/// Runs the store's migrations.
fn migrate(config: &Config) -> anyhow::Result<()> {
    match &config.store.url {
        Some(url) => {
            let store = PgStore::connect(url, 2).context("connecting to the PostgreSQL store")?;
            let (before, after) = store.migrate()?;
            if before == after {
                println!("the schema is up to date (version {after})");
            } else {
                println!("migrated the schema from version {before} to {after}");
            }
        }
        None => {
            SqliteStore::open(&config.database)
                .with_context(|| format!("opening {}", config.database.display()))?;
            println!("{}: the schema is up to date", config.database.display());
        }
    }
    Ok(())
}

/// Reports whether the store is reachable and current, without changing it.
fn check(config: &Config) -> anyhow::Result<()> {
    let (state, what) = match &config.store.url {
        Some(url) => {
            let store = PgStore::connect(url, 2).context("connecting to the PostgreSQL store")?;
            (
                store.schema_state()?,
                "PostgreSQL store reachable".to_owned(),
            )
        }
        None => {
            if !config.database.exists() {
                bail!(
                    "{} does not exist (`serve` creates it)",
                    config.database.display()
                );
            }
            let state = SqliteStore::schema_state(&config.database)
                .with_context(|| format!("reading {}", config.database.display()))?;
            (state, format!("SQLite store {}", config.database.display()))
        }
    };
    if state.database < state.broker {
        bail!(
            "the database's schema is version {}, older than this broker's ({}): run \
             `countersign-broker migrate` (or start `serve`, which migrates)",
            state.database,
            state.broker
        );
    }
    if state.database > state.broker {
        bail!(
            "the database's schema is version {}, newer than this broker's ({}): \
             upgrade the broker",
            state.database,
            state.broker
        );
    }
    println!("ok: {what}, schema version {}", state.database);
    Ok(())
}

/// The admin's view of the approver registry. A running broker picks up a removal within a
/// second (it watches the registry's version in the database).
fn approvers(config: &Config, command: ApproversCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        ApproversCommand::List { json } => {
            let approvers = store.approvers()?;
            if json {
                let document = countersign_protocol::registry::RegistryDocument { approvers };
                println!("{}", serde_json::to_string_pretty(&document)?);
                return Ok(());
            }
            if approvers.is_empty() {
                println!("no approvers are paired");
            }
            for a in approvers {
                let valid = countersign_protocol::ApproverRegistry::new(
                    countersign_protocol::registry::RegistryDocument {
                        approvers: vec![a.clone()],
                    },
                )
                .err()
                .map(|e| format!("  INVALID: {e}"))
                .unwrap_or_default();
                println!("{}  owner {}{valid}", a.id, a.owner);
                for k in &a.device_keys {
                    println!("    device key  {}", k.kid);
                }
                for c in &a.credentials {
                    println!("    credential  {}", c.id);
                }
            }
            Ok(())
        }
        ApproversCommand::Remove { approver } => {
            if !store.remove_approver(&approver)? {
                bail!("no approver {approver}");
            }
            println!("removed {approver}");
            Ok(())
        }
        ApproversCommand::RemoveCredential { credential } => {
            let Some(mut entry) = store
                .approvers()?
                .into_iter()
                .find(|a| a.credentials.iter().any(|c| c.id == credential))
            else {
                bail!("no approver holds credential {credential}");
            };
            entry.credentials.retain(|c| c.id != credential);
            if entry.credentials.is_empty() {
                bail!(
                    "{credential} is the last credential of {}: remove the approver instead",
                    entry.id
                );
            }
            let now =
                countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
            match store.update_approver(&entry, now)? {
                countersign_broker::store::UpdateOutcome::Updated => {
                    println!("removed {credential} from {}", entry.id);
                    Ok(())
                }
                other => bail!("could not update {}: {other:?}", entry.id),
            }
        }
    }
}

fn pair(config: &Config, owner: &str) -> anyhow::Result<()> {
    if owner.trim().is_empty() {
        bail!("--owner must name the human who owns the approver");
    }
    let store = open_store(config)?;
    let now = countersign_protocol::clock::Clock::now(&countersign_protocol::clock::SystemClock);
    let code = countersign_broker::pairing::issue_pairing_code(
        store.as_ref(),
        owner,
        now,
        config.pairing_ttl_secs,
    )?;
    println!("{code}");
    eprintln!(
        "pairing code for {owner}; valid once, for {} s",
        config.pairing_ttl_secs
    );
    if let Some(tls) = &config.tls {
        eprintln!(
            "this broker's certificate, for `countersign pair --fingerprint`: SHA-256 {}",
            certificate_fingerprint(&tls.cert)?
        );
    }
    Ok(())
}

/// The SHA-256 fingerprint of the first certificate in a PEM file, as
/// `openssl x509 -noout -fingerprint -sha256` prints it.
fn certificate_fingerprint(path: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let cert = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .next()
        .with_context(|| format!("no certificate in {}", path.display()))?
        .with_context(|| format!("reading {}", path.display()))?;
    let digest = sha2::Sha256::digest(&cert);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn demo_init(dir: &Path, owner: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (secrets, agents, gateways) = countersign_broker::simulate::demo_fleet(owner);
    let policies = dir.join("policies.cedar");
    std::fs::write(&policies, countersign_broker::policy::DEMO_POLICIES)?;
    let mut broker = format!(
        "# Countersign demo broker. Secrets are stored hashed; the simulator's plaintext copies are in simulate.toml.\n\
         listen = \"127.0.0.1:8470\"\ndatabase = \"{}\"\npolicies = \"{}\"\npending_ttl_secs = 300\n\n",
        dir.join("broker.db").display(),
        policies.display()
    );
    for tool in countersign_broker::simulate::demo_catalog() {
        broker.push_str(&format!(
            "[[tools]]\nname = \"{}\"\ndomain = \"{}\"\nclassification = [{}]\nrisk = \"{}\"\n\n",
            tool.name,
            tool.domain.unwrap_or_default(),
            tool.classification
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            tool.risk.map(|r| r.as_str()).unwrap_or("medium"),
        ));
    }
    let mut sim = format!("owner = \"{owner}\"\n\n");
    for (config, secret) in agents.iter().zip(&secrets.agents) {
        broker.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nowner = \"{owner}\"\nsecret_sha256 = \"{}\"\n\n",
            config.id, config.secret_sha256
        ));
        sim.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nsecret = \"{}\"\n",
            secret.id, secret.secret
        ));
        if let Some(by) = &secret.delegated_by {
            sim.push_str(&format!("delegated_by = \"{by}\"\n"));
        }
        sim.push('\n');
    }
    for (config, secret) in gateways.iter().zip(&secrets.gateways) {
        broker.push_str(&format!(
            "[[gateways]]\naudience = \"{}\"\ntools = [\"{}\"]\nsecret_sha256 = \"{}\"\n",
            config.audience,
            config.tools.join("\", \""),
            config.secret_sha256
        ));
        if let Some(key) = &config.key {
            broker.push_str(&format!(
                "key = {{ kty = \"OKP\", crv = \"Ed25519\", x = \"{}\", kid = \"{}\" }}\n",
                key.x, key.kid
            ));
        }
        broker.push('\n');
        sim.push_str(&format!(
            "[[gateways]]\naudience = \"{}\"\nsecret = \"{}\"\n",
            secret.audience, secret.secret
        ));
        if let Some(key) = &secret.key {
            sim.push_str(&format!("key = \"{key}\"\n"));
        }
        sim.push('\n');
    }
    write_private(&dir.join("broker.toml"), &broker)?;
    write_private(&dir.join("simulate.toml"), &sim)?;
    println!(
        "wrote {0}/broker.toml, {0}/policies.cedar and {0}/simulate.toml",
        dir.display()
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}
