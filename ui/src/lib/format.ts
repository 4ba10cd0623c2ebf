// Pure UI logic: countdowns, folding long values, marking hidden characters, filters, themes.
// No DOM and no Tauri here, so all of it is unit-tested (format.test.ts).

/** A countdown to `expiresAt` (unix seconds) as seen at `now` (unix seconds). */
export function countdown(expiresAt: number, now: number): { text: string; urgent: boolean; expired: boolean } {
  const left = Math.floor(expiresAt - now);
  if (left <= 0) return { text: "expired", urgent: true, expired: true };
  const two = (n: number) => String(n).padStart(2, "0");
  if (left < SECONDS_SHOWN) return { text: `${Math.floor(left / 60)}:${two(left % 60)}`, urgent: left < 60, expired: false };
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

/** A long value folded for display: the head, and how much more there is. Never cut: the
 * caller shows `full` when the person unfolds it. */
export interface Folded {
  head: string;
  full: string;
  folded: boolean;
  hiddenChars: number;
}

export function fold(text: string, limit = 240): Folded {
  const chars = Array.from(text);
  if (chars.length <= limit) return { head: text, full: text, folded: false, hiddenChars: 0 };
  return {
    head: chars.slice(0, limit).join(""),
    full: text,
    folded: true,
    hiddenChars: chars.length - limit,
  };
}

/** The text cut into pieces of at most `size` characters, never inside a character or before
 * a combining mark, so the view can offer a line break between them: a 200 KB value without a
 * space otherwise takes the webview tens of seconds to lay out. Joined, the pieces are the text. */
export function pieces(text: string, size = 64): string[] {
  if (text.length <= size) return [text];
  const unit = new RegExp(`(?:[\\s\\S](?:[\\p{M}\\uFE0F]|\\u200D[\\s\\S])*){1,${size}}`, "gu");
  return text.match(unit) ?? [text];
}

/** A piece of displayed text: plain, or a marker the engine put where a hidden or
 * direction-changing character was (`[U+202E RLO]`). Rendered as text, never as HTML. */
export interface Segment {
  text: string;
  marker: boolean;
}

// Names may have several words (`[U+2800 BRAILLE BLANK]`); look-alike letters are marked with
// their script (`[U+0430 CYRILLIC]`), line breaks with theirs (`[U+000A LF]`).
const MARKER = /\[U\+[0-9A-F]{4,6}(?: [A-Z]+)*\]/g;

export function segments(text: string): Segment[] {
  const out: Segment[] = [];
  let last = 0;
  for (const match of text.matchAll(MARKER)) {
    const at = match.index ?? 0;
    if (at > last) out.push({ text: text.slice(last, at), marker: false });
    out.push({ text: match[0], marker: true });
    last = at + match[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), marker: false });
  return out;
}

/** One row of the arguments tree: a path, and a scalar value as text. */
export interface ArgumentRow {
  path: string;
  depth: number;
  key: string;
  value: string | null;
  kind: "object" | "array" | "string" | "number" | "boolean" | "null";
}

/** The arguments as rows, depth first, keys in their order; structure kept, nothing dropped. */
export function argumentRows(value: unknown, key = "", path = "", depth = 0, out: ArgumentRow[] = []): ArgumentRow[] {
  if (Array.isArray(value)) {
    if (path !== "") out.push({ path, depth, key, value: null, kind: "array" });
    value.forEach((v, i) => argumentRows(v, `[${i}]`, `${path}[${i}]`, path === "" ? 0 : depth + 1, out));
  } else if (value !== null && typeof value === "object") {
    if (path !== "") out.push({ path, depth, key, value: null, kind: "object" });
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      argumentRows(v, k, path === "" ? k : `${path}.${k}`, path === "" ? 0 : depth + 1, out);
    }
  } else {
    const kind = value === null ? "null" : (typeof value as "string" | "number" | "boolean");
    out.push({ path, depth, key, value: value === null ? "null" : String(value), kind });
  }
  return out;
}

/** The history filter form as command arguments: blanks dropped, text trimmed. */
export interface HistoryForm {
  search: string;
  status: string;
  agent: string;
  tool: string;
}

export function historyArgs(form: HistoryForm): Record<string, string | number> {
  const args: Record<string, string | number> = { limit: 200 };
  for (const key of ["search", "status", "agent", "tool"] as const) {
    const value = form[key].trim();
    if (value !== "") args[key] = value;
  }
  return args;
}

/** Pending items soonest-expiring first (ties: oldest first). */
export function byExpiry<T extends { expires_at: number; created_at: number }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => a.expires_at - b.expires_at || a.created_at - b.created_at);
}

export type ThemeSetting = "light" | "dark" | "system";

export function resolveTheme(setting: ThemeSetting, prefersDark: boolean): "light" | "dark" {
  if (setting === "system") return prefersDark ? "dark" : "light";
  return setting;
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

/** What the owner reads when an approval did not happen. An authenticator that was cancelled,
 * timed out, refused the PIN or held another credential signed nothing: say so, and that
 * trying again is safe. */
export function approvalFailure(code: string, message: string): string {
  if (code === "cancelled") return "Not approved: cancelled at the authenticator. Nothing was signed.";
  if (code === "authenticator")
    return `Not approved: ${message.replace(/^the authenticator failed: /, "")}. Nothing was signed; you can try again.`;
  return message;
}
