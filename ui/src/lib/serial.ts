// Reading the brokers again, one read at a time (serial.test.ts).

/** Wraps `load` so that runs never overlap: a call while one runs asks for one more run after
 * it, shared by every call made meanwhile, and resolves when that run ends. What a caller awaits
 * therefore always started after its call, and an older answer never lands over a newer one. */
export function oneAtATime(load: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | null = null;
  let queued: Promise<void> | null = null;
  const run = (): Promise<void> => {
    if (!running) {
      running = load().finally(() => {
        running = null;
      });
      return running;
    }
    queued ??= running
      .catch(() => undefined)
      .then(() => {
        queued = null;
        return run();
      });
    return queued;
  };
  return run;
}
