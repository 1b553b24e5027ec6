/**
 * The PostgreSQL StoreBackend (`--store postgres://...` or `store.url`): one database holds the account registry
 * (`cc_accounts`) and the state of every account, each table keyed by `account` first. Any number of instances
 * on any hosts share it; what the SQLite store gets from being the only writer of its file is done here with
 * transactions, row locks and advisory locks (startRun, the run lock, recordOutcomes' read-modify-write).
 *
 * - The same calls give the same results as the SQLite store (../store/sqlite): times are ISO text compared
 *   bytewise, run and backfill ids are numbered per account, the delivery history is append-only.
 * - `account(id, { guard })`: the guard (a fleet lease's fence check) runs inside EVERY write transaction before
 *   anything is written (the one exception is `failRun`, which only records how the caller's own run ended, as
 *   the SQLite store lets a run that lost its lease do); when it throws (StaleFence) the transaction rolls back.
 * - Key/value (tokens, daily usage): an account's rows are read when its store is opened; `get` answers from that
 *   cache, `set` updates it and queues the write (in order); `flush()` waits for the queued writes and rethrows a
 *   failed one; every other write transaction of the store, and `close()`, flush first (a checkpoint is never
 *   committed before the token rotated ahead of it).
 * - The account `default` always exists: `account('default')` works without being added. `listAccounts` and
 *   `getAccount` show it once it is in the registry (added) or has state (a run, an opt-out, a checkpoint, a
 *   key/value row), with `config: null` and priority 1 while it was never added.
 */
import { auditRowFrom, deliveryEventFrom, parkedRowFrom, quarantineRowFrom } from './rows';
import * as os from 'os';
import { Client, Pool, PoolClient, types as pgTypes } from 'pg';
import { ConfigError, KeyValue, OptOut, isFinal } from '../domain';
import {
  ACCOUNT_ID,
  AccountOpenOptions,
  AccountRecord,
  DEFAULT_ACCOUNT,
  NewAccount,
  PgFenceGuard,
  StoreBackend,
} from './backend';
import { inTransaction, maskUrl, migrate, openPgPool } from './pg/pool';
import { ACCOUNT_TABLES, STORE_MIGRATIONS } from './pg/store-migrations';
import { pidAlive, quarantineFingerprint } from './sqlite';
import {
  AuditEvent,
  AuditRow,
  BackfillJob,
  DEFAULT_LEASE_MS,
  DeliveryEvent,
  DetectionCommit,
  HeldRunLock,
  KnownOptOut,
  LagPoint,
  LeaseLost,
  OutboxRow,
  ParkedRow,
  QuarantineRow,
  RecordOutcomesInput,
  RunLocked,
  RunLockOwner,
  RunRecord,
  RunResult,
  RunStart,
  RunStatus,
  StateStore,
  StoreOpenError,
  StoreUnreachable,
  TargetStatus,
  runStatusFor,
} from './types';
import type { QuarantinedRecord } from '../domain';

/** A KeyValue whose writes are queued: `flush()` resolves once every write so far is committed. */
export interface PgKeyValue extends KeyValue {
  flush(): Promise<void>;
}

type Promised<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : T[K];
};

/** The StateStore contract answered with promises (the key/value view stays synchronous: it is a cache). */
export type AsyncStateStore = Omit<Promised<StateStore>, 'kv'> & { kv(namespace: string): PgKeyValue };

// int8 (COUNT, identities) as numbers: ids and counts stay far below 2^53
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 && format !== 'binary'
      ? (v: string) => Number(v)
      : (pgTypes.getTypeParser as (o: number, f?: string) => unknown)(oid, format)) as typeof pgTypes.getTypeParser,
};

type Q = Pool | PoolClient;

async function rows<T>(q: Q, sql: string, params: readonly unknown[] = []): Promise<T[]> {
  return (await q.query(sql, params as unknown[])).rows as T[];
}

async function one<T>(q: Q, sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
  return (await rows<T>(q, sql, params))[0];
}

async function run(q: Q, sql: string, params: readonly unknown[] = []): Promise<number> {
  return (await q.query(sql, params as unknown[])).rowCount ?? 0;
}

/** An exclusive (or shared) transaction-scoped advisory lock on `name` (released at COMMIT/ROLLBACK). */
async function xactLock(c: PoolClient, name: string, shared = false): Promise<void> {
  await c.query(
    shared
      ? 'SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))'
      : 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))',
    [name],
  );
}

interface OptOutDbRow {
  email: string;
  contact_id: string;
  opted_out_at: string;
  source: string | null;
  reason: string | null;
  deleted: boolean;
  state: 'active' | 'left';
  first_seen_at: string;
}

interface OutboxDbRow extends OptOutDbRow {
  target: string;
  ostate: 'queued' | 'done' | 'parked';
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
}

function toOptOut(r: OptOutDbRow): OptOut {
  return {
    email: r.email,
    contactId: r.contact_id,
    optedOutAt: r.opted_out_at,
    source: r.source,
    reason: r.reason,
    deleted: r.deleted,
  };
}

function toOutboxRow(r: OutboxDbRow): OutboxRow {
  return {
    target: r.target,
    optOut: toOptOut(r),
    state: r.ostate,
    attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at,
    lastError: r.last_error,
  };
}

function backoffSeconds(attempts: number, base: number, max: number, random: () => number): number {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempts - 1));
  return exp / 2 + random() * (exp / 2);
}

interface RunDbRow {
  id: number;
  kind: string;
  dry_run: boolean;
  started_at: string;
  finished_at: string | null;
  exit_code: number | null;
  summary: string | null;
  status: string | null;
  variant: string | null;
  owner: string | null;
  pid: number | null;
  host: string | null;
  counts: string | null;
  api_calls: string | null;
  error: string | null;
}

function runResultColumns(r: RunResult | undefined): [string | null, string | null, string | null] {
  return [r ? JSON.stringify(r.counts) : null, r ? JSON.stringify(r.apiCalls) : null, r?.variant ?? null];
}

/**
 * Outbox rows with their opt-outs. The page is chosen from the outbox alone (its `opted_out_at` copy, kept equal to
 * the opt-out's by a trigger, orders it in an index), then each row's opt-out is read by its primary key: a plan
 * that holds with or without table statistics (a new database, a burst of new rows).
 */
function outboxPage(where: string, order: string, page: string): string {
  return `SELECT o.target, o.state AS ostate, o.attempts, o.next_attempt_at, o.last_error,
         p.email, p.contact_id, p.opted_out_at, p.source, p.reason, p.deleted, p.state, p.first_seen_at
    FROM (SELECT * FROM cc_outbox o WHERE ${where} ORDER BY ${order} ${page}) o
    CROSS JOIN LATERAL (SELECT * FROM cc_opt_outs p WHERE p.account = o.account AND p.email = o.email OFFSET 0) p
   ORDER BY ${order}`;
}

interface LockDbRow {
  owner: string;
  pid: number;
  host: string;
  command: string;
  acquired_at: string;
  renewed_at: string;
  expires_at: string;
}

function toHeldLock(r: LockDbRow): HeldRunLock {
  return {
    owner: r.owner,
    pid: r.pid,
    host: r.host,
    command: r.command,
    acquiredAt: r.acquired_at,
    renewedAt: r.renewed_at,
    expiresAt: r.expires_at,
  };
}

/** One account's state in a PostgreSQL database shared with other accounts and other instances. */
export class PgStateStore implements StateStore, AsyncStateStore {
  readonly schemaVersion: number;
  private readonly kvCache = new Map<string, Map<string, string>>();
  /** The queued key/value writes, in order (never rejects: a failure is kept in kvFailure). */
  private kvChain: Promise<void> = Promise.resolve();
  private kvFailure: unknown = null;
  private closed = false;
  /** The owner whose run lock this store took: its writes check the lock is still theirs (see checkFence). */
  private fenceOwner: string | null = null;

  constructor(
    private readonly pool: Pool,
    readonly account: string,
    schemaVersion: number,
    private readonly guard: PgFenceGuard | undefined,
    private readonly onClose: (s: PgStateStore) => void = () => undefined,
  ) {
    this.schemaVersion = schemaVersion;
  }

