// The lists: the history filter and the order of pending items (lists.test.ts).
import type { HistoryQuery } from "./bindings/HistoryQuery";
import type { ItemStatus } from "./bindings/ItemStatus";

/** Every item status, in the order the filter offers them; the object must name each status
 * the engine declares (generated from Rust), or this does not type-check. */
export const STATUSES = Object.keys({
  pending: null,
  approved: null,
  denied: null,
  expired: null,
  cancelled: null,
  redeemed: null,
  revoked: null,
  refused: null,
} satisfies Record<ItemStatus, null>) as ItemStatus[];

/** The history filter form as command arguments: blanks dropped, text trimmed. */
export interface HistoryForm {
  search: string;
  status: ItemStatus | "";
  agent: string;
  tool: string;
}

export function historyArgs(form: HistoryForm): HistoryQuery {
  const query: HistoryQuery = { limit: 200 };
  for (const key of ["search", "agent", "tool"] as const) {
    const value = form[key].trim();
    if (value !== "") query[key] = value;
  }
  if (form.status !== "") query.status = form.status;
  return query;
}

/** Pending items soonest-expiring first (ties: oldest first). */
export function byExpiry<T extends { expires_at: number; created_at: number }>(items: readonly T[]): T[] {
  return [...items].sort((a, b) => a.expires_at - b.expires_at || a.created_at - b.created_at);
}
