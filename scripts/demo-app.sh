#!/usr/bin/env bash
# The desktop demo: the app with an embedded broker on loopback, simulated agents and the
# development authenticator. Requests arrive, you are notified, you review and approve, and the
# grant is redeemed in the history. An MCP client (the official Python SDK) also asks, through
# countersign-gateway, for a refund that waits for your approval in the app, and runs once you
# give it. Runs in a private keyring session; needs a display (on a machine without one, run it
# under `xvfb-run -a`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${COUNTERSIGN_IN_SESSION:-}" != 1 ]]; then
  scripts/setup.sh
  npm --prefix ui run build
  cargo build --locked -p countersign-desktop --features demo,custom-protocol
  cargo build --locked -p countersign-gateway
  COUNTERSIGN_KEEP_DISPLAY=1 exec scripts/session.sh "$0" "$@"
fi

if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
  echo "demo-app: no display; run it on a desktop, or as: xvfb-run -a make demo" >&2
  exit 1
fi
repo="$PWD"
export COUNTERSIGN_DEMO_DIR="${COUNTERSIGN_DEMO_DIR:-$(mktemp -d)}"
target/debug/countersign-desktop --demo &
app=$!
trap 'kill "$app" 2>/dev/null || true' EXIT

demo_json="$COUNTERSIGN_DEMO_DIR/demo.json"
for _ in $(seq 300); do [[ -f "$demo_json" ]] && break; sleep 0.1; done
if [[ -f "$demo_json" ]]; then
  broker=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["broker"])' "$demo_json")
  python3 scripts/demo-gateway.py "$demo_json" "$broker" "$COUNTERSIGN_DEMO_DIR"
  (
    # shellcheck disable=SC1091
    source "$COUNTERSIGN_DEMO_DIR/gateway.env"
    sleep 5
    echo "demo: an MCP client asks, through countersign-gateway, to refund 2500.00 on order 7781;"
    echo "      it is held until you approve it in the app (it waits as an MCP task). Then it asks"
    echo "      to refund 2700.00 on order 7782: approve the first with \"Approve with limits…\""
    echo "      (order: may be anything; amount: at most 3000) and the second runs without asking"
    echo "      you; Grants shows the grant, its uses left, and revokes it"
    spec='{"command": ["'"$repo"'/target/debug/countersign-gateway", "mcp", "stdio", "--config",
      "'"$COUNTERSIGN_DEMO_DIR"'/gw.toml", "--", "python3", "'"$repo"'/tests/mcp/server.py"],
      "steps": [{"call": "refunds.create", "args": {"order": "7781", "amount": "2500.00"}, "task": true},
                {"call": "refunds.create", "args": {"order": "7782", "amount": "2700.00"}, "task": true}]}'
    PYTHONPATH="$repo/target/python-mcp1" COUNTERSIGN_TEST_RECORD="$COUNTERSIGN_DEMO_DIR/executions.jsonl" \
      python3 -W ignore tests/mcp/client.py "$spec" >"$COUNTERSIGN_DEMO_DIR/mcp-client.log" 2>&1 || true
    echo "demo: the MCP client's answers:"
    grep '"call"' "$COUNTERSIGN_DEMO_DIR/mcp-client.log" | sed 's/^/      /' || true
  ) &
fi
wait "$app"