  /** Read the account's key/value rows into the cache (done once, when the backend opens the store). */
  async load(): Promise<this> {
    const kv = await rows<{ namespace: string; key: string; value: string }>(
      this.pool,
      'SELECT namespace, key, value FROM cc_kv WHERE account = $1',
      [this.account],
    );
    for (const r of kv) this.nsCache(r.namespace).set(r.key, r.value);
    return this;
  }

  private nsCache(namespace: string): Map<string, string> {
    let m = this.kvCache.get(namespace);
    if (!m) {
      m = new Map();
      this.kvCache.set(namespace, m);
    }
    return m;
  }

  /** Wait for every queued key/value write; rethrow (once) the first that failed. */
  async flush(): Promise<void> {
    await this.kvChain;
    if (this.kvFailure !== null) {
      const err = this.kvFailure;
      this.kvFailure = null;
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
    } finally {
      this.onClose(this);
    }
  }

  /**
   * One write transaction: queued key/value writes first (ordering), then the guard (fleet lease fence), then the
   * run lock fence when `fence` (the writes the SQLite store checks), then `fn`. Any throw rolls everything back.
   */
  private async write<T>(
    fn: (c: PoolClient) => Promise<T>,
    o: { target?: string | null; fence?: boolean } = {},
  ): Promise<T> {
    if (this.closed) throw new Error(`the state store of account ${this.account} is closed`);
    await this.flush();
    return inTransaction(this.pool, async (c) => {
      await this.guarded(c, o.target);
      if (o.fence) await this.checkFence(c);
      return fn(c);
    });
  }

  private async guarded(c: PoolClient, target?: string | null): Promise<void> {
    if (!this.guard) return;
    await this.guard.check(c, target ? { account: this.account, target } : { account: this.account });
  }

  // ------------------------------------------------------------------------------------------ opt-outs

  async knownOptOuts(emails: readonly string[]): Promise<Map<string, KnownOptOut>> {
    const out = new Map<string, KnownOptOut>();
    if (emails.length === 0) return out;
    const found = await rows<OptOutDbRow>(
      this.pool,
      'SELECT * FROM cc_opt_outs WHERE account = $1 AND email = ANY($2::text[])',
      [this.account, [...new Set(emails)]],
    );
    for (const r of found) out.set(r.email, { ...toOptOut(r), state: r.state, firstSeenAt: r.first_seen_at });
    return out;
  }

  async activeOptOutEmails(): Promise<Set<string>> {
    const r = await rows<{ email: string }>(
      this.pool,
      `SELECT email FROM cc_opt_outs WHERE account = $1 AND state = 'active'`,
      [this.account],
    );
    return new Set(r.map((x) => x.email));
  }

  async countOptOuts(): Promise<{ active: number; left: number }> {
    const r = await rows<{ state: string; n: number }>(
      this.pool,
      'SELECT state, count(*) AS n FROM cc_opt_outs WHERE account = $1 GROUP BY state',
      [this.account],
    );
    return {
      active: r.find((x) => x.state === 'active')?.n ?? 0,
      left: r.find((x) => x.state === 'left')?.n ?? 0,
    };
  }

  async commitDetection(c: DetectionCommit): Promise<void> {
    const a = this.account;
    // the last of duplicates wins (the SQLite store upserts one after the other)
    const latest = new Map<string, OptOut>();
    for (const o of c.added) latest.set(o.email, o);
    // rows are written in email order: two writers of overlapping emails lock them in the same order (no deadlock)
    const added = [...latest.values()].sort((x, y) => (x.email < y.email ? -1 : x.email > y.email ? 1 : 0));
    const targets = [...new Set(c.targets)];
    await this.write(
      async (q) => {
        if (added.length > 0) {
          await q.query(
            `INSERT INTO cc_opt_outs (account, email, contact_id, opted_out_at, source, reason, deleted, state, first_seen_at, last_seen_at)
             SELECT $1, u.email, u.contact_id, u.opted_out_at, u.source, u.reason, u.deleted, 'active', $2::text, $2::text
               FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::boolean[])
                 AS u(email, contact_id, opted_out_at, source, reason, deleted)
             ON CONFLICT (account, email) DO UPDATE SET contact_id = EXCLUDED.contact_id,
               opted_out_at = EXCLUDED.opted_out_at, source = EXCLUDED.source, reason = EXCLUDED.reason,
               deleted = EXCLUDED.deleted, state = 'active', left_at = NULL, last_seen_at = EXCLUDED.last_seen_at`,
            [
              a,
              c.now,
              added.map((o) => o.email),
              added.map((o) => o.contactId),
              added.map((o) => o.optedOutAt),
              added.map((o) => o.source),
              added.map((o) => o.reason),
              added.map((o) => o.deleted),
            ],
          );
          if (targets.length > 0) {
            // how the rows are queued: by a backfill run's scan, or by a sync
            const origin =
              (await one<{ kind: string }>(q, 'SELECT kind FROM cc_runs WHERE account = $1 AND id = $2', [a, c.runId]))
                ?.kind === 'backfill'
                ? 'backfill'
                : 'sync';
            await q.query(
              `INSERT INTO cc_outbox (account, target, email, state, enqueued_at, attempts, next_attempt_at, opted_out_at, origin)
               SELECT $1, t.target, u.email, 'queued', $2::text, 0, $2::text, u.opted_out_at, $3
                 FROM unnest($4::text[], $5::text[]) AS u(email, opted_out_at) CROSS JOIN unnest($6::text[]) AS t(target)
               ON CONFLICT (account, target, email) DO UPDATE SET state = 'queued', attempts = 0,
                 next_attempt_at = EXCLUDED.next_attempt_at, last_error = NULL, enqueued_at = EXCLUDED.enqueued_at,
                 origin = EXCLUDED.origin
               WHERE cc_outbox.state <> 'queued'`,
              [a, c.now, origin, added.map((o) => o.email), added.map((o) => o.optedOutAt), targets],
            );
          }
          await this.insertEvents(
            q,
            c.runId,
            'opt-out-detected',
            c.added.map((o) => [
              o.email,
              JSON.stringify({ contactId: o.contactId, optedOutAt: o.optedOutAt, source: o.source }),
            ]),
            c.now,
          );
        }
        if (c.resubscribed.length > 0) {
          const emails = c.resubscribed.map((r) => (typeof r === 'string' ? r : r.email));
          const left = await rows<{ email: string }>(
            q,
            `UPDATE cc_opt_outs SET state = 'left', left_at = $2 WHERE account = $1 AND email = ANY($3::text[]) AND state = 'active'
             RETURNING email`,
            [a, c.now, emails],
          );
          const changed = new Set(left.map((r) => r.email));
          const events: [string, string | null][] = [];
          for (const r of c.resubscribed) {
            const email = typeof r === 'string' ? r : r.email;
            if (!changed.delete(email)) continue; // only the first sighting changed the row
            events.push([
              email,
              typeof r === 'string' ? null : JSON.stringify({ contactId: r.contactId, permission: r.permission }),
            ]);
          }
          await this.insertEvents(q, c.runId, 'left-unsubscribed-set', events, c.now);
        }
        if (c.seen && c.seen.length > 0)
          await q.query('UPDATE cc_opt_outs SET last_seen_at = $2 WHERE account = $1 AND email = ANY($3::text[])', [
            a,
            c.now,
            [...new Set(c.seen)],
          ]);
        if (c.seenDeleted && c.seenDeleted.length > 0)
          await q.query(
            `UPDATE cc_opt_outs SET deleted = true WHERE account = $1 AND email = ANY($2::text[]) AND state = 'active'`,
            [a, [...new Set(c.seenDeleted)]],
          );
        const cps = Object.entries(c.checkpoints ?? {});
        if (cps.length > 0)
          await q.query(
            `INSERT INTO cc_checkpoints (account, key, value, updated_at)
             SELECT $1, u.key, u.value, $2 FROM unnest($3::text[], $4::text[]) AS u(key, value)
             ON CONFLICT (account, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at`,
            [a, c.now, cps.map(([k]) => k), cps.map(([, v]) => v)],
          );
      },
      { fence: true },
    );
  }

