/**
 * The fleet's coordination tables in a SQLite database (one machine: the registry file of the SQLite
 * backend), with the semantics of ./postgres.ts: leases with fencing and the shared Constant Contact budget.
 *
 * - Schema: its own versioned set inside the given database (`CREATE TABLE IF NOT EXISTS` + a `fleet_schema`
 *   row), independent of the state store's MIGRATIONS.
 * - Every claim, renew, release, reserve and slot is one IMMEDIATE transaction (SQLite's write lock), which
 *   serialises processes on the machine the way `FOR UPDATE SKIP LOCKED` does on PostgreSQL. A busy timeout
 *   is set when the connection has none, so processes wait for each other instead of failing.
 * - Time: the passed `now` (one machine, one clock). Instants are stored as epoch milliseconds.
 * - The guard reads the lease row before the store writes (the account's state is another SQLite file, so the
 *   check cannot share its transaction); across processes on one machine the lease's TTL covers that gap.
 */
import type Database from 'better-sqlite3';
import type { PgFenceGuard } from '../store/backend';
import { checkBudgetConfig, checkLeaseKey, guardingLeases, noLeaseHeld, staleUnless, summarize } from './postgres';
import {
  BudgetConfig,
  BudgetState,
  DEFAULT_BUDGET,
  HeldLease,
  LeaseRow,
  Leases,
  PollOutcome,
  SharedBudget,
  SharedBudgetExhausted,
} from './types';

type Db = Database.Database;

export const SQLITE_FLEET_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS cc_leases (
     key TEXT PRIMARY KEY,
     account TEXT NOT NULL,
     target TEXT,
     owner TEXT,
     fence INTEGER NOT NULL DEFAULT 0,
     expires_at INTEGER,
     next_due_at INTEGER NOT NULL,
     priority INTEGER NOT NULL DEFAULT 1,
     claimed_at INTEGER,
     last_poll_at INTEGER,
     idle_streak INTEGER NOT NULL DEFAULT 0,
     calls_per_poll REAL NOT NULL DEFAULT 2,
     polls INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX IF NOT EXISTS cc_leases_due ON cc_leases (next_due_at);
   CREATE INDEX IF NOT EXISTS cc_leases_account ON cc_leases (account);
   CREATE TABLE IF NOT EXISTS cc_budget (
     app TEXT PRIMARY KEY,
     per_second REAL NOT NULL,
     daily_limit INTEGER NOT NULL,
     reserve INTEGER NOT NULL,
     next_slot INTEGER NOT NULL DEFAULT 0,
     token_next_slot INTEGER NOT NULL DEFAULT 0,
     day TEXT NOT NULL DEFAULT '1970-01-01',
     used INTEGER NOT NULL DEFAULT 0,
     spent INTEGER NOT NULL DEFAULT 0
   );`,
];

/** Create or upgrade the fleet tables in `db`; returns the schema version. */
export function migrateSqliteFleet(db: Db): number {
  if ((db.pragma('busy_timeout', { simple: true }) as number) === 0) db.pragma('busy_timeout = 10000');
  return db
    .transaction(() => {
      db.exec('CREATE TABLE IF NOT EXISTS fleet_schema (version INTEGER NOT NULL)');
      const row = db.prepare('SELECT version FROM fleet_schema').get() as { version: number } | undefined;
      const current = row?.version ?? 0;
      if (current > SQLITE_FLEET_MIGRATIONS.length) {
        throw new Error(
          `the store's fleet schema is version ${current}, newer than this cc-optout knows (${SQLITE_FLEET_MIGRATIONS.length}): upgrade cc-optout`,
        );
      }
      for (let v = current + 1; v <= SQLITE_FLEET_MIGRATIONS.length; v++) db.exec(SQLITE_FLEET_MIGRATIONS[v - 1]!);
      if (row === undefined)
        db.prepare('INSERT INTO fleet_schema (version) VALUES (?)').run(SQLITE_FLEET_MIGRATIONS.length);
      else db.prepare('UPDATE fleet_schema SET version = ?').run(SQLITE_FLEET_MIGRATIONS.length);
      return SQLITE_FLEET_MIGRATIONS.length;
    })
    .immediate();
}

const isoMs = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function ms(name: string, v: string): number {
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new Error(`${name}: ${JSON.stringify(v)} is not an ISO-8601 instant`);
  return t;
}

interface LeaseSqlRow {
  key: string;
  account: string;
  target: string | null;
  owner: string | null;
  fence: number;
  expires_at: number | null;
  next_due_at: number;
  priority: number;
  last_poll_at: number | null;
  idle_streak: number;
  calls_per_poll: number;
  polls: number;
}

