/**
 * Running many accounts on many workers (one process or many instances) against one store.
 *
 * LEASES. A lease is a row `cc_leases(key, owner, fence, expires_at, ...)`. Keys: `account:<id>` (detection:
 * the account's Constant Contact polling, checkpoints, tokens) and `deliver:<id>:<target>` (one target's
 * outbox of one account: deliveries to many CRM targets spread across workers). A worker CLAIMS due, unleased or
 * expired keys (`FOR UPDATE SKIP LOCKED` on PostgreSQL; a write transaction on SQLite), which bumps `fence` by
 * one; it RENEWS (heartbeat, every ttl/3) while it works and RELEASES when done. A lease not renewed for `ttlMs`
 * is taken over by any worker. Every write under a lease checks the fence first (PgFenceGuard) and is refused
 * (StaleFence) when it moved on.
 *
 * SHARED BUDGET. One Constant Contact application (client id) is shared by all its accounts: a per-second slot
 * (`next_slot` advanced by `1000/perSecond` ms, below 4/s so a sliding window never sees 4), a daily ledger
 * (UTC day; reserved BEFORE each call, never exceeded), the token endpoint's own 1/s slot, and a day marked
 * spent for everyone on a `quota_exceeded` answer.
 *
 * SCHEDULE. Each account's next poll is computed from the remaining budget, the due accounts, its priority and
 * its recent activity; full reconciles are spread over the day by a hash of the account id.
 */
import { LeaseLost } from '../store/types';

/** A write under a lease whose fence moved on (a successor took it over). */
export class StaleFence extends LeaseLost {
  constructor(
    readonly key: string,
    readonly held: number,
    readonly current: number | null,
  ) {
    super(
      `lease ${key}: fence ${held} is stale (now ${current ?? 'released'}): another worker took this lease over; nothing was written`,
    );
    this.name = 'StaleFence';
  }
}

export interface HeldLease {
  readonly key: string;
  readonly owner: string;
  readonly fence: number;
  readonly expiresAt: string;
}

/** The lease key of an account's detection (Constant Contact polling, checkpoints, tokens). */
export function accountLeaseKey(account: string): string {
  return `account:${account}`;
}

/** The lease key of one target's outbox of one account. */
export function deliverLeaseKey(account: string, target: string): string {
  return `deliver:${account}:${target}`;
}

export interface LeaseRow {
  readonly key: string;
  /** null while free (never claimed, or released). */
  readonly owner: string | null;
  readonly fence: number;
  /** null while free. */
  readonly expiresAt: string | null;
  readonly account: string;
  readonly target: string | null;
  readonly nextDueAt: string;
  readonly priority: number;
  /** The last poll recorded with release() (null: none yet). */
  readonly lastPollAt: string | null;
  /** Consecutive polls that found no new opt-out (0 after one that found some, or before the first). */
  readonly idleStreak: number;
  /** Average calls per poll (an exponential moving average of the recorded polls; 2 before the first). */
  readonly callsPerPoll: number;
  readonly polls: number;
}

export interface LeaseSummary {
  readonly accounts: number;
  readonly prioritySum: number;
  readonly weightSum: number;
}

/** What a finished poll tells the schedule (release(lease, nextDueAt, poll)). */
export interface PollOutcome {
  readonly at: string;
  readonly calls: number;
  readonly found: number;
}

export interface Leases {
  /** Make sure a lease row exists for `key` (due at `dueAt` when new). */
  ensure(key: string, account: string, target: string | null, dueAt: string, priority?: number): Promise<void>;
  /** Remove an account's lease rows (accounts remove). */
  forget(account: string): Promise<void>;
  /**
   * Claim up to `limit` keys that are due (next_due_at <= now) and free or expired, highest priority and
   * longest-due first, skipping rows another worker is claiming right now. Bumps each fence.
   */
  claim(
    owner: string,
    limit: number,
    ttlMs: number,
    now: Date,
    kinds?: readonly ('account' | 'deliver')[],
  ): Promise<HeldLease[]>;
  /** Extend; false when no longer ours (taken over or released). */
  renew(lease: HeldLease, ttlMs: number, now: Date): Promise<boolean>;
  /**
   * Give it back, due again at `nextDueAt` (null: now, for a handover); with `poll`, also record the poll
   * (last poll time, idle streak, calls per poll). Does nothing when the lease is no longer ours.
   * Returns whether it was still ours.
   */
  release(lease: HeldLease, nextDueAt: string | null, poll?: PollOutcome): Promise<boolean>;
  /** For `status` and tests. */
  list(): Promise<LeaseRow[]>;
  /** One lease row (null: none), e.g. the schedule inputs of the account just claimed. */
  get(key: string): Promise<LeaseRow | null>;
  /**
   * The scheduler's application-wide inputs over the account leases with priority > 0: their number, the
   * sum of their priorities, and the sum of priority x activityWeight(idleStreak) (an account never polled
   * counts with weight 1).
   */
  summary(): Promise<LeaseSummary>;
  /** The guard a PostgreSQL account store runs in every write transaction (see ../store/backend). */
  guard(held: readonly HeldLease[]): import('../store/backend').PgFenceGuard;
}

