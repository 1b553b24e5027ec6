/**
 * The fleet's coordination tables on PostgreSQL: leases with fencing (`cc_leases`) and the shared Constant
 * Contact budget (`cc_budget`), migration set "fleet" (src/store/pg/pool.ts migrate()).
 *
 * TIME. By default (`time: 'database'`) every instant these tables compare or store comes from the DATABASE's
 * clock (`now()`): lease expiry, takeover, the per-second slots and the UTC day of the ledger. The `now`
 * arguments of the interface are then ignored, so workers whose clocks disagree still agree on who holds
 * a lease and on the slot spacing (a grant also says how long to wait: `waitMs`, measured on the database's
 * clock). Only `next_due_at` (when the worker asks the next poll to be) comes from the worker, which costs at
 * most a poll a little early or late. `time: 'caller'` uses the passed `now` for all of it instead: for tests
 * and the benchmark's simulated clock, never for production.
 *
 * CLAIM: `UPDATE cc_leases ... WHERE key IN (SELECT key ... FOR UPDATE SKIP LOCKED) RETURNING`, bumping the
 * fence: two workers claiming at once never get the same key, and neither waits for the other. Rows with
 * priority <= 0 (a paused account) are never claimed.
 * FENCE: the guard's check runs `SELECT fence, owner ... FOR SHARE` inside the store's write transaction: a
 * successor's claim (an UPDATE) cannot commit between the check and the write, and a write whose fence moved
 * on is refused (StaleFence) and rolled back. A lease that expired but that nobody took over yet still
 * guards (its fence is unchanged: there is no successor to overwrite).
 */
import { Pool, PoolClient } from 'pg';
import type { PgFenceGuard } from '../store/backend';
import { LeaseLost } from '../store/types';
import { migrate } from '../store/pg/pool';
import { activityWeight } from './scheduler';
import {
  accountLeaseKey,
  BudgetConfig,
  BudgetGrant,
  BudgetState,
  DEFAULT_BUDGET,
  defaultReserve,
  deliverLeaseKey,
  HeldLease,
  LeaseRow,
  Leases,
  LeaseSummary,
  PollOutcome,
  SharedBudget,
  SharedBudgetExhausted,
  StaleFence,
} from './types';

export const FLEET_MIGRATIONS: readonly string[] = [
  `CREATE TABLE cc_leases (
     key text PRIMARY KEY,
     account text NOT NULL,
     target text,
     owner text,
     fence bigint NOT NULL DEFAULT 0,
     expires_at timestamptz,
     next_due_at timestamptz NOT NULL,
     priority integer NOT NULL DEFAULT 1,
     claimed_at timestamptz,
     last_poll_at timestamptz,
     idle_streak integer NOT NULL DEFAULT 0,
     calls_per_poll double precision NOT NULL DEFAULT 2,
     polls integer NOT NULL DEFAULT 0
   );
   CREATE INDEX cc_leases_due ON cc_leases (next_due_at);
   CREATE INDEX cc_leases_account ON cc_leases (account);
   CREATE TABLE cc_budget (
     app text PRIMARY KEY,
     per_second double precision NOT NULL,
     daily_limit integer NOT NULL,
     reserve integer NOT NULL,
     next_slot timestamptz NOT NULL DEFAULT '-infinity',
     token_next_slot timestamptz NOT NULL DEFAULT '-infinity',
     day date NOT NULL DEFAULT '1970-01-01',
     used integer NOT NULL DEFAULT 0,
     spent boolean NOT NULL DEFAULT false
   );`,
];

export type FleetTime = 'database' | 'caller';

export interface PgFleetOptions {
  /** Whose clock the tables run on (see the file comment); default 'database'. */
  readonly time?: FleetTime;
}

/** Apply the "fleet" migration set (idempotent; safe with several instances starting at once). */
export async function migrateFleet(pool: Pool): Promise<void> {
  await migrate(pool, 'fleet', FLEET_MIGRATIONS);
}