  /** Events in the given order (their ids follow it). */
  private async insertEvents(
    q: PoolClient,
    runId: number | null,
    kind: string,
    list: readonly (readonly [string | null, string | null])[],
    now: string,
  ): Promise<void> {
    if (list.length === 0) return;
    await q.query(
      `INSERT INTO cc_events (account, run_id, kind, email, detail, at)
       SELECT $1, $2, $3, u.email, u.detail, $4 FROM unnest($5::text[], $6::text[]) WITH ORDINALITY AS u(email, detail, ord)
       ORDER BY u.ord`,
      [this.account, runId, kind, now, list.map((e) => e[0]), list.map((e) => e[1])],
    );
  }

  // ------------------------------------------------------------------------------------------ outbox

  async enqueueKnown(input: {
    runId: number;
    targets: readonly string[];
    since: string | null;
    redeliver: boolean;
    now: string;
  }): Promise<number> {
    const targets = [...new Set(input.targets)];
    return this.write(
      async (q) => {
        if (targets.length === 0) return 0;
        const params = [this.account, targets, input.now, input.since];
        let n = await run(
          q,
          `INSERT INTO cc_outbox (account, target, email, state, enqueued_at, attempts, next_attempt_at, opted_out_at, origin)
           SELECT $1, t.target, p.email, 'queued', $3::text, 0, $3::text, p.opted_out_at, 'backfill'
             FROM cc_opt_outs p CROSS JOIN unnest($2::text[]) AS t(target)
            WHERE p.account = $1 AND p.state = 'active' AND ($4::text IS NULL OR p.opted_out_at >= $4::text)
           ON CONFLICT (account, target, email) DO NOTHING`,
          params,
        );
        if (input.redeliver)
          n += await run(
            q,
            `UPDATE cc_outbox o SET state = 'queued', attempts = 0, next_attempt_at = $3::text, last_error = NULL,
               origin = 'redeliver'
              FROM cc_opt_outs p
             WHERE o.account = $1 AND o.target = ANY($2::text[]) AND o.state = 'done'
               AND p.account = o.account AND p.email = o.email AND p.state = 'active'
               AND ($4::text IS NULL OR p.opted_out_at >= $4::text)`,
            params,
          );
        return n;
      },
      { fence: true },
    );
  }

  async backfillCandidates(target: string, since: string | null, redeliver: boolean): Promise<OptOut[]> {
    const r = await rows<OptOutDbRow>(
      this.pool,
      `SELECT p.* FROM cc_opt_outs p
         LEFT JOIN cc_outbox o ON o.account = p.account AND o.email = p.email AND o.target = $2
        WHERE p.account = $1 AND p.state = 'active' AND ($3::text IS NULL OR p.opted_out_at >= $3::text)
          AND (o.email IS NULL OR ($4::boolean AND o.state = 'done'))
        ORDER BY p.opted_out_at, p.email`,
      [this.account, target, since, redeliver],
    );
    return r.map(toOptOut);
  }

  async dueOutbox(target: string, now: Date, limit: number): Promise<OutboxRow[]> {
    const r = await rows<OutboxDbRow>(
      this.pool,
      outboxPage(
        `o.account = $1 AND o.target = $2 AND o.state = 'queued' AND o.next_attempt_at <= $3`,
        'o.next_attempt_at, o.opted_out_at, o.email',
        'LIMIT $4',
      ),
      [this.account, target, now.toISOString(), limit],
    );
    return r.map(toOutboxRow);
  }

  async queuedOutbox(target: string, limit: number, offset: number): Promise<OutboxRow[]> {
    const r = await rows<OutboxDbRow>(
      this.pool,
      outboxPage(
        `o.account = $1 AND o.target = $2 AND o.state = 'queued'`,
        'o.opted_out_at, o.email',
        'LIMIT $3 OFFSET $4',
      ),
      [this.account, target, limit, offset],
    );
    return r.map(toOutboxRow);
  }

  /**
   * The outcomes of one batch in one transaction: the batch's outbox rows are locked (FOR UPDATE, in email order)
   * and read once, the same decisions as the SQLite store's row-by-row statements are taken in order, then the
   * history is appended and the changed rows written, each in one statement.
   */
  async recordOutcomes(input: RecordOutcomesInput): Promise<void> {
    const { target, now, policy } = input;
    const random = input.random ?? Math.random;
    const at = now.toISOString();
    const live = input.outcomes.filter((o) => o.kind !== 'planned'); // dry runs record nothing
    const emails = [...new Set(live.map((o) => o.email))].sort();
    await this.write(
      async (q) => {
        if (live.length === 0) return;
        interface Row {
          email: string;
          state: string;
          attempts: number;
          next_attempt_at: string;
          last_error: string | null;
          outcome: string | null;
          record_ids: string | null;
          completed_at: string | null;
          origin: string;
        }
        const current = new Map<string, Row>();
        for (const r of await rows<Row>(
          q,
          `SELECT email, state, attempts, next_attempt_at, last_error, outcome, record_ids, completed_at, origin
             FROM cc_outbox WHERE account = $1 AND target = $2 AND email = ANY($3::text[]) ORDER BY email FOR UPDATE`,
          [this.account, target, emails],
        ))
          current.set(r.email, r);
        const seen = new Map<string, number>();
        for (const r of await rows<{ email: string; n: number }>(
          q,
          `SELECT email, count(*) AS n FROM cc_outcomes WHERE account = $1 AND target = $2 AND email = ANY($3::text[])
           GROUP BY email`,
          [this.account, target, emails],
        ))
          seen.set(r.email, r.n);
        const history: {
          email: string;
          kind: string;
          ids: string;
          msg: string | null;
          attempt: number;
          origin: string | null;
        }[] = [];
        const changed = new Set<Row>();
        const park = (row: Row, ids: string, msg: string | null): void => {
          row.state = 'parked';
          row.outcome = 'failed-permanent';
          row.record_ids = ids;
          row.last_error = msg;
          row.attempts += 1;
          row.completed_at = at;
          changed.add(row);
        };
        for (const o of live) {
          const ids = JSON.stringify(o.recordIds ?? []);
          const msg = o.message ?? null;
          const attempt = (seen.get(o.email) ?? 0) + 1;
          seen.set(o.email, attempt);
          const row = current.get(o.email);
          history.push({ email: o.email, kind: o.kind, ids, msg, attempt, origin: row?.origin ?? null });
          const queued = row !== undefined && row.state === 'queued' ? row : null;
          if (isFinal(o.kind)) {
            if (!queued) continue;
            // a closed row keeps no error; it shows how its records were matched, when the connector says
            queued.state = 'done';
            queued.outcome = o.kind;
            queued.record_ids = ids;
            queued.completed_at = at;
            queued.last_error = o.matchedBy ? `matched by ${o.matchedBy}` : null;
            queued.attempts += 1;
            changed.add(queued);
          } else if (o.kind === 'failed-permanent') {
            if (queued) park(queued, ids, msg);
          } else if (input.deferUntil) {
            if (!queued) continue;
            queued.next_attempt_at = input.deferUntil.toISOString();
            queued.last_error = msg;
            changed.add(queued);
          } else {
            if (!queued) continue;
            const attempts = queued.attempts + 1;
            if (attempts >= policy.maxAttempts) {
              park(queued, ids, `gave up after ${attempts} attempts: ${msg ?? 'retryable failure'}`);
            } else {
              const delay = backoffSeconds(attempts, policy.backoffBaseSeconds, policy.backoffMaxSeconds, random);
              queued.attempts = attempts;
              queued.next_attempt_at = new Date(now.getTime() + delay * 1000).toISOString();
              queued.last_error = msg;
              queued.outcome = 'failed-retryable';
              changed.add(queued);
            }
          }
        }
        await q.query(
          `INSERT INTO cc_outcomes (account, run_id, target, email, kind, record_ids, message, at, attempt, origin)
           SELECT $1, $2, $3, u.email, u.kind, u.ids, u.msg, $4, u.attempt, u.origin
             FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::int[], $10::text[]) WITH ORDINALITY
               AS u(email, kind, ids, msg, attempt, origin, ord)
            ORDER BY u.ord`,
          [
            this.account,
            input.runId,
            target,
            at,
            history.map((h) => h.email),
            history.map((h) => h.kind),
            history.map((h) => h.ids),
            history.map((h) => h.msg),
            history.map((h) => h.attempt),
            history.map((h) => h.origin),
          ],
        );
        const list = [...changed];
        if (list.length > 0)
          await q.query(
            `UPDATE cc_outbox o SET state = u.state, attempts = u.attempts, next_attempt_at = u.next_attempt_at,
               last_error = u.last_error, outcome = u.outcome, record_ids = u.record_ids, completed_at = u.completed_at
              FROM unnest($3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
                AS u(email, state, attempts, next_attempt_at, last_error, outcome, record_ids, completed_at)
             WHERE o.account = $1 AND o.target = $2 AND o.email = ANY($3::text[]) AND o.email = u.email`,
            [
              this.account,
              target,
              list.map((r) => r.email),
              list.map((r) => r.state),
              list.map((r) => r.attempts),
              list.map((r) => r.next_attempt_at),
              list.map((r) => r.last_error),
              list.map((r) => r.outcome),
              list.map((r) => r.record_ids),
              list.map((r) => r.completed_at),
            ],
          );
      },
      { target, fence: true },
    );
  }