function leaseRow(x: LeaseSqlRow): LeaseRow {
  return {
    key: x.key,
    owner: x.owner,
    fence: x.fence,
    expiresAt: isoMs(x.expires_at),
    account: x.account,
    target: x.target,
    nextDueAt: isoMs(x.next_due_at)!,
    priority: x.priority,
    lastPollAt: isoMs(x.last_poll_at),
    idleStreak: x.idle_streak,
    callsPerPoll: x.calls_per_poll,
    polls: x.polls,
  };
}

export function createSqliteLeases(db: Db): Leases {
  migrateSqliteFleet(db);
  const ensureStmt = db.prepare(
    `INSERT INTO cc_leases (key, account, target, next_due_at, priority) VALUES (?, ?, ?, ?, coalesce(?, 1))
     ON CONFLICT (key) DO UPDATE SET priority = coalesce(?, cc_leases.priority)`,
  );
  const dueStmt = db.prepare(
    `SELECT key, target FROM cc_leases
      WHERE next_due_at <= ? AND (owner IS NULL OR expires_at < ?) AND priority > 0
      ORDER BY priority DESC, next_due_at, key`,
  );
  const takeStmt = db.prepare(
    `UPDATE cc_leases SET owner = ?, fence = fence + 1, expires_at = ?, claimed_at = ? WHERE key = ?
     RETURNING key, owner, fence, expires_at`,
  );
  const renewStmt = db.prepare('UPDATE cc_leases SET expires_at = ? WHERE key = ? AND owner = ? AND fence = ?');
  const releaseStmt = db.prepare(
    `UPDATE cc_leases
        SET owner = NULL, expires_at = NULL, next_due_at = coalesce(?, next_due_at),
            last_poll_at = coalesce(?, last_poll_at),
            idle_streak = CASE WHEN ? IS NULL THEN idle_streak WHEN ? > 0 THEN 0 ELSE idle_streak + 1 END,
            calls_per_poll = CASE WHEN ? IS NULL THEN calls_per_poll WHEN polls = 0 THEN ?
                                  ELSE calls_per_poll * 0.8 + ? * 0.2 END,
            polls = polls + CASE WHEN ? IS NULL THEN 0 ELSE 1 END
      WHERE key = ? AND owner = ? AND fence = ?`,
  );
  const fenceStmt = db.prepare('SELECT fence, owner FROM cc_leases WHERE key = ?');

  const claimTx = db.transaction(
    (owner: string, limit: number, ttlMs: number, now: number, kinds: readonly string[] | undefined) => {
      const out: HeldLease[] = [];
      for (const row of dueStmt.iterate(now, now) as Iterable<{ key: string; target: string | null }>) {
        if (out.length >= limit) break;
        const kind = row.target === null ? 'account' : 'deliver';
        if (kinds && kinds.length > 0 && !kinds.includes(kind)) continue;
        out.push({ key: row.key, owner, fence: 0, expiresAt: '' });
      }
      return out.map((o) => {
        const r = takeStmt.get(owner, now + ttlMs, now, o.key) as {
          key: string;
          owner: string;
          fence: number;
          expires_at: number;
        };
        return { key: r.key, owner: r.owner, fence: r.fence, expiresAt: isoMs(r.expires_at)! };
      });
    },
  );

  return {
    async ensure(key, account, target, dueAt, priority) {
      checkLeaseKey(key, account, target);
      if (priority !== undefined && !Number.isInteger(priority))
        throw new Error(`lease priority must be an integer (got ${priority})`);
      ensureStmt.run(key, account, target, ms('dueAt', dueAt), priority ?? null, priority ?? null);
    },

    async forget(account) {
      db.prepare('DELETE FROM cc_leases WHERE account = ?').run(account);
    },

    async claim(owner, limit, ttlMs, now, kinds) {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0)
        throw new Error(`lease ttlMs must be a positive number (got ${ttlMs})`);
      if (!Number.isInteger(limit) || limit < 0) throw new Error(`claim limit must be an integer >= 0 (got ${limit})`);
      if (limit === 0) return [];
      return claimTx.immediate(owner, limit, ttlMs, now.getTime(), kinds);
    },

    async renew(lease, ttlMs, now) {
      if (!Number.isFinite(ttlMs) || ttlMs <= 0)
        throw new Error(`lease ttlMs must be a positive number (got ${ttlMs})`);
      return renewStmt.run(now.getTime() + ttlMs, lease.key, lease.owner, lease.fence).changes > 0;
    },

    async release(lease, nextDueAt, poll?: PollOutcome) {
      const due = nextDueAt === null ? null : ms('nextDueAt', nextDueAt);
      const at = poll ? ms('poll.at', poll.at) : null;
      const calls = poll?.calls ?? 0;
      const found = poll?.found ?? 0;
      return releaseStmt.run(due, at, at, found, at, calls, calls, at, lease.key, lease.owner, lease.fence).changes > 0;
    },

    async list() {
      return (db.prepare('SELECT * FROM cc_leases ORDER BY key').all() as LeaseSqlRow[]).map(leaseRow);
    },

    async get(key) {
      const r = db.prepare('SELECT * FROM cc_leases WHERE key = ?').get(key) as LeaseSqlRow | undefined;
      return r ? leaseRow(r) : null;
    },

    async summary() {
      const rows = db
        .prepare('SELECT priority, idle_streak, polls FROM cc_leases WHERE target IS NULL AND priority > 0')
        .all() as { priority: number; idle_streak: number; polls: number }[];
      return summarize(rows);
    },

    guard(held) {
      const leases = [...held];
      return {
        async check(_client, scope) {
          const guarding = guardingLeases(leases, scope);
          if (guarding.length === 0) throw noLeaseHeld(scope);
          for (const lease of guarding) {
            const stale = staleUnless(lease, fenceStmt.get(lease.key) as { fence: number; owner: string | null });
            if (stale) throw stale;
          }
        },
      } satisfies PgFenceGuard;
    },
  };
}

