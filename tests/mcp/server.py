"""A real MCP server (the official Python SDK's FastMCP, over stdio) for the gateway's tests.

Every tool appends one JSON line to the file named by COUNTERSIGN_TEST_RECORD when it runs, so
tests count executions on the server's side, not the gateway's.
"""

import json
import os
import sys
import time

try:  # the SDK's 1.x (session era)
    from mcp.server.fastmcp import FastMCP
    from mcp.types import ToolAnnotations
except ImportError:  # 2.x (2026-07-28): FastMCP is MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
    from mcp_types import ToolAnnotations

# `server.py` speaks stdio; `server.py --http PORT` serves Streamable HTTP on 127.0.0.1:PORT/mcp.
HTTP_PORT = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--http" else None
server = (
    FastMCP("payments", host="127.0.0.1", port=HTTP_PORT or 8000, log_level="WARNING")
    if HTTP_PORT
    else FastMCP("payments")
)


def record(tool: str, arguments: dict) -> None:
    path = os.environ["COUNTERSIGN_TEST_RECORD"]
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments, "at": time.time()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


@server.tool(
    name="refunds.create",
    annotations=ToolAnnotations(title="Refund an order", destructiveHint=True, readOnlyHint=False),
)
def refunds_create(order: str, amount: str) -> str:
    record("refunds.create", {"order": order, "amount": amount})
    return f"refunded {amount} for order {order}"


@server.tool(name="echo")
def echo(text: str) -> str:
    """Answers at once and records nothing: for measuring the path, not the tool."""
    return text


@server.tool(name="payouts.create")
def payouts_create(amount: str) -> str:
    record("payouts.create", {"amount": amount})
    return f"paid out {amount}"


@server.tool(name="refunds.crash")
def refunds_crash(order: str, amount: str) -> str:
    record("refunds.crash", {"order": order, "amount": amount})
    sys.stderr.write("test server: crashing on purpose\n")
    os._exit(3)


@server.tool(name="refunds.hang")
def refunds_hang(order: str, amount: str) -> str:
    record("refunds.hang", {"order": order, "amount": amount})
    time.sleep(3600)
    return "never"


@server.tool(name="refunds.fail")
def refunds_fail(order: str, amount: str) -> str:
    record("refunds.fail", {"order": order, "amount": amount})
    raise ValueError("the card network refused the refund")


if __name__ == "__main__":
    server.run("streamable-http" if HTTP_PORT else "stdio")
