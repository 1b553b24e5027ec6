/**
 * The SQLite StateStore (better-sqlite3). WAL mode, synchronous=FULL: a commit is on disk before the
 * call returns, so a process killed at any point resumes from exactly what was committed.
 * Schema changes are versioned migrations keyed on PRAGMA user_version.
 */
import * as fs from 'fs';
import * as path from 'path';
import Database from 'better-sqlite3';
import { ObservedContact, OptOut, Outcome, isFinal } from '../domain';
import { KeyValue } from '../plugin';
import { QuarantinedRecord } from '../source/types';
import {
  AuditEvent,
  AuditRow,
  BackfillJob,
  DetectionCommit,
  KnownOptOut,
  OutboxRow,
  QuarantineRow,
  RecordOutcomesInput,
  RunLocked,
  RunLockOwner,
  RunRecord,
  StateStore,
  TargetStatus,
} from './types';

/** Each entry moves the schema from version i to i+1. Never edit a released migration: append one. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE opt_outs (
    email          TEXT PRIMARY KEY,
    contact_id     TEXT NOT NULL,
    opted_out_at   TEXT NOT NULL,
    source         TEXT,
    reason         TEXT,
    deleted        INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active','left')),
    first_seen_at  TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,
    left_at        TEXT
  );
  CREATE TABLE outbox (
    target          TEXT NOT NULL,
    email           TEXT NOT NULL REFERENCES opt_outs(email),
    state           TEXT NOT NULL CHECK (state IN ('queued','done','parked')),
    enqueued_at     TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    outcome         TEXT,
    record_ids      TEXT,
    completed_at    TEXT,
    origin          TEXT NOT NULL DEFAULT 'sync',
    PRIMARY KEY (target, email)
  );
  CREATE INDEX outbox_due ON outbox (target, state, next_attempt_at);
  CREATE TABLE outcomes (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER,
    target      TEXT NOT NULL,
    email       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    record_ids  TEXT,
    message     TEXT,
    at          TEXT NOT NULL
  );
  CREATE INDEX outcomes_target_email ON outcomes (target, email);
  CREATE TABLE checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
  CREATE TABLE kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL,
                   PRIMARY KEY (namespace, key));
  CREATE TABLE runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, dry_run INTEGER NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, exit_code INTEGER, summary TEXT
  );
  CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY, run_id INTEGER, source TEXT NOT NULL, record_id TEXT, reason TEXT NOT NULL,
    raw TEXT NOT NULL, at TEXT NOT NULL
  );
  CREATE TABLE events (
    id INTEGER PRIMARY KEY, run_id INTEGER, kind TEXT NOT NULL, email TEXT, detail TEXT, at TEXT NOT NULL
  );
  CREATE INDEX events_at ON events (at);
  CREATE TABLE backfills (
    id INTEGER PRIMARY KEY, since TEXT, targets TEXT NOT NULL, started_at TEXT NOT NULL,
    scan_completed_at TEXT, finished_at TEXT
  );
  `,
  // 2: one run at a time (overlapping cron runs would race the rotating refresh token and double-deliver)
  `
  CREATE TABLE run_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    command TEXT NOT NULL, acquired_at TEXT NOT NULL
  );
  `,
];

interface OptOutDbRow {
  email: string;
  contact_id: string;
  opted_out_at: string;
  source: string | null;
  reason: string | null;
  deleted: number;
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
    deleted: r.deleted === 1,
  };
}

function backoffSeconds(attempts: number, base: number, max: number, random: () => number): number {
  const exp = Math.min(max, base * 2 ** Math.max(0, attempts - 1));
  return exp / 2 + random() * (exp / 2);
}

const CHUNK = 500;
function chunks<T>(xs: readonly T[], n = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

export class SqliteStateStore implements StateStore {
  readonly db: Database.Database;
  readonly schemaVersion: number;

  constructor(file: string) {
    if (file !== ':memory:') {
      const dir = path.dirname(path.resolve(file));
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    this.db = new Database(file);
    if (file !== ':memory:') {
      // the store holds OAuth tokens: owner-only permissions
      try {
        fs.chmodSync(file, 0o600);
      } catch {
        /* best effort on filesystems without modes */
      }
      this.db.pragma('journal_mode = WAL');
    }
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.schemaVersion = this.migrate();
  }

  private migrate(): number {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new Error(
        `state store schema version ${current} is newer than this program understands (${MIGRATIONS.length}); upgrade cc-optout`,
      );
    }
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
    return MIGRATIONS.length;
  }

  close(): void {
    this.db.close();
  }

  // ------------------------------------------------------------------------------------------ opt-outs

  knownOptOuts(emails: readonly string[]): Map<string, KnownOptOut> {
    const out = new Map<string, KnownOptOut>();
    for (const part of chunks(emails)) {
      if (part.length === 0) continue;
      const rows = this.knownStatement(part.length).all(...part) as OptOutDbRow[];
      for (const r of rows) out.set(r.email, { ...toOptOut(r), state: r.state, firstSeenAt: r.first_seen_at });
    }
    return out;
  }

  private readonly knownStatements = new Map<number, Database.Statement>();

  /** `SELECT ... WHERE email IN (?, ?, ...)` prepared once per list length (a full page is always CHUNK long). */
  private knownStatement(n: number): Database.Statement {
    let st = this.knownStatements.get(n);
    if (!st) {
      st = this.db.prepare(`SELECT * FROM opt_outs WHERE email IN (${Array.from({ length: n }, () => '?').join(',')})`);
      if (this.knownStatements.size < 64) this.knownStatements.set(n, st);
    }
    return st;
  }

  activeOptOutEmails(): Set<string> {
    const rows = this.db.prepare(`SELECT email FROM opt_outs WHERE state = 'active'`).pluck().all() as string[];
    return new Set(rows);
  }

  countOptOuts(): { active: number; left: number } {
    const rows = this.db.prepare(`SELECT state, COUNT(*) n FROM opt_outs GROUP BY state`).all() as { state: string; n: number }[];
    return {
      active: rows.find((r) => r.state === 'active')?.n ?? 0,
      left: rows.find((r) => r.state === 'left')?.n ?? 0,
    };
  }

  commitDetection(c: DetectionCommit): void {
    const upsert = this.db.prepare(`
      INSERT INTO opt_outs (email, contact_id, opted_out_at, source, reason, deleted, state, first_seen_at, last_seen_at)
      VALUES (@email, @contactId, @optedOutAt, @source, @reason, @deleted, 'active', @now, @now)
      ON CONFLICT(email) DO UPDATE SET contact_id = excluded.contact_id, opted_out_at = excluded.opted_out_at,
        source = excluded.source, reason = excluded.reason, deleted = excluded.deleted, state = 'active',
        left_at = NULL, last_seen_at = excluded.last_seen_at`);
    const enqueue = this.db.prepare(`
      INSERT INTO outbox (target, email, state, enqueued_at, attempts, next_attempt_at, origin)
      VALUES (@target, @email, 'queued', @now, 0, @now, 'sync')
      ON CONFLICT(target, email) DO UPDATE SET state = 'queued', attempts = 0, next_attempt_at = excluded.next_attempt_at,
        last_error = NULL, enqueued_at = excluded.enqueued_at
      WHERE outbox.state != 'queued'`);
    const leave = this.db.prepare(`UPDATE opt_outs SET state = 'left', left_at = @now WHERE email = @email AND state = 'active'`);
    const touch = this.db.prepare(`UPDATE opt_outs SET last_seen_at = @now WHERE email = @email`);
    const event = this.db.prepare(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (?, ?, ?, ?, ?)`);
    const checkpoint = this.db.prepare(
      `INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    );
    this.db.transaction(() => {
      for (const o of c.added) {
        upsert.run({ ...o, deleted: o.deleted ? 1 : 0, now: c.now });
        for (const target of c.targets) enqueue.run({ target, email: o.email, now: c.now });
        event.run(c.runId, 'opt-out-detected', o.email, JSON.stringify({ contactId: o.contactId, optedOutAt: o.optedOutAt, source: o.source }), c.now);
      }
      for (const r of c.resubscribed) {
        const email = typeof r === 'string' ? r : r.email;
        const info = leave.run({ email, now: c.now });
        if (info.changes > 0) {
          const detail = typeof r === 'string' ? null : JSON.stringify({ contactId: r.contactId, permission: r.permission });
          event.run(c.runId, 'left-unsubscribed-set', email, detail, c.now);
        }
      }
      for (const email of c.seen ?? []) touch.run({ email, now: c.now });
      for (const [k, v] of Object.entries(c.checkpoints ?? {})) checkpoint.run(k, v, c.now);
    })();
  }

  // ------------------------------------------------------------------------------------------ outbox

  enqueueKnown(input: { runId: number; targets: readonly string[]; since: string | null; redeliver: boolean; now: string }): number {
    let n = 0;
    const insert = this.db.prepare(`
      INSERT INTO outbox (target, email, state, enqueued_at, attempts, next_attempt_at, origin)
      SELECT @target, email, 'queued', @now, 0, @now, 'backfill' FROM opt_outs
      WHERE state = 'active' AND (@since IS NULL OR opted_out_at >= @since)
      ON CONFLICT(target, email) DO NOTHING`);
    const redo = this.db.prepare(`
      UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, last_error = NULL, origin = 'backfill'
      WHERE target = @target AND state = 'done'
        AND email IN (SELECT email FROM opt_outs WHERE state = 'active' AND (@since IS NULL OR opted_out_at >= @since))`);
    this.db.transaction(() => {
      for (const target of input.targets) {
        n += insert.run({ target, now: input.now, since: input.since }).changes;
        if (input.redeliver) n += redo.run({ target, now: input.now, since: input.since }).changes;
      }
    })();
    return n;
  }

  backfillCandidates(target: string, since: string | null, redeliver: boolean): OptOut[] {
    const rows = this.db
      .prepare(
        `SELECT p.* FROM opt_outs p LEFT JOIN outbox o ON o.email = p.email AND o.target = @target
         WHERE p.state = 'active' AND (@since IS NULL OR p.opted_out_at >= @since)
           AND (o.email IS NULL OR (@redeliver = 1 AND o.state = 'done'))
         ORDER BY p.opted_out_at, p.email`,
      )
      .all({ target, since, redeliver: redeliver ? 1 : 0 }) as OptOutDbRow[];
    return rows.map(toOptOut);
  }

  private outboxSelect(where: string): string {
    return `SELECT o.target, o.state AS ostate, o.attempts, o.next_attempt_at, o.last_error,
                   p.email, p.contact_id, p.opted_out_at, p.source, p.reason, p.deleted, p.state, p.first_seen_at
            FROM outbox o JOIN opt_outs p ON p.email = o.email WHERE ${where}`;
  }

  private toOutboxRow(r: OutboxDbRow): OutboxRow {
    return {
      target: r.target,
      optOut: toOptOut(r),
      state: r.ostate,
      attempts: r.attempts,
      nextAttemptAt: r.next_attempt_at,
      lastError: r.last_error,
    };
  }

  dueOutbox(target: string, now: Date, limit: number): OutboxRow[] {
    const rows = this.db
      .prepare(this.outboxSelect(`o.target = ? AND o.state = 'queued' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, p.opted_out_at LIMIT ?`))
      .all(target, now.toISOString(), limit) as OutboxDbRow[];
    return rows.map((r) => this.toOutboxRow(r));
  }

  queuedOutbox(target: string, limit: number, offset: number): OutboxRow[] {
    const rows = this.db
      .prepare(this.outboxSelect(`o.target = ? AND o.state = 'queued' ORDER BY p.opted_out_at, p.email LIMIT ? OFFSET ?`))
      .all(target, limit, offset) as OutboxDbRow[];
    return rows.map((r) => this.toOutboxRow(r));
  }

  recordOutcomes(input: RecordOutcomesInput): void {
    const { target, now, policy } = input;
    const random = input.random ?? Math.random;
    const at = now.toISOString();
    const history = this.db.prepare(
      `INSERT INTO outcomes (run_id, target, email, kind, record_ids, message, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    const done = this.db.prepare(`
      UPDATE outbox SET state = 'done', outcome = @kind, record_ids = @ids, completed_at = @at, last_error = NULL,
        attempts = attempts + 1
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const park = this.db.prepare(`
      UPDATE outbox SET state = 'parked', outcome = 'failed-permanent', record_ids = @ids, last_error = @msg,
        attempts = attempts + 1, completed_at = @at
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const getAttempts = this.db.prepare(`SELECT attempts FROM outbox WHERE target = ? AND email = ? AND state = 'queued'`).pluck();
    const retry = this.db.prepare(`
      UPDATE outbox SET attempts = @attempts, next_attempt_at = @next, last_error = @msg, outcome = 'failed-retryable'
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const defer = this.db.prepare(`
      UPDATE outbox SET next_attempt_at = @next, last_error = @msg WHERE target = @target AND email = @email AND state = 'queued'`);
    this.db.transaction(() => {
      for (const o of input.outcomes) {
        if (o.kind === 'planned') continue; // dry runs record nothing
        const ids = JSON.stringify(o.recordIds ?? []);
        const msg = o.message ?? null;
        history.run(input.runId, target, o.email, o.kind, ids, msg, at);
        if (isFinal(o.kind)) {
          done.run({ kind: o.kind, ids, at, target, email: o.email });
        } else if (o.kind === 'failed-permanent') {
          park.run({ ids, msg, at, target, email: o.email });
        } else if (input.deferUntil) {
          defer.run({ next: input.deferUntil.toISOString(), msg, target, email: o.email });
        } else {
          const prev = getAttempts.get(target, o.email) as number | undefined;
          if (prev === undefined) continue;
          const attempts = prev + 1;
          if (attempts >= policy.maxAttempts) {
            park.run({ ids, msg: `gave up after ${attempts} attempts: ${msg ?? 'retryable failure'}`, at, target, email: o.email });
          } else {
            const delay = backoffSeconds(attempts, policy.backoffBaseSeconds, policy.backoffMaxSeconds, random);
            retry.run({ attempts, next: new Date(now.getTime() + delay * 1000).toISOString(), msg, target, email: o.email });
          }
        }
      }
    })();
  }

  requeueParked(target: string | null, now: string): number {
    return this.db
      .prepare(
        `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?, outcome = NULL WHERE state = 'parked' AND (? IS NULL OR target = ?)`,
      )
      .run(now, target, target).changes;
  }

  requeueNotFound(closedBefore: string, now: string): number {
    return this.db
      .prepare(
        `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, last_error = NULL
         WHERE state = 'done' AND outcome = 'not-found' AND completed_at < @closedBefore
           AND email IN (SELECT email FROM opt_outs WHERE state = 'active')`,
      )
      .run({ closedBefore, now }).changes;
  }

  deferQueued(target: string, until: string): number {
    return this.db
      .prepare(`UPDATE outbox SET next_attempt_at = ? WHERE target = ? AND state = 'queued' AND next_attempt_at < ?`)
      .run(until, target, until).changes;
  }

  targetStatus(targets: readonly string[], now: Date): TargetStatus[] {
    return targets.map((target) => {
      const counts = this.db
        .prepare(`SELECT state, outcome, COUNT(*) n FROM outbox WHERE target = ? GROUP BY state, outcome`)
        .all(target) as { state: string; outcome: string | null; n: number }[];
      const due = this.db
        .prepare(`SELECT COUNT(*) FROM outbox WHERE target = ? AND state = 'queued' AND next_attempt_at <= ?`)
        .pluck()
        .get(target, now.toISOString()) as number;
      const oldest = this.db
        .prepare(`SELECT MIN(p.opted_out_at) FROM outbox o JOIN opt_outs p ON p.email = o.email WHERE o.target = ? AND o.state = 'queued'`)
        .pluck()
        .get(target) as string | null;
      const last = this.db
        .prepare(`SELECT MAX(completed_at) FROM outbox WHERE target = ? AND state = 'done'`)
        .pluck()
        .get(target) as string | null;
      const done: Record<string, number> = {};
      let queued = 0;
      let parked = 0;
      for (const c of counts) {
        if (c.state === 'queued') queued += c.n;
        else if (c.state === 'parked') parked += c.n;
        else if (c.outcome) done[c.outcome] = (done[c.outcome] ?? 0) + c.n;
      }
      return { target, queued, due, parked, done, oldestQueuedOptOutAt: oldest, lastDeliveredAt: last };
    });
  }

  // ------------------------------------------------------------------------------------ checkpoints, kv

  getCheckpoint(key: string): string | null {
    return (this.db.prepare(`SELECT value FROM checkpoints WHERE key = ?`).pluck().get(key) as string | undefined) ?? null;
  }

  setCheckpoint(key: string, value: string, now: string): void {
    this.db
      .prepare(
        `INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
      )
      .run(key, value, now);
  }

  kv(namespace: string): KeyValue {
    const get = this.db.prepare(`SELECT value FROM kv WHERE namespace = ? AND key = ?`).pluck();
    const set = this.db.prepare(
      `INSERT INTO kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    );
    return {
      get: (key) => (get.get(namespace, key) as string | undefined) ?? null,
      set: (key, value) => {
        // each call is its own committed transaction (synchronous=FULL): durable before it returns
        set.run(namespace, key, value, new Date().toISOString());
      },
    };
  }

  // ------------------------------------------------------------------------------- runs, quarantine, audit

  startRun(kind: string, dryRun: boolean, now: string): number {
    return Number(this.db.prepare(`INSERT INTO runs (kind, dry_run, started_at) VALUES (?, ?, ?)`).run(kind, dryRun ? 1 : 0, now).lastInsertRowid);
  }

  finishRun(id: number, exitCode: number, summary: unknown, now: string): void {
    this.db.prepare(`UPDATE runs SET finished_at = ?, exit_code = ?, summary = ? WHERE id = ?`).run(now, exitCode, JSON.stringify(summary), id);
  }

  recentRuns(limit: number): RunRecord[] {
    const rows = this.db.prepare(`SELECT * FROM runs ORDER BY id DESC LIMIT ?`).all(limit) as {
      id: number;
      kind: string;
      dry_run: number;
      started_at: string;
      finished_at: string | null;
      exit_code: number | null;
      summary: string | null;
    }[];
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind,
      dryRun: r.dry_run === 1,
      startedAt: r.started_at,
      finishedAt: r.finished_at,
      exitCode: r.exit_code,
      summary: r.summary ? (JSON.parse(r.summary) as unknown) : null,
    }));
  }

  quarantine(runId: number | null, source: string, rec: QuarantinedRecord, now: string): void {
    let raw: string;
    try {
      raw = JSON.stringify(rec.raw) ?? 'undefined';
    } catch {
      raw = String(rec.raw);
    }
    this.db
      .prepare(`INSERT INTO quarantine (run_id, source, record_id, reason, raw, at) VALUES (?, ?, ?, ?, ?, ?)`)
      .run(runId, source, rec.recordId, rec.reason, raw, now);
  }

  quarantined(limit: number): QuarantineRow[] {
    const rows = this.db.prepare(`SELECT * FROM quarantine ORDER BY id DESC LIMIT ?`).all(limit) as {
      id: number;
      run_id: number | null;
      source: string;
      record_id: string | null;
      reason: string;
      raw: string;
      at: string;
    }[];
    return rows.map((r) => ({
      id: r.id,
      runId: r.run_id,
      source: r.source,
      recordId: r.record_id,
      reason: r.reason,
      raw: JSON.parse(r.raw) as unknown,
      at: r.at,
    }));
  }

  countQuarantined(): number {
    return this.db.prepare(`SELECT COUNT(*) FROM quarantine`).pluck().get() as number;
  }

  addEvent(runId: number | null, kind: string, email: string | null, detail: string | null, now: string): void {
    this.db.prepare(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (?, ?, ?, ?, ?)`).run(runId, kind, email, detail, now);
  }

  events(since: string | null, kinds?: readonly string[]): AuditEvent[] {
    const rows = this.db
      .prepare(`SELECT at, kind, email, detail FROM events WHERE (? IS NULL OR at >= ?) ORDER BY id`)
      .all(since, since) as AuditEvent[];
    return kinds ? rows.filter((r) => kinds.includes(r.kind)) : rows;
  }

  audit(since: string | null): AuditRow[] {
    const rows = this.db
      .prepare(
        `SELECT p.email, p.contact_id, o.target, p.opted_out_at, o.enqueued_at, o.completed_at, o.record_ids, o.state,
                o.outcome, o.attempts, o.last_error
         FROM outbox o JOIN opt_outs p ON p.email = o.email
         WHERE (@since IS NULL OR p.opted_out_at >= @since OR o.completed_at >= @since)
         ORDER BY p.opted_out_at, p.email, o.target`,
      )
      .all({ since }) as {
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
    }[];
    return rows.map((r) => {
      // written_at is the CRM write: only `applied` rows were written (not-found / already-suppressed were not)
      const written = r.state === 'done' && r.outcome === 'applied' ? r.completed_at : null;
      const lag = written ? Math.max(0, Math.round((Date.parse(written) - Date.parse(r.opted_out_at)) / 1000)) : null;
      return {
        email: r.email,
        contactId: r.contact_id,
        target: r.target,
        optedOutAt: r.opted_out_at,
        detectedAt: r.enqueued_at,
        writtenAt: written,
        closedAt: r.state === 'queued' ? null : r.completed_at,
        lagSeconds: lag,
        recordIds: r.record_ids ? (JSON.parse(r.record_ids) as string[]) : [],
        outcome: r.state === 'queued' ? (r.outcome === 'failed-retryable' ? 'queued (retrying)' : 'queued') : (r.outcome ?? r.state),
        attempts: r.attempts,
        message: r.last_error,
      };
    });
  }

  // ------------------------------------------------------------------------------------------ run lock

  acquireRunLock(lock: RunLockOwner, isAlive: (pid: number) => boolean = pidAlive): void {
    this.db.transaction(() => {
      const held = this.db.prepare(`SELECT * FROM run_lock WHERE id = 1`).get() as
        | { owner: string; pid: number; host: string; command: string; acquired_at: string }
        | undefined;
      if (held && held.owner !== lock.owner) {
        const sameHost = held.host === lock.host;
        const stale = sameHost ? !isAlive(held.pid) : Date.parse(lock.now) - Date.parse(held.acquired_at) > 6 * 3600_000;
        if (!stale) {
          throw new RunLocked(
            `another cc-optout ${held.command} is running (pid ${held.pid} on ${held.host}, since ${held.acquired_at}); ` +
              `runs must not overlap (they would race the Constant Contact refresh token). If that process is gone, remove the lock with \`cc-optout unlock\`.`,
          );
        }
      }
      this.db
        .prepare(
          `INSERT INTO run_lock (id, owner, pid, host, command, acquired_at) VALUES (1, @owner, @pid, @host, @command, @now)
           ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host,
             command = excluded.command, acquired_at = excluded.acquired_at`,
        )
        .run(lock);
    }).immediate();
  }

  releaseRunLock(owner: string | null): boolean {
    if (owner === null) return this.db.prepare(`DELETE FROM run_lock`).run().changes > 0;
    return this.db.prepare(`DELETE FROM run_lock WHERE owner = ?`).run(owner).changes > 0;
  }

  // ------------------------------------------------------------------------------------------ backfill

  openBackfill(since: string | null, targets: readonly string[], now: string): BackfillJob {
    const key = JSON.stringify([...targets].sort());
    const existing = this.db
      .prepare(`SELECT * FROM backfills WHERE finished_at IS NULL AND targets = ? AND since IS ? ORDER BY id DESC LIMIT 1`)
      .get(key, since) as { id: number; since: string | null; targets: string; started_at: string; scan_completed_at: string | null; finished_at: string | null } | undefined;
    const row =
      existing ??
      (() => {
        const id = Number(this.db.prepare(`INSERT INTO backfills (since, targets, started_at) VALUES (?, ?, ?)`).run(since, key, now).lastInsertRowid);
        return { id, since, targets: key, started_at: now, scan_completed_at: null, finished_at: null };
      })();
    return {
      id: row.id,
      since: row.since,
      targets: JSON.parse(row.targets) as string[],
      startedAt: row.started_at,
      scanCompletedAt: row.scan_completed_at,
      finishedAt: row.finished_at,
    };
  }

  markBackfillScanned(id: number, now: string): void {
    this.db.prepare(`UPDATE backfills SET scan_completed_at = ? WHERE id = ?`).run(now, id);
  }

  finishBackfill(id: number, now: string): void {
    this.db.prepare(`UPDATE backfills SET finished_at = ? WHERE id = ?`).run(now, id);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function openStore(file: string): StateStore {
  return new SqliteStateStore(file);
}

/** Types re-exported for convenience. */
export type { ObservedContact, Outcome, QuarantinedRecord };