  async requeueParked(target: string | null, now: string): Promise<number> {
    return this.requeueParkedRecords({ target, now, via: 'cli' });
  }

  async requeueParkedRecords(input: {
    target: string | null;
    emails?: readonly string[] | null;
    now: string;
    via: string;
  }): Promise<number> {
    const { target, now, via } = input;
    if (input.emails && target === null) throw new Error('requeueParkedRecords: emails need a target');
    return this.write(
      async (q) => {
        type Row = { target: string; email: string; last_error: string | null };
        let list: Row[];
        if (input.emails) {
          const found = await rows<Row>(
            q,
            `SELECT target, email, last_error FROM cc_outbox
              WHERE account = $1 AND state = 'parked' AND target = $2 AND email = ANY($3::text[])
              ORDER BY email FOR UPDATE`,
            [this.account, target, [...new Set(input.emails)]],
          );
          const byEmail = new Map(found.map((r) => [r.email, r]));
          list = input.emails.map((e) => byEmail.get(e)).filter((r): r is Row => r !== undefined);
        } else {
          list = await rows<Row>(
            q,
            `SELECT target, email, last_error FROM cc_outbox
              WHERE account = $1 AND state = 'parked' AND ($2::text IS NULL OR target = $2::text)
              ORDER BY target, email FOR UPDATE`,
            [this.account, target],
          );
        }
        if (list.length === 0) return 0;
        const n = await run(
          q,
          `UPDATE cc_outbox o SET state = 'queued', attempts = 0, next_attempt_at = $2, outcome = NULL, origin = 'requeue'
             FROM unnest($3::text[], $4::text[]) AS u(target, email)
            WHERE o.account = $1 AND o.state = 'parked' AND o.email = ANY($4::text[])
              AND o.target = u.target AND o.email = u.email`,
          [this.account, now, list.map((r) => r.target), list.map((r) => r.email)],
        );
        await q.query(
          `INSERT INTO cc_events (account, run_id, kind, email, detail, at)
           SELECT $1, NULL, 'requeued', u.email, u.detail, $2 FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(email, detail, ord)
           ORDER BY u.ord`,
          [
            this.account,
            now,
            list.map((r) => r.email),
            list.map((r) => JSON.stringify({ target: r.target, via, parkedFor: r.last_error })),
          ],
        );
        return n;
      },
      { target, fence: true },
    );
  }

  async parkedOutbox(target: string, limit: number, offset: number): Promise<ParkedRow[]> {
    const r = await rows<{
      target: string;
      email: string;
      opted_out_at: string;
      completed_at: string | null;
      attempts: number;
      last_error: string | null;
    }>(
      this.pool,
      `SELECT o.target, o.email, p.opted_out_at, o.completed_at, o.attempts, o.last_error
         FROM cc_outbox o JOIN cc_opt_outs p ON p.account = o.account AND p.email = o.email
        WHERE o.account = $1 AND o.target = $2 AND o.state = 'parked' ORDER BY p.opted_out_at, o.email LIMIT $3 OFFSET $4`,
      [this.account, target, limit, offset],
    );
    return r.map(parkedRowFrom);
  }

  async requeueNotFound(closedBefore: string, now: string): Promise<number> {
    return this.write(
      (q) =>
        run(
          q,
          `UPDATE cc_outbox o SET state = 'queued', attempts = 0, next_attempt_at = $3, last_error = NULL
             FROM cc_opt_outs p
            WHERE o.account = $1 AND o.state = 'done' AND o.outcome = 'not-found' AND o.completed_at < $2
              AND p.account = o.account AND p.email = o.email AND p.state = 'active'`,
          [this.account, closedBefore, now],
        ),
      { fence: true },
    );
  }

  async deferQueued(target: string, until: string): Promise<number> {
    return this.write(
      (q) =>
        run(
          q,
          `UPDATE cc_outbox SET next_attempt_at = $3
            WHERE account = $1 AND target = $2 AND state = 'queued' AND next_attempt_at < $3`,
          [this.account, target, until],
        ),
      { target, fence: true },
    );
  }

  async countDue(target: string, now: Date, limit = -1): Promise<number> {
    const r = await one<{ n: number }>(
      this.pool,
      `SELECT count(*) AS n FROM (SELECT 1 FROM cc_outbox
          WHERE account = $1 AND target = $2 AND state = 'queued' AND next_attempt_at <= $3 LIMIT $4) x`,
      [this.account, target, now.toISOString(), limit < 0 ? null : limit],
    );
    return r?.n ?? 0;
  }

  async targetStatus(targets: readonly string[], now: Date): Promise<TargetStatus[]> {
    const list = [...new Set(targets)];
    const counts = await rows<{ target: string; state: string; outcome: string | null; n: number }>(
      this.pool,
      `SELECT target, state, outcome, count(*) AS n FROM cc_outbox
        WHERE account = $1 AND target = ANY($2::text[]) AND state <> 'queued'
        GROUP BY target, state, outcome`,
      [this.account, list],
    );
    const times = await rows<{
      target: string;
      oldest: string | null;
      oldest_enqueued: string | null;
      last: string | null;
      due: number;
      queued: number;
    }>(
      this.pool,
      `SELECT t.target,
          (SELECT min(opted_out_at) FROM cc_outbox WHERE account = $1 AND target = t.target AND state = 'queued') AS oldest,
          (SELECT min(enqueued_at) FROM cc_outbox WHERE account = $1 AND target = t.target AND state = 'queued') AS oldest_enqueued,
          (SELECT max(completed_at) FROM cc_outbox WHERE account = $1 AND target = t.target AND state = 'done') AS last,
          (SELECT count(*) FROM cc_outbox
            WHERE account = $1 AND target = t.target AND state = 'queued' AND next_attempt_at <= $3) AS due,
          (SELECT count(*) FROM cc_outbox WHERE account = $1 AND target = t.target AND state = 'queued') AS queued
         FROM unnest($2::text[]) AS t(target)`,
      [this.account, list, now.toISOString()],
    );
    const byTarget = new Map(times.map((t) => [t.target, t]));
    return targets.map((target) => {
      const done: Record<string, number> = {};
      const t = byTarget.get(target);
      const queued = t?.queued ?? 0;
      let parked = 0;
      for (const c of counts) {
        if (c.target !== target) continue;
        if (c.state === 'parked') parked += c.n;
        else if (c.outcome) done[c.outcome] = (done[c.outcome] ?? 0) + c.n;
      }
      return {
        target,
        queued,
        due: queued === 0 ? 0 : (t?.due ?? 0),
        parked,
        done,
        oldestQueuedOptOutAt: queued === 0 ? null : (t?.oldest ?? null),
        oldestQueuedAt: queued === 0 ? null : (t?.oldest_enqueued ?? null),
        lastDeliveredAt: t?.last ?? null,
      };
    });
  }

  // ------------------------------------------------------------------------------------ checkpoints, kv

  async getCheckpoint(key: string): Promise<string | null> {
    const r = await one<{ value: string }>(
      this.pool,
      'SELECT value FROM cc_checkpoints WHERE account = $1 AND key = $2',
      [this.account, key],
    );
    return r?.value ?? null;
  }

  async setCheckpoint(key: string, value: string, now: string): Promise<void> {
    await this.write(
      (q) =>
        q.query(
          `INSERT INTO cc_checkpoints (account, key, value, updated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (account, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at`,
          [this.account, key, value, now],
        ),
      { fence: true },
    );
  }

