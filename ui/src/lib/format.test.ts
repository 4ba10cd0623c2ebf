import { describe, expect, test } from "vitest";
import { approvalFailure, argumentRows, byExpiry, countdown, fold, historyArgs, nextChange, pieces, resolveTheme, segments } from "./format";

describe("countdown", () => {
  test("seconds in the last two minutes, urgent under one, expired at zero", () => {
    expect(countdown(1_000 + 119, 1_000)).toEqual({ text: "1:59", urgent: false, expired: false });
    expect(countdown(1_000 + 59, 1_000)).toEqual({ text: "0:59", urgent: true, expired: false });
    expect(countdown(1_000, 1_000)).toEqual({ text: "expired", urgent: true, expired: true });
    expect(countdown(999, 1_000).expired).toBe(true);
  });
  test("whole minutes further out, hours beyond an hour", () => {
    expect(countdown(1_000 + 299, 1_000)).toEqual({ text: "4 min", urgent: false, expired: false });
    expect(countdown(1_000 + 120, 1_000).text).toBe("2 min");
    expect(countdown(1_000 + 3_725, 1_000).text).toBe("1 h 02 min");
  });
});

describe("nextChange", () => {
  test("waits until the first countdown's text changes", () => {
    // 299 s left shows "4 min" until 239 s left: 60 s from now.
    expect(nextChange([1_000 + 299], 1_000)).toBe(60);
    expect(countdown(1_000 + 299, 1_000 + 59).text).toBe("4 min");
    expect(countdown(1_000 + 299, 1_000 + 60).text).toBe("3 min");
    // Seconds tick every second, and the soonest countdown decides.
    expect(nextChange([1_000 + 299, 1_000 + 90], 1_000)).toBe(1);
    expect(nextChange([1_000 + 130], 1_000)).toBe(11);
    expect(countdown(1_000 + 130, 1_000 + 11).text).toBe("1:59");
  });
  test("nothing to wait for without a live countdown", () => {
    expect(nextChange([], 1_000)).toBeNull();
    expect(nextChange([900, 1_000], 1_000)).toBeNull();
  });
});

describe("fold", () => {
  test("short values are left alone", () => {
    expect(fold("refund 1234")).toEqual({ head: "refund 1234", full: "refund 1234", folded: false, hiddenChars: 0 });
  });
  test("long values fold but keep everything", () => {
    const long = "A".repeat(1_000_000);
    const f = fold(long, 240);
    expect(f.folded).toBe(true);
    expect(f.head.length).toBe(240);
    expect(f.full).toBe(long);
    expect(f.hiddenChars).toBe(1_000_000 - 240);
  });
  test("folding counts characters, not UTF-16 units", () => {
    expect(fold("😀".repeat(5), 3).head).toBe("😀😀😀");
  });
});

describe("pieces", () => {
  test("leaves short text whole and cuts long runs, losing nothing", () => {
    expect(pieces("short")).toEqual(["short"]);
    const long = "B".repeat(200_000);
    const cut = pieces(long);
    expect(cut.length).toBe(3125);
    expect(cut.every((p) => p.length <= 64)).toBe(true);
    expect(cut.join("")).toBe(long);
  });
  test("never cuts inside a character or before a combining mark", () => {
    const text = "😀".repeat(70) + "e\u0301".repeat(70) + "👩\u200D💻".repeat(30);
    const cut = pieces(text, 10);
    expect(cut.join("")).toBe(text);
    for (const p of cut) {
      expect(p.charCodeAt(0) >= 0xdc00 && p.charCodeAt(0) <= 0xdfff).toBe(false);
      expect(/^[\p{M}\u200D]/u.test(p)).toBe(false);
      expect(/\u200D$/u.test(p)).toBe(false);
    }
  });
});

describe("segments", () => {
  test("markers of hidden characters are separated from text", () => {
    expect(segments("pay [U+202E RLO]moc.live[U+202C PDF] now")).toEqual([
      { text: "pay ", marker: false },
      { text: "[U+202E RLO]", marker: true },
      { text: "moc.live", marker: false },
      { text: "[U+202C PDF]", marker: true },
      { text: " now", marker: false },
    ]);
  });
  test("markup stays plain text", () => {
    expect(segments("<script>alert(1)</script>")).toEqual([{ text: "<script>alert(1)</script>", marker: false }]);
    // Names of several words, scripts of look-alike letters, line breaks.
    expect(segments("a[U+2800 BRAILLE BLANK]b")).toEqual([
      { text: "a", marker: false },
      { text: "[U+2800 BRAILLE BLANK]", marker: true },
      { text: "b", marker: false },
    ]);
    expect(segments("p[U+0430 CYRILLIC]ypal").map((s) => s.marker)).toEqual([false, true, false]);
    expect(segments("one[U+000A LF]Tool: x").map((s) => s.text)).toEqual(["one", "[U+000A LF]", "Tool: x"]);
  });
});

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

describe("filters and order", () => {
  test("history arguments drop blanks and trim", () => {
    expect(historyArgs({ search: "  refund ", status: "", agent: " ", tool: "stripe/refunds.create" })).toEqual({
      limit: 200,
      search: "refund",
      tool: "stripe/refunds.create",
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
  test("themes", () => {
    expect(resolveTheme("system", true)).toBe("dark");
    expect(resolveTheme("system", false)).toBe("light");
    expect(resolveTheme("light", true)).toBe("light");
  });
});

describe("approvalFailure", () => {
  test("ceremony failures say that nothing was signed", () => {
    expect(approvalFailure("cancelled", "cancelled at the authenticator")).toBe(
      "Not approved: cancelled at the authenticator. Nothing was signed.",
    );
    expect(approvalFailure("authenticator", "the authenticator failed: the authenticator timed out waiting for a touch")).toBe(
      "Not approved: the authenticator timed out waiting for a touch. Nothing was signed; you can try again.",
    );
    expect(
      approvalFailure("authenticator", "the authenticator failed: this authenticator does not hold the enrolled credential (wrong key?)"),
    ).toContain("wrong key?");
  });
  test("other errors pass through", () => {
    expect(approvalFailure("not_pending", "item pa_1 is expired, not pending")).toBe("item pa_1 is expired, not pending");
  });
});
