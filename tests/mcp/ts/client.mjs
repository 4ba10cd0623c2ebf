// A real MCP client (the official TypeScript SDK's Client, over stdio) for the gateway's tests:
// starts the command it is given as its server, runs the steps, and prints one JSON line per
// step as it finishes. argv[2]: {"command": [...], "steps": [{"call": NAME, "args": {...}}]}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const spec = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const transport = new StdioClientTransport({
  command: spec.command[0],
  args: spec.command.slice(1),
  env: process.env,
  stderr: "inherit",
});
const client = new Client({ name: "countersign-ts-test", version: "1.0.0" });
await client.connect(transport);
out({ initialized: client.getServerVersion()?.name ?? "" });
const tools = await client.listTools();
out({ tools: tools.tools.map((t) => t.name).sort() });
for (const step of spec.steps) {
  const progress = [];
  const result = await client.callTool({ name: step.call, arguments: step.args ?? {} }, undefined, {
    timeout: 120_000,
    onprogress: (p) => progress.push(p.message ?? ""),
  });
  out({
    call: step.call,
    isError: Boolean(result.isError),
    text: (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text),
    structured: result._meta?.["dev.countersign/status"] ?? {},
    progress,
  });
}
await client.close();
