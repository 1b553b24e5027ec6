/**
 * The SQLite StateStore (better-sqlite3). WAL mode, synchronous=FULL: a commit is on disk before the
 * call returns, so a process killed at any point resumes from exactly what was committed.
 * Schema changes are versioned migrations keyed on PRAGMA user_version.
 */
import * as crypto from 'crypto';
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
  DEFAULT_LEASE_MS,
  DeliveryEvent,
  DetectionCommit,
  HeldRunLock,
  KnownOptOut,
  LeaseLost,
  OutboxRow,
  QuarantineRow,
  RecordOutcomesInput,
  RunLocked,
  StoreOpenError,
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
  // 3: one quarantine row per record (the same malformed record comes back on every scan). `fingerprint` is
  // `id:<record id>`, or `raw:<sha256 of the raw JSON>` for a record without a usable id; `at` stays the first
  // sighting, `last_seen_at`/`seen_count` follow the later ones. Existing duplicates fold into their oldest row.
  `
  ALTER TABLE quarantine ADD COLUMN fingerprint TEXT;
  ALTER TABLE quarantine ADD COLUMN last_seen_at TEXT;
  ALTER TABLE quarantine ADD COLUMN seen_count INTEGER NOT NULL DEFAULT 1;
  UPDATE quarantine SET last_seen_at = at,
    fingerprint = CASE WHEN record_id IS NOT NULL AND record_id != '' THEN 'id:' || record_id ELSE 'raw:' || cc_sha256(raw) END;
  UPDATE quarantine SET
    seen_count = (SELECT COUNT(*) FROM quarantine d WHERE d.source = quarantine.source AND d.fingerprint = quarantine.fingerprint),
    last_seen_at = (SELECT MAX(d.at) FROM quarantine d WHERE d.source = quarantine.source AND d.fingerprint = quarantine.fingerprint)
  WHERE id IN (SELECT MIN(id) FROM quarantine GROUP BY source, fingerprint);
  DELETE FROM quarantine WHERE id NOT IN (SELECT MIN(id) FROM quarantine GROUP BY source, fingerprint);
  CREATE UNIQUE INDEX quarantine_record ON quarantine (source, fingerprint);
  `,
  // 4: the delivery history is compliance evidence: numbered, with how the record was queued, and append-only
  //    (a redelivery adds events, never rewrites the first write); the run lock becomes a renewed lease
  `
  ALTER TABLE outcomes ADD COLUMN attempt INTEGER;
  ALTER TABLE outcomes ADD COLUMN origin TEXT;
  UPDATE outcomes SET attempt = (SELECT COUNT(*) FROM outcomes h
    WHERE h.target = outcomes.target AND h.email = outcomes.email AND h.id <= outcomes.id);
  CREATE INDEX outcomes_target_email_kind ON outcomes (target, email, kind, id);
  CREATE INDEX outcomes_at ON outcomes (at);
  CREATE TRIGGER outcomes_no_update BEFORE UPDATE ON outcomes
    BEGIN SELECT RAISE(ABORT, 'the delivery history (outcomes) is append-only'); END;
  CREATE TRIGGER outcomes_no_delete BEFORE DELETE ON outcomes
    BEGIN SELECT RAISE(ABORT, 'the delivery history (outcomes) is append-only'); END;
  ALTER TABLE run_lock ADD COLUMN renewed_at TEXT;
  ALTER TABLE run_lock ADD COLUMN expires_at TEXT;
  `,
];

/** The quarantine row key of a record (migration 3): its id, else a hash of its raw JSON. */
export function quarantineFingerprint(recordId: string | null, raw: string): string {
  return recordId !== null && recordId !== '' ? `id:${recordId}` : `raw:${sha256Hex(raw)}`;
}

