//! Agent hooks: the published payloads of Claude Code and Codex (captured examples in
//! `tests/fixtures/hooks`), answered through `hook serve` and `hook run` against a real broker.

use std::path::PathBuf;
use std::process::Stdio;

use countersign_gateway::hook::{self, Agent, Decision, Event};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::support::{python_path, setup};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const PAYLOADS: &[(&str, Agent, Event)] = &[
    (
        "claude-pretooluse-bash.json",
        Agent::ClaudeCode,
        Event::PreToolUse,
    ),
    (
        "claude-pretooluse-mcp.json",
        Agent::ClaudeCode,
        Event::PreToolUse,
    ),
    (
        "claude-permissionrequest-bash.json",
        Agent::ClaudeCode,
        Event::PermissionRequest,
    ),
    (
        "claude-permissionrequest-mcp.json",
        Agent::ClaudeCode,
        Event::PermissionRequest,
    ),
    (
        "codex-pretooluse-shell.json",
        Agent::Codex,
        Event::PreToolUse,
    ),
    ("codex-pretooluse-mcp.json", Agent::Codex, Event::PreToolUse),
    (
        "codex-permissionrequest-shell.json",
        Agent::Codex,
        Event::PermissionRequest,
    ),
    (
        "codex-permissionrequest-mcp.json",
        Agent::Codex,
        Event::PermissionRequest,
    ),
];

/// Validates `answer` against one of Codex's published output schemas, with the Python
/// `jsonschema` package (installed with the MCP SDK).
fn valid_for_codex(schema: &str, answer: &Value) {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hooks")
        .join(schema);
    let output = std::process::Command::new("python3")
        .env("PYTHONPATH", python_path())
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.loads(sys.argv[1]), json.load(open(sys.argv[2])))",
            &answer.to_string(),
            &schema.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{answer} does not satisfy {}: {}",
        schema.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_published_payload_is_read_and_answered_in_its_documented_shape() {
    for (name, agent, event) in PAYLOADS {
        let payload = fixture(name);
        let (read, parsed) = hook::parse(payload.to_string().as_bytes()).unwrap();
        assert_eq!(read, *event, "{name}");
        assert_eq!(parsed.tool_name, payload["tool_name"].as_str().unwrap());
        for allow in [true, false] {
            let decision = Decision {
                allow,
                reason: "because".into(),
            };
            let answer = hook::answer(*agent, *event, &decision);
            match (agent, event, allow) {
                // Codex has no explicit PreToolUse allow: exit 0 and print nothing.
                (Agent::Codex, Event::PreToolUse, true) => assert_eq!(answer, None),
                (Agent::Codex, Event::PreToolUse, false) => {
                    valid_for_codex(
                        "codex-pre-tool-use.command.output.schema.json",
                        answer.as_ref().unwrap(),
                    );
                }
                (Agent::Codex, Event::PermissionRequest, _) => valid_for_codex(
                    "codex-permission-request.command.output.schema.json",
                    answer.as_ref().unwrap(),
                ),
                (Agent::ClaudeCode, Event::PreToolUse, _) => {
                    let answer = answer.unwrap();
                    let out = &answer["hookSpecificOutput"];
                    assert_eq!(out["hookEventName"], "PreToolUse");
                    assert_eq!(
                        out["permissionDecision"],
                        if allow { "allow" } else { "deny" }
                    );
                    assert_eq!(out["permissionDecisionReason"], "because");
                }
                (Agent::ClaudeCode, Event::PermissionRequest, _) => {
                    let answer = answer.unwrap();
                    let out = &answer["hookSpecificOutput"];
                    assert_eq!(out["hookEventName"], "PermissionRequest");
                    assert_eq!(
                        out["decision"]["behavior"],
                        if allow { "allow" } else { "deny" }
                    );
                    if !allow {
                        assert_eq!(out["decision"]["message"], "because");
                    }
                }
            }
        }
    }
    assert_eq!(
        hook::resource_of(Agent::ClaudeCode, "mcp__payments__refund"),
        "payments/refund"
    );
    assert_eq!(
        hook::resource_of(Agent::ClaudeCode, "Bash"),
        "claude-code/Bash"
    );
    assert_eq!(hook::resource_of(Agent::Codex, "Bash"), "codex/Bash");
}

#[test]
fn malformed_and_oversized_payloads_are_refused_typed() {
    for bad in [
        b"not json".to_vec(),
        br#"{"hook_event_name": "PreToolUse"}"#.to_vec(),
        br#"{"hook_event_name": "Stop", "tool_name": "Bash", "tool_input": {}}"#.to_vec(),
        vec![b' '; hook::MAX_PAYLOAD + 1],
    ] {
        let e = hook::parse(&bad).unwrap_err();
        assert_eq!(e.code(), "malformed", "{e}");
    }
}