/** migrateFleet once per pool (lazily, on first use; retried after a failure). */
const migrated = new WeakMap<Pool, Promise<void>>();
function ready(pool: Pool): Promise<void> {
  let p = migrated.get(pool);
  if (!p) {
    p = migrateFleet(pool).catch((err: unknown) => {
      migrated.delete(pool);
      throw err;
    });
    migrated.set(pool, p);
  }
  return p;
}

/** `$1` in every statement below: the instant to use, or null for the database's now(). */
const T = 'coalesce($1::timestamptz, now())';

function timeParam(time: FleetTime, now: Date): Date | null {
  return time === 'caller' ? now : null;
}

function iso(v: unknown): string {
  return v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString();
}

function isoOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : iso(v);
}

/** The key must be the account's or one of its targets' (the guard looks them up by these names). */
export function checkLeaseKey(key: string, account: string, target: string | null): void {
  const expected = target === null ? accountLeaseKey(account) : deliverLeaseKey(account, target);
  if (key !== expected) {
    throw new Error(`lease key ${JSON.stringify(key)}: expected ${JSON.stringify(expected)} for this account/target`);
  }
}

function checkTtl(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new Error(`lease ttlMs must be a positive number (got ${ttlMs})`);
}

function checkDate(name: string, v: string): void {
  if (Number.isNaN(Date.parse(v))) throw new Error(`${name}: ${JSON.stringify(v)} is not an ISO-8601 instant`);
}

/**
 * Which held lease guards a write of `scope`: the deliver lease of `scope.target` when it is held, otherwise
 * the account lease; without either, the deliver leases held for the account (a deliver-only worker's
 * account-wide write). Empty: no lease for this account is held at all.
 */
export function guardingLeases(held: readonly HeldLease[], scope: { account: string; target?: string }): HeldLease[] {
  if (scope.target !== undefined) {
    const d = held.find((h) => h.key === deliverLeaseKey(scope.account, scope.target!));
    if (d) return [d];
  }
  const a = held.find((h) => h.key === accountLeaseKey(scope.account));
  if (a) return [a];
  const prefix = `deliver:${scope.account}:`;
  return held.filter((h) => h.key.startsWith(prefix));
}

/** The StaleFence for a lease row as found now (null: the row is gone). */
export function staleUnless(
  lease: HeldLease,
  row: { fence: number | string; owner: string | null } | undefined,
): StaleFence | null {
  if (!row) return new StaleFence(lease.key, lease.fence, null);
  const fence = Number(row.fence);
  if (fence === lease.fence && row.owner === lease.owner) return null;
  return new StaleFence(lease.key, lease.fence, row.owner === null ? null : fence);
}

export function noLeaseHeld(scope: { account: string; target?: string }): LeaseLost {
  return new LeaseLost(
    `no lease is held for account ${scope.account}${scope.target !== undefined ? ` (target ${scope.target})` : ''}: nothing was written`,
  );
}

interface LeaseDbRow {
  key: string;
  account: string;
  target: string | null;
  owner: string | null;
  fence: string;
  expires_at: Date | null;
  next_due_at: Date;
  priority: number;
  last_poll_at: Date | null;
  idle_streak: number;
  calls_per_poll: number;
  polls: number;
}

function leaseRow(x: LeaseDbRow): LeaseRow {
  return {
    key: x.key,
    owner: x.owner,
    fence: Number(x.fence),
    expiresAt: isoOrNull(x.expires_at),
    account: x.account,
    target: x.target,
    nextDueAt: iso(x.next_due_at),
    priority: x.priority,
    lastPollAt: isoOrNull(x.last_poll_at),
    idleStreak: x.idle_streak,
    callsPerPoll: Number(x.calls_per_poll),
    polls: x.polls,
  };
}

/** LeaseSummary from the account rows with priority > 0. */
export function summarize(rows: readonly { priority: number; idle_streak: number; polls: number }[]): LeaseSummary {
  let prioritySum = 0;
  let weightSum = 0;
  for (const r of rows) {
    prioritySum += r.priority;
    weightSum += r.priority * (r.polls === 0 ? 1 : activityWeight(r.idle_streak));
  }
  return { accounts: rows.length, prioritySum, weightSum };
}

