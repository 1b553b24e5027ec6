/**
 * The SQLite StateStore (better-sqlite3). WAL mode, synchronous=FULL: a commit is on disk before the
 * call returns, so a process killed at any point resumes from exactly what was committed.
 * Schema changes are versioned migrations keyed on PRAGMA user_version.
 */
import { auditRowFrom, deliveryEventFrom, parkedRowFrom, quarantineRowFrom } from './rows';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { KeyValue, ObservedContact, OptOut, Outcome, QuarantinedRecord, isFinal } from '../domain';
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
  StoreOpenError,
  RunLockOwner,
  RunRecord,
  RunResult,
  RunStart,
  RunStatus,
  StateStore,
  runStatusFor,
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
  // 5: run history. Every run says how it ended (status), who ran it (the run lock's owner, pid, host: a run
  //    still `running` whose lease is gone is abandoned), what it did (counts per target and outcome, API calls
  //    per vendor) and why it failed (redacted). Outcomes already carry their run (run_id); the index makes
  //    `audit --run N` cheap (an index, not an UPDATE: the append-only triggers stay as they are).
  `
  ALTER TABLE runs ADD COLUMN status TEXT;
  ALTER TABLE runs ADD COLUMN variant TEXT;
  ALTER TABLE runs ADD COLUMN owner TEXT;
  ALTER TABLE runs ADD COLUMN pid INTEGER;
  ALTER TABLE runs ADD COLUMN host TEXT;
  ALTER TABLE runs ADD COLUMN counts TEXT;
  ALTER TABLE runs ADD COLUMN api_calls TEXT;
  ALTER TABLE runs ADD COLUMN error TEXT;
  UPDATE runs SET status = CASE
    WHEN finished_at IS NULL THEN 'running'
    WHEN exit_code = 0 THEN 'ok'
    WHEN exit_code = 3 THEN 'incomplete'
    WHEN exit_code IN (130, 143) THEN 'interrupted'
    ELSE 'failed' END;
  CREATE INDEX outcomes_run ON outcomes (run_id);
  CREATE INDEX runs_status ON runs (status);
  `,
  // 6: what status shows is kept, not counted: outbox rows per (target, state, outcome) and opt-outs per state,
  //    maintained by triggers in the transaction of every change (so a million rows cost a few row reads); the
  //    last delivery per target, the oldest queued opt-out and the resubscribe events found through indexes;
  //    the counts of existing rows are filled in
  `
  CREATE TABLE outbox_counts (
    target TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (target, state, outcome)
  ) WITHOUT ROWID;
  INSERT INTO outbox_counts (target, state, outcome, n)
    SELECT target, state, COALESCE(outcome, ''), COUNT(*) FROM outbox GROUP BY target, state, COALESCE(outcome, '');
  CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts (target, state, outcome, n) VALUES (NEW.target, NEW.state, COALESCE(NEW.outcome, ''), 1)
      ON CONFLICT (target, state, outcome) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER outbox_counts_update AFTER UPDATE OF target, state, outcome ON outbox
    WHEN OLD.target IS NOT NEW.target OR OLD.state IS NOT NEW.state OR OLD.outcome IS NOT NEW.outcome BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE target = OLD.target AND state = OLD.state AND outcome = COALESCE(OLD.outcome, '');
    INSERT INTO outbox_counts (target, state, outcome, n) VALUES (NEW.target, NEW.state, COALESCE(NEW.outcome, ''), 1)
      ON CONFLICT (target, state, outcome) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE target = OLD.target AND state = OLD.state AND outcome = COALESCE(OLD.outcome, '');
  END;
  CREATE TABLE opt_out_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO opt_out_counts (state, n) SELECT state, COUNT(*) FROM opt_outs GROUP BY state;
  CREATE TRIGGER opt_out_counts_insert AFTER INSERT ON opt_outs BEGIN
    INSERT INTO opt_out_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER opt_out_counts_update AFTER UPDATE OF state ON opt_outs WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE opt_out_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO opt_out_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER opt_out_counts_delete AFTER DELETE ON opt_outs BEGIN
    UPDATE opt_out_counts SET n = n - 1 WHERE state = OLD.state;
  END;
  CREATE INDEX outbox_last_done ON outbox (target, completed_at) WHERE state = 'done';
  -- the oldest queued opt-out per target: the opt-out time is copied onto the outbox row (kept by the writes and
  -- by the trigger below) so that a partial index over the queued rows answers it, however many are queued
  ALTER TABLE outbox ADD COLUMN opted_out_at_cached TEXT;
  UPDATE outbox SET opted_out_at_cached = (SELECT p.opted_out_at FROM opt_outs p WHERE p.email = outbox.email);
  CREATE INDEX outbox_queued ON outbox (target, opted_out_at_cached) WHERE state = 'queued';
  CREATE TRIGGER outbox_opted_out_at AFTER UPDATE OF opted_out_at ON opt_outs WHEN OLD.opted_out_at IS NOT NEW.opted_out_at BEGIN
    UPDATE outbox SET opted_out_at_cached = NEW.opted_out_at
      WHERE target IN (SELECT target FROM outbox_counts) AND email = NEW.email;
  END;
  CREATE INDEX events_kind ON events (kind, id);
  `,
  // the account registry (src/store/sqlite-backend.ts): used in the store.path file; the account `default` is that
  // file itself, an added account `x` is its own file <store.path>.accounts/x.db
  `
  CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    priority    REAL NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
  );
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

interface RunDbRow {
  id: number;
  kind: string;
  dry_run: number;
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

function runResultColumns(r: RunResult | undefined): {
  counts: string | null;
  apiCalls: string | null;
  variant: string | null;
} {
  return {
    counts: r ? JSON.stringify(r.counts) : null,
    apiCalls: r ? JSON.stringify(r.apiCalls) : null,
    variant: r?.variant ?? null,
  };
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

  private readonly statements = new Map<string, Database.Statement>();

  /** A prepared statement, prepared once per SQL text (every SQL text here is a constant). */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
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
    const rows = this.sql(`SELECT email FROM opt_outs WHERE state = 'active'`).pluck().all() as string[];
    return new Set(rows);
  }

  countOptOuts(): { active: number; left: number } {
    const rows = this.sql(`SELECT state, n FROM opt_out_counts`).all() as { state: string; n: number }[];
    return {
      active: rows.find((r) => r.state === 'active')?.n ?? 0,
      left: rows.find((r) => r.state === 'left')?.n ?? 0,
    };
  }

  commitDetection(c: DetectionCommit): void {
    const upsert = this.sql(`
      INSERT INTO opt_outs (email, contact_id, opted_out_at, source, reason, deleted, state, first_seen_at, last_seen_at)
      VALUES (@email, @contactId, @optedOutAt, @source, @reason, @deleted, 'active', @now, @now)
      ON CONFLICT(email) DO UPDATE SET contact_id = excluded.contact_id, opted_out_at = excluded.opted_out_at,
        source = excluded.source, reason = excluded.reason, deleted = excluded.deleted, state = 'active',
        left_at = NULL, last_seen_at = excluded.last_seen_at`);
    const enqueue = this.sql(`
      INSERT INTO outbox (target, email, state, enqueued_at, attempts, next_attempt_at, opted_out_at_cached, origin)
      VALUES (@target, @email, 'queued', @now, 0, @now, @optedOutAt,
        -- how the row was queued: by a backfill run's scan, or by a sync
        COALESCE((SELECT CASE kind WHEN 'backfill' THEN 'backfill' ELSE 'sync' END FROM runs WHERE id = @runId), 'sync'))
      ON CONFLICT(target, email) DO UPDATE SET state = 'queued', attempts = 0, next_attempt_at = excluded.next_attempt_at,
        last_error = NULL, enqueued_at = excluded.enqueued_at, origin = excluded.origin
      WHERE outbox.state != 'queued'`);
    const leave = this.sql(
      `UPDATE opt_outs SET state = 'left', left_at = @now WHERE email = @email AND state = 'active'`,
    );
    const touch = this.sql(`UPDATE opt_outs SET last_seen_at = @now WHERE email = @email`);
    const markDeleted = this.sql(`UPDATE opt_outs SET deleted = 1 WHERE email = @email AND state = 'active'`);
    const event = this.sql(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (?, ?, ?, ?, ?)`);
    const checkpoint = this.sql(
      `INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    );
    this.db.transaction(() => {
      this.checkFence();
      for (const o of c.added) {
        upsert.run({ ...o, deleted: o.deleted ? 1 : 0, now: c.now });
        for (const target of c.targets)
          enqueue.run({ target, email: o.email, now: c.now, runId: c.runId, optedOutAt: o.optedOutAt });
        event.run(
          c.runId,
          'opt-out-detected',
          o.email,
          JSON.stringify({ contactId: o.contactId, optedOutAt: o.optedOutAt, source: o.source }),
          c.now,
        );
      }
      for (const r of c.resubscribed) {
        const email = typeof r === 'string' ? r : r.email;
        const info = leave.run({ email, now: c.now });
        if (info.changes > 0) {
          const detail =
            typeof r === 'string' ? null : JSON.stringify({ contactId: r.contactId, permission: r.permission });
          event.run(c.runId, 'left-unsubscribed-set', email, detail, c.now);
        }
      }
      for (const email of c.seen ?? []) touch.run({ email, now: c.now });
      for (const email of c.seenDeleted ?? []) markDeleted.run({ email });
      for (const [k, v] of Object.entries(c.checkpoints ?? {})) checkpoint.run(k, v, c.now);
    })();
  }

  // ------------------------------------------------------------------------------------------ outbox

  enqueueKnown(input: {
    runId: number;
    targets: readonly string[];
    since: string | null;
    redeliver: boolean;
    now: string;
  }): number {
    let n = 0;
    const insert = this.sql(`
      INSERT INTO outbox (target, email, state, enqueued_at, attempts, next_attempt_at, opted_out_at_cached, origin)
      SELECT @target, email, 'queued', @now, 0, @now, opted_out_at, 'backfill' FROM opt_outs
      WHERE state = 'active' AND (@since IS NULL OR opted_out_at >= @since)
      ON CONFLICT(target, email) DO NOTHING`);
    const redo = this.sql(`
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
    const rows = this.sql(
      `SELECT p.* FROM opt_outs p LEFT JOIN outbox o ON o.email = p.email AND o.target = @target
         WHERE p.state = 'active' AND (@since IS NULL OR p.opted_out_at >= @since)
           AND (o.email IS NULL OR (@redeliver = 1 AND o.state = 'done'))
         ORDER BY p.opted_out_at, p.email`,
    ).all({ target, since, redeliver: redeliver ? 1 : 0 }) as OptOutDbRow[];
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
    const rows = this.sql(
      this.outboxSelect(
        `o.target = ? AND o.state = 'queued' AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at, p.opted_out_at LIMIT ?`,
      ),
    ).all(target, now.toISOString(), limit) as OutboxDbRow[];
    return rows.map((r) => this.toOutboxRow(r));
  }

  queuedOutbox(target: string, limit: number, offset: number): OutboxRow[] {
    const rows = this.sql(
      this.outboxSelect(`o.target = ? AND o.state = 'queued' ORDER BY p.opted_out_at, p.email LIMIT ? OFFSET ?`),
    ).all(target, limit, offset) as OutboxDbRow[];
    return rows.map((r) => this.toOutboxRow(r));
  }

  recordOutcomes(input: RecordOutcomesInput): void {
    const { target, now, policy } = input;
    const random = input.random ?? Math.random;
    const at = now.toISOString();
    const history = this.sql(
      `INSERT INTO outcomes (run_id, target, email, kind, record_ids, message, at, attempt, origin)
       VALUES (@runId, @target, @email, @kind, @ids, @msg, @at,
         (SELECT COUNT(*) + 1 FROM outcomes WHERE target = @target AND email = @email),
         (SELECT origin FROM outbox WHERE target = @target AND email = @email))`,
    );
    const done = this.sql(`
      UPDATE outbox SET state = 'done', outcome = @kind, record_ids = @ids, completed_at = @at, last_error = @note,
        attempts = attempts + 1
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const park = this.sql(`
      UPDATE outbox SET state = 'parked', outcome = 'failed-permanent', record_ids = @ids, last_error = @msg,
        attempts = attempts + 1, completed_at = @at
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const getAttempts = this.sql(
      `SELECT attempts FROM outbox WHERE target = ? AND email = ? AND state = 'queued'`,
    ).pluck();
    const retry = this.sql(`
      UPDATE outbox SET attempts = @attempts, next_attempt_at = @next, last_error = @msg, outcome = 'failed-retryable'
      WHERE target = @target AND email = @email AND state = 'queued'`);
    const defer = this.sql(`
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
          done.run({
            kind: o.kind,
            ids,
            at,
            target,
            email: o.email,
            note: o.matchedBy ? `matched by ${o.matchedBy}` : null,
          });
        } else if (o.kind === 'failed-permanent') {
          park.run({ ids, msg, at, target, email: o.email });
        } else if (input.deferUntil) {
          defer.run({ next: input.deferUntil.toISOString(), msg, target, email: o.email });
        } else {
          const prev = getAttempts.get(target, o.email) as number | undefined;
          if (prev === undefined) continue;
          const attempts = prev + 1;
          if (attempts >= policy.maxAttempts) {
            park.run({
              ids,
              msg: `gave up after ${attempts} attempts: ${msg ?? 'retryable failure'}`,
              at,
              target,
              email: o.email,
            });
          } else {
            const delay = backoffSeconds(attempts, policy.backoffBaseSeconds, policy.backoffMaxSeconds, random);
            retry.run({
              attempts,
              next: new Date(now.getTime() + delay * 1000).toISOString(),
              msg,
              target,
              email: o.email,
            });
          }
        }
      }
    })();
  }

  requeueParked(target: string | null, now: string): number {
    return this.requeueParkedRecords({ target, now, via: 'cli' });
  }

  requeueParkedRecords(input: {
    target: string | null;
    emails?: readonly string[] | null;
    now: string;
    via: string;
  }): number {
    const { target, now, via } = input;
    const select = this.db.prepare(
      `SELECT target, email, last_error FROM outbox WHERE state = 'parked' AND (@target IS NULL OR target = @target)`,
    );
    const one = this.db.prepare(
      `SELECT target, email, last_error FROM outbox WHERE state = 'parked' AND target = @target AND email = @email`,
    );
    const requeue = this.db.prepare(
      `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, outcome = NULL, origin = 'requeue'
       WHERE state = 'parked' AND target = @target AND email = @email`,
    );
    const event = this.db.prepare(
      `INSERT INTO events (run_id, kind, email, detail, at) VALUES (NULL, 'requeued', ?, ?, ?)`,
    );
    return this.db.transaction(() => {
      this.checkFence();
      type Row = { target: string; email: string; last_error: string | null };
      let rows: Row[];
      if (input.emails) {
        if (target === null) throw new Error('requeueParkedRecords: emails need a target');
        rows = input.emails
          .map((email) => one.get({ target, email }) as Row | undefined)
          .filter((r): r is Row => r !== undefined);
      } else rows = select.all({ target }) as Row[];
      let n = 0;
      for (const r of rows) {
        n += requeue.run({ now, target: r.target, email: r.email }).changes;
        event.run(r.email, JSON.stringify({ target: r.target, via, parkedFor: r.last_error }), now);
      }
      return n;
    })();
  }

  parkedOutbox(target: string, limit: number, offset: number): ParkedRow[] {
    const rows = this.db
      .prepare(
        `SELECT o.target, o.email, p.opted_out_at, o.completed_at, o.attempts, o.last_error FROM outbox o JOIN opt_outs p ON p.email = o.email
         WHERE o.target = ? AND o.state = 'parked' ORDER BY p.opted_out_at, o.email LIMIT ? OFFSET ?`,
      )
      .all(target, limit, offset) as {
      target: string;
      email: string;
      opted_out_at: string;
      completed_at: string | null;
      attempts: number;
      last_error: string | null;
    }[];
    return rows.map(parkedRowFrom);
  }

  requeueNotFound(closedBefore: string, now: string): number {
    this.checkFence();
    return this.sql(
      `UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = @now, last_error = NULL
         WHERE state = 'done' AND outcome = 'not-found' AND completed_at < @closedBefore
           AND email IN (SELECT email FROM opt_outs WHERE state = 'active')`,
    ).run({ closedBefore, now }).changes;
  }

  deferQueued(target: string, until: string): number {
    this.checkFence();
    return this.sql(
      `UPDATE outbox SET next_attempt_at = ? WHERE target = ? AND state = 'queued' AND next_attempt_at < ?`,
    ).run(until, target, until).changes;
  }

  countDue(target: string, now: Date, limit = -1): number {
    return this.sql(
      `SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE target = ? AND state = 'queued' AND next_attempt_at <= ? LIMIT ?)`,
    )
      .pluck()
      .get(target, now.toISOString(), limit) as number;
  }

  targetStatus(targets: readonly string[], now: Date): TargetStatus[] {
    // the counts kept by migration 6's triggers: one read of a table with a row per (target, state, outcome)
    const counts = this.sql(`SELECT target, state, outcome, n FROM outbox_counts WHERE n != 0`).all() as {
      target: string;
      state: string;
      outcome: string;
      n: number;
    }[];
    const oldest = this.sql(
      `SELECT MIN(opted_out_at_cached) FROM outbox WHERE target = ? AND state = 'queued'`,
    ).pluck();
    const last = this.sql(`SELECT MAX(completed_at) FROM outbox WHERE target = ? AND state = 'done'`).pluck();
    const oldestEnqueued = this.sql(
      `SELECT MIN(enqueued_at) FROM outbox WHERE target = ? AND state = 'queued'`,
    ).pluck();
    return targets.map((target) => {
      const done: Record<string, number> = {};
      let queued = 0;
      let parked = 0;
      for (const c of counts) {
        if (c.target !== target) continue;
        if (c.state === 'queued') queued += c.n;
        else if (c.state === 'parked') parked += c.n;
        else if (c.outcome) done[c.outcome] = (done[c.outcome] ?? 0) + c.n;
      }
      return {
        target,
        queued,
        due: queued === 0 ? 0 : this.countDue(target, now),
        parked,
        done,
        oldestQueuedOptOutAt: queued === 0 ? null : (oldest.get(target) as string | null),
        oldestQueuedAt: queued === 0 ? null : (oldestEnqueued.get(target) as string | null),
        lastDeliveredAt: last.get(target) as string | null,
      };
    });
  }

  // ------------------------------------------------------------------------------------ checkpoints, kv

  getCheckpoint(key: string): string | null {
    return (this.sql(`SELECT value FROM checkpoints WHERE key = ?`).pluck().get(key) as string | undefined) ?? null;
  }

  setCheckpoint(key: string, value: string, now: string): void {
    this.checkFence();
    this.sql(
      `INSERT INTO checkpoints (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
    ).run(key, value, now);
  }

  kv(namespace: string): KeyValue {
    const get = this.sql(`SELECT value FROM kv WHERE namespace = ? AND key = ?`).pluck();
    const set = this.sql(
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

  startRun(kind: string, dryRun: boolean, now: string, who?: RunStart): number {
    return this.db.transaction(() => {
      // the caller holds the run lock: no other run can still be going, whatever its row says
      const id = Number(
        this.db
          .prepare(
            `INSERT INTO runs (kind, dry_run, started_at, status, owner, pid, host) VALUES (?, ?, ?, 'running', ?, ?, ?)`,
          )
          .run(kind, dryRun ? 1 : 0, now, who?.owner ?? null, who?.pid ?? null, who?.host ?? null).lastInsertRowid,
      );
      // under an external lease other lanes' runs may be live: only the run lock's holder may conclude they ended
      if (who?.exclusive === false) return id;
      this.db
        .prepare(
          `UPDATE runs SET status = 'abandoned',
             error = COALESCE(error, 'ended without recording a result (killed, crashed, or its run lease lapsed); found by run #' || CAST(@id AS INTEGER) || ' at ' || @now)
           WHERE status = 'running' AND id != @id`,
        )
        .run({ id, now });
      return id;
    })();
  }

  finishRun(id: number, exitCode: number, summary: unknown, now: string, result?: RunResult): void {
    this.checkFence();
    this.db
      .prepare(
        `UPDATE runs SET finished_at = @now, exit_code = @exitCode, summary = @summary, status = @status, error = NULL,
           counts = COALESCE(@counts, counts), api_calls = COALESCE(@apiCalls, api_calls), variant = COALESCE(@variant, variant)
         WHERE id = @id`,
      )
      .run({
        id,
        now,
        exitCode,
        summary: JSON.stringify(summary),
        status: runStatusFor(exitCode),
        ...runResultColumns(result),
      });
  }

  failRun(id: number, exitCode: number, error: string, now: string, result?: RunResult): void {
    // no lease check: a run that lost its lease still says how it ended (its own row only)
    this.db
      .prepare(
        `UPDATE runs SET finished_at = @now, exit_code = @exitCode, status = 'failed', error = @error,
           counts = COALESCE(@counts, counts), api_calls = COALESCE(@apiCalls, api_calls), variant = COALESCE(@variant, variant)
         WHERE id = @id`,
      )
      .run({ id, now, exitCode, error, ...runResultColumns(result) });
  }

  recentRuns(limit: number, now: Date = new Date()): RunRecord[] {
    const rows = this.db.prepare(`SELECT * FROM runs ORDER BY id DESC LIMIT ?`).all(limit) as RunDbRow[];
    return this.toRunRecords(rows, now);
  }

  getRun(id: number, now: Date = new Date()): RunRecord | null {
    const row = this.db.prepare(`SELECT * FROM runs WHERE id = ?`).get(id) as RunDbRow | undefined;
    return row ? this.toRunRecords([row], now)[0]! : null;
  }

  /**
   * A row still `running` is live only while its owner holds a valid run lease (and, on this host, is alive);
   * otherwise it reads `abandoned`. Rows of older versions (no owner) are live only as the newest run under a valid lease.
   */
  private toRunRecords(rows: readonly RunDbRow[], now: Date): RunRecord[] {
    const lock = this.runLock();
    const newest = this.db.prepare(`SELECT MAX(id) FROM runs`).pluck().get() as number | null;
    const leaseValid =
      lock !== null &&
      Date.parse(lock.expiresAt) >= now.getTime() &&
      !(lock.host === os.hostname() && !pidAlive(lock.pid));
    return rows.map((r) => {
      let status = (r.status ?? (r.finished_at === null ? 'running' : runStatusFor(r.exit_code ?? 1))) as RunStatus;
      let error = r.error;
      if (status === 'running') {
        const live = leaseValid && (r.owner !== null ? lock!.owner === r.owner : r.id === newest);
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
      // rows finished before migration 5 keep their counts in the summary
      const fromSummary: Record<string, Partial<Record<string, number>>> = {};
      for (const [t, v] of Object.entries(summary?.targets ?? {}))
        if (v && typeof v === 'object' && v.outcomes) fromSummary[t] = v.outcomes;
      return {
        id: r.id,
        kind: r.kind,
        dryRun: r.dry_run === 1,
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

  lagPoints(limit: number): LagPoint[] {
    const rows = this.db
      .prepare(
        `SELECT target, written_at, opted_out_at FROM (
           SELECT h.target, MIN(h.at) AS written_at, p.opted_out_at FROM outcomes h JOIN opt_outs p ON p.email = h.email
           WHERE h.kind = 'applied' AND COALESCE(h.origin, 'sync') = 'sync' GROUP BY h.target, h.email
         ) ORDER BY written_at DESC LIMIT ?`,
      )
      .all(limit) as { target: string; written_at: string; opted_out_at: string }[];
    return rows
      .map((r) => ({
        target: r.target,
        writtenAt: r.written_at,
        lagSeconds: Math.max(0, (Date.parse(r.written_at) - Date.parse(r.opted_out_at)) / 1000),
      }))
      .reverse();
  }

  quarantine(runId: number | null, source: string, rec: QuarantinedRecord, now: string): void {
    let raw: string;
    try {
      raw = JSON.stringify(rec.raw) ?? 'undefined';
    } catch {
      raw = String(rec.raw);
    }
    // One row per record: seen again, it gets the latest reason, raw record, run and time, and a count.
    this.sql(
      `INSERT INTO quarantine (run_id, source, record_id, reason, raw, at, fingerprint, last_seen_at, seen_count)
         VALUES (@runId, @source, @recordId, @reason, @raw, @now, @fingerprint, @now, 1)
         ON CONFLICT(source, fingerprint) DO UPDATE SET run_id = excluded.run_id, record_id = excluded.record_id,
           reason = excluded.reason, raw = excluded.raw, last_seen_at = excluded.last_seen_at, seen_count = seen_count + 1`,
    ).run({
      runId,
      source,
      recordId: rec.recordId,
      reason: rec.reason,
      raw,
      now,
      fingerprint: quarantineFingerprint(rec.recordId, raw),
    });
  }

  quarantined(limit: number): QuarantineRow[] {
    const rows = this.sql(`SELECT * FROM quarantine ORDER BY last_seen_at DESC, id DESC LIMIT ?`).all(limit) as {
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
    return rows.map(quarantineRowFrom);
  }

  countQuarantined(): number {
    return this.sql(`SELECT COUNT(*) FROM quarantine`).pluck().get() as number;
  }

  addEvent(runId: number | null, kind: string, email: string | null, detail: string | null, now: string): void {
    this.sql(`INSERT INTO events (run_id, kind, email, detail, at) VALUES (?, ?, ?, ?, ?)`).run(
      runId,
      kind,
      email,
      detail,
      now,
    );
  }

  events(since: string | null, kinds?: readonly string[], runId: number | null = null): AuditEvent[] {
    if (!kinds) {
      return this.sql(
        `SELECT at, kind, email, detail FROM events WHERE (@since IS NULL OR at >= @since) AND (@runId IS NULL OR run_id = @runId) ORDER BY id`,
      ).all({ since, runId }) as AuditEvent[];
    }
    // filtered in SQL (index events_kind): the opt-out-detected events of a large store are never read for this
    const rows: { id: number; at: string; kind: string; email: string | null; detail: string | null }[] = [];
    const byKind = this.sql(
      `SELECT id, at, kind, email, detail FROM events WHERE kind = @kind AND (@since IS NULL OR at >= @since) AND (@runId IS NULL OR run_id = @runId) ORDER BY id`,
    );
    for (const kind of new Set(kinds)) rows.push(...(byKind.all({ kind, since, runId }) as typeof rows));
    rows.sort((a, b) => a.id - b.id);
    return rows.map(({ at, kind, email, detail }) => ({ at, kind, email, detail }));
  }

  audit(since: string | null, runId: number | null = null): AuditRow[] {
    // the first `applied` delivery is the CRM write; later deliveries (a redeliver finding it already suppressed)
    // add to the history and never replace it
    const first = `FROM outcomes h WHERE h.target = o.target AND h.email = o.email AND h.kind = 'applied' ORDER BY h.id LIMIT 1`;
    const last = `FROM outcomes h WHERE h.target = o.target AND h.email = o.email ORDER BY h.id DESC LIMIT 1`;
    const rows = this.sql(
      `SELECT p.email, p.contact_id, o.target, p.opted_out_at, o.enqueued_at, o.completed_at, o.record_ids, o.state,
                o.outcome, o.attempts, o.last_error,
                (SELECT h.at ${first}) AS first_applied_at, (SELECT h.record_ids ${first}) AS first_applied_ids,
                (SELECT h.kind ${last}) AS last_kind, (SELECT h.at ${last}) AS last_at,
                (SELECT COUNT(*) FROM outcomes h WHERE h.target = o.target AND h.email = o.email) AS deliveries
         FROM outbox o JOIN opt_outs p ON p.email = o.email
         WHERE (@since IS NULL OR p.opted_out_at >= @since OR o.completed_at >= @since)
           -- audit --run N: the records that run delivered, or detected
           AND (@runId IS NULL OR (o.target, o.email) IN (SELECT target, email FROM outcomes WHERE run_id = @runId)
                OR o.email IN (SELECT email FROM events WHERE run_id = @runId AND kind = 'opt-out-detected'))
         ORDER BY p.opted_out_at, p.email, o.target`,
    ).all({ since, runId }) as {
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
    return rows.map(auditRowFrom);
  }

  deliveryHistory(since: string | null, runId: number | null = null): DeliveryEvent[] {
    const rows = this.sql(
      `SELECT h.id, h.at, h.run_id, r.kind AS run_kind, h.target, h.email, p.contact_id, h.attempt, h.origin, h.kind,
                h.record_ids, h.message
         FROM outcomes h LEFT JOIN runs r ON r.id = h.run_id LEFT JOIN opt_outs p ON p.email = h.email
         WHERE (@since IS NULL OR h.at >= @since) AND (@runId IS NULL OR h.run_id = @runId) ORDER BY h.id`,
    ).all({ since, runId }) as {
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
    return rows.map(deliveryEventFrom);
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
        : "this run's lock was removed (`cc-optout unlock`?): nothing more is committed by this run",
    );
  }

  runLock(): HeldRunLock | null {
    const r = this.sql(`SELECT * FROM run_lock WHERE id = 1`).get() as
      | {
          owner: string;
          pid: number;
          host: string;
          command: string;
          acquired_at: string;
          renewed_at: string | null;
          expires_at: string | null;
        }
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
    this.db
      .transaction(() => {
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
            .prepare(
              `INSERT INTO events (run_id, kind, email, detail, at) VALUES (NULL, 'run-lock-taken-over', NULL, ?, ?)`,
            )
            .run(
              JSON.stringify({ ...held, reason: deadHere ? 'holder process is gone (same host)' : 'lease expired' }),
              lock.now,
            );
        }
        const expiresAt = new Date(Date.parse(lock.now) + leaseMs).toISOString();
        this.sql(
          `INSERT INTO run_lock (id, owner, pid, host, command, acquired_at, renewed_at, expires_at)
           VALUES (1, @owner, @pid, @host, @command, @now, @now, @expiresAt)
           ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, host = excluded.host,
             command = excluded.command, acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at,
             expires_at = excluded.expires_at`,
        ).run({ owner: lock.owner, pid: lock.pid, host: lock.host, command: lock.command, now: lock.now, expiresAt });
      })
      .immediate();
    this.fenceOwner = lock.owner;
  }

  renewRunLock(owner: string, now: string, leaseMs: number = DEFAULT_LEASE_MS): boolean {
    const expiresAt = new Date(Date.parse(now) + leaseMs).toISOString();
    return (
      this.sql(`UPDATE run_lock SET renewed_at = ?, expires_at = ? WHERE id = 1 AND owner = ?`).run(
        now,
        expiresAt,
        owner,
      ).changes > 0
    );
  }

  releaseRunLock(owner: string | null): HeldRunLock | null {
    if (owner !== null && owner === this.fenceOwner) this.fenceOwner = null;
    return this.db
      .transaction(() => {
        const held = this.runLock();
        if (!held || (owner !== null && held.owner !== owner)) return null;
        this.sql(`DELETE FROM run_lock WHERE id = 1`).run();
        return held;
      })
      .immediate();
  }

  // ------------------------------------------------------------------------------------------ backfill

  openBackfill(since: string | null, targets: readonly string[], now: string): BackfillJob {
    this.checkFence();
    const key = JSON.stringify([...targets].sort());
    const existing = this.sql(
      `SELECT * FROM backfills WHERE finished_at IS NULL AND targets = ? AND since IS ? ORDER BY id DESC LIMIT 1`,
    ).get(key, since) as
      | {
          id: number;
          since: string | null;
          targets: string;
          started_at: string;
          scan_completed_at: string | null;
          finished_at: string | null;
        }
      | undefined;
    const row =
      existing ??
      (() => {
        const id = Number(
          this.sql(`INSERT INTO backfills (since, targets, started_at) VALUES (?, ?, ?)`).run(since, key, now)
            .lastInsertRowid,
        );
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
    this.sql(`UPDATE backfills SET scan_completed_at = ? WHERE id = ?`).run(now, id);
  }

  finishBackfill(id: number, now: string): void {
    this.checkFence();
    this.sql(`UPDATE backfills SET finished_at = ? WHERE id = ?`).run(now, id);
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
    if (st.isDirectory())
      throw new StoreOpenError(file, 'is a directory; store.path must name a file (e.g. ./.cc-optout/state.db)');
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
    if (!head.equals(SQLITE_HEADER))
      throw new StoreOpenError(file, 'is not a SQLite database (not a cc-optout state store)');
    return;
  }
  const dir = path.dirname(abs);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR' || code === 'EEXIST')
      throw new StoreOpenError(file, 'a folder on the path is a regular file, not a directory');
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
    const why =
      e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS'
        ? `its folder ${dir} is not writable`
        : 'cannot be created';
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

export function openStore(file: string): SqliteStateStore {
  return new SqliteStateStore(file);
}

/** Types re-exported for convenience. */
export type { ObservedContact, Outcome, QuarantinedRecord };
