// Bounded grants in the app: what the owner chose for each argument, checked before the
// authenticator is asked, and what an active grant covers, in words.
import type { ApproveBoundedRequest } from "./bindings/ApproveBoundedRequest";
import type { BoundedGrantInfo } from "./bindings/BoundedGrantInfo";

/** What later calls may do with one argument of the reviewed call. */
export type Choice = "same" | "any" | "max";

export type ArgumentBound = { name: string; value: unknown; choice: Choice; ceiling: string };

const DECIMAL = /^-?\d+(\.\d+)?$/;

/** Whether an argument's value can take a ceiling: a number, or a decimal in a string. */
export function isNumeric(value: unknown): boolean {
  return (typeof value === "number" && Number.isFinite(value)) || (typeof value === "string" && DECIMAL.test(value));
}

/** Each top-level argument of the reviewed call, kept the same unless the owner says otherwise. */
export function argumentBounds(args: unknown): ArgumentBound[] {
  if (!args || typeof args !== "object" || Array.isArray(args)) return [];
  return Object.entries(args as Record<string, unknown>).map(([name, value]) => ({
    name,
    value,
    choice: "same",
    ceiling: isNumeric(value) ? String(value) : "",
  }));
}

/** `a` ≤ `b` for decimals in text, exactly. */
function atMost(a: string, b: string): boolean {
  const split = (s: string) => {
    const negative = s.startsWith("-");
    const [int, frac = ""] = s.replace(/^-/, "").split(".");
    return { negative, int: int.replace(/^0+/, ""), frac: frac.replace(/0+$/, "") };
  };
  const x = split(a);
  const y = split(b);
  const magnitude = (p: typeof x, q: typeof y) =>
    p.int.length !== q.int.length
      ? Math.sign(p.int.length - q.int.length)
      : p.int !== q.int
        ? p.int < q.int
          ? -1
          : 1
        : p.frac === q.frac
          ? 0
          : p.frac < q.frac
            ? -1
            : 1;
  const zero = (p: typeof x) => p.int === "" && p.frac === "";
  const xn = x.negative && !zero(x);
  const yn = y.negative && !zero(y);
  if (xn !== yn) return xn;
  const m = magnitude(x, y);
  return xn ? m >= 0 : m <= 0;
}

/** The request for `approve_bounded`, or why these bounds cannot make a grant. */
export function boundsRequest(
  id: string,
  uses: number,
  minutes: number,
  bounds: ArgumentBound[],
): { request: ApproveBoundedRequest } | { problem: string } {
  if (!Number.isInteger(uses) || uses < 1 || uses > 1000)
    return { problem: "Uses must be a whole number from 1 to 1000." };
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440)
    return { problem: "The grant lasts from 1 minute to 24 hours." };
  const max: Record<string, string> = {};
  const vary: string[] = [];
  for (const b of bounds) {
    if (b.choice === "any") vary.push(b.name);
    if (b.choice !== "max") continue;
    const ceiling = b.ceiling.trim();
    if (!isNumeric(b.value)) return { problem: `${b.name} is not a number, so it cannot have a ceiling.` };
    if (!DECIMAL.test(ceiling)) return { problem: `The ceiling of ${b.name} must be a decimal number, like 6000.00.` };
    if (!atMost(String(b.value), ceiling))
      return { problem: `The ceiling of ${b.name} is below this call's own ${String(b.value)}.` };
    max[b.name] = ceiling;
  }
  return { request: { id, uses, lifetime_secs: minutes * 60, max, vary } };
}

/** Calls a grant can still release. */
export function usesLeft(g: BoundedGrantInfo): number {
  return Math.max(0, g.uses - g.used - g.released);
}

/** What a grant's constraints let later calls do, in words. */
export function constraintsText(constraints: string): string[] {
  let c: { max?: Record<string, string>; equal?: Record<string, unknown>; vary?: string[] };
  try {
    c = JSON.parse(constraints);
  } catch {
    return [constraints];
  }
  return [
    ...Object.entries(c.max ?? {}).map(([name, ceiling]) => `${name} at most ${ceiling}`),
    ...(c.vary ?? []).map((name) => `${name} may be anything`),
    ...Object.entries(c.equal ?? {}).map(([name, value]) => `${name} = ${JSON.stringify(value)}`),
  ];
}

/** The bounded grant a history entry was decided under, when it was: the one a call was
 * released under, or the one the owner made from this review. */
export function underGrant(detail: unknown): string | null {
  if (!detail || typeof detail !== "object") return null;
  const d = detail as Record<string, unknown>;
  if (typeof d.bounded_grant === "string") return d.bounded_grant;
  if (d.bounded && typeof d.jti === "string") return d.jti;
  return null;
}
