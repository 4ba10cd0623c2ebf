// Several requests decided at once (batch.test.ts): which may share one ceremony, and what the
// decisions came to.
import type { DecisionResult } from "./bindings/DecisionResult";
import type { ItemDetail } from "./bindings/ItemDetail";
import { counted } from "./review";
import type { StatusKind } from "./status";

/** The most requests one ceremony approves (the engine and the broker hold the same). */
export const BATCH_MAX = 50;

type Batched = Pick<ItemDetail, "id" | "agent" | "tool" | "audience" | "status" | "hash_matches" | "expires_at_unix">;

/** Why `items` cannot be approved with one touch, or null when they can. The engine checks the
 * same before any ceremony; this says it before the owner tries. */
export function batchProblem(items: Batched[], now: number): string | null {
  if (items.length < 2) return "Select at least two requests to decide together.";
  if (items.length > BATCH_MAX) return `At most ${BATCH_MAX} requests go in one batch; ${items.length} are selected.`;
  const closed = items.find((i) => i.status !== "pending" || !i.hash_matches || i.expires_at_unix <= now);
  if (closed) {
    const why = !closed.hash_matches
      ? "shows something other than what its hash binds"
      : closed.status === "pending"
        ? "expired"
        : `is ${closed.status}`;
    return `${closed.id} ${why}: remove it from the batch.`;
  }
  const [first] = items;
  if (items.some((i) => i.audience !== first.audience))
    return "These requests are for different gateways: approve them separately.";
  const oneAgent = items.every((i) => i.agent === first.agent);
  const oneTool = items.every((i) => i.tool === first.tool);
  if (!oneAgent && !oneTool) return "A batch is of one agent or for one tool; these are neither.";
  return null;
}

/** What several decisions came to, in one message. */
export function decidedMessage(results: DecisionResult[]): { text: string; kind: StatusKind } {
  const approving = results[0]?.decision === "approve";
  const verb = approving ? "Approved" : "Denied";
  const expected = approving ? "approved" : "denied";
  if (results.some((r) => !r.delivered))
    return {
      text: "Decided; the broker is unreachable, so the decisions wait and are sent on reconnection.",
      kind: "note",
    };
  const other = results.filter((r) => r.broker_status !== expected);
  if (other.length === 0)
    return {
      text: `${verb} ${counted(results.length, "request")}; the broker has ${results.length === 1 ? "it" : "them"}.`,
      kind: "done",
    };
  const already = other.map((r) => `${r.item} was ${r.broker_status ?? "decided"} already`).join("; ");
  return { text: `${verb} ${results.length - other.length} of ${results.length} requests; ${already}.`, kind: "note" };
}
