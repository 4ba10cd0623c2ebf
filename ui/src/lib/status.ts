// Status messages: each belongs to the step of the owner's that caused it, and a success fades
// (status.test.ts).

/** `done` reports a success and fades; `note` tells the owner something to act on and stays;
 * `error` stays too. Both stay only until the owner moves on. */
export type StatusKind = "done" | "note" | "error";

export interface Status {
  text: string;
  kind: StatusKind;
  /** The owner's step (a view shown, an item opened) the message belongs to. */
  step: number;
}

/** How long a success stays on screen. */
export const FADE_MS = 6000;

/** The message to show at the owner's current step: one caused by an action taken at this step,
 * or nothing. A message that arrives after the owner moved on belongs to a page they left. */
export function shownAt(status: Status | null, step: number): Status | null {
  return status !== null && status.step === step && status.text !== "" ? status : null;
}

/** Milliseconds a message stays before it fades, or null when it stays until the owner moves on. */
export function fadesAfter(kind: StatusKind): number | null {
  return kind === "done" ? FADE_MS : null;
}

/** Where the owner is: a view, and the item they opened there (null: none). */
export interface Place {
  view: string;
  item: string | null;
}

/** Whether the owner going to `to` moves on from `from`, the place where they last went: another
 * view, or another item. The view they are on, or the item they opened last, is no move; the app
 * opening the next item after a decision is no move of the owner's and is not asked about. */
export function movesOn(from: Place, to: Place): boolean {
  return from.view !== to.view || (to.item !== null && from.item !== to.item);
}
