"""Writes a countersign-gateway configuration for the demos: the billing agent's and the
payments gateway's demo secrets (from the CLI demo's simulate.toml or the app's demo.json) go
into an environment file, never into the configuration the MCP host would point at.

usage: demo-gateway.py SECRETS BROKER_URL OUT_DIR  ->  OUT_DIR/gw.toml, OUT_DIR/gateway.env
"""

import json
import os
import sys
import tomllib

source, broker, out = sys.argv[1:4]
with open(source, "rb") as f:
    secrets = tomllib.load(f) if source.endswith(".toml") else json.load(f)
agent = next(a for a in secrets["agents"] if a["id"].endswith("/billing"))
gateway = next(g for g in secrets["gateways"] if "payments" in g["audience"])

env = os.path.join(out, "gateway.env")
with open(os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    f.write(f"export COUNTERSIGN_AGENT_SECRET={agent['secret']}\n")
    f.write(f"export COUNTERSIGN_GATEWAY_SECRET={gateway['secret']}\n")
    if gateway.get("key"):
        f.write(f"export COUNTERSIGN_GATEWAY_KEY={gateway['key']}\n")

# The gateway's key, when it has one: bounded grants are bound to it.
key_line = 'key = { env = "COUNTERSIGN_GATEWAY_KEY" }' if gateway.get("key") else ""
with open(os.path.join(out, "gw.toml"), "w") as f:
    f.write(f"""[broker]
url = "{broker}"

[agent]
id = "{agent['id']}"
owner = "{secrets['owner']}"
secret = {{ env = "COUNTERSIGN_AGENT_SECRET" }}

[gateway]
audience = "{gateway['audience']}"
secret = {{ env = "COUNTERSIGN_GATEWAY_SECRET" }}
{key_line}

[mcp]
server = "stripe"

[hold]
max_wait_secs = 50
""")
