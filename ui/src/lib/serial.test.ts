import { describe, expect, test } from "vitest";
import { oneAtATime } from "./serial";

/** A load whose runs end when the test says so, recording how many overlap. */
function gated() {
  const ends: (() => void)[] = [];
  const log = { started: 0, ended: 0, overlap: 0, live: 0 };
  const load = () =>
    new Promise<void>((resolve) => {
      log.started += 1;
      log.live += 1;
      log.overlap = Math.max(log.overlap, log.live);
      ends.push(() => {
        log.live -= 1;
        log.ended += 1;
        resolve();
      });
    });
  const endNext = async () => {
    ends.shift()?.();
    // Let the chained runs start.
    for (let i = 0; i < 5; i += 1) await Promise.resolve();
  };
  return { load, log, endNext };
}

describe("one read at a time", () => {
  test("calls while a run is under way share one more run, after it", async () => {
    const { load, log, endNext } = gated();
    const refresh = oneAtATime(load);
    const first = refresh();
    const later = [refresh(), refresh(), refresh()];
    expect(log.started).toBe(1);
    await endNext();
    await first;
    expect(log.started).toBe(2);
    let done = false;
    void Promise.all(later).then(() => (done = true));
    await Promise.resolve();
    expect(done).toBe(false);
    await endNext();
    await Promise.all(later);
    expect(log).toMatchObject({ started: 2, ended: 2, overlap: 1 });
  });

  test("a call after the runs end starts a run at once", async () => {
    const { load, log, endNext } = gated();
    const refresh = oneAtATime(load);
    const one = refresh();
    await endNext();
    await one;
    const two = refresh();
    expect(log.started).toBe(2);
    await endNext();
    await two;
    expect(log.overlap).toBe(1);
  });

  test("a run that fails does not stop the one asked for after it", async () => {
    let calls = 0;
    const refresh = oneAtATime(async () => {
      calls += 1;
      if (calls === 1) throw new Error("the broker is unreachable");
    });
    const failing = refresh();
    const after = refresh();
    await expect(failing).rejects.toThrow("unreachable");
    await after;
    expect(calls).toBe(2);
  });
});
