import { describe, expect, it } from "vitest";
import { batchProblem, decidedMessage } from "./batch";

const item = (id: string, agent = "billing", tool = "stripe/refunds.create", more = {}) => ({
  id,
  agent,
  tool,
  audience: "https://payments.example.com",
  status: "pending" as const,
  hash_matches: true,
  expires_at_unix: 2000,
  ...more,
});

describe("batchProblem", () => {
  it("takes two to fifty open requests of one agent or for one tool, for one gateway", () => {
    expect(batchProblem([item("a"), item("b", "billing", "stripe/charges.get")], 1000)).toBeNull();
    expect(batchProblem([item("a"), item("b", "research")], 1000)).toBeNull();
    expect(batchProblem([item("a")], 1000)).toMatch(/at least two/);
    const many = Array.from({ length: 51 }, (_, i) => item(`i${i}`));
    expect(batchProblem(many, 1000)).toMatch(/At most 50/);
    expect(batchProblem([item("a"), item("b", "devops", "github/repos.delete")], 1000)).toMatch(/neither/);
    expect(batchProblem([item("a"), item("b", "billing", "x", { audience: "https://other" })], 1000)).toMatch(
      /different gateways/,
    );
  });

  it("names a request that can no longer be approved", () => {
    expect(batchProblem([item("a"), item("b", "billing", "t", { status: "denied" })], 1000)).toBe(
      "b is denied: remove it from the batch.",
    );
    expect(batchProblem([item("a"), item("b")], 2000)).toBe("a expired: remove it from the batch.");
    expect(batchProblem([item("a", "billing", "t", { hash_matches: false }), item("b")], 1000)).toMatch(
      /^a shows something other/,
    );
  });
});

describe("decidedMessage", () => {
  const r = (item: string, broker_status: string | null, delivered = true) => ({
    item,
    decision: "approve",
    delivered,
    broker_status,
  });
  it("reports all, some decided meanwhile, or the decisions waiting", () => {
    expect(decidedMessage([r("a", "approved"), r("b", "approved")])).toEqual({
      text: "Approved 2 requests; the broker has them.",
      kind: "done",
    });
    expect(decidedMessage([r("a", "approved"), r("b", "expired")])).toEqual({
      text: "Approved 1 of 2 requests; b was expired already.",
      kind: "note",
    });
    expect(decidedMessage([r("a", null, false), r("b", null, false)]).kind).toBe("note");
    expect(decidedMessage([{ ...r("a", "denied"), decision: "deny" }]).text).toBe(
      "Denied 1 request; the broker has it.",
    );
  });
});
