import { describe, expect, test } from "vitest";
import { approvalFailure, argumentRows, counted, shownArgument, shownNumber, shownRatio } from "./review";

describe("argumentRows", () => {
  test("structure is kept in order", () => {
    const rows = argumentRows({ to: "a@b.c", attachments: ["x.pdf"], meta: { n: 1, ok: true, none: null } });
    expect(rows.map((r) => [r.path, r.depth, r.kind, r.value])).toEqual([
      ["to", 0, "string", "a@b.c"],
      ["attachments", 0, "array", null],
      ["attachments[0]", 1, "string", "x.pdf"],
      ["meta", 0, "object", null],
      ["meta.n", 1, "number", "1"],
      ["meta.ok", 1, "boolean", "true"],
      ["meta.none", 1, "null", "null"],
    ]);
  });
});

describe("approvalFailure", () => {
  test("ceremony failures say that nothing was signed", () => {
    expect(approvalFailure("cancelled", "cancelled at the authenticator")).toBe(
      "Not approved: cancelled at the authenticator. Nothing was signed.",
    );
    expect(
      approvalFailure(
        "authenticator_timeout",
        "the authenticator failed: the authenticator timed out waiting for a touch",
      ),
    ).toBe("Not approved: the authenticator timed out waiting for a touch. Nothing was signed; you can try again.");
    expect(
      approvalFailure(
        "wrong_key",
        "the authenticator failed: this authenticator does not hold the enrolled credential (wrong key?)",
      ),
    ).toContain("wrong key?");
  });
  test("each authenticator failure has its own sentence, decided by the code alone", () => {
    const codes = ["authenticator_timeout", "wrong_pin", "pin_blocked", "no_key", "wrong_key", "not_verified"];
    const sentences = codes.map((code) => approvalFailure(code, "the same message"));
    expect(new Set(sentences).size).toBe(codes.length);
    for (const s of sentences) {
      expect(s).not.toContain("the same message");
      expect(s).toContain("Nothing was signed; you can try again.");
    }
    expect(approvalFailure("pin_blocked", "")).toContain("PIN is blocked");
    expect(approvalFailure("not_verified", "")).toContain("did not verify you");
    // Other authenticator failures say what the engine said.
    expect(approvalFailure("authenticator", "the authenticator failed: only P-256 (ES256) keys are supported")).toBe(
      "Not approved: the authenticator failed: only P-256 (ES256) keys are supported. Nothing was signed; you can try again.",
    );
  });
  test("other errors pass through", () => {
    expect(approvalFailure("not_pending", "item pa_1 is expired, not pending")).toBe(
      "item pa_1 is expired, not pending",
    );
    // A message that merely reads like an authenticator failure is not one.
    expect(approvalFailure("broker_refused", "the authenticator failed: wrong PIN")).toBe(
      "the authenticator failed: wrong PIN",
    );
  });
});

describe("risk context values", () => {
  test("numbers are whole when they are, else two decimals", () => {
    expect(shownNumber(5000)).toBe("5,000");
    expect(shownNumber(12.5)).toBe("12.50");
  });
  test("ratios have one decimal below ten", () => {
    expect(shownRatio(2.345)).toBe("2.3");
    expect(shownRatio(12.6)).toBe("13");
  });
  test("counts agree with their noun", () => {
    expect(counted(1, "request")).toBe("1 request");
    expect(counted(1200, "approval")).toBe("1,200 approvals");
  });
  test("an absent argument is not a null one", () => {
    expect(shownArgument(undefined)).toBe("absent");
    expect(shownArgument(null)).toBe("null");
    expect(shownArgument("5000.00")).toBe('"5000.00"');
  });
});
