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
 * (`next_slot` advanced by `1000/perSecond` ms: at 3.5/s grants are 285.7 ms apart, so any sliding 1000 ms
 * window holds at most floor(1000/285.7) + 1 = 4 of them, Constant Contact's 4/s, with 143 ms to spare before a
 * 5th; fewer than 4 in every window would need perSecond < 3), a daily ledger (UTC day; reserved BEFORE each
 * call, never exceeded), the token endpoint's own 1/s slot, and a day marked spent for everyone on a
 * `quota_exceeded` answer.
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
      current === null
        ? `lease ${key}: fence ${held} is stale (now released): the lease was released or removed (e.g. its account by \`accounts remove\`), not taken over; nothing was written`
        : `lease ${key}: fence ${held} is stale (now ${current}): another worker took this lease over; nothing was written`,
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

// The shared budget's types live in ./budget (no PostgreSQL types: the Constant Contact client imports them).
export * from './budget';

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
  /**
   * Optional, in [0, 1): spreads the interval by +-JITTER/2 (0.5: none), so accounts that polled together
   * (all due at a start, or at a reset) drift apart instead of coming back as a herd. E.g.
   * hash32(`${account}:${polls}`) / 2 ** 32 (./scheduler).
   */
  readonly jitter?: number;
}