function sha256Hex(s: string): string {
  return crypto.createHash('sha256').update(s, 'utf8').digest('hex');
}

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
    if (file !== ':memory:') prepareStoreFile(file);
    try {
      this.db = new Database(file);
      if (file !== ':memory:') this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.schemaVersion = this.migrate();
    } catch (err) {
      if (file === ':memory:' || err instanceof StoreOpenError) throw err;
      throw new StoreOpenError(file, `cannot be opened as a cc-optout state store: ${(err as Error).message}`);
    }
  }

  private migrate(): number {
    return migrateDb(this.db);
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
      VALUES (@target, @email, 'queued', @now, 0, @now,
        -- how the row was queued: by a backfill run's scan, or by a sync
        COALESCE((SELECT CASE kind WHEN 'backfill' THEN 'backfill' ELSE 'sync' END FROM runs WHERE id = @runId), 'sync'))
      ON CONFLICT(target, email) DO UPDATE SET state = 'queued', attempts = 0, next_attempt_at = excluded.next_attempt_at,
        last_error = NULL, enqueued_at = excluded.enqueued_at, origin = excluded.origin
      WHERE outbox.state != 'queued'`);
    const leave = this.db.prepare(`UPDATE opt_outs SET state = 'left', left_at = @now WHERE email = @email AND state = 'active'`);
    const touch = this.db.prepare(`UPDATE opt_outs SET last_seen_at = @now WHERE email = @email`);
    const markDeleted = this.db.prepare(`UPDATE opt_outs SET deleted = 1 WHERE email = @email AND state = 'active'`);
    const event = this.db.prepare(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (?, ?, ?, ?, ?)`);
    const checkpoint = this.db.prepare(
      `INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    );
    this.db.transaction(() => {
      this.checkFence();
      for (const o of c.added) {
        upsert.run({ ...o, deleted: o.deleted ? 1 : 0, now: c.now });
        for (const target of c.targets) enqueue.run({ target, email: o.email, now: c.now, runId: c.runId });
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
      for (const email of c.seenDeleted ?? []) markDeleted.run({ email });
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
      UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, last_error = NULL, origin = 'redeliver'
      WHERE target = @target AND state = 'done'
        AND email IN (SELECT email FROM opt_outs WHERE state = 'active' AND (@since IS NULL OR opted_out_at >= @since))`);
    this.db.transaction(() => {
      this.checkFence();
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
      `INSERT INTO outcomes (run_id, target, email, kind, record_ids, message, at, attempt, origin)
       VALUES (@runId, @target, @email, @kind, @ids, @msg, @at,
         (SELECT COUNT(*) + 1 FROM outcomes WHERE target = @target AND email = @email),
         (SELECT origin FROM outbox WHERE target = @target AND email = @email))`,
    );
    const done = this.db.prepare(`
      UPDATE outbox SET state = 'done', outcome = @kind, record_ids = @ids, completed_at = @at, last_error = @note,
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
      this.checkFence();
      for (const o of input.outcomes) {
        if (o.kind === 'planned') continue; // dry runs record nothing
        const ids = JSON.stringify(o.recordIds ?? []);
        const msg = o.message ?? null;
        history.run({ runId: input.runId, target, email: o.email, kind: o.kind, ids, msg, at });
        if (isFinal(o.kind)) {
          // a closed row keeps no error; it shows how its records were matched, when the connector says
          done.run({ kind: o.kind, ids, at, target, email: o.email, note: o.matchedBy ? `matched by ${o.matchedBy}` : null });
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
    this.checkFence();
    return this.db
      .prepare(
        `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?, outcome = NULL WHERE state = 'parked' AND (? IS NULL OR target = ?)`,
      )
      .run(now, target, target).changes;
  }

  requeueNotFound(closedBefore: string, now: string): number {
    this.checkFence();
    return this.db
      .prepare(
        `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, last_error = NULL
         WHERE state = 'done' AND outcome = 'not-found' AND completed_at < @closedBefore
           AND email IN (SELECT email FROM opt_outs WHERE state = 'active')`,
      )
      .run({ closedBefore, now }).changes;
  }

  deferQueued(target: string, until: string): number {
    this.checkFence();
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
    this.checkFence();
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
    this.checkFence();
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
    // One row per record: seen again, it gets the latest reason, raw record, run and time, and a count.
    this.db
      .prepare(
        `INSERT INTO quarantine (run_id, source, record_id, reason, raw, at, fingerprint, last_seen_at, seen_count)
         VALUES (@runId, @source, @recordId, @reason, @raw, @now, @fingerprint, @now, 1)
         ON CONFLICT(source, fingerprint) DO UPDATE SET run_id = excluded.run_id, record_id = excluded.record_id,
           reason = excluded.reason, raw = excluded.raw, last_seen_at = excluded.last_seen_at, seen_count = seen_count + 1`,
      )
      .run({ runId, source, recordId: rec.recordId, reason: rec.reason, raw, now, fingerprint: quarantineFingerprint(rec.recordId, raw) });
  }

  quarantined(limit: number): QuarantineRow[] {
    const rows = this.db.prepare(`SELECT * FROM quarantine ORDER BY last_seen_at DESC, id DESC LIMIT ?`).all(limit) as {
      id: number;
      run_id: number | null;
      source: string;
      record_id: string | null;
      reason: string;
      raw: string;
      at: string;
      last_seen_at: string | null;
      seen_count: number;
    }[];
    return rows.map((r) => ({
      id: r.id,
      runId: r.run_id,
      source: r.source,
      recordId: r.record_id,
      reason: r.reason,
      raw: JSON.parse(r.raw) as unknown,
      at: r.at,
      lastSeenAt: r.last_seen_at ?? r.at,
      timesSeen: r.seen_count,
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
    // the first `applied` delivery is the CRM write; later deliveries (a redeliver finding it already suppressed)
    // add to the history and never replace it
    const first = `FROM outcomes h WHERE h.target = o.target AND h.email = o.email AND h.kind = 'applied' ORDER BY h.id LIMIT 1`;
    const last = `FROM outcomes h WHERE h.target = o.target AND h.email = o.email ORDER BY h.id DESC LIMIT 1`;
    const rows = this.db
      .prepare(
        `SELECT p.email, p.contact_id, o.target, p.opted_out_at, o.enqueued_at, o.completed_at, o.record_ids, o.state,
                o.outcome, o.attempts, o.last_error,
                (SELECT h.at ${first}) AS first_applied_at, (SELECT h.record_ids ${first}) AS first_applied_ids,
                (SELECT h.kind ${last}) AS last_kind, (SELECT h.at ${last}) AS last_at,
                (SELECT COUNT(*) FROM outcomes h WHERE h.target = o.target AND h.email = o.email) AS deliveries
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
      first_applied_at: string | null;
      first_applied_ids: string | null;
      last_kind: string | null;
      last_at: string | null;
      deliveries: number;
    }[];
    return rows.map((r) => {
      // written_at is the CRM write: only `applied` deliveries were written (not-found / already-suppressed were not)
      const written = r.first_applied_at ?? (r.state === 'done' && r.outcome === 'applied' ? r.completed_at : null);
      const lag = written ? Math.max(0, Math.round((Date.parse(written) - Date.parse(r.opted_out_at)) / 1000)) : null;
      const everApplied = r.first_applied_at !== null;
      const ids = r.state === 'done' && everApplied ? r.first_applied_ids : r.record_ids;
      return {
        email: r.email,
        contactId: r.contact_id,
        target: r.target,
        optedOutAt: r.opted_out_at,
        detectedAt: r.enqueued_at,
        writtenAt: written,
        closedAt: r.state === 'queued' ? null : r.completed_at,
        lagSeconds: lag,
        recordIds: ids ? (JSON.parse(ids) as string[]) : [],
        outcome:
          r.state === 'queued'
            ? r.outcome === 'failed-retryable'
              ? 'queued (retrying)'
              : 'queued'
            : r.state === 'done' && everApplied
              ? 'applied'
              : (r.outcome ?? r.state),
        attempts: r.attempts,
        message: r.last_error,
        lastOutcome: r.last_kind,
        lastDeliveryAt: r.last_at,
        deliveries: r.deliveries,
      };
    });
  }

  deliveryHistory(since: string | null): DeliveryEvent[] {
    const rows = this.db
      .prepare(
        `SELECT h.id, h.at, h.run_id, r.kind AS run_kind, h.target, h.email, p.contact_id, h.attempt, h.origin, h.kind,
                h.record_ids, h.message
         FROM outcomes h LEFT JOIN runs r ON r.id = h.run_id LEFT JOIN opt_outs p ON p.email = h.email
         WHERE (@since IS NULL OR h.at >= @since) ORDER BY h.id`,
      )
      .all({ since }) as {
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
    }[];
    return rows.map((r) => ({
      id: r.id,
      at: r.at,
      runId: r.run_id,
      runKind: r.run_kind,
      target: r.target,
      email: r.email,
      contactId: r.contact_id,
      attempt: r.attempt ?? 0,
      origin: r.origin,
      outcome: r.kind,
      recordIds: r.record_ids ? (JSON.parse(r.record_ids) as string[]) : [],
      message: r.message,
    }));
  }

  // ------------------------------------------------------------------------------------------ run lock

  /** The owner whose lease this store holds: its writes check the lease is still theirs (see checkFence). */
  private fenceOwner: string | null = null;

  /** Throws LeaseLost when this store took the run lease and another holder has it now (or `unlock` removed it). */
  private checkFence(): void {
    if (this.fenceOwner === null) return;
    const held = this.runLock();
    if (held?.owner === this.fenceOwner) return;
    throw new LeaseLost(
      held
        ? `this run's lock was taken over by cc-optout ${held.command} (pid ${held.pid} on ${held.host}, since ${held.acquiredAt}): nothing more is committed by this run`
        : 'this run\'s lock was removed (`cc-optout unlock`?): nothing more is committed by this run',
    );
  }

  runLock(): HeldRunLock | null {
    const r = this.db.prepare(`SELECT * FROM run_lock WHERE id = 1`).get() as
      | { owner: string; pid: number; host: string; command: string; acquired_at: string; renewed_at: string | null; expires_at: string | null }
      | undefined;
    if (!r) return null;
    const renewedAt = r.renewed_at ?? r.acquired_at;
    return {
      owner: r.owner,
      pid: r.pid,
      host: r.host,
      command: r.command,
      acquiredAt: r.acquired_at,
      renewedAt,
      // a lock taken by an older version (no lease columns) expires one default lease after it was taken
      expiresAt: r.expires_at ?? new Date(Date.parse(renewedAt) + DEFAULT_LEASE_MS).toISOString(),
    };
  }

  acquireRunLock(lock: RunLockOwner, isAlive: (pid: number) => boolean = pidAlive): void {
    const leaseMs = lock.leaseMs ?? DEFAULT_LEASE_MS;
    this.db.transaction(() => {
      const held = this.runLock();
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
        this.db
          .prepare(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (NULL, 'run-lock-taken-over', NULL, ?, ?)`)
          .run(JSON.stringify({ ...held, reason: deadHere ? 'holder process is gone (same host)' : 'lease expired' }), lock.now);
      }
      const expiresAt = new Date(Date.parse(lock.now) + leaseMs).toISOString();
      this.db
        .prepare(
          `INSERT INTO run_lock (id, owner, pid, host, command, acquired_at, renewed_at, expires_at)
           VALUES (1, @owner, @pid, @host, @command, @now, @now, @expiresAt)
           ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host,
             command = excluded.command, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at,
             expires_at = excluded.expires_at`,
        )
        .run({ owner: lock.owner, pid: lock.pid, host: lock.host, command: lock.command, now: lock.now, expiresAt });
    }).immediate();
    this.fenceOwner = lock.owner;
  }

  renewRunLock(owner: string, now: string, leaseMs: number = DEFAULT_LEASE_MS): boolean {
    const expiresAt = new Date(Date.parse(now) + leaseMs).toISOString();
    return this.db.prepare(`UPDATE run_lock SET renewed_at = ?, expires_at = ? WHERE id = 1 AND owner = ?`).run(now, expiresAt, owner).changes > 0;
  }

  releaseRunLock(owner: string | null): HeldRunLock | null {
    if (owner !== null && owner === this.fenceOwner) this.fenceOwner = null;
    return this.db.transaction(() => {
      const held = this.runLock();
      if (!held || (owner !== null && held.owner !== owner)) return null;
      this.db.prepare(`DELETE FROM run_lock WHERE id = 1`).run();
      return held;
    }).immediate();
  }

  // ------------------------------------------------------------------------------------------ backfill

  openBackfill(since: string | null, targets: readonly string[], now: string): BackfillJob {
    this.checkFence();
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
    this.checkFence();
    this.db.prepare(`UPDATE backfills SET scan_completed_at = ? WHERE id = ?`).run(now, id);
  }

  finishBackfill(id: number, now: string): void {
    this.checkFence();
    this.db.prepare(`UPDATE backfills SET finished_at = ? WHERE id = ?`).run(now, id);
  }
}

const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String((err as Error).message ?? err);
}

/**
 * Check an existing store file (never changing its mode), or create a new one where no file exists. A new store
 * is built in a temporary file (0600) in the same folder and linked into place only once it holds the schema, so
 * a store file that exists is never empty: an empty or non-SQLite file is an error, never a silent new store.
 */
function prepareStoreFile(file: string): void {
  const abs = path.resolve(file);
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new StoreOpenError(file, 'a folder on the path is a regular file, not a directory');
    if (code === 'EACCES') throw new StoreOpenError(file, `cannot be read (${errText(err)})`);
    if (code !== 'ENOENT') throw new StoreOpenError(file, `cannot be read (${errText(err)})`);
  }
  if (st) {
    if (st.isDirectory()) throw new StoreOpenError(file, 'is a directory; store.path must name a file (e.g. ./.cc-optout/state.db)');
    if (!st.isFile()) throw new StoreOpenError(file, 'is not a regular file');
    if ((st.mode & 0o222) === 0 || !accessible(abs, fs.constants.R_OK | fs.constants.W_OK)) {
      throw new StoreOpenError(
        file,
        `is not writable (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); cc-optout never changes a mode you set: ` +
          'make it readable and writable by this user (e.g. chmod 600) or point store.path elsewhere',
      );
    }
    if (st.size === 0) {
      // a store that died before its first checkpoint keeps everything in its write-ahead log
      const wal = `${abs}-wal`;
      if (fs.existsSync(wal) && fs.statSync(wal).size > 0) return;
      throw new StoreOpenError(
        file,
        'is an empty file (0 bytes), not a cc-optout state store; refusing to start a new store over it (the outbox and audit ' +
          'history would be lost). Restore the store from a backup, or delete the empty file to start a new store',
      );
    }
    const head = Buffer.alloc(SQLITE_HEADER.length);
    const fd = fs.openSync(abs, 'r');
    try {
      fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
    if (!head.equals(SQLITE_HEADER)) throw new StoreOpenError(file, 'is not a SQLite database (not a cc-optout state store)');
    return;
  }
  const dir = path.dirname(abs);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR' || code === 'EEXIST') throw new StoreOpenError(file, 'a folder on the path is a regular file, not a directory');
    throw new StoreOpenError(file, `its folder ${dir} cannot be created (${errText(err)})`);
  }
  const tmp = path.join(dir, `.${path.basename(abs)}.new-${process.pid}-${Math.random().toString(36).slice(2)}`);
  try {
    // the store holds OAuth tokens: owner-only permissions from the first byte
    fs.closeSync(fs.openSync(tmp, 'wx', 0o600));
    const db = new Database(tmp);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      migrateDb(db);
    } finally {
      db.close(); // checkpoints the WAL into the file and removes it
    }
    try {
      fs.linkSync(tmp, abs); // never replaces: another process may have created the store meanwhile
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return;
      // a filesystem without hard links: rename, unless the store appeared meanwhile
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(code ?? '') || fs.existsSync(abs)) throw err;
      fs.renameSync(tmp, abs);
    }
  } catch (err) {
    if (err instanceof StoreOpenError) throw err;
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS' ? `its folder ${dir} is not writable` : 'cannot be created';
    throw new StoreOpenError(file, `${why} (${errText(err)})`);
  } finally {
    for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) fs.rmSync(f, { force: true });
  }
}

function accessible(file: string, mode: number): boolean {
  try {
    fs.accessSync(file, mode);
    return true;
  } catch {
    return false;
  }
}

function migrateDb(db: Database.Database): number {
  // used by migration 3 (quarantine fingerprints of records without an id)
  db.function('cc_sha256', { deterministic: true }, (v: unknown) => sha256Hex(String(v)));
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(
      `state store schema version ${current} is newer than this program understands (${MIGRATIONS.length}); upgrade cc-optout`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return MIGRATIONS.length;
}

/** Is process `pid` alive on this host? */
export function pidAlive(pid: number): boolean {
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