  kv(namespace: string): PgKeyValue {
    const cache = this.nsCache(namespace);
    return {
      get: (key) => cache.get(key) ?? null,
      set: (key, value) => this.kvSet(namespace, key, value, true),
      // a rotated credential: written even under a stale fence (see KeyValue.setCredential)
      setCredential: (key, value) => this.kvSet(namespace, key, value, false),
      flush: () => this.flush(),
    };
  }

  private kvSet(namespace: string, key: string, value: string, fenced: boolean): void {
    {
      {
        if (this.closed) throw new Error(`the state store of account ${this.account} is closed`);
        const cache = this.nsCache(namespace);
        cache.set(key, value);
        const at = new Date().toISOString();
        // queued in order; each write is its own transaction under the guard
        this.kvChain = this.kvChain.then(() =>
          inTransaction(this.pool, async (c) => {
            if (fenced) await this.guarded(c);
            await c.query(
              `INSERT INTO cc_kv (account, namespace, key, value, updated_at) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (account, namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at`,
              [this.account, namespace, key, value, at],
            );
          }).catch((err: unknown) => {
            this.kvFailure ??= err;
          }),
        );
      }
    }
  }

  // ------------------------------------------------------------------------------- runs, quarantine, audit

  async startRun(kind: string, dryRun: boolean, now: string, who?: RunStart): Promise<number> {
    return this.write(async (q) => {
      // one startRun of this account at a time (across instances): the id and the abandoned marks are consistent
      await xactLock(q, `cc-optout:runs:${this.account}`);
      const next = await one<{ id: number }>(
        q,
        'SELECT COALESCE(max(id), 0) + 1 AS id FROM cc_runs WHERE account = $1',
        [this.account],
      );
      const id = next!.id;
      await q.query(
        `INSERT INTO cc_runs (account, id, kind, dry_run, started_at, status, owner, pid, host)
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8)`,
        [this.account, id, kind, dryRun, now, who?.owner ?? null, who?.pid ?? null, who?.host ?? null],
      );
      // under an external lease other lanes' runs may be live: only the run lock's holder may conclude they ended
      if (who?.exclusive === false) return id;
      // the caller holds the run lock: no other run can still be going, whatever its row says. Under fleet leases
      // (a guard) the account's lanes run side by side: only runs whose owner holds no live lease are gone
      const live = this.guard ? [...(await this.fleetOwners(q, now))] : [];
      await q.query(
        `UPDATE cc_runs SET status = 'abandoned',
           error = COALESCE(error, 'ended without recording a result (killed, crashed, or its run lease lapsed); found by run #' || $2::int || ' at ' || $3::text)
         WHERE account = $1 AND status = 'running' AND id <> $2 AND (owner IS NULL OR NOT (owner = ANY($4::text[])))`,
        [this.account, id, now, live],
      );
      return id;
    });
  }

  async finishRun(id: number, exitCode: number, summary: unknown, now: string, result?: RunResult): Promise<void> {
    await this.write(
      (q) =>
        q.query(
          `UPDATE cc_runs SET finished_at = $3, exit_code = $4, summary = $5, status = $6, error = NULL,
             counts = COALESCE($7, counts), api_calls = COALESCE($8, api_calls), variant = COALESCE($9, variant)
           WHERE account = $1 AND id = $2`,
          [
            this.account,
            id,
            now,
            exitCode,
            JSON.stringify(summary),
            runStatusFor(exitCode),
            ...runResultColumns(result),
          ],
        ),
      { fence: true },
    );
  }

  async failRun(id: number, exitCode: number, error: string, now: string, result?: RunResult): Promise<void> {
    // no lease check and no guard: a run that lost its lease still says how it ended (its own row only)
    await this.kvChain; // after the queued key/value writes (a failed one is still reported by the next flush)
    await this.pool.query(
      `UPDATE cc_runs SET finished_at = $3, exit_code = $4, status = 'failed', error = $5,
         counts = COALESCE($6, counts), api_calls = COALESCE($7, api_calls), variant = COALESCE($8, variant)
       WHERE account = $1 AND id = $2`,
      [this.account, id, now, exitCode, error, ...runResultColumns(result)],
    );
  }

  async recentRuns(limit: number, now: Date = new Date()): Promise<RunRecord[]> {
    const r = await rows<RunDbRow>(this.pool, 'SELECT * FROM cc_runs WHERE account = $1 ORDER BY id DESC LIMIT $2', [
      this.account,
      limit,
    ]);
    return this.toRunRecords(r, now);
  }

  async getRun(id: number, now: Date = new Date()): Promise<RunRecord | null> {
    const r = await rows<RunDbRow>(this.pool, 'SELECT * FROM cc_runs WHERE account = $1 AND id = $2', [
      this.account,
      id,
    ]);
    return r.length > 0 ? (await this.toRunRecords(r, now))[0]! : null;
  }

  /** As the SQLite store: a `running` row is live only while its owner holds a valid run lease. */
  /** Whether the fleet's lease table (src/fleet/postgres.ts, migration set "fleet") is in this database. */
  private fleetTable = false;

  /**
   * The owners of this account's fleet leases (`cc_leases`: the account's and its targets' deliver leases) that
   * are valid at `now`; none when the fleet tables are not there.
   */
  private async fleetOwners(q: Q, now: string): Promise<Set<string>> {
    if (!this.fleetTable) {
      const t = await one<{ t: string | null }>(q, `SELECT to_regclass('cc_leases')::text AS t`);
      if (!t?.t) return new Set();
      this.fleetTable = true;
    }
    const r = await rows<{ owner: string }>(
      q,
      `SELECT DISTINCT owner FROM cc_leases
        WHERE account = $1 AND owner IS NOT NULL AND expires_at >= $2::timestamptz`,
      [this.account, now],
    );
    return new Set(r.map((x) => x.owner));
  }

  private async toRunRecords(list: readonly RunDbRow[], now: Date): Promise<RunRecord[]> {
    const lock = await this.runLock();
    // a run under a fleet lease (no run lock: the lease is the lock) is live while its owner's lease is
    const fleet = list.some((r) => r.status === 'running' && r.owner !== null)
      ? await this.fleetOwners(this.pool, now.toISOString())
      : new Set<string>();
    const newest =
      (
        await one<{ id: number | null }>(this.pool, 'SELECT max(id) AS id FROM cc_runs WHERE account = $1', [
          this.account,
        ])
      )?.id ?? null;
    const leaseValid =
      lock !== null &&
      Date.parse(lock.expiresAt) >= now.getTime() &&
      !(lock.host === os.hostname() && !pidAlive(lock.pid));
    return list.map((r) => {
      let status = (r.status ?? (r.finished_at === null ? 'running' : runStatusFor(r.exit_code ?? 1))) as RunStatus;
      let error = r.error;
      if (status === 'running') {
        const live =
          (leaseValid && (r.owner !== null ? lock.owner === r.owner : r.id === newest)) ||
          (r.owner !== null && fleet.has(r.owner));
        if (!live) {
          status = 'abandoned';
          error ??= 'ended without recording a result (killed, crashed, or its run lease lapsed)';
        }
      }
      const summary = r.summary
        ? (JSON.parse(r.summary) as {
            targets?: Record<string, { outcomes?: Record<string, number> }>;
            apiCalls?: Record<string, number>;
          })
        : null;
      const fromSummary: Record<string, Partial<Record<string, number>>> = {};
      for (const [t, v] of Object.entries(summary?.targets ?? {}))
        if (v && typeof v === 'object' && v.outcomes) fromSummary[t] = v.outcomes;
      return {
        id: r.id,
        kind: r.kind,
        dryRun: r.dry_run,
        startedAt: r.started_at,
        finishedAt: r.finished_at,
        exitCode: r.exit_code,
        summary,
        status,
        variant: r.variant,
        counts: r.counts ? (JSON.parse(r.counts) as Record<string, Partial<Record<string, number>>>) : fromSummary,
        apiCalls: r.api_calls ? (JSON.parse(r.api_calls) as Record<string, number>) : (summary?.apiCalls ?? {}),
        error,
        pid: r.pid,
        host: r.host,
      };
    });
  }