/// `hook serve` for `s`, with `extra` environment; its base URL.
async fn serve(
    s: &crate::support::Setup,
    extra: &[(&'static str, &str)],
) -> (tokio::process::Child, String) {
    let port = crate::support::free_port();
    let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign-gateway"))
        .args(["hook", "serve", "--config"])
        .arg(&s.config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(s.env())
        .envs(extra.iter().map(|(k, v)| (*k, *v)))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::support::listening(port).await;
    (server, format!("http://127.0.0.1:{port}"))
}

/// POSTs `payload` to `hook serve` at `base` + `path`.
async fn post(base: &str, path: &str, payload: &[u8]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(payload.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn claude(tool: &str, input: Value, event: &str) -> Vec<u8> {
    let mut payload = fixture(if event == "PreToolUse" {
        "claude-pretooluse-mcp.json"
    } else {
        "claude-permissionrequest-mcp.json"
    });
    payload["tool_name"] = json!(tool);
    payload["tool_input"] = input;
    payload.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_serve_allows_denies_holds_and_times_out_against_a_real_broker() {
    let mut s = setup("gw-hooks", "[hold]\nmax_wait_secs = 30\n\n[tools.\"mcp__stripe__refunds.fail\"]\nresource = \"stripe/refunds.create\"\nmax_wait_secs = 1\n", |_| {}).await;
    let (mut server, base) = serve(&s, &[]).await;
    // Allowed by policy.
    let (status, answer) = post(
        &base,
        "/claude-code",
        &claude(
            "mcp__stripe__refunds.create",
            json!({"order": "1", "amount": "10.00"}),
            "PreToolUse",
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "allow",
        "{answer}"
    );
    // Denied by policy (no permit for the agent's built-in Bash).
    let (_, answer) = post(
        &base,
        "/claude-code",
        &fixture("claude-pretooluse-bash.json")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "deny",
        "{answer}"
    );
    assert!(
        answer["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains("policy")
    );
    // Held, approved, the grant verified and spent by the hook before it answers allow.
    let held = claude(
        "mcp__stripe__refunds.create",
        json!({"order": "2", "amount": "5000.00"}),
        "PermissionRequest",
    );
    let asked = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/claude-code", &held).await }
    });
    let id = s.next_pending().await;
    s.approve(&id).await;
    let (_, answer) = asked.await.unwrap();
    assert_eq!(
        answer["hookSpecificOutput"]["decision"]["behavior"], "allow",
        "{answer}"
    );
    let entries = s.entries(&id).await;
    assert!(
        entries.iter().any(|(k, _)| k == "redeemed"),
        "the hook spent the grant: {entries:?}"
    );
    // Nobody decides within the hook's hold: deny, never a silent pass.
    let (_, answer) = post(&base, "/codex", &{
        let mut p = fixture("codex-permissionrequest-mcp.json");
        p["tool_name"] = json!("mcp__stripe__refunds.fail");
        p["tool_input"] = json!({"order": "3", "amount": "7000.00"});
        p.to_string().into_bytes()
    })
    .await;
    assert_eq!(
        answer["hookSpecificOutput"]["decision"]["behavior"], "deny",
        "{answer}"
    );
    assert!(
        answer["hookSpecificOutput"]["decision"]["message"]
            .as_str()
            .unwrap()
            .contains("no decision"),
        "{answer}"
    );
    // Malformed and oversized bodies get a deny with status 200 (any other status lets the
    // agent go on).
    let (status, answer) = post(&base, "/claude-code", b"{").await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "deny",
        "{answer}"
    );
    let (status, answer) = post(&base, "/claude-code", &vec![b' '; hook::MAX_PAYLOAD + 10]).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "deny",
        "{answer}"
    );
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_run_answers_a_command_hook_on_stdout() {
    let s = setup("gw-hookrun", "", |_| {}).await;
    for (payload, agent, expect) in [
        (
            {
                let mut p = fixture("codex-pretooluse-mcp.json");
                p["tool_name"] = json!("mcp__stripe__refunds.create");
                p["tool_input"] = json!({"order": "1", "amount": "10.00"});
                p
            },
            "codex",
            "",
        ),
        (fixture("codex-pretooluse-shell.json"), "codex", "deny"),
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign-gateway"))
            .args(["hook", "run", "--agent", agent, "--config"])
            .arg(&s.config)
            .envs(s.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(payload.to_string().as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let output = child.wait_with_output().await.unwrap();
        assert!(output.status.success());
        let out = String::from_utf8(output.stdout).unwrap();
        if expect.is_empty() {
            assert_eq!(out.trim(), "", "Codex's allow is an empty answer");
        } else {
            let answer: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                answer["hookSpecificOutput"]["permissionDecision"], expect,
                "{answer}"
            );
            valid_for_codex("codex-pre-tool-use.command.output.schema.json", &answer);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_serve_with_a_token_denies_callers_without_it() {
    let extra = "[hooks]\ntoken = { env = \"COUNTERSIGN_TEST_HOOK_TOKEN\" }\n";
    let s = setup("gw-hook-token", extra, |_| {}).await;
    let token = "a-token-only-the-agent-has-0123456789";
    let (mut server, base) = serve(&s, &[("COUNTERSIGN_TEST_HOOK_TOKEN", token)]).await;
    let allowed = claude(
        "mcp__stripe__refunds.create",
        json!({"order": "1", "amount": "10.00"}),
        "PreToolUse",
    );
    let ask = async |auth: Option<String>| -> Value {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/claude-code"))
            .header("content-type", "application/json")
            .body(allowed.clone());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    };
    for wrong in [
        None,
        Some("Bearer nope".to_owned()),
        Some(format!("Bearer {token}x")),
    ] {
        let answer = ask(wrong).await;
        assert_eq!(
            answer["hookSpecificOutput"]["permissionDecision"], "deny",
            "{answer}"
        );
    }
    let answer = ask(Some(format!("Bearer {token}"))).await;
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "allow",
        "{answer}"
    );
    let _ = server.kill().await;
}
