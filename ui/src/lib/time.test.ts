import { describe, expect, test } from "vitest";
import { countdown, nextChange } from "./time";

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
