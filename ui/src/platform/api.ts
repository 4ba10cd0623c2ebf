// The only module that touches Tauri: typed wrappers of the app's commands and events.
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { ApproveAllRequest } from "../lib/bindings/ApproveAllRequest";
import type { ApproveBoundedRequest } from "../lib/bindings/ApproveBoundedRequest";
import type { ApproveRequest } from "../lib/bindings/ApproveRequest";
import type { AuthenticatorInfo } from "../lib/bindings/AuthenticatorInfo";
import type { BoundedGrantInfo } from "../lib/bindings/BoundedGrantInfo";
import type { BrokerInfo } from "../lib/bindings/BrokerInfo";
import type { CeremonyStep } from "../lib/bindings/CeremonyStep";
import type { Changed } from "../lib/bindings/Changed";
import type { CommandError } from "../lib/bindings/CommandError";
import type { DecisionResult } from "../lib/bindings/DecisionResult";
import type { DenyAllRequest } from "../lib/bindings/DenyAllRequest";
import type { DenyRequest } from "../lib/bindings/DenyRequest";
import type { EnrollRequest } from "../lib/bindings/EnrollRequest";
import type { Exported } from "../lib/bindings/Exported";
import type { HistoryQuery } from "../lib/bindings/HistoryQuery";
import type { HistoryRow } from "../lib/bindings/HistoryRow";
import type { Integrity } from "../lib/bindings/Integrity";
import type { ItemDetail } from "../lib/bindings/ItemDetail";
import type { PairLink } from "../lib/bindings/PairLink";
import type { PairRequest } from "../lib/bindings/PairRequest";
import type { PendingItem } from "../lib/bindings/PendingItem";
import type { RenameRequest } from "../lib/bindings/RenameRequest";
import type { Settings } from "../lib/bindings/Settings";

/** A command error as the UI sees it. */
export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as CommandError).message);
  return String(e);
}

/** A command error's stable code ("" when the error did not come from a command). */
export function errorCode(e: unknown): string {
  if (e && typeof e === "object" && "code" in e) return String((e as CommandError).code);
  return "";
}

export const api = {
  pending: () => invoke<PendingItem[]>("pending"),
  item: (id: string) => invoke<ItemDetail>("item", { id }),
  approve: (request: ApproveRequest) => invoke<DecisionResult>("approve", { request }),
  deny: (request: DenyRequest) => invoke<DecisionResult>("deny", { request }),
  approveAll: (request: ApproveAllRequest) => invoke<DecisionResult[]>("approve_all", { request }),
  denyAll: (request: DenyAllRequest) => invoke<DecisionResult[]>("deny_all", { request }),
  approveBounded: (request: ApproveBoundedRequest) => invoke<DecisionResult>("approve_bounded", { request }),
  boundedGrants: () => invoke<BoundedGrantInfo[]>("bounded_grants"),
  revokeBounded: (jti: string) => invoke<void>("revoke_bounded", { jti }),
  submitPin: (pin: string | null) => invoke<void>("submit_pin", { pin }),
  history: (query: HistoryQuery) => invoke<HistoryRow[]>("history", { query }),
  verifyHistory: () => invoke<Integrity>("verify_history"),
  settings: () => invoke<Settings>("settings"),
  setPrivacy: (on: boolean) => invoke<void>("set_privacy", { on }),
  pauseNotifications: (minutes: number) => invoke<number>("pause_notifications", { minutes }),
  pair: (request: PairRequest) => invoke<BrokerInfo>("pair", { request }),
  removeBroker: (url: string) => invoke<void>("remove_broker", { url }),
  addAuthenticator: (request: EnrollRequest) => invoke<AuthenticatorInfo>("add_authenticator", { request }),
  renameAuthenticator: (request: RenameRequest) => invoke<void>("rename_authenticator", { request }),
  removeAuthenticator: (name: string) => invoke<void>("remove_authenticator", { name }),
  setAutostart: (on: boolean) => invoke<boolean>("set_autostart", { on }),
  takePairLink: () => invoke<PairLink | null>("take_pair_link"),
  exportHistory: (format: "jsonl" | "csv") => invoke<Exported>("export_history", { format }),
};

/** A notification was clicked: show its item. */
export function onOpenItem(f: (id: string) => void): Promise<UnlistenFn> {
  return listen<string>("open-item", (e) => f(e.payload));
}

/** A countersign://pair link was opened: take it with `api.takePairLink`. */
export function onPairLink(f: () => void): Promise<UnlistenFn> {
  return listen<null>("pair-link", () => f());
}

export function onChanged(f: (c: Changed) => void): Promise<UnlistenFn> {
  return listen<Changed>("changed", (e) => f(e.payload));
}

/** Where a ceremony stands: the authenticator wants a touch, its PIN, or is working. */
export function onCeremony(f: (step: CeremonyStep) => void): Promise<UnlistenFn> {
  return listen<CeremonyStep>("ceremony", (e) => f(e.payload));
}
