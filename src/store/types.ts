/**
 * The StateStore contract. The engine talks to this interface, never to SQLite, so a server-backed
 * store (Postgres, say) can be added later. Every method that changes several tables is atomic.
 */
import type { Awaitable } from './backend';
import { ConfigError, KeyValue, ObservedContact, OptOut, Outcome, OutcomeKind, QuarantinedRecord } from '../domain';

export interface KnownOptOut extends OptOut {
  /** `active` while the contact is in CC's unsubscribed set; `left` once it was seen leaving it. */
  readonly state: 'active' | 'left';
  readonly firstSeenAt: string;
}

export type OutboxState = 'queued' | 'done' | 'parked';

export interface OutboxRow {
  readonly target: string;
  readonly optOut: OptOut;
  readonly state: OutboxState;
  readonly attempts: number;
  readonly nextAttemptAt: string;
  readonly lastError: string | null;
}

/** What one detection step (one page, or one whole window) commits, in ONE transaction. */
export interface DetectionCommit {
  readonly runId: number;
  /** New opt-outs: recorded and queued for every target in `targets`. */
  readonly added: readonly OptOut[];
  /** Known opt-outs that left the unsubscribed set (reported, never propagated). */
  readonly resubscribed: readonly ObservedContact[] | readonly string[];
  /** Emails seen again (last_seen_at refresh). */
  readonly seen?: readonly string[];
  /** Known opt-outs now seen deleted (their `deleted` flag is set: a later reconcile need not read them again). */
  readonly seenDeleted?: readonly string[];
  readonly targets: readonly string[];
  /** Checkpoints advanced in the same transaction (only after the work before them is queued). */
  readonly checkpoints?: Readonly<Record<string, string>>;
  readonly now: string;
}

export interface RetryPolicyConfig {
  readonly maxAttempts: number;
  readonly backoffBaseSeconds: number;
  readonly backoffMaxSeconds: number;
}

export interface RecordOutcomesInput {
  readonly runId: number;
  readonly target: string;
  readonly outcomes: readonly Outcome[];
  readonly now: Date;
  readonly policy: RetryPolicyConfig;
  /**
   * Target-wide stop (daily limit, outage): failed-retryable outcomes are deferred to `deferUntil`
   * without counting an attempt (the records are not at fault).
   */
  readonly deferUntil?: Date;
  readonly random?: () => number;
}

export type OutcomeCounts = Partial<Record<OutcomeKind, number>>;

export interface TargetStatus {
  readonly target: string;
  readonly queued: number;
  readonly due: number;
  readonly parked: number;
  readonly done: Partial<Record<OutcomeKind, number>>;
  readonly oldestQueuedOptOutAt: string | null;
  /** When the oldest queued row was queued (its age is how long it has waited). */
  readonly oldestQueuedAt?: string | null;
  readonly lastDeliveredAt: string | null;
}

/**
 * How a run ended: `ok` (exit 0), `incomplete` (3: records still queued or parked, detection stopped early),
 * `interrupted` (130/143), `failed` (a fatal error, with its message), `abandoned` (it never recorded an end: killed,
 * crashed, or its lease lapsed), or `running` while its holder still has the run lease.
 */
export type RunStatus = 'running' | 'ok' | 'incomplete' | 'interrupted' | 'failed' | 'abandoned';

/** The status a finished run's exit code means. */
export function runStatusFor(exitCode: number): RunStatus {
  if (exitCode === 0) return 'ok';
  if (exitCode === 3) return 'incomplete';
  if (exitCode === 130 || exitCode === 143) return 'interrupted';
  return 'failed';
}

