/**
 * The StateStore contract. The engine talks to this interface, never to SQLite, so a server-backed
 * store (Postgres, say) can be added later. Every method that changes several tables is atomic.
 */
import { ObservedContact, OptOut, Outcome, OutcomeKind } from '../domain';
import { KeyValue } from '../plugin';
import { QuarantinedRecord } from '../source/types';

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
  readonly lastDeliveredAt: string | null;
}

export interface RunRecord {
  readonly id: number;
  readonly kind: string;
  readonly dryRun: boolean;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly exitCode: number | null;
  readonly summary: unknown;
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
}

export interface AuditEvent {
  readonly at: string;
  readonly kind: string;
  readonly email: string | null;
  readonly detail: string | null;
}

export interface QuarantineRow extends QuarantinedRecord {
  readonly id: number;
  readonly runId: number | null;
  readonly source: string;
  readonly at: string;
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
}

/** Another run holds the lock (overlapping cron runs). */
export class RunLocked extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RunLocked';
  }
}

export interface StateStore {
  readonly schemaVersion: number;
  close(): void;

  // opt-outs
  knownOptOuts(emails: readonly string[]): Map<string, KnownOptOut>;
  activeOptOutEmails(): Set<string>;
  countOptOuts(): { active: number; left: number };
  commitDetection(c: DetectionCommit): void;

  // outbox
  enqueueKnown(input: { runId: number; targets: readonly string[]; since: string | null; redeliver: boolean; now: string }): number;
  /** What `enqueueKnown` would queue for `target` (dry runs): active opt-outs with no outbox row, or a done one. */
  backfillCandidates(target: string, since: string | null, redeliver: boolean): OptOut[];
  dueOutbox(target: string, now: Date, limit: number): OutboxRow[];
  queuedOutbox(target: string, limit: number, offset: number): OutboxRow[];
  recordOutcomes(input: RecordOutcomesInput): void;
  requeueParked(target: string | null, now: string): number;
  /** Queue again the rows closed `not-found` before `closedBefore`, to look them up once more. */
  requeueNotFound(closedBefore: string, now: string): number;
  /** A target-wide limit until `until` (e.g. a CRM's daily limit): every queued row of the target waits. */
  deferQueued(target: string, until: string): number;
  targetStatus(targets: readonly string[], now: Date): TargetStatus[];

  // checkpoints and key/value
  getCheckpoint(key: string): string | null;
  setCheckpoint(key: string, value: string, now: string): void;
  kv(namespace: string): KeyValue;

  // runs, quarantine, audit
  startRun(kind: string, dryRun: boolean, now: string): number;
  finishRun(id: number, exitCode: number, summary: unknown, now: string): void;
  recentRuns(limit: number): RunRecord[];
  quarantine(runId: number | null, source: string, rec: QuarantinedRecord, now: string): void;
  quarantined(limit: number): QuarantineRow[];
  countQuarantined(): number;
  addEvent(runId: number | null, kind: string, email: string | null, detail: string | null, now: string): void;
  events(since: string | null, kinds?: readonly string[]): AuditEvent[];
  audit(since: string | null): AuditRow[];

  // one run at a time: throws RunLocked while a live process holds it; a dead holder's lock is taken over
  acquireRunLock(lock: RunLockOwner): void;
  /** Release this owner's lock (null: whoever holds it, for `cc-optout unlock`). True when a lock was held. */
  releaseRunLock(owner: string | null): boolean;

  // backfill jobs
  openBackfill(since: string | null, targets: readonly string[], now: string): BackfillJob;
  markBackfillScanned(id: number, now: string): void;
  finishBackfill(id: number, now: string): void;
}