  async lagPoints(limit: number): Promise<LagPoint[]> {
    const r = await rows<{ target: string; written_at: string; opted_out_at: string }>(
      this.pool,
      `SELECT target, written_at, opted_out_at FROM (
         SELECT h.target, min(h.at) AS written_at, p.opted_out_at
           FROM cc_outcomes h JOIN cc_opt_outs p ON p.account = h.account AND p.email = h.email
          WHERE h.account = $1 AND h.kind = 'applied' AND COALESCE(h.origin, 'sync') = 'sync'
          GROUP BY h.target, h.email, p.opted_out_at
       ) x ORDER BY written_at DESC LIMIT $2`,
      [this.account, limit],
    );
    return r
      .map((x) => ({
        target: x.target,
        writtenAt: x.written_at,
        lagSeconds: Math.max(0, (Date.parse(x.written_at) - Date.parse(x.opted_out_at)) / 1000),
      }))
      .reverse();
  }

  async quarantine(runId: number | null, source: string, rec: QuarantinedRecord, now: string): Promise<void> {
    let raw: string;
    try {
      raw = JSON.stringify(rec.raw) ?? 'undefined';
    } catch {
      raw = String(rec.raw);
    }
    // one row per record: seen again, it gets the latest reason, raw record, run and time, and a count (an
    // UPDATE first: an INSERT .. ON CONFLICT would use up an id each time, and ids follow the SQLite store's)
    const fingerprint = quarantineFingerprint(rec.recordId, raw);
    await this.write(async (q) => {
      const seenAgain = await run(
        q,
        `UPDATE cc_quarantine SET run_id = $2, record_id = $4, reason = $5, raw = $6, last_seen_at = $7,
           seen_count = seen_count + 1
         WHERE account = $1 AND source = $3 AND fingerprint = $8`,
        [this.account, runId, source, rec.recordId, rec.reason, raw, now, fingerprint],
      );
      if (seenAgain > 0) return;
      await q.query(
        `INSERT INTO cc_quarantine (account, run_id, source, record_id, reason, raw, at, fingerprint, last_seen_at, seen_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, 1)
         ON CONFLICT (account, source, fingerprint) DO UPDATE SET run_id = EXCLUDED.run_id, record_id = EXCLUDED.record_id,
           reason = EXCLUDED.reason, raw = EXCLUDED.raw, last_seen_at = EXCLUDED.last_seen_at,
           seen_count = cc_quarantine.seen_count + 1`,
        [this.account, runId, source, rec.recordId, rec.reason, raw, now, fingerprint],
      );
    });
  }

  async quarantined(limit: number): Promise<QuarantineRow[]> {
    const r = await rows<{
      id: number;
      run_id: number | null;
      source: string;
      record_id: string | null;
      reason: string;
      raw: string;
      at: string;
      last_seen_at: string;
      seen_count: number;
    }>(this.pool, 'SELECT * FROM cc_quarantine WHERE account = $1 ORDER BY last_seen_at DESC, id DESC LIMIT $2', [
      this.account,
      limit,
    ]);
    return r.map(quarantineRowFrom);
  }

  async countQuarantined(): Promise<number> {
    const r = await one<{ n: number }>(this.pool, 'SELECT count(*) AS n FROM cc_quarantine WHERE account = $1', [
      this.account,
    ]);
    return r?.n ?? 0;
  }

  async addEvent(
    runId: number | null,
    kind: string,
    email: string | null,
    detail: string | null,
    now: string,
  ): Promise<void> {
    await this.write((q) =>
      q.query('INSERT INTO cc_events (account, run_id, kind, email, detail, at) VALUES ($1, $2, $3, $4, $5, $6)', [
        this.account,
        runId,
        kind,
        email,
        detail,
        now,
      ]),
    );
  }

  async events(since: string | null, kinds?: readonly string[], runId: number | null = null): Promise<AuditEvent[]> {
    return rows<AuditEvent>(
      this.pool,
      `SELECT at, kind, email, detail FROM cc_events
        WHERE account = $1 AND ($2::text IS NULL OR at >= $2::text) AND ($3::int IS NULL OR run_id = $3::int)
          AND ($4::text[] IS NULL OR kind = ANY($4::text[]))
        ORDER BY id`,
      [this.account, since, runId, kinds ? [...new Set(kinds)] : null],
    );
  }

  async audit(since: string | null, runId: number | null = null): Promise<AuditRow[]> {
    // the first `applied` delivery is the CRM write; later deliveries (a redeliver finding it already suppressed)
    // add to the history and never replace it
    const r = await this.report<{
      email: string;
      contact_id: string;
      target: string;
      opted_out_at: string;
      enqueued_at: string;
      completed_at: string | null;
      record_ids: string | null;
      state: string;
      outcome: string | null;
      attempts: number;
      last_error: string | null;
      first_applied_at: string | null;
      first_applied_ids: string | null;
      last_kind: string | null;
      last_at: string | null;
      deliveries: number;
    }>(
      // one pass over the account's delivery history (per record and target: how many, the first applied, the
      // last), joined to the outbox: the same answer as a lookup per row, at a cost that does not depend on a plan
      `WITH h AS (
         SELECT target, email, count(*) AS deliveries, min(id) FILTER (WHERE kind = 'applied') AS first_applied_id,
                max(id) AS last_id
           FROM cc_outcomes WHERE account = $1 GROUP BY target, email)
       SELECT p.email, p.contact_id, o.target, p.opted_out_at, o.enqueued_at, o.completed_at, o.record_ids, o.state,
              o.outcome, o.attempts, o.last_error,
              fa.at AS first_applied_at, fa.record_ids AS first_applied_ids, la.kind AS last_kind, la.at AS last_at,
              COALESCE(h.deliveries, 0) AS deliveries
         FROM cc_outbox o JOIN cc_opt_outs p ON p.account = o.account AND p.email = o.email
         LEFT JOIN h ON h.target = o.target AND h.email = o.email
         LEFT JOIN cc_outcomes fa ON fa.id = h.first_applied_id
         LEFT JOIN cc_outcomes la ON la.id = h.last_id
        WHERE o.account = $1
          AND ($2::text IS NULL OR p.opted_out_at >= $2::text OR o.completed_at >= $2::text)
          -- audit --run N: the records that run delivered, or detected
          AND ($3::int IS NULL
               OR (o.target, o.email) IN (SELECT target, email FROM cc_outcomes WHERE account = $1 AND run_id = $3::int)
               OR o.email IN (SELECT email FROM cc_events WHERE account = $1 AND run_id = $3::int AND kind = 'opt-out-detected'))
        ORDER BY p.opted_out_at, p.email, o.target`,
      [this.account, since, runId],
    );
    return r.map(auditRowFrom);
  }

  /**
   * A report over the whole account (audit): hash joins, never nested loops, whatever the planner believes (a new
   * database has no statistics until autovacuum's first ANALYZE: a nested loop then costs seconds, not ms).
   */
  private async report<T>(sql: string, params: readonly unknown[]): Promise<T[]> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN READ ONLY');
      await c.query('SET LOCAL enable_nestloop = off');
      const out = await rows<T>(c, sql, params);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  async deliveryHistory(since: string | null, runId: number | null = null): Promise<DeliveryEvent[]> {
    const r = await rows<{
      id: number;
      at: string;
      run_id: number | null;
      run_kind: string | null;
      target: string;
      email: string;
      contact_id: string | null;
      attempt: number | null;
      origin: string | null;
      kind: string;
      record_ids: string | null;
      message: string | null;
    }>(
      this.pool,
      `SELECT h.id, h.at, h.run_id, r.kind AS run_kind, h.target, h.email, p.contact_id, h.attempt, h.origin, h.kind,
              h.record_ids, h.message
         FROM cc_outcomes h
         LEFT JOIN cc_runs r ON r.account = h.account AND r.id = h.run_id
         LEFT JOIN cc_opt_outs p ON p.account = h.account AND p.email = h.email
        WHERE h.account = $1 AND ($2::text IS NULL OR h.at >= $2::text) AND ($3::int IS NULL OR h.run_id = $3::int)
        ORDER BY h.id`,
      [this.account, since, runId],
    );
    return r.map(deliveryEventFrom);
  }

  // ------------------------------------------------------------------------------------------ run lock

  private lockName(): string {
    return `cc-optout:run-lock:${this.account}`;
  }

