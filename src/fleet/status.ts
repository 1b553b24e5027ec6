/**
 * The fleet as `status` shows it: per account its last and next poll, the Constant Contact calls it spent today
 * and its share of the application's budget (the fair scheduler's share: priority x activity weight over the
 * sum of those of every account polling; 0 while paused).
 *
 * Sources: the account lease rows (last poll, next due, priority, idle streak: src/fleet/types LeaseRow), and the
 * per-account poll record in each account's own store (calls today: src/fleet/worker.ts readPollRecord).
 */
import type { StoreBackend } from '../store/backend';
import type { StateStore } from '../store/types';
import { activityWeight } from './scheduler';
import type { BudgetState, LeaseRow, Leases, SharedBudget } from './types';
import { callsOn, readPollRecord, utcDay } from './worker';

export interface AccountFleetStatus {
  readonly id: string;
  /** null: never polled. */
  readonly lastPollAt: string | null;
  /** When its lease is next due (null: no lease row yet: no fleet worker has seen the account). */
  readonly nextPollAt: string | null;
  /** Constant Contact calls its polls spent today (UTC). */
  readonly callsToday: number;
  /** Its share (0..1) of the application's budget the scheduler gives it now. */
  readonly share: number;
  readonly priority: number;
  /** Consecutive polls without a new opt-out. */
  readonly idleStreak: number;
  /** Held right now by this worker (owner id), or null. */
  readonly heldBy: string | null;
  /** The last poll failed: its (redacted) message. */
  readonly lastError: string | null;
}

export interface FleetStatusInput {
  readonly backend: StoreBackend;
  readonly leases: Leases;
  readonly budget?: SharedBudget;
  /** The application (client id) whose budget `status` reports. */
  readonly app?: string;
  readonly now?: Date;
  /**
   * Open an account's store to read its poll record (default backend.account(id)); null skips the calls (0).
   * The store is closed afterwards when `closeAfterRead` (default: on PostgreSQL, where each open is its own; a
   * SQLite backend owns its stores).
   */
  readonly openStore?: ((id: string) => Promise<StateStore>) | null;
  readonly closeAfterRead?: boolean;
}

export interface FleetStatus {
  readonly accounts: AccountFleetStatus[];
  readonly budget: BudgetState | null;
}

/** Per account { id, lastPollAt, nextPollAt, callsToday, share, ... }, ordered by id; and the budget's state. */
export async function fleetStatus(i: FleetStatusInput): Promise<FleetStatus> {
  const now = i.now ?? new Date();
  const day = utcDay(now);
  const rows = (await i.leases.list()).filter((r) => r.target === null);
  const byAccount = new Map<string, LeaseRow>(rows.map((r) => [r.account, r]));
  const ids = new Set<string>([...rows.map((r) => r.account), ...(await i.backend.listAccounts()).map((a) => a.id)]);
  const registry = new Map((await i.backend.listAccounts()).map((a) => [a.id, a]));
  const weight = (r: LeaseRow | undefined, priority: number): number =>
    priority > 0 ? priority * (r && r.polls > 0 ? activityWeight(r.idleStreak) : 1) : 0;
  const priorityOf = (id: string): number => registry.get(id)?.priority ?? byAccount.get(id)?.priority ?? 1;
  const weightSum = [...ids].reduce((a, id) => a + weight(byAccount.get(id), priorityOf(id)), 0);
  const open = i.openStore === undefined ? (id: string) => i.backend.account(id) : i.openStore;
  const out: AccountFleetStatus[] = [];
  for (const id of [...ids].sort()) {
    const r = byAccount.get(id);
    let callsToday = 0;
    let lastError: string | null = null;
    if (open) {
      const store = await open(id);
      try {
        const rec = await readPollRecord(store);
        callsToday = callsOn(rec, day);
        lastError = rec?.lastError ?? null;
      } finally {
        if (i.closeAfterRead ?? i.backend.kind === 'postgres') await store.close();
      }
    }
    const priority = priorityOf(id);
    const heldBy = r && r.owner && r.expiresAt && Date.parse(r.expiresAt) > now.getTime() ? r.owner : null;
    out.push({
      id,
      lastPollAt: r?.lastPollAt ?? null,
      nextPollAt: r?.nextDueAt ?? null,
      callsToday,
      share: weightSum > 0 ? weight(r, priority) / weightSum : 0,
      priority,
      idleStreak: r?.idleStreak ?? 0,
      heldBy,
      lastError,
    });
  }
  const budget = i.budget && i.app ? await i.budget.state(i.app, now) : null;
  return { accounts: out, budget };
}
