#!/usr/bin/env bash
# The command-line demo: a local broker with simulated agents, and the `countersign` CLI with
# the development authenticator, in a private session (temporary keyring, nothing of yours
# touched). It walks through pairing, reviewing, approving and denying, then — on a terminal —
# leaves you in a shell to try the commands yourself; leaving the shell ends everything.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${COUNTERSIGN_IN_SESSION:-}" != 1 ]]; then
  scripts/setup.sh
  cargo build --locked -p countersign-broker -p countersign-gateway -p countersign-cli --features countersign-cli/dev-authenticator
  exec scripts/session.sh "$0" "$@"
fi

bin="$PWD/target/debug"
repo="$PWD"
work=$(mktemp -d)
broker_pid="" sim_pid=""
cleanup() {
  [[ -n "$sim_pid" ]] && kill "$sim_pid" 2>/dev/null || true
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export PATH="$bin:$PATH" COUNTERSIGN_HOME="$work/app" COUNTERSIGN_PROFILE=demo
cd "$work"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

port=8470
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
say "A broker with three simulated agents' credentials, on 127.0.0.1:$port"
countersign-broker demo-init demo >/dev/null
export COUNTERSIGN_BROKER_LISTEN="127.0.0.1:$port"
countersign-broker --config demo/broker.toml serve >broker.log 2>&1 &
broker_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

say "Enrol an authenticator (the development one: tests and demos only)"
run countersign authenticators add --kind dev --name demo-key

say "Pair with the broker using a one-time code from its administrator"
code=$(countersign-broker --config demo/broker.toml pair --owner alice@example.com 2>/dev/null)
run countersign pair "http://127.0.0.1:$port" "$code" --device-name demo-laptop

say "The agents go to work; policy holds the risky calls for you"
countersign-broker simulate --broker "http://127.0.0.1:$port" --secrets demo/simulate.toml --rounds 1 --pause-ms 200 >simulate.log 2>&1 &
sim_pid=$!
for _ in $(seq 50); do
  [[ $(countersign --json pending | grep -c '"id"') -ge 4 ]] && break
  sleep 0.2
done
run countersign pending

first=$(countersign --json pending | sed -n 's/^    "id": "\(.*\)",$/\1/p' | head -1)
second=$(countersign --json pending | sed -n 's/^    "id": "\(.*\)",$/\1/p' | sed -n 2p)
say "Review one: everything the agent wants, and why policy stopped it"
run countersign show "$first"

say "Approve it: a user-verified WebAuthn assertion, a grant bound to exactly this call"
run countersign approve "$first"
say "Deny another, with a reason"
run countersign deny "$second" --reason "not without a ticket"

sleep 2
say "The agents' side: the approved call's grant was redeemed once, its replay refused"
grep -E "call finished" simulate.log | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^.*call finished/call finished/' || true

say "An MCP client behind countersign-gateway: its refund is held until you approve"
# The gateway speaks for the billing agent and the payments gateway, its secrets in the
# environment (never in the file the MCP host points at).
python3 "$repo/scripts/demo-gateway.py" demo/simulate.toml "http://$COUNTERSIGN_BROKER_LISTEN" demo
# shellcheck disable=SC1091
source demo/gateway.env
run countersign-gateway check --config demo/gw.toml
cat demo/gw.toml
client_spec='{"command": ["countersign-gateway", "mcp", "stdio", "--config", "demo/gw.toml", "--",
  "python3", "'"$repo"'/tests/mcp/server.py"],
  "steps": [{"call": "refunds.create", "args": {"order": "7781", "amount": "2500.00"}, "progress": true}]}'
echo "An MCP client (the official Python SDK) calls refunds.create through the gateway…"
PYTHONPATH="$repo/target/python-mcp1" COUNTERSIGN_TEST_RECORD="$work/executions.jsonl" \
  python3 "$repo/tests/mcp/client.py" "$client_spec" >mcp-client.log 2>mcp-client.err &
mcp_pid=$!
held=""
for _ in $(seq 100); do
  held=$(countersign --json pending | python3 -c '
import json, sys
items = json.load(sys.stdin)
print(next((i["id"] for i in items if "MCP client" in i["intent"]), ""))')
  [[ -n "$held" ]] && break
  sleep 0.2
done
echo "Held: nothing has run yet ($( (wc -l <"$work/executions.jsonl") 2>/dev/null || echo 0) executions on the server)."
run countersign show "$held"
run countersign approve "$held"
wait "$mcp_pid" || true
echo "The client's answer:"
sed -n 3p mcp-client.log
echo "The server ran it exactly once:"
cat "$work/executions.jsonl"
sleep 1
run countersign sync
run countersign show "$held"

say "A bounded grant: this refund and later ones like it, within limits, for 15 minutes"
client_spec='{"command": ["countersign-gateway", "mcp", "stdio", "--config", "demo/gw.toml", "--",
  "python3", "'"$repo"'/tests/mcp/server.py"],
  "steps": [{"call": "refunds.create", "args": {"order": "8801", "amount": "2500.00"}},
            {"call": "refunds.create", "args": {"order": "8802", "amount": "2800.00"}}]}'
echo "The MCP client asks for two refunds, one after the other…"
PYTHONPATH="$repo/target/python-mcp1" COUNTERSIGN_TEST_RECORD="$work/executions.jsonl" \
  python3 "$repo/tests/mcp/client.py" "$client_spec" >mcp-bounded.log 2>mcp-bounded.err &
mcp_pid=$!
held=""
for _ in $(seq 100); do
  held=$(countersign --json pending | python3 -c '
import json, sys
items = json.load(sys.stdin)
print(next((i["id"] for i in items if "8801" in json.dumps(i)), ""))')
  [[ -n "$held" ]] && break
  sleep 0.2
done
run countersign approve "$held" --uses 3 --for 15m --max amount=3000 --vary order
wait "$mcp_pid" || true
echo "The second refund ran without asking you: the grant released it."
grep -c '"8802"' "$work/executions.jsonl" | sed 's/^/executions of order 8802: /'
run countersign sync
run countersign grants list
jti=$(countersign --json grants list | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["grant"]["jti"])')
released=$(countersign --json history --search 8802 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
echo "Your history records the released call under the grant (bounded_grant):"
run countersign show "$released"
run countersign grants revoke "$jti"

say "History: every state change, hash-chained"
run countersign sync
run countersign history
run countersign verify-history

if [[ -t 0 ]]; then
  say "Your turn: try 'countersign pending', 'countersign show ID', 'countersign approve ID',"
  echo "   'countersign history --search refund', 'countersign --help'. The broker keeps running;"
  echo "   'countersign-broker simulate --broker http://127.0.0.1:$port --secrets demo/simulate.toml' sends more. Type exit to end."
  PS1='countersign-demo$ ' bash --norc -i || true
fi
