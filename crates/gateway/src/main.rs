//! `countersign-gateway`: put an MCP server, Claude Code or Codex behind Countersign.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: its answers go to stdout, its errors to stderr"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use countersign_gateway::hook::{self, Agent};
use countersign_gateway::{Config, Pep, mcp};

#[derive(Debug, Parser)]
#[command(name = "countersign-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and reach the broker with its credentials.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Proxy an MCP server: every tools/call goes through Countersign.
    Mcp {
        #[command(subcommand)]
        transport: McpTransport,
    },
    /// Answer agent permission hooks (Claude Code, Codex).
    Hook {
        #[command(subcommand)]
        mode: HookMode,
    },
    /// File a secret in the OS keyring (read from stdin), for `{ keyring = "NAME" }`.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// The gateway's key, for bounded grants.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Makes a new Ed25519 key, files its private half in the OS keyring as NAME (point
    /// `gateway.key = { keyring = "NAME" }` at it), and prints the public half for the
    /// broker's `[[gateways]]` entry.
    New { name: String },
}

#[derive(Debug, Subcommand)]
enum McpTransport {
    /// Started by the MCP host in place of the server; starts the server as its child.
    Stdio {
        #[arg(long)]
        config: PathBuf,
        /// The server's command and its arguments.
        #[arg(last = true, required = true)]
        server: Vec<String>,
    },
    /// Streamable HTTP: listens for the client and forwards to the server's MCP endpoint.
    Http {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8472")]
        listen: SocketAddr,
        /// The server's MCP endpoint, `http://127.0.0.1:8000/mcp`.
        #[arg(long)]
        upstream: String,
    },
}

#[derive(Debug, Subcommand)]
enum HookMode {
    /// An HTTP endpoint for `http` hooks: POST /claude-code and POST /codex.
    Serve {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8471")]
        listen: SocketAddr,
    },
    /// A `command` hook: the payload on stdin, the answer on stdout.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum)]
        agent: Agent,
    },
}

#[derive(Debug, Subcommand)]
enum SecretAction {
    /// Reads one line from stdin and files it as NAME.
    Set { name: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // stdout carries MCP messages and hook answers: logs go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COUNTERSIGN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn pep(config: &Path) -> anyhow::Result<Pep> {
    Ok(Pep::new(Config::load(config)?)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config } => {
            let pep = pep(&config)?;
            println!("{}: the configuration is valid", config.display());
            for line in pep.probe().await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Mcp {
            transport: McpTransport::Stdio { config, server },
        } => {
            let pep = pep(&config)?;
            mcp::stdio(pep, &server, tokio::io::stdin(), tokio::io::stdout()).await
        }
        Command::Mcp {
            transport:
                McpTransport::Http {
                    config,
                    listen,
                    upstream,
                },
        } => {
            let pep = pep(&config)?;
            anyhow::ensure!(
                upstream.starts_with("http://") || upstream.starts_with("https://"),
                "--upstream must be an http:// or https:// URL"
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "countersign-gateway: MCP on http://{} → {upstream}",
                listener.local_addr()?
            );
            axum::serve(listener, mcp::http::router(pep, &upstream)?).await?;
            Ok(())
        }
        Command::Hook {
            mode: HookMode::Serve { config, listen },
        } => {
            let pep = pep(&config)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            eprintln!(
                "countersign-gateway: answering hooks on http://{}/claude-code and /codex",
                listener.local_addr()?
            );
            axum::serve(listener, hook::router(pep)?).await?;
            Ok(())
        }
        Command::Hook {
            mode: HookMode::Run { config, agent },
        } => {
            // Whatever goes wrong, the agent gets a deny it can read (a failed hook would let
            // the tool run).
            match pep(&config) {
                Ok(pep) => hook::run(&pep, agent).await,
                Err(e) => {
                    let decision = hook::Decision {
                        allow: false,
                        reason: format!("Countersign: not allowed. {e:#}"),
                    };
                    let event = hook::Event::PreToolUse;
                    if let Some(answer) = hook::answer(agent, event, &decision) {
                        println!("{answer}");
                    }
                    Err(e)
                }
            }
        }
        Command::Secret {
            action: SecretAction::Set { name },
        } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let secret = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!secret.is_empty(), "no secret on stdin");
            countersign_gateway::keyring::write(&name, secret).map_err(anyhow::Error::msg)?;
            println!("filed {name} in the OS keyring");
            Ok(())
        }
        Command::Key {
            action: KeyAction::New { name },
        } => {
            let key = countersign_protocol::DeviceSigningKey::generate();
            let secret = countersign_protocol::hash::b64url(&*key.secret());
            countersign_gateway::keyring::write(&name, &secret).map_err(anyhow::Error::msg)?;
            let public = key.public_jwk();
            println!(
                "# filed the private key as {name} in the OS keyring; in the broker's [[gateways]] entry:\n\
                 key = {{ kty = \"OKP\", crv = \"Ed25519\", x = \"{}\", kid = \"{}\" }}",
                public.x, public.kid
            );
            Ok(())
        }
    }
}