export interface RunRecord {
  readonly id: number;
  readonly kind: string;
  readonly dryRun: boolean;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly exitCode: number | null;
  readonly summary: unknown;
  /** A `running` row whose holder no longer has the run lease reads `abandoned` (computed, never written by a read). */
  readonly status: RunStatus;
  /** What kind of sync or backfill: `window`, `reconcile` (full), `redeliver`, ... (null when not recorded). */
  readonly variant: string | null;
  /** Outcomes per target: `{ hubspot: { applied: 3 } }`. */
  readonly counts: Readonly<Record<string, Partial<Record<string, number>>>>;
  /** API calls per vendor. */
  readonly apiCalls: Readonly<Record<string, number>>;
  /** Why a failed run failed, or why a run counts as abandoned (redacted). */
  readonly error: string | null;
  readonly pid: number | null;
  readonly host: string | null;
}

/** Who starts a run: the run lock's owner (a `running` run whose owner lost the lock is abandoned). */
export interface RunStart {
  readonly owner: string;
  readonly pid: number;
  readonly host: string;
  /**
   * false: the run holds an external lease (the fleet's, on one account or one target's outbox), not the store's run
   * lock, so other runs of the store may be live (another lane): they are NOT marked abandoned. Default true.
   */
  readonly exclusive?: boolean;
}

/** What a run did, recorded with its end. */
export interface RunResult {
  readonly counts: Readonly<Record<string, Partial<Record<string, number>>>>;
  readonly apiCalls: Readonly<Record<string, number>>;
  readonly variant?: string | null;
}

/** A parked outbox row (failed-permanent, or gave up after maxAttempts), with the CRM's reason. */
export interface ParkedRow {
  readonly target: string;
  readonly email: string;
  readonly optedOutAt: string;
  readonly parkedAt: string | null;
  readonly attempts: number;
  readonly reason: string | null;
}

/** One opt-out's first CRM write: the lag from opt-out to write (the status page's chart). */
export interface LagPoint {
  readonly target: string;
  readonly writtenAt: string;
  readonly lagSeconds: number;
}

export interface AuditRow {
  readonly email: string;
  readonly contactId: string;
  readonly target: string;
  readonly optedOutAt: string;
  readonly detectedAt: string;
  /** When the CRM write happened (outcome `applied` only). */
  readonly writtenAt: string | null;
  /** When the row was closed (any final outcome or parked). */
  readonly closedAt: string | null;
  readonly lagSeconds: number | null;
  readonly recordIds: readonly string[];
  readonly outcome: string;
  readonly attempts: number;
  readonly message: string | null;
  /** Kind of the latest delivery of this record to this target (e.g. `already-suppressed` after a redeliver). */
  readonly lastOutcome: string | null;
  /** When the latest delivery happened. */
  readonly lastDeliveryAt: string | null;
  /** How many deliveries the append-only history holds for this record and target (`audit --history`). */
  readonly deliveries: number;
}

/** One delivery of one record to one target: the append-only history behind `audit --history`. */
export interface DeliveryEvent {
  readonly id: number;
  readonly at: string;
  readonly runId: number | null;
  readonly runKind: string | null;
  readonly target: string;
  readonly email: string;
  readonly contactId: string | null;
  /** The nth delivery of this record to this target (1-based, over the whole history). */
  readonly attempt: number;
  /** How the record was queued: `sync`, `backfill` or `redeliver`. */
  readonly origin: string | null;
  readonly outcome: string;
  readonly recordIds: readonly string[];
  readonly message: string | null;
}

export interface AuditEvent {
  readonly at: string;
  readonly kind: string;
  readonly email: string | null;
  readonly detail: string | null;
}

export interface QuarantineRow extends QuarantinedRecord {
  readonly id: number;
  /** The last run that saw the record. */
  readonly runId: number | null;
  readonly source: string;
  /** First seen. */
  readonly at: string;
  /** Last seen (one row per record: a record quarantined again updates its row). */
  readonly lastSeenAt: string;
  readonly timesSeen: number;
}

export interface BackfillJob {
  readonly id: number;
  readonly since: string | null;
  readonly targets: readonly string[];
  readonly startedAt: string;
  readonly scanCompletedAt: string | null;
  readonly finishedAt: string | null;
}