  /**
   * Throws LeaseLost when this store took the run lock and another holder has it now (or `unlock` removed it).
   * Holds the lock's advisory lock shared until the transaction ends: a takeover waits for this write to commit.
   */
  private async checkFence(c: PoolClient): Promise<void> {
    if (this.fenceOwner === null) return;
    await xactLock(c, this.lockName(), true);
    const r = await one<LockDbRow>(c, 'SELECT * FROM cc_run_lock WHERE account = $1', [this.account]);
    if (r?.owner === this.fenceOwner) return;
    throw new LeaseLost(
      r
        ? `this run's lock was taken over by cc-optout ${r.command} (pid ${r.pid} on ${r.host}, since ${r.acquired_at}): nothing more is committed by this run`
        : "this run's lock was removed (`cc-optout unlock`?): nothing more is committed by this run",
    );
  }

  async runLock(): Promise<HeldRunLock | null> {
    const r = await one<LockDbRow>(this.pool, 'SELECT * FROM cc_run_lock WHERE account = $1', [this.account]);
    return r ? toHeldLock(r) : null;
  }

  async acquireRunLock(lock: RunLockOwner, isAlive: (pid: number) => boolean = pidAlive): Promise<void> {
    const leaseMs = lock.leaseMs ?? DEFAULT_LEASE_MS;
    await inTransaction(this.pool, async (q) => {
      await xactLock(q, this.lockName());
      const r = await one<LockDbRow>(q, 'SELECT * FROM cc_run_lock WHERE account = $1', [this.account]);
      const held = r ? toHeldLock(r) : null;
      if (held && held.owner !== lock.owner) {
        const deadHere = held.host === lock.host && !isAlive(held.pid);
        const expired = Date.parse(lock.now) > Date.parse(held.expiresAt);
        if (!deadHere && !expired) {
          throw new RunLocked(
            `another cc-optout ${held.command} is running (pid ${held.pid} on ${held.host}, since ${held.acquiredAt}; lease renewed ${held.renewedAt}, ` +
              `valid until ${held.expiresAt}); runs must not overlap (they would race the Constant Contact refresh token). ` +
              `A holder that is gone is taken over once its lease expires, or at once with \`cc-optout unlock\`.`,
          );
        }
        await q.query(
          `INSERT INTO cc_events (account, run_id, kind, email, detail, at) VALUES ($1, NULL, 'run-lock-taken-over', NULL, $2, $3)`,
          [
            this.account,
            JSON.stringify({ ...held, reason: deadHere ? 'holder process is gone (same host)' : 'lease expired' }),
            lock.now,
          ],
        );
      }
      const expiresAt = new Date(Date.parse(lock.now) + leaseMs).toISOString();
      await q.query(
        `INSERT INTO cc_run_lock (account, owner, pid, host, command, acquired_at, renewed_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
         ON CONFLICT (account) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid, host = EXCLUDED.host,
           command = EXCLUDED.command, acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at,
           expires_at = EXCLUDED.expires_at`,
        [this.account, lock.owner, lock.pid, lock.host, lock.command, lock.now, expiresAt],
      );
    });
    this.fenceOwner = lock.owner;
  }

  async renewRunLock(owner: string, now: string, leaseMs: number = DEFAULT_LEASE_MS): Promise<boolean> {
    const expiresAt = new Date(Date.parse(now) + leaseMs).toISOString();
    return (
      (await run(
        this.pool,
        'UPDATE cc_run_lock SET renewed_at = $3, expires_at = $4 WHERE account = $1 AND owner = $2',
        [this.account, owner, now, expiresAt],
      )) > 0
    );
  }

  async releaseRunLock(owner: string | null): Promise<HeldRunLock | null> {
    if (owner !== null && owner === this.fenceOwner) this.fenceOwner = null;
    return inTransaction(this.pool, async (q) => {
      await xactLock(q, this.lockName());
      const r = await one<LockDbRow>(q, 'SELECT * FROM cc_run_lock WHERE account = $1', [this.account]);
      if (!r || (owner !== null && r.owner !== owner)) return null;
      await q.query('DELETE FROM cc_run_lock WHERE account = $1', [this.account]);
      return toHeldLock(r);
    });
  }

  // ------------------------------------------------------------------------------------------ backfill

  async openBackfill(since: string | null, targets: readonly string[], now: string): Promise<BackfillJob> {
    const key = JSON.stringify([...targets].sort());
    const row = await this.write(
      async (q) => {
        await xactLock(q, `cc-optout:backfills:${this.account}`);
        const existing = await one<{
          id: number;
          since: string | null;
          targets: string;
          started_at: string;
          scan_completed_at: string | null;
          finished_at: string | null;
        }>(
          q,
          `SELECT * FROM cc_backfills WHERE account = $1 AND finished_at IS NULL AND targets = $2
             AND since IS NOT DISTINCT FROM $3::text ORDER BY id DESC LIMIT 1`,
          [this.account, key, since],
        );
        if (existing) return existing;
        const id = (await one<{ id: number }>(
          q,
          'SELECT COALESCE(max(id), 0) + 1 AS id FROM cc_backfills WHERE account = $1',
          [this.account],
        ))!.id;
        await q.query(
          'INSERT INTO cc_backfills (account, id, since, targets, started_at) VALUES ($1, $2, $3, $4, $5)',
          [this.account, id, since, key, now],
        );
        return { id, since, targets: key, started_at: now, scan_completed_at: null, finished_at: null };
      },
      { fence: true },
    );
    return {
      id: row.id,
      since: row.since,
      targets: JSON.parse(row.targets) as string[],
      startedAt: row.started_at,
      scanCompletedAt: row.scan_completed_at,
      finishedAt: row.finished_at,
    };
  }

  async markBackfillScanned(id: number, now: string): Promise<void> {
    await this.write(
      (q) =>
        q.query('UPDATE cc_backfills SET scan_completed_at = $3 WHERE account = $1 AND id = $2', [
          this.account,
          id,
          now,
        ]),
      { fence: true },
    );
  }

  async finishBackfill(id: number, now: string): Promise<void> {
    await this.write(
      (q) =>
        q.query('UPDATE cc_backfills SET finished_at = $3 WHERE account = $1 AND id = $2', [this.account, id, now]),
      { fence: true },
    );
  }
}

// ------------------------------------------------------------------------------------------ the backend

interface AccountDbRow {
  id: string;
  config: unknown;
  priority: number;
  created_at: string;
  updated_at: string;
}

function toAccount(r: AccountDbRow): AccountRecord {
  return { id: r.id, config: r.config, priority: r.priority, createdAt: r.created_at, updatedAt: r.updated_at };
}

function checkAccountId(id: string, field = 'account'): void {
  if (typeof id !== 'string' || !ACCOUNT_ID.test(id))
    throw new ConfigError([
      `${field}: ${JSON.stringify(id)} is not an account id (lower-case letters, digits, - and _, 1-64 characters, starting with a letter or digit)`,
    ]);
}

export class PgBackend implements StoreBackend {
  readonly kind = 'postgres' as const;
  private readonly open = new Set<PgStateStore>();

  constructor(
    readonly pool: Pool,
    readonly location: string,
    readonly schemaVersion: number,
  ) {}

  async account(id: string, opts: AccountOpenOptions = {}): Promise<StateStore> {
    checkAccountId(id);
    if (id !== DEFAULT_ACCOUNT) {
      const known = await one<{ id: string }>(this.pool, 'SELECT id FROM cc_accounts WHERE id = $1', [id]);
      if (!known)
        throw new ConfigError([
          `account ${id}: not in the account registry of ${this.location} (add it with \`cc-optout accounts add ${id}\`)`,
        ]);
    }
    const store = new PgStateStore(this.pool, id, this.schemaVersion, opts.guard, (s) => this.open.delete(s));
    await store.load();
    this.open.add(store);
    return store;
  }

  /** The account store itself (typed as what it is: every method returns a promise). */
  async pgAccount(id: string, opts: AccountOpenOptions = {}): Promise<PgStateStore> {
    return (await this.account(id, opts)) as PgStateStore;
  }

