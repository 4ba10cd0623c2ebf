import { describe, expect, test } from "vitest";
import { byExpiry, historyArgs } from "./lists";

describe("filters and order", () => {
  test("history arguments drop blanks and trim", () => {
    expect(historyArgs({ search: "  refund ", status: "", agent: " ", tool: "stripe/refunds.create" })).toEqual({
      limit: 200,
      search: "refund",
      tool: "stripe/refunds.create",
    });
    expect(historyArgs({ search: "", status: "redeemed", agent: "", tool: "" })).toEqual({
      limit: 200,
      status: "redeemed",
    });
  });
  test("pending sorts by expiry, then age", () => {
    const items = [
      { id: "b", expires_at: 20, created_at: 2 },
      { id: "a", expires_at: 10, created_at: 5 },
      { id: "c", expires_at: 20, created_at: 1 },
    ];
    expect(byExpiry(items).map((i) => i.id)).toEqual(["a", "c", "b"]);
  });
});