// ------------------------------------------------------------------------------------------ budget

interface BudgetSqlRow {
  app: string;
  per_second: number;
  daily_limit: number;
  reserve: number;
  next_slot: number;
  token_next_slot: number;
  day: string;
  used: number;
  spent: number;
}

const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

export function createSqliteBudget(db: Db, opts: { defaults?: BudgetConfig } = {}): SharedBudget {
  migrateSqliteFleet(db);
  const defaults = checkBudgetConfig('(defaults)', opts.defaults ?? DEFAULT_BUDGET);
  const insertDefaults = db.prepare(
    'INSERT INTO cc_budget (app, per_second, daily_limit, reserve) VALUES (?, ?, ?, ?) ON CONFLICT (app) DO NOTHING',
  );
  const getRow = db.prepare('SELECT * FROM cc_budget WHERE app = ?');
  const row = (app: string): BudgetSqlRow => {
    insertDefaults.run(app, defaults.perSecond, defaults.dailyLimit, defaults.reserve);
    return getRow.get(app) as BudgetSqlRow;
  };

  const reserveTx = db.transaction((app: string, now: number, reserved: boolean) => {
    const r = row(app);
    const today = utcDay(now);
    const current = r.day === today;
    const used = current ? r.used : 0;
    const spent = current && r.spent !== 0;
    if (spent || used >= r.daily_limit - (reserved ? 0 : r.reserve)) {
      if (!current) db.prepare('UPDATE cc_budget SET day = ?, used = 0, spent = 0 WHERE app = ?').run(today, app);
      return null;
    }
    const at = Math.max(r.next_slot, now);
    db.prepare('UPDATE cc_budget SET day = ?, used = ?, spent = 0, next_slot = ? WHERE app = ?').run(
      today,
      used + 1,
      at + 1000 / r.per_second,
      app,
    );
    return at;
  });
  const tokenTx = db.transaction((app: string, now: number) => {
    const r = row(app);
    const at = Math.max(r.token_next_slot, now);
    db.prepare('UPDATE cc_budget SET token_next_slot = ? WHERE app = ?').run(at + 1000, app);
    return at;
  });
  const spentTx = db.transaction((app: string, now: number) => {
    const r = row(app);
    const today = utcDay(now);
    db.prepare('UPDATE cc_budget SET day = ?, used = ?, spent = 1 WHERE app = ?').run(
      today,
      r.day === today ? r.used : 0,
      app,
    );
  });

  return {
    async reserve(app, now, o = {}) {
      const at = reserveTx.immediate(app, now.getTime(), o.reserved === true);
      if (at === null) throw new SharedBudgetExhausted(app, utcDay(now.getTime()));
      return { at: new Date(at), waitMs: Math.max(0, at - now.getTime()) };
    },
    async tokenSlot(app, now) {
      const at = tokenTx.immediate(app, now.getTime());
      return { at: new Date(at), waitMs: Math.max(0, at - now.getTime()) };
    },
    async markSpent(app, now) {
      spentTx.immediate(app, now.getTime());
    },
    async state(app, now) {
      const r = row(app);
      const today = utcDay(now.getTime());
      const current = r.day === today;
      const used = current ? r.used : 0;
      const spent = current && r.spent !== 0;
      return {
        app,
        day: today,
        used,
        limit: r.daily_limit,
        spent,
        perSecond: r.per_second,
        reserve: r.reserve,
        remaining: spent ? 0 : Math.max(0, r.daily_limit - r.reserve - used),
      } satisfies BudgetState;
    },
    async configure(app, cfg) {
      const c = checkBudgetConfig(app, cfg);
      db.prepare(
        `INSERT INTO cc_budget (app, per_second, daily_limit, reserve) VALUES (?, ?, ?, ?)
         ON CONFLICT (app) DO UPDATE SET per_second = excluded.per_second, daily_limit = excluded.daily_limit,
           reserve = excluded.reserve`,
      ).run(app, c.perSecond, c.dailyLimit, c.reserve);
    },
  };
}