  private async implicitDefault(): Promise<AccountRecord | null> {
    const r = await one<{ first: string | null; last: string | null }>(
      this.pool,
      `SELECT LEAST((SELECT min(started_at) FROM cc_runs WHERE account = $1),
                    (SELECT min(first_seen_at) FROM cc_opt_outs WHERE account = $1),
                    (SELECT min(updated_at) FROM cc_checkpoints WHERE account = $1),
                    (SELECT min(updated_at) FROM cc_kv WHERE account = $1)) AS first,
              GREATEST((SELECT max(started_at) FROM cc_runs WHERE account = $1),
                    (SELECT max(last_seen_at) FROM cc_opt_outs WHERE account = $1),
                    (SELECT max(updated_at) FROM cc_checkpoints WHERE account = $1),
                    (SELECT max(updated_at) FROM cc_kv WHERE account = $1)) AS last`,
      [DEFAULT_ACCOUNT],
    );
    if (!r?.first) return null;
    return { id: DEFAULT_ACCOUNT, config: null, priority: 1, createdAt: r.first, updatedAt: r.last ?? r.first };
  }

  async listAccounts(): Promise<AccountRecord[]> {
    const list = (await rows<AccountDbRow>(this.pool, 'SELECT * FROM cc_accounts ORDER BY id')).map(toAccount);
    if (!list.some((a) => a.id === DEFAULT_ACCOUNT)) {
      const d = await this.implicitDefault();
      if (d) {
        list.push(d);
        list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      }
    }
    return list;
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    const r = await one<AccountDbRow>(this.pool, 'SELECT * FROM cc_accounts WHERE id = $1', [id]);
    if (r) return toAccount(r);
    return id === DEFAULT_ACCOUNT ? this.implicitDefault() : null;
  }

  async putAccount(a: NewAccount, now: string): Promise<AccountRecord> {
    checkAccountId(a.id, 'id');
    const priority = a.priority ?? 1;
    if (!Number.isInteger(priority) || priority < 0)
      throw new ConfigError([`priority: ${String(priority)} is not a whole number of 0 or more (account ${a.id})`]);
    let config: string;
    try {
      config = JSON.stringify(a.config ?? null);
    } catch (err) {
      throw new ConfigError([`config: account ${a.id}'s config is not JSON (${(err as Error).message})`]);
    }
    const r = await one<AccountDbRow>(
      this.pool,
      `INSERT INTO cc_accounts (id, config, priority, created_at, updated_at) VALUES ($1, $2::jsonb, $3, $4, $4)
       ON CONFLICT (id) DO UPDATE SET config = EXCLUDED.config, priority = EXCLUDED.priority, updated_at = EXCLUDED.updated_at
       RETURNING *`,
      [a.id, config, priority, now],
    );
    return toAccount(r!);
  }

  async removeAccount(id: string): Promise<boolean> {
    checkAccountId(id);
    return inTransaction(this.pool, async (q) => {
      // the delivery history is append-only except for this: the whole account goes
      await q.query(`SELECT set_config('cc_optout.remove_account', $1, true)`, [id]);
      let n = 0;
      for (const table of ACCOUNT_TABLES) n += await run(q, `DELETE FROM ${table} WHERE account = $1`, [id]);
      n += await run(q, 'DELETE FROM cc_accounts WHERE id = $1', [id]);
      return n > 0;
    });
  }

  async close(): Promise<void> {
    const failures: unknown[] = [];
    for (const s of [...this.open]) await s.close().catch((err: unknown) => failures.push(err));
    await this.pool.end();
    if (failures.length > 0) throw failures[0];
  }
}

/** What to check when the server cannot be used (the URL is masked; the password is never shown). */
function openProblem(err: unknown, url: URL | null): string {
  const e = err as { code?: string; message?: string };
  const host = url ? `${url.hostname || 'localhost'}:${url.port || '5432'}` : 'the server';
  const db = url ? decodeURIComponent(url.pathname.replace(/^\//, '')) || '(the user name)' : '';
  const user = url ? decodeURIComponent(url.username) || '(the OS user)' : '';
  const msg = String(e.message ?? err);
  switch (e.code) {
    case 'ECONNREFUSED':
      return `cannot connect: nothing accepts connections at ${host}: is PostgreSQL running there, and are the host and port right?`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot connect: host ${url?.hostname ?? ''} not found: check the host name`;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `cannot connect: no answer from ${host} (${e.code}): check the host, the port and any firewall`;
    case '28P01':
      return `cannot connect: password authentication failed for user ${user}: check the user and the password (the password is not shown)`;
    case '28000':
      return `cannot connect: the server refuses user ${user} from this host (${msg}): check the user and the server's pg_hba.conf`;
    case '3D000':
      return `database ${db} does not exist: create it (createdb ${db}) or fix the database name`;
    case '42501':
      return `user ${user} may not create or change the store's tables (${msg}): grant it CREATE on database ${db}, or let the database owner start cc-optout once`;
    case '53300':
      return `the server has no connection free (${msg}): raise max_connections or lower the pool size`;
  }
  if (/client password must be a (non-empty )?string/i.test(msg))
    return `cannot connect: the server asks for a password for user ${user} and the URL has none: put it in the URL (as a \${ENV} reference in store.url, e.g. postgres://${user}:\${CC_OPTOUT_DB_PASSWORD}@...) or set PGPASSWORD`;
  if (/timeout/i.test(msg))
    return `cannot connect: no answer from ${host} in time: check the host, the port and any firewall`;
  if (/ssl/i.test(msg)) return `cannot connect: ${msg}: check sslmode in the URL and the server's SSL settings`;
  return `cannot be used as a cc-optout state store: ${msg}`;
}

/** Errors that mean "the server is not reachable (yet)", not "the store is configured wrong". */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNRESET',
  '57P03', // the database system is starting up
  '53300', // too many connections
]);

function isUnreachable(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (e && typeof e.code === 'string' && UNREACHABLE_CODES.has(e.code)) return true;
  return /timeout|Connection terminated unexpectedly/i.test(String(e?.message ?? ''));
}

/** The error for a server that cannot be used: StoreUnreachable (transient) or StoreOpenError (config, exit 2). */
function openError(err: unknown, location: string, parsed: URL | null): Error {
  const problem = scrub(openProblem(err, parsed), parsed);
  return isUnreachable(err)
    ? new StoreUnreachable(location, problem)
    : new StoreOpenError(location, problem, 'store.url');
}

/** Remove a URL's password (raw and decoded, in its user part or a query parameter) from a message. */
function scrub(text: string, url: URL | null): string {
  if (!url) return text;
  const secrets = new Set<string>();
  if (url.password) secrets.add(url.password).add(safeDecode(url.password));
  for (const [key, value] of url.searchParams)
    if (/^(password|sslpassword)$/i.test(key) && value) secrets.add(value).add(encodeURIComponent(value));
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Open the PostgreSQL store at `url` (`postgres://user:password@host:port/db`): connect, apply the "store"
 * migrations. A server that cannot be used is a StoreOpenError (a ConfigError: the CLI exits 2 before any write)
 * naming `store.url` with the password masked, and what to check; one that cannot be reached (yet) is a
 * StoreUnreachable (exit 1; `run` waits for it).
 */
export async function openPgBackend(
  url: string,
  opts: { poolMax?: number; connectTimeoutMs?: number } = {},
): Promise<StoreBackend> {
  const location = maskUrl(url);
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    throw new StoreOpenError(location, 'is not a URL (postgres://user:password@host:port/database)', 'store.url');
  }
  if (!/^postgres(ql)?:$/i.test(parsed.protocol))
    throw new StoreOpenError(location, 'is not a postgres:// URL', 'store.url');
  // a first connection with a short timeout: a wrong host answers in seconds, not after TCP gives up
  const probe = new Client({ connectionString: url, connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000 });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
  } catch (err) {
    throw openError(err, location, parsed);
  } finally {
    await probe.end().catch(() => undefined);
  }
  let pool: Pool;
  try {
    // later waits for a free client of a busy pool may take longer than a first connection
    pool = openPgPool(url, { max: opts.poolMax ?? 10, connectionTimeoutMillis: 60_000, types: TYPES });
  } catch (err) {
    throw new StoreOpenError(location, scrub(openProblem(err, parsed), parsed), 'store.url');
  }
  let version: number;
  try {
    version = await migrate(pool, 'store', STORE_MIGRATIONS);
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw openError(err, location, parsed);
  }
  return new PgBackend(pool, location, version);
}
