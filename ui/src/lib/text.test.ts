import { describe, expect, test } from "vitest";
import markers from "./bindings/markers.json";
import { fold, pieces, segments } from "./text";

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
  test("every marker the engine writes is one whole marker here", () => {
    // Written by the engine (countersign_approver::display::marker_examples) through the
    // bindings test, so a new marker form in Rust is checked here.
    expect(markers.length).toBeGreaterThan(30);
    for (const m of markers) {
      expect(segments(`x${m}y`)).toEqual([
        { text: "x", marker: false },
        { text: m, marker: true },
        { text: "y", marker: false },
      ]);
    }
  });
  test("text imitating a marker, as the engine shows it, is text after a real marker", () => {
    // The agent wrote "[U+202E RLO]"; the engine marked its bracket.
    expect(segments("a [U+005B LEFT SQUARE BRACKET]U+202E RLO] b")).toEqual([
      { text: "a ", marker: false },
      { text: "[U+005B LEFT SQUARE BRACKET]", marker: true },
      { text: "U+202E RLO] b", marker: false },
    ]);
  });
});