export interface BudgetConfig {
  /** Requests per UTC day for the whole application (10,000 standard; partner keys more). */
  readonly dailyLimit: number;
  /** Per-second rate for the whole application; the slot spacing is 1000/perSecond ms (default 3.5). */
  readonly perSecond: number;
  /** Calls held back each day for token refreshes and reconciles (default 2% of dailyLimit). */
  readonly reserve?: number;
}

export interface BudgetGrant {
  /** When this call may be sent (on the clock the budget runs on: the database's, or the caller's). */
  readonly at: Date;
  /**
   * How long to wait from the moment of the grant (at - the budget's now, >= 0): sleep this long, so that a
   * worker whose clock disagrees with the database's still keeps the spacing.
   */
  readonly waitMs: number;
}

export interface BudgetState {
  readonly app: string;
  readonly day: string;
  readonly used: number;
  readonly limit: number;
  readonly spent: boolean;
  readonly perSecond: number;
  /** Calls held back for reserve({reserved: true}) (token refreshes, reconciles). */
  readonly reserve: number;
  /** Calls left today for ordinary reserve() (0 once spent): limit - reserve - used. */
  readonly remaining: number;
}

/** The budget of an application nobody configured: Constant Contact's standard key. */
export const DEFAULT_BUDGET: Required<BudgetConfig> = { dailyLimit: 10_000, perSecond: 3.5, reserve: 200 };

/** The reserve when a configuration names none: 2% of the daily limit. */
export function defaultReserve(dailyLimit: number): number {
  return Math.floor(dailyLimit * 0.02);
}

/** Thrown by reserve() when today's budget is gone (ledger full, or the vendor said quota_exceeded). */
export class SharedBudgetExhausted extends Error {
  constructor(
    readonly app: string,
    readonly day: string,
  ) {
    super(
      `Constant Contact application ${app}: today's request budget (${day} UTC) is spent; polling resumes at 00:00 UTC`,
    );
    this.name = 'SharedBudgetExhausted';
  }
}

export interface SharedBudget {
  /**
   * Reserve one call today (throws SharedBudgetExhausted when the ledger is full, or spent) and a per-second
   * slot. Resolves at once with the grant: the caller sleeps `waitMs` before sending. `reserved`: may use the
   * calls held back (token refreshes, reconciles). An application never configured gets DEFAULT_BUDGET.
   */
  reserve(app: string, now: Date, opts?: { reserved?: boolean }): Promise<BudgetGrant>;
  /** The token endpoint's own 1/s slot for `app` (no daily count); the caller sleeps `waitMs`. */
  tokenSlot(app: string, now: Date): Promise<BudgetGrant>;
  /** The vendor answered quota_exceeded: today is spent for every worker. */
  markSpent(app: string, now: Date): Promise<void>;
  state(app: string, now: Date): Promise<BudgetState>;
  configure(app: string, cfg: BudgetConfig): Promise<void>;
}

export interface PollRecord {
  readonly account: string;
  readonly at: string;
  /** Calls the poll spent. */
  readonly calls: number;
  /** New opt-outs it found (activity: poll sooner). */
  readonly found: number;
}

export interface SchedulerInput {
  readonly now: Date;
  /** Calls left today for the application (after the reserve). */
  readonly remaining: number;
  /** Accounts sharing the application (enabled, priority > 0). */
  readonly accounts: number;
  /** Average calls per poll (measured; 2 when unknown). */
  readonly callsPerPoll: number;
  readonly priority: number;
  /** Sum of the priorities of all the application's accounts. */
  readonly prioritySum: number;
  /** Consecutive idle polls (no new opt-out) of this account. */
  readonly idleStreak: number;
  readonly minIntervalMs: number;
  readonly maxIntervalMs: number;
  /**
   * Optional: the sum over the application's accounts of priority x activityWeight(idleStreak) (see
   * ./scheduler). When given, the share is priority x weight / weightSum, so the day's budget is spread in
   * full (idle accounts give their share to active ones); without it, priority / prioritySum x weight.
   */
  readonly weightSum?: number;
}
