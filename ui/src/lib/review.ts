// The review: the arguments as a tree, and what the owner reads when an approval did not happen
// (review.test.ts).
import type { AuthenticatorFailure } from "./bindings/AuthenticatorFailure";

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

/** What the owner reads, for each way an authenticator can fail: what happened and what to do.
 * Keyed by the engine's codes (generated from Rust), so a new kind of failure does not
 * type-check until it has its sentence here. */
const AUTHENTICATOR: Record<AuthenticatorFailure, string | null> = {
  authenticator_timeout: "the authenticator timed out waiting for a touch",
  wrong_pin: "wrong PIN (the key counts wrong attempts)",
  pin_blocked: "the PIN is blocked after too many wrong attempts; reset or unblock the key with its own tool",
  no_key: "no security key is connected; plug one in",
  wrong_key: "this authenticator does not hold the enrolled credential (wrong key?)",
  not_verified: "the authenticator did not verify you (a PIN or biometric is required)",
  // Anything else: the engine's own words say what.
  authenticator: null,
};

function isAuthenticatorFailure(code: string): code is AuthenticatorFailure {
  return Object.hasOwn(AUTHENTICATOR, code);
}

/** What the owner reads when an approval did not happen, from the error's code. An authenticator
 * that was cancelled, timed out, refused the PIN or held another credential signed nothing: say
 * so, and that trying again is safe. */
export function approvalFailure(code: string, message: string): string {
  if (code === "cancelled") return "Not approved: cancelled at the authenticator. Nothing was signed.";
  if (isAuthenticatorFailure(code))
    return `Not approved: ${AUTHENTICATOR[code] ?? message}. Nothing was signed; you can try again.`;
  return message;
}

/** A number from the history as shown: whole when it is, else two decimals. */
export function shownNumber(n: number): string {
  return Number.isInteger(n)
    ? n.toLocaleString("en-US")
    : n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** A ratio to the largest approved value: one decimal below 10, whole above. */
export function shownRatio(r: number): string {
  return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
}

/** An argument's value in a comparison: its JSON (`null` included), or "absent" when the
 * request did not have it. */
export function shownArgument(v: unknown): string {
  return v === undefined ? "absent" : JSON.stringify(v);
}

/** "1 request", "2 requests". */
export function counted(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;
}
