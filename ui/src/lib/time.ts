// Time on screen: countdowns to expiry, when they next change, and dates.
// No DOM and no Tauri here, so all of it is unit-tested (time.test.ts).

/** A countdown to `expiresAt` (unix seconds) as seen at `now` (unix seconds). */
export function countdown(expiresAt: number, now: number): { text: string; urgent: boolean; expired: boolean } {
  const left = Math.floor(expiresAt - now);
  if (left <= 0) return { text: "expired", urgent: true, expired: true };
  const two = (n: number) => String(n).padStart(2, "0");
  if (left < SECONDS_SHOWN)
    return { text: `${Math.floor(left / 60)}:${two(left % 60)}`, urgent: left < 60, expired: false };
  // Further out, minutes are precise enough, and the screen stays still (no repaint each second).
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  return { text: h > 0 ? `${h} h ${two(m)} min` : `${m} min`, urgent: false, expired: false };
}

/** Below this many seconds left, countdowns show seconds. */
export const SECONDS_SHOWN = 120;

/** Seconds until any of these countdowns shows a different text, or null when none will. */
export function nextChange(expiries: number[], now: number): number | null {
  let next: number | null = null;
  for (const expiresAt of expiries) {
    const left = Math.floor(expiresAt - now);
    if (left <= 0) continue;
    // Minutes change when the seconds left pass a multiple of 60; seconds, every second.
    const wait = left < SECONDS_SHOWN ? 1 : (left % 60) + 1;
    next = next === null ? wait : Math.min(next, wait);
  }
  return next;
}

/** Unix seconds as a local date and time. */
export function when(unix: number): string {
  return new Date(unix * 1000).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}
