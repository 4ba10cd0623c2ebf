import { describe, expect, test } from "vitest";
import { fadesAfter, movesOn, shownAt } from "./status";

describe("status messages", () => {
  test("a message shows only at the step that caused it", () => {
    const denied = { text: "Denied; the broker has it.", kind: "done" as const, step: 3 };
    expect(shownAt(denied, 3)).toBe(denied);
    expect(shownAt(denied, 4)).toBeNull();
    expect(shownAt(null, 3)).toBeNull();
    expect(shownAt({ ...denied, text: "" }, 3)).toBeNull();
  });
  test("errors go when the owner moves on too", () => {
    const failed = { text: "The security key timed out.", kind: "error" as const, step: 7 };
    expect(shownAt(failed, 7)).toBe(failed);
    expect(shownAt(failed, 8)).toBeNull();
  });
  test("a success fades; a note and an error wait for the owner", () => {
    expect(fadesAfter("done")).toBeGreaterThan(0);
    expect(fadesAfter("note")).toBeNull();
    expect(fadesAfter("error")).toBeNull();
  });
  test("another view or another item moves on; the same item, or none, does not", () => {
    expect(movesOn({ view: "pending", item: "a" }, { view: "history", item: "a" })).toBe(true);
    expect(movesOn({ view: "pending", item: "a" }, { view: "pending", item: "b" })).toBe(true);
    expect(movesOn({ view: "pending", item: "a" }, { view: "pending", item: "a" })).toBe(false);
    expect(movesOn({ view: "pending", item: "a" }, { view: "pending", item: null })).toBe(false);
    expect(movesOn({ view: "history", item: null }, { view: "history", item: "c" })).toBe(true);
  });
});