/** Who holds the run lock. */
export interface RunLockOwner {
  readonly owner: string;
  readonly pid: number;
  readonly host: string;
  readonly command: string;
  readonly now: string;
  /**
   * The lock is a lease: valid until `now + leaseMs` unless the holder renews it (`renewRunLock`). Once expired
   * anyone may take it over, whatever the host. Default DEFAULT_LEASE_MS.
   */
  readonly leaseMs?: number;
}

/** The holder renews every 30 s; a lease not renewed for 3 intervals is taken over. */
export const DEFAULT_LEASE_RENEW_MS = 30_000;
export const DEFAULT_LEASE_MS = 3 * DEFAULT_LEASE_RENEW_MS;

export interface HeldRunLock {
  readonly owner: string;
  readonly pid: number;
  readonly host: string;
  readonly command: string;
  readonly acquiredAt: string;
  readonly renewedAt: string;
  readonly expiresAt: string;
}

/** Another run holds the lock (overlapping cron runs). */
export class RunLocked extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RunLocked';
  }
}

/** This run's lease was taken over (or removed by `unlock`): it must not commit anything more. */
export class LeaseLost extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLost';
  }
}

/**
 * The state store file cannot be used (a directory, a path under a regular file, an unwritable folder or file, an
 * empty or non-SQLite file). A ConfigError, so the CLI exits 2 before any write; the message names `store.path`.
 */
export class StoreOpenError extends ConfigError {
  constructor(
    readonly path: string,
    problem: string,
    /** `store.url` for a PostgreSQL store (`path` is then its URL with the password masked). */
    readonly field: 'store.path' | 'store.url' = 'store.path',
  ) {
    super([`${field}: ${path}: ${problem}`]);
    this.message = `${field}: ${path}: ${problem}`;
    this.name = 'StoreOpenError';
  }
}

/**
 * The PostgreSQL server cannot be reached right now (connection refused, no answer, unknown host, starting up):
 * not a config error (a one-shot command exits 1; `run` waits for it, see service/store-wait).
 */
export class StoreUnreachable extends Error {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(`store.url: ${path}: ${problem}`);
    this.name = 'StoreUnreachable';
  }
}

export interface StateStore {
  readonly schemaVersion: number;
  close(): Awaitable<void>;

  // opt-outs
  knownOptOuts(emails: readonly string[]): Awaitable<Map<string, KnownOptOut>>;
  activeOptOutEmails(): Awaitable<Set<string>>;
  countOptOuts(): Awaitable<{ active: number; left: number }>;
  commitDetection(c: DetectionCommit): Awaitable<void>;

  // outbox
  enqueueKnown(input: {
    runId: number;
    targets: readonly string[];
    since: string | null;
    redeliver: boolean;
    now: string;
  }): Awaitable<number>;
  /** What `enqueueKnown` would queue for `target` (dry runs): active opt-outs with no outbox row, or a done one. */
  backfillCandidates(target: string, since: string | null, redeliver: boolean): Awaitable<OptOut[]>;
  dueOutbox(target: string, now: Date, limit: number): Awaitable<OutboxRow[]>;
  queuedOutbox(target: string, limit: number, offset: number): Awaitable<OutboxRow[]>;
  recordOutcomes(input: RecordOutcomesInput): Awaitable<void>;
  requeueParked(target: string | null, now: string): Awaitable<number>;
  /**
   * Queue parked rows again (all of `target`'s, all targets' with null, or only `emails`), recorded in the audit:
   * the rows' origin becomes `requeue` (their next deliveries say so in `audit --history`) and each gets a
   * `requeued` event naming `via` (cli, status-page) and the reason it was parked for.
   */
  requeueParkedRecords(input: {
    target: string | null;
    emails?: readonly string[] | null;
    now: string;
    via: string;
  }): Awaitable<number>;
  /** Parked rows of a target, oldest opt-out first. */
  parkedOutbox(target: string, limit: number, offset: number): Awaitable<ParkedRow[]>;
  /** Queue again the rows closed `not-found` before `closedBefore`, to look them up once more. */
  requeueNotFound(closedBefore: string, now: string): Awaitable<number>;
  /** A target-wide limit until `until` (e.g. a CRM's daily limit): every queued row of the target waits. */
  deferQueued(target: string, until: string): Awaitable<number>;
  targetStatus(targets: readonly string[], now: Date): Awaitable<TargetStatus[]>;
  /** Queued rows of `target` due at `now` (at most `limit`, when given: a cheap "is a full batch there?"). */
  countDue(target: string, now: Date, limit?: number): Awaitable<number>;

