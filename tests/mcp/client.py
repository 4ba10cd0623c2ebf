"""A real MCP client (the official Python SDK's ClientSession, over stdio) for the gateway's
tests: starts the command it is given as its server, runs the steps, and prints one JSON line
per step as it finishes.

argv[1]: {"command": [...], "steps": [{"call": NAME, "args": {...}, "progress": bool}, ...]},
or {"url": "http://…/mcp", "steps": […]} for Streamable HTTP.
An argument "$held" is replaced by the id of the last call that answered "pending".
"""

import asyncio
import json
import os
import sys
from datetime import timedelta

import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


def out(value: dict) -> None:
    print(json.dumps(value), flush=True)


async def main() -> None:
    spec = json.loads(sys.argv[1])
    if "url" in spec:
        async with streamable_http_client(spec["url"]) as (read, write, _):
            await run(spec, read, write)
    else:
        params = StdioServerParameters(
            command=spec["command"][0], args=spec["command"][1:], env=dict(os.environ)
        )
        async with stdio_client(params) as (read, write):
            await run(spec, read, write)


async def run(spec: dict, read, write) -> None:
    async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=120)) as session:
        init = await session.initialize()
        out({"initialized": init.protocolVersion})
        tools = await session.list_tools()
        out({"tools": sorted(t.name for t in tools.tools)})
        held = None
        for step in spec["steps"]:
            args = {k: (held if v == "$held" else v) for k, v in step.get("args", {}).items()}
            progress = []

            async def on_progress(value, total, message):
                progress.append(message)

            callback = on_progress if step.get("progress") else None
            if step.get("task"):
                # 2025-11-25 tasks: a handle at once, polled until it ends (or cancelled).
                created = await session.experimental.call_tool_as_task(step["call"], args)
                task_id = created.task.taskId
                out({"task": task_id, "status": created.task.status})
                if step.get("cancel"):
                    cancelled = await session.experimental.cancel_task(task_id)
                    out({"call": step["call"], "task": task_id, "status": cancelled.status})
                    continue
                statuses = [s.status async for s in session.experimental.poll_task(task_id)]
                result = await session.experimental.get_task_result(task_id, types.CallToolResult)
                out(
                    {
                        "call": step["call"],
                        "isError": bool(result.isError),
                        "text": [c.text for c in result.content if c.type == "text"],
                        "statuses": statuses,
                    }
                )
                continue
            result = await session.call_tool(step["call"], args, progress_callback=callback)
            structured = (result.meta or {}).get("dev.countersign/status", {})
            if result.isError and structured.get("status") == "pending":
                held = structured["id"]
            out(
                {
                    "call": step["call"],
                    "isError": bool(result.isError),
                    "text": [c.text for c in result.content if c.type == "text"],
                    "structured": structured,
                    "progress": progress,
                }
            )


asyncio.run(main())
