"""A real MCP client of the 2026-07-28 era (the official Python SDK 2.x `Client`, over stdio),
for the gateway's tests: starts the command it is given as its server, runs the steps, and
prints one JSON line per step as it finishes.

argv[1]: {"command": [...], "elicitation": "accept" | "decline" | null,
          "steps": [{"call": NAME, "args": {...}}, ...]}.
With "elicitation" the client takes URL-mode elicitation (the `input_required` path) and answers
each with that action; without it the client declares no elicitation (the legacy path). An
argument "$held" is replaced by the id of the last call that answered "pending".
"""

import asyncio
import json
import os
import sys

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def out(value: dict) -> None:
    print(json.dumps(value), flush=True)


async def main() -> None:
    spec = json.loads(sys.argv[1])
    params = StdioServerParameters(
        command=spec["command"][0], args=spec["command"][1:], env=dict(os.environ)
    )
    asked = []
    answer = spec.get("elicitation")

    async def on_elicit(context, request):
        asked.append({"mode": request.mode, "url": getattr(request, "url", None), "message": request.message})
        return types.ElicitResult(action=answer)

    options = {"elicitation_callback": on_elicit} if answer else {}
    async with Client(params, read_timeout_seconds=120, **options) as client:
        out({"initialized": "2026-07-28"})
        tools = await client.list_tools()
        out({"tools": sorted(t.name for t in tools.tools)})
        held = None
        for step in spec["steps"]:
            args = {k: (held if v == "$held" else v) for k, v in step.get("args", {}).items()}
            asked.clear()
            result = await client.call_tool(step["call"], args)
            structured = (result.meta or {}).get("dev.countersign/status", {})
            if result.is_error and structured.get("status") == "pending":
                held = structured["id"]
            out(
                {
                    "call": step["call"],
                    "isError": bool(result.is_error),
                    "text": [c.text for c in result.content if c.type == "text"],
                    "structured": structured,
                    "elicitations": list(asked),
                }
            )


asyncio.run(main())