  // checkpoints and key/value
  getCheckpoint(key: string): Awaitable<string | null>;
  setCheckpoint(key: string, value: string, now: string): Awaitable<void>;
  kv(namespace: string): Awaitable<KeyValue>;

  // runs, quarantine, audit
  /**
   * Record a new run. Called with the run lock held, so every other run still `running` is gone (killed, crashed,
   * or its lease was taken over): those are marked `abandoned` in the same transaction.
   */
  startRun(kind: string, dryRun: boolean, now: string, who?: RunStart): Awaitable<number>;
  finishRun(id: number, exitCode: number, summary: unknown, now: string, result?: RunResult): Awaitable<void>;
  /** A run that stopped on an error: status `failed`, the (redacted) message, what it did so far. Needs no lease. */
  failRun(id: number, exitCode: number, error: string, now: string, result?: RunResult): Awaitable<void>;
  /** Newest first. */
  recentRuns(limit: number, now?: Date): Awaitable<RunRecord[]>;
  getRun(id: number, now?: Date): Awaitable<RunRecord | null>;
  quarantine(runId: number | null, source: string, rec: QuarantinedRecord, now: string): Awaitable<void>;
  quarantined(limit: number): Awaitable<QuarantineRow[]>;
  countQuarantined(): Awaitable<number>;
  addEvent(
    runId: number | null,
    kind: string,
    email: string | null,
    detail: string | null,
    now: string,
  ): Awaitable<void>;
  events(since: string | null, kinds?: readonly string[], runId?: number | null): Awaitable<AuditEvent[]>;
  /**
   * Per record and target. `writtenAt` is the first CRM write (the first `applied` delivery, kept when later
   * deliveries find the record already suppressed); `outcome` of a closed row that was ever applied is `applied`.
   */
  audit(since: string | null, runId?: number | null): Awaitable<AuditRow[]>;
  /** Every delivery event (append-only), oldest first; `since` filters on the delivery time, `runId` on the run. */
  deliveryHistory(since: string | null, runId?: number | null): Awaitable<DeliveryEvent[]>;
  /** First CRM writes (`applied`) of opt-outs a sync queued, newest `limit`, oldest first. */
  lagPoints(limit: number): Awaitable<LagPoint[]>;

  /**
   * One run at a time: throws RunLocked while another holder's lease is valid. An expired lease (not renewed for
   * `leaseMs`) is taken over whatever the host; on the same host a dead holder's lock is taken over at once.
   * While this store holds the lease, every outbox, checkpoint and run write first checks that it still does
   * (LeaseLost otherwise).
   */
  acquireRunLock(lock: RunLockOwner): Awaitable<void>;
  /** Extend this owner's lease to `now + leaseMs`; false when it is no longer held by `owner` (taken over, removed). */
  renewRunLock(owner: string, now: string, leaseMs?: number): Awaitable<boolean>;
  /** Release this owner's lock (null: whoever holds it, for `cc-optout unlock`); returns the lock removed, if any. */
  releaseRunLock(owner: string | null): Awaitable<HeldRunLock | null>;
  runLock(): Awaitable<HeldRunLock | null>;

  // backfill jobs
  openBackfill(since: string | null, targets: readonly string[], now: string): Awaitable<BackfillJob>;
  markBackfillScanned(id: number, now: string): Awaitable<void>;
  finishBackfill(id: number, now: string): Awaitable<void>;
}