export function createPgLeases(pool: Pool, opts: PgFleetOptions = {}): Leases {
  const time = opts.time ?? 'database';
  return {
    async ensure(key, account, target, dueAt, priority) {
      await ready(pool);
      checkLeaseKey(key, account, target);
      checkDate('dueAt', dueAt);
      if (priority !== undefined && !Number.isInteger(priority))
        throw new Error(`lease priority must be an integer (got ${priority})`);
      await pool.query(
        `INSERT INTO cc_leases (key, account, target, next_due_at, priority) VALUES ($1, $2, $3, $4, coalesce($5, 1))
         ON CONFLICT (key) DO UPDATE SET priority = coalesce($5, cc_leases.priority)`,
        [key, account, target, dueAt, priority ?? null],
      );
    },

    async forget(account) {
      await ready(pool);
      await pool.query('DELETE FROM cc_leases WHERE account = $1', [account]);
    },

    async claim(owner, limit, ttlMs, now, kinds) {
      await ready(pool);
      checkTtl(ttlMs);
      if (!Number.isInteger(limit) || limit < 0) throw new Error(`claim limit must be an integer >= 0 (got ${limit})`);
      if (limit === 0) return [];
      const r = await pool.query<{
        key: string;
        owner: string;
        fence: string;
        expires_at: Date;
        priority: number;
        next_due_at: Date;
      }>(
        `UPDATE cc_leases l
            SET owner = $2, fence = l.fence + 1, expires_at = ${T} + $4::double precision * interval '1 millisecond',
                claimed_at = clock_timestamp()
          WHERE l.key IN (
                SELECT key FROM cc_leases
                 WHERE next_due_at <= ${T}
                   AND (owner IS NULL OR expires_at < ${T})
                   AND priority > 0
                   AND ($5::text[] IS NULL OR (CASE WHEN target IS NULL THEN 'account' ELSE 'deliver' END) = ANY($5::text[]))
                 ORDER BY priority DESC, next_due_at, key
                 LIMIT $3
                   FOR UPDATE SKIP LOCKED)
            AND (l.owner IS NULL OR l.expires_at < ${T})
        RETURNING l.key, l.owner, l.fence, l.expires_at, l.priority, l.next_due_at`,
        [timeParam(time, now), owner, limit, ttlMs, kinds && kinds.length > 0 ? [...kinds] : null],
      );
      // RETURNING has no order: hand them out in the claim's order
      const rows = [...r.rows].sort(
        (a, b) =>
          b.priority - a.priority ||
          a.next_due_at.getTime() - b.next_due_at.getTime() ||
          (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
      );
      return rows.map((x) => ({ key: x.key, owner: x.owner, fence: Number(x.fence), expiresAt: iso(x.expires_at) }));
    },

    async renew(lease, ttlMs, now) {
      await ready(pool);
      checkTtl(ttlMs);
      const r = await pool.query(
        `UPDATE cc_leases SET expires_at = ${T} + $5::double precision * interval '1 millisecond'
          WHERE key = $2 AND owner = $3 AND fence = $4`,
        [timeParam(time, now), lease.key, lease.owner, lease.fence, ttlMs],
      );
      return (r.rowCount ?? 0) > 0;
    },

    async release(lease, nextDueAt, poll?: PollOutcome) {
      await ready(pool);
      if (nextDueAt !== null) checkDate('nextDueAt', nextDueAt);
      if (poll) checkDate('poll.at', poll.at);
      // a handover (nextDueAt null) keeps next_due_at: it was due when claimed, so it is due now, on any clock
      const r = await pool.query(
        `UPDATE cc_leases
            SET owner = NULL, expires_at = NULL, next_due_at = coalesce($4::timestamptz, next_due_at),
                last_poll_at = CASE WHEN $5::timestamptz IS NULL THEN last_poll_at ELSE $5::timestamptz END,
                idle_streak = CASE WHEN $5::timestamptz IS NULL THEN idle_streak
                                   WHEN $7::integer > 0 THEN 0 ELSE idle_streak + 1 END,
                calls_per_poll = CASE WHEN $5::timestamptz IS NULL THEN calls_per_poll
                                      WHEN polls = 0 THEN $6::double precision
                                      ELSE calls_per_poll * 0.8 + $6::double precision * 0.2 END,
                polls = polls + CASE WHEN $5::timestamptz IS NULL THEN 0 ELSE 1 END
          WHERE key = $1 AND owner = $2 AND fence = $3`,
        [lease.key, lease.owner, lease.fence, nextDueAt, poll?.at ?? null, poll?.calls ?? 0, poll?.found ?? 0],
      );
      return (r.rowCount ?? 0) > 0;
    },

    async list() {
      await ready(pool);
      const r = await pool.query<LeaseDbRow>('SELECT * FROM cc_leases ORDER BY key');
      return r.rows.map(leaseRow);
    },

    async get(key) {
      await ready(pool);
      const r = await pool.query<LeaseDbRow>('SELECT * FROM cc_leases WHERE key = $1', [key]);
      return r.rows[0] ? leaseRow(r.rows[0]) : null;
    },

    async summary() {
      await ready(pool);
      const r = await pool.query<{ priority: number; idle_streak: number; polls: number }>(
        'SELECT priority, idle_streak, polls FROM cc_leases WHERE target IS NULL AND priority > 0',
      );
      return summarize(r.rows);
    },

    guard(held) {
      const leases = [...held];
      return {
        async check(client: PoolClient, scope) {
          const guarding = guardingLeases(leases, scope);
          if (guarding.length === 0) throw noLeaseHeld(scope);
          for (const lease of guarding) {
            const r = await client.query<{ fence: string; owner: string | null }>(
              'SELECT fence, owner FROM cc_leases WHERE key = $1 FOR SHARE',
              [lease.key],
            );
            const stale = staleUnless(lease, r.rows[0]);
            if (stale) throw stale;
          }
        },
      } satisfies PgFenceGuard;
    },
  };
}

// ------------------------------------------------------------------------------------------ budget

/** Validate a budget configuration; errors name the field. */
export function checkBudgetConfig(app: string, cfg: BudgetConfig): Required<BudgetConfig> {
  const where = `budget of application ${JSON.stringify(app)}`;
  if (typeof app !== 'string' || app === '') throw new Error('budget: the application (client id) must be named');
  if (!Number.isInteger(cfg.dailyLimit) || cfg.dailyLimit <= 0)
    throw new Error(`${where}: dailyLimit must be a positive integer (got ${cfg.dailyLimit})`);
  if (typeof cfg.perSecond !== 'number' || !Number.isFinite(cfg.perSecond) || cfg.perSecond <= 0)
    throw new Error(`${where}: perSecond must be a positive number (got ${cfg.perSecond})`);
  const reserve = cfg.reserve ?? defaultReserve(cfg.dailyLimit);
  if (!Number.isInteger(reserve) || reserve < 0 || reserve >= cfg.dailyLimit)
    throw new Error(`${where}: reserve must be an integer from 0 to below dailyLimit (got ${reserve})`);
  return { dailyLimit: cfg.dailyLimit, perSecond: cfg.perSecond, reserve };
}

const DAY = `(${T} AT TIME ZONE 'UTC')::date`;

interface BudgetDbRow {
  app: string;
  per_second: number;
  daily_limit: number;
  reserve: number;
  day: string;
  today: string;
  used: number;
  spent: boolean;
}

export function createPgBudget(pool: Pool, opts: PgFleetOptions & { defaults?: BudgetConfig } = {}): SharedBudget {
  const time = opts.time ?? 'database';
  const defaults = checkBudgetConfig('(defaults)', opts.defaults ?? DEFAULT_BUDGET);

  async function ensureRow(app: string): Promise<void> {
    await pool.query(
      `INSERT INTO cc_budget (app, per_second, daily_limit, reserve) VALUES ($1, $2, $3, $4) ON CONFLICT (app) DO NOTHING`,
      [app, defaults.perSecond, defaults.dailyLimit, defaults.reserve],
    );
  }

  function grant(row: { at: Date; wait_ms: number }): BudgetGrant {
    return { at: row.at, waitMs: Math.max(0, Number(row.wait_ms)) };
  }

  async function dayOf(now: Date): Promise<string> {
    const r = await pool.query<{ d: string }>(`SELECT to_char(${DAY}, 'YYYY-MM-DD') AS d`, [timeParam(time, now)]);
    return r.rows[0]!.d;
  }

  return {
    async reserve(app, now, o = {}) {
      await ready(pool);
      for (let attempt = 0; ; attempt++) {
        // one statement: the day's reset, the refusal and the slot are decided atomically under the row lock
        const r = await pool.query<{ at: Date; wait_ms: number }>(
          `UPDATE cc_budget
              SET used = (CASE WHEN day = ${DAY} THEN used ELSE 0 END) + 1,
                  spent = (day = ${DAY} AND spent),
                  day = ${DAY},
                  next_slot = greatest(next_slot, ${T}) + make_interval(secs => 1.0 / per_second)
            WHERE app = $2
              AND NOT (day = ${DAY} AND spent)
              AND (CASE WHEN day = ${DAY} THEN used ELSE 0 END) < daily_limit - (CASE WHEN $3 THEN 0 ELSE reserve END)
          RETURNING next_slot - make_interval(secs => 1.0 / per_second) AS at,
                    extract(epoch FROM (next_slot - make_interval(secs => 1.0 / per_second) - ${T})) * 1000 AS wait_ms`,
          [timeParam(time, now), app, o.reserved === true],
        );
        if (r.rows[0]) return grant(r.rows[0]);
        const exists = await pool.query('SELECT 1 FROM cc_budget WHERE app = $1', [app]);
        if (exists.rowCount === 0 && attempt === 0) {
          await ensureRow(app);
          continue;
        }
        throw new SharedBudgetExhausted(app, await dayOf(now));
      }
    },

    async tokenSlot(app, now) {
      await ready(pool);
      for (let attempt = 0; ; attempt++) {
        const r = await pool.query<{ at: Date; wait_ms: number }>(
          `UPDATE cc_budget SET token_next_slot = greatest(token_next_slot, ${T}) + interval '1 second'
            WHERE app = $2
          RETURNING token_next_slot - interval '1 second' AS at,
                    extract(epoch FROM (token_next_slot - interval '1 second' - ${T})) * 1000 AS wait_ms`,
          [timeParam(time, now), app],
        );
        if (r.rows[0]) return grant(r.rows[0]);
        if (attempt > 0) throw new Error(`budget of application ${app}: the row could not be created`);
        await ensureRow(app);
      }
    },

    async markSpent(app, now) {
      await ready(pool);
      await ensureRow(app);
      await pool.query(
        `UPDATE cc_budget SET used = CASE WHEN day = ${DAY} THEN used ELSE 0 END, day = ${DAY}, spent = true
          WHERE app = $2`,
        [timeParam(time, now), app],
      );
    },

    async state(app, now) {
      await ready(pool);
      await ensureRow(app);
      const r = await pool.query<BudgetDbRow>(
        `SELECT app, per_second, daily_limit, reserve, to_char(day, 'YYYY-MM-DD') AS day,
                to_char(${DAY}, 'YYYY-MM-DD') AS today, used, spent
           FROM cc_budget WHERE app = $2`,
        [timeParam(time, now), app],
      );
      const x = r.rows[0]!;
      const current = x.day === x.today;
      const used = current ? x.used : 0;
      const spent = current && x.spent;
      return {
        app,
        day: x.today,
        used,
        limit: x.daily_limit,
        spent,
        perSecond: Number(x.per_second),
        reserve: x.reserve,
        remaining: spent ? 0 : Math.max(0, x.daily_limit - x.reserve - used),
      } satisfies BudgetState;
    },

    async configure(app, cfg) {
      await ready(pool);
      const c = checkBudgetConfig(app, cfg);
      await pool.query(
        `INSERT INTO cc_budget (app, per_second, daily_limit, reserve) VALUES ($1, $2, $3, $4)
         ON CONFLICT (app) DO UPDATE SET per_second = $2, daily_limit = $3, reserve = $4`,
        [app, c.perSecond, c.dailyLimit, c.reserve],
      );
    },
  };
}
