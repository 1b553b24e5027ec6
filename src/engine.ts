/**
 * detect -> outbox -> deliver.
 *
 * Detect reads opt-outs from the source (an incremental opt-out window, or a full reconcile of the
 * unsubscribed set), computes the delta against the store, and commits new opt-outs together with one
 * outbox row per (target, email); the window checkpoint advances only after that work is committed.
 * Deliver drains each target's outbox independently, in batches, and records one outcome per email; it runs
 * alongside detection, the outbox the hand-off: a committed page is deliverable at once (detectAndDeliver).
 * A crash at any point resumes from the store: detection re-reads an overlapping window, delivery picks
 * up every row that is still queued.
 */
import * as os from 'os';
import * as E from 'fp-ts/Either';
import { Config, ResolvedTarget } from './config';
import { computeDelta, missingFromFullScan } from './delta';
import { KeyValue, OUTCOME_KINDS, OptOut, Outcome, OutcomeKind, isOptedOut } from './domain';
import { Clock } from './http/clock';
import { Logger, redact } from './log';
import { CallCounter, Capabilities, CheckReport, HaltInfo, Target, isTargetHalt } from './sdk';
import { Registry } from './registry';
import { coreHttp, coreSecrets } from './capabilities';
import { OptOutSource, QuotaExceeded, SourceDeps, SourcePage } from './source/types';
import { LeaseLost, RunResult, StateStore } from './store/types';
import { Lease, holdRunLock } from './store/lease';

export const CHECKPOINT_WINDOW = 'cc.optout_window.before';
export const CHECKPOINT_LAST_FULL = 'cc.last_full_reconcile';
export const SOURCE_KV = 'source:constant-contact';

/** A target name that is not in the config (a usage error: exit 2). */
export class UnknownTarget extends Error {
  constructor(
    readonly target: string,
    readonly configured: readonly string[],
  ) {
    super(`unknown target "${target}" (configured: ${configured.join(', ')})`);
    this.name = 'UnknownTarget';
  }
}

/** A target's stop as the engine handles it (from a TargetHalt the connector threw, or the engine's own). */
type TargetError = HaltInfo;

/** One deliver call's result inside the engine: the outcomes, and the halt that stopped the batch (if any). */
interface DeliveryReport {
  readonly outcomes: readonly Outcome[];
  readonly halt?: TargetError;
}

/**
 * THE one place a connector's failure is read: a TargetHalt (from any copy of the SDK: recognised by its
 * brand, never by instanceof) says why the target stopped and what the batch settled before it; anything
 * else a connector throws becomes a fatal halt with the (redacted) message (`halted: false`).
 */
export function readTargetFailure(err: unknown): { halt: TargetError; outcomes: readonly Outcome[]; halted: boolean } {
  if (!isTargetHalt(err))
    return {
      halt: { kind: 'fatal', message: redact(`connector threw: ${(err as Error)?.message ?? String(err)}`) },
      outcomes: [],
      halted: false,
    };
  const halt: TargetError = {
    kind: err.kind,
    message: redact(err.message),
    ...(err.retryAt ? { retryAt: err.retryAt } : {}),
  };
  return { halt, outcomes: Array.isArray(err.outcomes) ? err.outcomes : [], halted: true };
}

export class CallCounts implements CallCounter {
  readonly counts: Record<string, number> = {};
  record(vendor: string, n = 1): void {
    this.counts[vendor] = (this.counts[vendor] ?? 0) + n;
  }
}

export type ProgressEvent =
  /** `total`: the count Constant Contact reports for the set being scanned, when known (sizes the scan bar). */
  | { phase: 'scan'; pages: number; contacts: number; optOuts: number; total?: number | null }
  | { phase: 'deliver'; target: string; done: number; total: number };

/**
 * A lease the caller holds on this store's account (the fleet's account or delivery lease, with its fence): the
 * engine then takes no run lock of its own. The lease's fence guards the store's writes (PgFenceGuard); the engine
 * checks `lost()` before each page and batch, and stops with LeaseLost once it returns a reason.
 */
export interface ExternalLease {
  /** Why the lease was lost (taken over, expired, released), or null while it is held. */
  lost(): string | null;
  /** Who holds it (recorded as the run's owner). */
  readonly owner: string;
}

export interface EngineDeps {
  readonly config: Config;
  readonly store: StateStore;
  readonly registry: Registry;
  /** Builds the source for a run (the default builds the Constant Contact source). */
  readonly source: (deps: SourceDeps) => OptOutSource;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly random?: () => number;
  readonly onProgress?: (e: ProgressEvent) => void;
  readonly readFile?: (p: string) => string;
  /** How often the run lease is renewed (it lasts 3 intervals). Default 30 s. */
  readonly leaseRenewMs?: number;
  /** Given: the caller's lease fences this account (no store run lock is taken); see ExternalLease. */
  readonly externalLease?: ExternalLease;
  /**
   * Where in each `reconcileEveryHours` period this account's full reconcile falls (0 <= phase < 1; the fleet
   * gives each account its own, from a hash of its id, so many accounts' reconciles spread over the period instead
   * of piling up). Without it a reconcile is due `reconcileEveryHours` after the last one.
   */
  readonly reconcilePhase?: number;
}

/**
 * The latest reconcile slot at or before `now` for a period of `periodMs` and a phase: slots sit at
 * `k x period + phase x period` from the epoch, so every account keeps its own time of day (or of the period).
 */
export function latestReconcileSlot(nowMs: number, periodMs: number, phase: number): number {
  const offset = Math.min(Math.max(phase, 0), 0.999999) * periodMs;
  return Math.floor((nowMs - offset) / periodMs) * periodMs + offset;
}

export interface DetectionSummary {
  mode: 'window' | 'full' | 'skipped';
  window?: { after: string; before: string };
  pages: number;
  contactsSeen: number;
  optOutsSeen: number;
  newOptOuts: number;
  resubscribed: number;
  skippedNoEmail: number;
  quarantined: number;
  complete: boolean;
  stoppedReason?: string;
  /** When detection can go on (a daily quota's reset), when it stopped for that. */
  retryAt?: string;
  unsubscribedCount?: number | null;
  /** Things detection repaired or held back (a garbage checkpoint, resubscribes not concluded), for the run's messages. */
  warnings?: string[];
}

export interface TargetSummary {
  outcomes: Partial<Record<OutcomeKind, number>>;
  batches: number;
  queued: number;
  parked: number;
  halted?: string;
  /** When the target said it can be tried again (a daily limit's reset), when it halted with one. */
  retryAt?: string;
  /** Records parked (failed-permanent) by this run: the first few, with the reason. */
  parkedRecords?: { email: string; message: string }[];
}

/** How many parked records a summary names. */
export const PARKED_SHOWN = 5;

/** What a scan reads: the opt-out window from the checkpoint, the whole unsubscribed set, or `backfill --since`. */
type ScanMode = 'window' | 'full' | 'since';

interface DetectOptions {
  readonly dryRun: boolean;
  /** The targets new opt-outs are queued for. */
  readonly targets: readonly string[];
  /** Stop after the page in hand once aborted. */
  readonly signal?: AbortSignal;
  /** backfill --since */
  readonly since?: string | null;
  /** Told of every committed page (the delivery workers wait on it). */
  readonly feed?: OutboxFeed;
}

interface Detection {
  readonly summary: DetectionSummary;
  /** Dry run: the new opt-outs detection found (nothing is committed). */
  readonly pending: OptOut[];
}

/** One scan in progress: its options, what it has counted so far, and what concluding a full reconcile needs. */
interface ScanState extends DetectOptions {
  readonly runId: number;
  readonly source: OptOutSource;
  readonly started: Date;
  readonly summary: DetectionSummary;
  readonly pending: OptOut[];
  readonly pendingSeen: Set<string>;
  /** Opted-out emails seen by this scan. */
  readonly seen: Set<string>;
  /** Emails of quarantined records: their contact's permission is unknown, so they never count as "left". */
  readonly quarantinedEmails: Set<string>;
  quarantinedUnidentified: number;
  /** Marked as having left from a well-formed record on a page: not counted again as missing. */
  readonly alreadyLeft: Set<string>;
  optedOutNotDeleted: number;
  /** The count Constant Contact reports for the set being scanned (sizes the progress bar). */
  total: number | null;
}

/**
 * The hand-off between a scan and the delivery workers: the scan says when a page is committed to the outbox
 * and when it has ended; a worker that has drained what is due waits here for the next page.
 */
export class OutboxFeed {
  private waiting: (() => void)[] = [];
  private over = false;

  /** The scan has ended (completed, stopped or failed): no more pages come in this run. */
  get ended(): boolean {
    return this.over;
  }

  committed(): void {
    this.wake();
  }

  end(): void {
    this.over = true;
    this.wake();
  }

  /** Resolves at the next committed page, at the end of the scan, or once `signal` is aborted. */
  next(signal?: AbortSignal): Promise<void> {
    if (this.over || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      signal?.addEventListener('abort', done, { once: true });
      this.waiting.push(done);
    });
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) w();
  }
}

function countOutcome(summary: TargetSummary, o: Outcome): void {
  summary.outcomes[o.kind] = (summary.outcomes[o.kind] ?? 0) + 1;
  if (o.kind === 'failed-permanent') {
    const named = (summary.parkedRecords ??= []);
    if (named.length < PARKED_SHOWN) named.push({ email: o.email, message: o.message ?? 'no reason given' });
  }
}

/** The run stopped early because the caller asked it to (SIGINT/SIGTERM): what was committed stays. */
export class RunInterrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'RunInterrupted';
  }
}

export interface PlanEntry {
  target: string;
  email: string;
  kind: OutcomeKind;
  recordIds: readonly string[];
  action?: string;
  message?: string;
}

export interface RunSummary {
  command: string;
  dryRun: boolean;
  runId: number;
  startedAt: string;
  durationMs: number;
  detection: DetectionSummary;
  targets: Record<string, TargetSummary>;
  apiCalls: Record<string, number>;
  quarantined: number;
  plan?: PlanEntry[];
  exitCode: number;
  messages: string[];
  /** Stopped early on request (the signal passed in the options); a rerun resumes. */
  interrupted?: boolean;
}

export interface SyncOptions {
  dryRun?: boolean;
  full?: boolean;
  /** Deliver only to these targets (detection still queues for every enabled target). */
  targets?: readonly string[];
  /** Stop after the batch (or detection page) in hand once aborted. */
  signal?: AbortSignal;
  /**
   * false: detect and queue only (no CRM write, no plan); the outbox is left to a deliver run (`Engine.deliver`),
   * e.g. the fleet's delivery lanes. Default true.
   */
  deliver?: boolean;
}

/** A deliver-only run: drain the due outbox rows of these targets (default: every enabled one); no detection. */
export interface DeliverOptions {
  targets?: readonly string[];
  /** Stop after the batch in hand once aborted. */
  signal?: AbortSignal;
}

export interface BackfillOptions {
  dryRun?: boolean;
  since?: string | null;
  target?: string | null;
  /** Only these targets (with `target`, both apply). */
  targets?: readonly string[];
  /** Stop after the batch (or detection page) in hand once aborted. */
  signal?: AbortSignal;
  /** Re-queue emails already delivered (e.g. after importing records into the CRM). */
  redeliver?: boolean;
}

const MINUTE = 60_000;
/** The message of an address a CRM refused on its own as a bad request (deliverIsolating). */
const REFUSED_ALONE = 'refused by the CRM as a bad request for this address';

function emptyDetection(): DetectionSummary {
  return {
    mode: 'skipped',
    pages: 0,
    contactsSeen: 0,
    optOutsSeen: 0,
    newOptOuts: 0,
    resubscribed: 0,
    skippedNoEmail: 0,
    quarantined: 0,
    complete: true,
  };
}

export class Engine {
  /** Targets that accepted at least one request in this engine's life (evidence for parking a refused address). */
  private readonly acceptingTargets = new WeakSet<Target>();
  private runId: number | null = null;
  private calls = new CallCounts();
  /** Handed to sources and targets: always records into the current run's counter (targets outlive runs). */
  private readonly callSink: CallCounter = { record: (vendor, n) => this.calls.record(vendor, n) };
  private readonly targets = new Map<string, Target>();
  /** The stop signal of the run in progress (handed to connectors as `caps.signal`). */
  private stopSignal: AbortSignal | undefined = undefined;

  constructor(private readonly deps: EngineDeps) {}

  private now(): Date {
    return this.deps.clock.now();
  }

  private enabledTargets(only?: readonly string[] | null): ResolvedTarget[] {
    const all = this.deps.config.targets.filter((t) => t.enabled);
    if (!only || only.length === 0) return all;
    for (const name of only) {
      if (!this.deps.config.targets.some((t) => t.name === name)) {
        throw new UnknownTarget(
          name,
          this.deps.config.targets.map((t) => t.name),
        );
      }
    }
    return all.filter((t) => only.includes(t.name));
  }

  /** The key/value stores handed out (flushed before a run ends: a server-backed store queues their writes). */
  private readonly kvs = new Map<string, KeyValue>();

  private async kvFor(namespace: string): Promise<KeyValue> {
    const existing = this.kvs.get(namespace);
    if (existing) return existing;
    const kv = await this.deps.store.kv(namespace);
    this.kvs.set(namespace, kv);
    return kv;
  }

  /** Make every key/value write of the run durable (tokens, usage counters); rethrows the first failure. */
  private async flushKv(): Promise<void> {
    for (const kv of this.kvs.values()) await kv.flush?.();
  }

  /** Quarantine writes the source asked for (its callback is synchronous): awaited before the next commit. */
  private pendingWrites: Promise<void>[] = [];
  private pendingWriteError: unknown = null;

  private trackWrite(w: unknown): void {
    if (!(w instanceof Promise)) return;
    this.pendingWrites.push(
      (w as Promise<unknown>).then(
        () => undefined,
        (err: unknown) => {
          this.pendingWriteError ??= err;
        },
      ),
    );
  }

  /** Wait for the tracked writes; throws the first that failed. */
  private async settleWrites(): Promise<void> {
    while (this.pendingWrites.length > 0) await Promise.all(this.pendingWrites.splice(0));
    const err = this.pendingWriteError;
    this.pendingWriteError = null;
    if (err) throw err;
  }

  private async buildSource(): Promise<OptOutSource> {
    const { store, clock, logger } = this.deps;
    return this.deps.source({
      clock,
      logger: logger.child({ component: 'constant-contact' }),
      kv: await this.kvFor(SOURCE_KV),
      calls: this.callSink,
      random: this.deps.random,
      quarantine: (rec) => {
        try {
          this.trackWrite(store.quarantine(this.runId, 'constant-contact', rec, this.now().toISOString()));
        } catch (err) {
          this.pendingWriteError ??= err;
        }
        logger.warn('quarantined a malformed Constant Contact record', { recordId: rec.recordId, reason: rec.reason });
      },
    });
  }

  private async openTarget(t: ResolvedTarget): Promise<Target> {
    const existing = this.targets.get(t.name);
    if (existing) return existing;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- read by the caps getter below
    const engine = this;
    const connector = this.deps.registry.get(t.connector);
    if (!connector) throw new Error(`target "${t.name}": connector "${t.connector}" is not installed`);
    const caps: Capabilities = {
      clock: this.deps.clock,
      logger: this.deps.logger.child({ target: t.name }),
      kv: await this.kvFor(`target:${t.name}`),
      calls: this.callSink,
      targetName: t.name,
      readFile: this.deps.readFile ?? ((p: string) => require('fs').readFileSync(p, 'utf8') as string),
      secrets: coreSecrets,
      // retries stop with the run (SIGTERM, a lost fleet lease): nothing more is sent for a stopped run
      http: coreHttp(this.deps.clock, () => engine.stopSignal),
      // the current run's stop signal (SIGINT/SIGTERM, a lost lease): a target opened once serves several runs
      get signal(): AbortSignal | undefined {
        return engine.stopSignal;
      },
    };
    const existingNow = this.targets.get(t.name);
    if (existingNow) return existingNow;
    const target = connector.open(t.config, caps);
    this.targets.set(t.name, target);
    return target;
  }

  async close(): Promise<void> {
    for (const t of this.targets.values()) await t.close?.();
    this.targets.clear();
    try {
      await this.flushKv();
    } finally {
      await this.releaseLease();
    }
  }

  private readonly lockOwner = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  private lease: Lease | null = null;

  private async releaseLease(): Promise<void> {
    const lease = this.lease;
    this.lease = null;
    await lease?.release();
    // an external lease is the caller's to release; this engine never took the store's run lock then
    if (!this.deps.externalLease) await this.deps.store.releaseRunLock(this.lockOwner);
  }

  /** Stop before the next page or batch once the lease is lost (the store refuses the writes anyway). */
  private assertLease(): void {
    const lost = this.deps.externalLease ? this.deps.externalLease.lost() : this.lease?.lost();
    if (lost) throw new LeaseLost(lost);
  }

  private async begin(kind: string, dryRun: boolean): Promise<{ runId: number; started: Date }> {
    this.calls = new CallCounts();
    const started = this.now();
    // One run at a time per store: overlapping runs would race the rotating refresh token and double-deliver.
    // The lock is a lease renewed in the background: a holder that died on any host is taken over once it expires.
    const previous = this.lease;
    this.lease = null;
    await previous?.release();
    const external = this.deps.externalLease;
    if (external) {
      // the caller's lease fences this account's writes: no store run lock; a lease already lost starts nothing
      const lost = external.lost();
      if (lost) throw new LeaseLost(lost);
    } else {
      this.lease = await holdRunLock(
        this.deps.store,
        { owner: this.lockOwner, pid: process.pid, host: os.hostname(), command: kind },
        { renewMs: this.deps.leaseRenewMs, now: () => this.now(), onLost: (m) => this.deps.logger.error(m) },
      );
    }
    this.runId = await this.deps.store.startRun(kind, dryRun, started.toISOString(), {
      owner: external ? external.owner : this.lockOwner,
      pid: process.pid,
      host: os.hostname(),
      ...(external ? { exclusive: false } : {}),
    });
    this.runOpen = true;
    this.runTargets = null;
    this.runVariant = null;
    return { runId: this.runId, started };
  }

  /** The run in progress has no recorded end yet (finish or fail records it). */
  private runOpen = false;
  /** The run's target summaries and variant, so a run that fails still records what it did. */
  private runTargets: Record<string, TargetSummary> | null = null;
  private runVariant: string | null = null;

  private runResult(): RunResult {
    const counts: Record<string, Partial<Record<OutcomeKind, number>>> = {};
    for (const [name, t] of Object.entries(this.runTargets ?? {})) counts[name] = { ...t.outcomes };
    return { counts, apiCalls: { ...this.calls.counts }, variant: this.runVariant };
  }

  /**
   * Run a command that records a run: when it throws after its run started (a fatal error, a lost lease), the
   * run is recorded as failed with the redacted message and what it did so far, and the lease is released, so
   * no run stays `running` after its process moved on.
   */
  private async recorded<T>(fn: () => Promise<T>): Promise<T> {
    this.runOpen = false;
    try {
      return await fn();
    } catch (err) {
      if (this.runOpen && this.runId !== null) {
        this.runOpen = false;
        try {
          await this.settleWrites().catch(() => undefined);
          await this.flushKv();
        } catch (e) {
          this.deps.logger.error("could not store the run's key/value writes", { error: redact((e as Error).message) });
        }
        try {
          await this.deps.store.failRun(
            this.runId,
            1,
            redact((err as Error)?.message ?? String(err)),
            this.now().toISOString(),
            this.runResult(),
          );
        } catch (e) {
          this.deps.logger.error('could not record the failed run', {
            runId: this.runId,
            error: redact((e as Error).message),
          });
        }
        await this.releaseLease();
      }
      throw err;
    }
  }

  // ---------------------------------------------------------------------------------------- detection

  /** What a garbage stored checkpoint was repaired with, for the next detection's warnings. */
  private checkpointRepairs: string[] = [];

  /**
   * A stored checkpoint as a time: null when absent, and null too (with a repair note) when it is not a
   * date-time or lies in the future (beyond a day of clock skew). Either way a full reconcile follows, and
   * it writes both checkpoints afresh: a garbage value never reaches date arithmetic.
   */
  private async checkpointTime(key: string): Promise<number | null> {
    const raw = await this.deps.store.getCheckpoint(key);
    if (raw === null || raw === '') return null;
    const t = Date.parse(raw);
    const latest = this.now().getTime() + 24 * 3600_000;
    if (Number.isNaN(t) || t > latest) {
      const note =
        `the stored checkpoint ${key} holds ${JSON.stringify(raw.slice(0, 60))}, ${Number.isNaN(t) ? 'not a date-time' : 'a time in the future'}: ` +
        `ignored, and repaired by a full reconcile`;
      if (!this.checkpointRepairs.includes(note)) this.checkpointRepairs.push(note);
      this.deps.logger.warn(note);
      return null;
    }
    return t;
  }

  /** Is a full reconcile due (mode full, forced, never done, or older than reconcileEveryHours)? */
  async fullReconcileDue(force: boolean): Promise<boolean> {
    const d = this.deps.config.source.detection;
    // both are read (not short-circuited) so that each garbage value is reported
    const window = await this.checkpointTime(CHECKPOINT_WINDOW);
    const last = await this.checkpointTime(CHECKPOINT_LAST_FULL);
    if (force || d.mode === 'full') return true;
    if (window === null || last === null) return true;
    const periodMs = d.reconcileEveryHours * 3600_000;
    const phase = this.deps.reconcilePhase;
    if (phase !== undefined && periodMs > 0) return last < latestReconcileSlot(this.now().getTime(), periodMs, phase);
    return this.now().getTime() - last >= periodMs;
  }

  /**
   * Detect opt-outs: read the pages of one scan (an opt-out window, a full reconcile, or `backfill --since`),
   * commit each page in ONE transaction (new opt-outs + their outbox rows), then conclude the scan (the
   * checkpoint moves only after every page before it is committed). A dry run commits nothing: its new
   * opt-outs come back in `pending`. Every committed page wakes the delivery workers through `feed`.
   */
  private async detect(mode: ScanMode, opts: DetectOptions): Promise<Detection> {
    const scan = await this.newScan(opts);
    const onPage = (page: SourcePage): Promise<void> => this.takePage(scan, page);
    try {
      // 1. read and commit page by page; 2. conclude (leavers, checkpoints) once the scan is whole
      if (mode === 'since') await this.scanSince(scan, onPage);
      else if (mode === 'full') await this.reconcileFully(scan, onPage);
      else await this.scanFromCheckpoint(scan, onPage);
      await this.settleWrites();
      scan.summary.complete = true;
    } catch (err) {
      await this.settleWrites().catch(() => undefined);
      this.stoppedEarly(scan, err);
    }
    return { summary: scan.summary, pending: scan.pending };
  }

  private async newScan(opts: DetectOptions): Promise<ScanState> {
    const summary = emptyDetection();
    if (this.checkpointRepairs.length > 0) (summary.warnings ??= []).push(...this.checkpointRepairs.splice(0));
    return {
      ...opts,
      runId: this.runId!,
      source: await this.buildSource(),
      started: this.now(),
      summary,
      pending: [],
      pendingSeen: new Set(),
      seen: new Set(),
      quarantinedEmails: new Set(),
      quarantinedUnidentified: 0,
      alreadyLeft: new Set(),
      optedOutNotDeleted: 0,
      total: null,
    };
  }

  /** The end of the window a scan started now reads up to: `now − lagMinutes` (recent opt-outs settle first). */
  private windowEnd(scan: ScanState): Date {
    return new Date(scan.started.getTime() - this.deps.config.source.detection.lagMinutes * MINUTE);
  }

  /** One page: count it, compute its delta against the store, commit it (or keep it, in a dry run), report it. */
  private async takePage(scan: ScanState, page: SourcePage): Promise<void> {
    this.assertLease();
    // the page's quarantined records are stored before the page commits
    await this.settleWrites();
    const { summary } = scan;
    summary.pages += 1;
    summary.contactsSeen += page.contacts.length;
    summary.skippedNoEmail += page.skippedNoEmail;
    summary.quarantined += page.quarantined;
    for (const e of page.quarantinedEmails ?? []) scan.quarantinedEmails.add(e);
    scan.quarantinedUnidentified += page.quarantinedUnidentified ?? 0;
    const nowIso = this.now().toISOString();
    const known = await this.deps.store.knownOptOuts(page.contacts.map((c) => c.email));
    const delta = computeDelta(known, page.contacts, nowIso);
    const optedOut = page.contacts.filter(isOptedOut);
    summary.optOutsSeen += optedOut.length;
    for (const c of optedOut) scan.seen.add(c.email);
    for (const c of delta.resubscribed) scan.alreadyLeft.add(c.email);
    scan.optedOutNotDeleted += optedOut.filter((c) => !c.deleted).length;
    summary.resubscribed += delta.resubscribed.length;
    if (scan.dryRun) {
      for (const o of delta.added) {
        if (scan.pendingSeen.has(o.email)) continue;
        scan.pendingSeen.add(o.email);
        scan.pending.push(o);
      }
      summary.newOptOuts = scan.pending.length;
    } else {
      // opted out, then deleted: flagged, so the next reconcile need not read deleted contacts again
      const seenDeleted = optedOut
        .filter((c) => c.deleted && known.get(c.email)?.deleted === false)
        .map((c) => c.email);
      await this.deps.store.commitDetection({
        runId: scan.runId,
        added: delta.added,
        resubscribed: delta.resubscribed,
        seen: delta.unchanged,
        seenDeleted,
        targets: scan.targets,
        now: nowIso,
      });
      summary.newOptOuts += delta.added.length;
      // the page is durably queued: the delivery workers may take it
      scan.feed?.committed();
    }
    this.deps.onProgress?.({
      phase: 'scan',
      pages: summary.pages,
      contacts: summary.contactsSeen,
      optOuts: summary.optOutsSeen,
      total: scan.total,
    });
    // this page is committed; stop before the next one is requested
    if (scan.signal?.aborted) throw new RunInterrupted();
  }

  /** backfill --since: only the opt-outs since that date (an opt-out window), not the whole set; no checkpoint. */
  private async scanSince(scan: ScanState, onPage: (p: SourcePage) => Promise<void>): Promise<void> {
    const since = scan.since!;
    const before = this.windowEnd(scan);
    scan.summary.mode = 'window';
    scan.summary.window = { after: since, before: before.toISOString() };
    if (before.getTime() > Date.parse(since)) await scan.source.scanWindow(new Date(since), before, onPage);
  }

  /** The whole unsubscribed set; then who left it, and both checkpoints, in one transaction. */
  private async reconcileFully(scan: ScanState, onPage: (p: SourcePage) => Promise<void>): Promise<void> {
    const { store, logger } = this.deps;
    scan.summary.mode = 'full';
    // Everything opted out before `started` is in the unsubscribed set we are about to read.
    const knownActive = await store.activeOptOutEmails();
    scan.total = await this.unsubscribedCount(scan);
    scan.summary.unsubscribedCount = scan.total;
    // deleted contacts only since the last reconcile (minus the overlap): the source's ReconcilePlan
    const lastFull = await this.checkpointTime(CHECKPOINT_LAST_FULL);
    const deletedSince =
      lastFull === null ? null : new Date(lastFull - this.deps.config.source.detection.overlapMinutes * MINUTE);
    const knownDeleted = async (emails: readonly string[]): Promise<Set<string>> =>
      new Set(
        [...(await store.knownOptOuts(emails))].filter(([, k]) => k.deleted && k.state === 'active').map(([e]) => e),
      );
    await scan.source.scanUnsubscribed(onPage, { knownActive, deletedSince, knownDeleted });
    const missing = await this.leftTheSet(scan, knownActive, knownDeleted);
    scan.summary.resubscribed += missing.length;
    if (!scan.dryRun) {
      await store.commitDetection({
        runId: scan.runId,
        added: [],
        resubscribed: missing,
        targets: scan.targets,
        now: this.now().toISOString(),
        checkpoints: {
          [CHECKPOINT_WINDOW]: this.windowEnd(scan).toISOString(),
          [CHECKPOINT_LAST_FULL]: scan.started.toISOString(),
        },
      });
    }
    // /contacts/counts counts live (not deleted) contacts; the scan also read unsubscribed-then-deleted ones
    if (scan.total !== null && scan.total !== scan.optedOutNotDeleted) {
      logger.warn('full scan count differs from /contacts/counts (contacts may have changed during the scan)', {
        scannedNotDeleted: scan.optedOutNotDeleted,
        counts: scan.total,
      });
    }
  }

  /** The count the API reports for the unsubscribed set: sizes the progress bar and sanity-checks the scan. */
  private async unsubscribedCount(scan: ScanState): Promise<number | null> {
    try {
      return await scan.source.unsubscribedCount();
    } catch (err) {
      this.deps.logger.debug('could not read /contacts/counts', { error: (err as Error).message });
      return null;
    }
  }

  /**
   * Known opt-outs a whole scan did not see. Only a well-formed record (or, here, the absence of one) may say a
   * known opt-out left the set: a quarantined record of that person says nothing either way, and quarantined
   * records with an unreadable address may belong to anyone, so then nobody is concluded to have left.
   */
  private async leftTheSet(
    scan: ScanState,
    knownActive: ReadonlySet<string>,
    knownDeleted: (emails: readonly string[]) => Promise<Set<string>>,
  ): Promise<string[]> {
    let missing = missingFromFullScan(knownActive, scan.seen).filter(
      (e) => !scan.quarantinedEmails.has(e) && !scan.alreadyLeft.has(e),
    );
    // opted out, then deleted, when last seen: deleted contacts are not read again, so their absence says nothing
    if (missing.length > 0) {
      const stillDeleted = await knownDeleted(missing);
      missing = missing.filter((e) => !stillDeleted.has(e));
    }
    if (scan.quarantinedUnidentified === 0 || missing.length === 0) return missing;
    const note =
      `${missing.length} known opt-out(s) were not in the unsubscribed set, but ${scan.quarantinedUnidentified} quarantined record(s) ` +
      `have an unreadable email address and may be theirs: none is marked as having left the set this run (see \`cc-optout quarantine\`)`;
    this.deps.logger.warn(note);
    (scan.summary.warnings ??= []).push(note);
    return [];
  }

  /** The opt-out window from the stored checkpoint (minus the overlap) to now − lag; then the checkpoint moves. */
  private async scanFromCheckpoint(scan: ScanState, onPage: (p: SourcePage) => Promise<void>): Promise<void> {
    const { store, config, logger } = this.deps;
    scan.summary.mode = 'window';
    const checkpoint = (await store.getCheckpoint(CHECKPOINT_WINDOW))!;
    if (Number.isNaN(Date.parse(checkpoint))) {
      // fullReconcileDue() sends a garbage checkpoint to a full reconcile; never do date arithmetic on one
      throw new Error(
        `the stored checkpoint ${CHECKPOINT_WINDOW} is not a date-time (${JSON.stringify(checkpoint.slice(0, 60))}); run \`cc-optout sync --full\` to repair it`,
      );
    }
    const after = new Date(Date.parse(checkpoint) - config.source.detection.overlapMinutes * MINUTE);
    const before = this.windowEnd(scan);
    scan.summary.window = { after: after.toISOString(), before: before.toISOString() };
    if (before.getTime() <= Date.parse(checkpoint)) {
      logger.info('opt-out window is empty (last run was less than the lag ago); nothing to read');
      return;
    }
    await scan.source.scanWindow(after, before, onPage);
    // The window's opt-outs are committed (page by page); only now may the checkpoint move.
    if (!scan.dryRun) {
      await store.commitDetection({
        runId: scan.runId,
        added: [],
        resubscribed: [],
        targets: scan.targets,
        now: this.now().toISOString(),
        checkpoints: { [CHECKPOINT_WINDOW]: before.toISOString() },
      });
    }
  }

  /** A scan that stopped on request or on the daily quota keeps what it committed; anything else is rethrown. */
  private stoppedEarly(scan: ScanState, err: unknown): void {
    const { summary } = scan;
    if (err instanceof RunInterrupted) {
      summary.complete = false;
      summary.stoppedReason = 'interrupted: detection stopped after a committed page; a rerun resumes';
      return;
    }
    if (err instanceof QuotaExceeded) {
      summary.complete = false;
      summary.retryAt = err.resetAt.toISOString();
      summary.stoppedReason = `Constant Contact daily quota reached: ${err.message.replace(/\.$/, '')}. Detection resumes after ${err.resetAt.toISOString()}; everything found so far is kept and queued.`;
      this.deps.logger.warn(summary.stoppedReason);
      return;
    }
    throw err;
  }

  // ----------------------------------------------------------------------------------------- delivery

  /**
   * Detection and delivery at once, the outbox the hand-off between them: each target's worker delivers the
   * pages the scan has committed while the scan goes on, and drains what is due once it has ended, whether it
   * completed or failed (what was committed is delivered; then the scan's error stands, as it would have). A
   * worker that fails (its lease lost) stops the scan and the other workers after the page or batch in hand;
   * the first failure is rethrown. `scan` null: nothing to scan (a resumed backfill whose scan completed).
   */
  private async detectAndDeliver(
    scan: ((feed: OutboxFeed, signal: AbortSignal) => Promise<DetectionSummary>) | null,
    targets: readonly ResolvedTarget[],
    tsum: Record<string, TargetSummary>,
    signal?: AbortSignal,
  ): Promise<DetectionSummary> {
    const feed = new OutboxFeed();
    const failed = new AbortController();
    const stop = signal ? AbortSignal.any([signal, failed.signal]) : failed.signal;
    this.stopSignal = stop;
    const scanning = (scan ? scan(feed, stop) : Promise.resolve(emptyDetection())).finally(() => feed.end());
    const workers = targets.map((t) =>
      this.deliverTarget(t, feed, tsum[t.name]!, stop).catch((err: unknown) => {
        failed.abort();
        throw err;
      }),
    );
    const [scanned, ...delivered] = await Promise.allSettled([scanning, ...workers]);
    for (const r of [scanned!, ...delivered]) if (r.status === 'rejected') throw r.reason;
    return (scanned as PromiseFulfilledResult<DetectionSummary>).value;
  }

  /**
   * Deliver a target's outbox batch by batch, also while a scan commits more to it (see nextBatch). Stops for
   * the run when the target halts, after the batch in hand once `signal` is aborted, and at once when the
   * lease is lost.
   */
  private async deliverTarget(
    t: ResolvedTarget,
    feed: OutboxFeed,
    summary: TargetSummary,
    signal?: AbortSignal,
  ): Promise<void> {
    const open = await this.openForDelivery(t, summary);
    if (!open) return;
    let done = 0;
    for (;;) {
      const batch = await this.nextBatch(t.name, open.batchSize, feed, signal);
      if (!batch) return;
      const halt = await this.deliverBatch(t.name, open.target, batch, summary, open.log);
      done += batch.length;
      this.deps.onProgress?.({
        phase: 'deliver',
        target: t.name,
        done,
        total: done + (await this.deps.store.countDue(t.name, this.now())),
      });
      if (!halt) continue;
      // a dated stop (daily limit) holds the whole outbox of this target: also what the scan queues after it
      if (halt.retryAt) await this.holdUntil(t.name, halt.retryAt, feed, signal);
      return;
    }
  }

  /** Once the scan is over, defer every queued row of the target to `retryAt` (rows it queued after the stop too). */
  private async holdUntil(target: string, retryAt: string, feed: OutboxFeed, signal?: AbortSignal): Promise<void> {
    while (!feed.ended && !signal?.aborted) await feed.next(signal);
    await this.deps.store.deferQueued(target, new Date(retryAt).toISOString());
  }

  /**
   * The next batch of due rows, or null when this run has no more for the target (nothing due and the scan
   * over, or aborted: the rest stays queued for the rerun). While the scan goes on only a full batch is taken,
   * waiting for the next committed page otherwise, so that pipelining costs no extra CRM calls.
   */
  private async nextBatch(
    target: string,
    batchSize: number,
    feed: OutboxFeed,
    signal?: AbortSignal,
  ): Promise<OptOut[] | null> {
    const { store } = this.deps;
    for (;;) {
      this.assertLease();
      if (signal?.aborted) return null;
      const scanning = !feed.ended;
      const due = await store.countDue(target, this.now(), batchSize);
      if (due >= batchSize || (due > 0 && !scanning))
        return (await store.dueOutbox(target, this.now(), batchSize)).map((r) => r.optOut);
      if (!scanning) return null;
      await feed.next(signal);
    }
  }

  /** The target, its batch size and logger; null (and the summary says why) when it cannot be opened. */
  private async openForDelivery(
    t: ResolvedTarget,
    summary: TargetSummary,
  ): Promise<{ target: Target; batchSize: number; log: Logger } | null> {
    const { config, logger, registry } = this.deps;
    const log = logger.child({ target: t.name });
    try {
      const target = await this.openTarget(t);
      const maxBatch = registry.get(t.connector)!.maxBatch ?? config.delivery.batchSize;
      return { target, batchSize: Math.max(1, Math.min(config.delivery.batchSize, maxBatch)), log };
    } catch (err) {
      summary.halted = redact((err as Error).message);
      log.error('could not open target', { error: summary.halted });
      return null;
    }
  }

  /** Deliver one batch and record one outcome per email; the halt when the target stopped for the run. */
  private async deliverBatch(
    name: string,
    target: Target,
    batch: readonly OptOut[],
    summary: TargetSummary,
    log: Logger,
  ): Promise<TargetError | undefined> {
    const { result: r, calls } = await this.deliverIsolating(target, batch, 'apply', log);
    summary.batches += calls;
    // Target-wide failure: nothing in the batch was delivered. Keep every row, defer it, stop this target.
    const outcomes = E.isLeft(r)
      ? batch.map((o): Outcome => ({
          email: o.email,
          kind: 'failed-retryable',
          recordIds: [],
          message: `${r.left.kind}: ${r.left.message}`,
        }))
      : this.completeOutcomes(batch, r.right.outcomes, log);
    const halt = E.isLeft(r) ? r.left : r.right.halt;
    const deferUntil = halt
      ? halt.retryAt
        ? new Date(halt.retryAt)
        : new Date(this.now().getTime() + this.deps.config.delivery.backoffBaseSeconds * 1000)
      : undefined;
    await this.deps.store.recordOutcomes({
      runId: this.runId!,
      target: name,
      outcomes,
      now: this.now(),
      policy: this.deps.config.delivery,
      deferUntil,
      random: this.deps.random,
    });
    for (const o of outcomes) countOutcome(summary, o);
    if (!halt) return undefined;
    summary.halted = `${halt.kind}: ${halt.message}`;
    if (halt.retryAt) summary.retryAt = new Date(halt.retryAt).toISOString();
    // a dated stop (daily limit) holds the whole outbox of this target, not just this batch
    if (halt.retryAt) await this.deps.store.deferQueued(name, new Date(halt.retryAt).toISOString());
    log.error('target stopped for this run; its outbox is kept', { error: summary.halted, retryAt: halt.retryAt });
    return halt;
  }

  /** Dry run: plan every queued row (due or not) plus `extra` (what detection would add); nothing is written. */
  private async planTarget(
    t: ResolvedTarget,
    extra: readonly OptOut[],
    summary: TargetSummary,
    plan: PlanEntry[],
    signal?: AbortSignal,
  ): Promise<void> {
    const open = await this.openForDelivery(t, summary);
    if (!open) return;
    const batches = await this.planBatches(t.name, extra, open.batchSize);
    const total = batches.reduce((n, b) => n + b.length, 0);
    let done = 0;
    for (const batch of batches) {
      if (signal?.aborted) break;
      const { result: r, calls } = await this.deliverIsolating(open.target, batch, 'plan', open.log);
      if (E.isLeft(r)) {
        summary.halted = r.left.message;
        break;
      }
      summary.batches += calls;
      for (const o of r.right.outcomes) {
        countOutcome(summary, o);
        plan.push({
          target: t.name,
          email: o.email,
          kind: o.kind,
          recordIds: o.recordIds,
          action: o.action,
          message: o.message,
        });
      }
      done += batch.length;
      this.deps.onProgress?.({ phase: 'deliver', target: t.name, done, total });
      if (r.right.halt) {
        summary.halted = r.right.halt.message;
        break;
      }
    }
  }

  /** The queued rows of a target in batches, then the `extra` opt-outs not among them. */
  private async planBatches(target: string, extra: readonly OptOut[], batchSize: number): Promise<OptOut[][]> {
    const batches: OptOut[][] = [];
    for (let offset = 0; ;) {
      const rows = await this.deps.store.queuedOutbox(target, batchSize, offset);
      if (rows.length === 0) break;
      batches.push(rows.map((r) => r.optOut));
      offset += rows.length;
    }
    const queuedEmails = new Set(batches.flat().map((o) => o.email));
    const fresh = extra.filter((o) => !queuedEmails.has(o.email));
    for (let i = 0; i < fresh.length; i += batchSize) batches.push(fresh.slice(i, i + batchSize));
    return batches;
  }

  /** One outcome per email of the batch, whatever the connector returned. */
  private completeOutcomes(batch: readonly OptOut[], outcomes: readonly Outcome[], log: Logger): Outcome[] {
    const byEmail = new Map<string, Outcome>();
    const wanted = new Set(batch.map((o) => o.email));
    for (const o of outcomes) {
      if (!wanted.has(o.email)) {
        log.warn('connector returned an outcome for an email not in the batch; ignored', { email: o.email });
        continue;
      }
      byEmail.set(o.email, o);
    }
    return batch.map(
      (o) =>
        byEmail.get(o.email) ?? {
          email: o.email,
          kind: 'failed-retryable',
          recordIds: [],
          message: 'connector returned no outcome for this email',
        },
    );
  }

  /**
   * One `deliver` call, and when the connector says the batch was refused as a bad request (`bad-request`:
   * something in it, such as one odd address, made the vendor reject the request before anything was
   * written), split it in halves and deliver each, down to single addresses: only an address refused on its
   * own is parked (failed-permanent, with the vendor's message); the rest of the batch is delivered. Costs
   * about 2·log2(batch) extra calls per offending address, and nothing when no request is refused.
   * If EVERY address of a batch of several is refused on its own, the request itself is at fault (a mapping
   * the connector did not recognise as such): nothing is parked and the target stops as misconfigured.
   * An address is parked only with evidence that the CRM accepts this target's requests otherwise (another
   * part of the split, or an earlier batch of the run, went through): a lone address refused with no such
   * evidence (a one-row batch, as a 5-minute sync often has) stays queued and is retried with backoff.
   * The result is complete (one outcome per email) when it is a Right; `calls` counts deliver calls.
   */
  private async deliverIsolating(
    target: Target,
    batch: readonly OptOut[],
    mode: 'apply' | 'plan',
    log: Logger,
  ): Promise<{ result: E.Either<TargetError, DeliveryReport>; calls: number }> {
    let calls = 0;
    let rejected = 0;
    let firstRejection = '';
    const attempt = async (
      part: readonly OptOut[],
      nested: boolean,
    ): Promise<E.Either<TargetError, DeliveryReport>> => {
      calls += 1;
      const r = await this.callDeliver(target, part, mode);
      const refusal = E.isLeft(r) ? r.left : r.right.halt;
      if (E.isRight(r) && refusal?.kind !== 'bad-request') this.acceptingTargets.add(target);
      if (!refusal || refusal.kind !== 'bad-request') {
        // the whole batch as before; a part's outcomes are completed here, as they are merged
        return E.isRight(r) && nested
          ? E.right({ ...r.right, outcomes: this.completeOutcomes(part, r.right.outcomes, log) })
          : r;
      }
      const message = redact(refusal.message);
      // outcomes the connector did settle stand; the emails it left retryable are the ones refused
      const settled = E.isRight(r)
        ? this.completeOutcomes(part, r.right.outcomes, log).filter((o) => o.kind !== 'failed-retryable')
        : [];
      if (settled.length > 0) this.acceptingTargets.add(target);
      const settledEmails = new Set(settled.map((o) => o.email));
      const refused = part.filter((o) => !settledEmails.has(o.email));
      if (part.length === 1 && refused.length === 1) {
        rejected += 1;
        firstRejection ||= message;
        log.warn('the CRM refused a request for one address on its own; parking it', {
          email: part[0]!.email,
          error: message,
        });
        return E.right({
          outcomes: [
            { email: part[0]!.email, kind: 'failed-permanent', recordIds: [], message: `${REFUSED_ALONE}: ${message}` },
          ],
        });
      }
      if (refused.length === 0) return E.right({ outcomes: settled });
      log.warn('the CRM refused a batch as a bad request; splitting it to isolate the address(es) at fault', {
        size: refused.length,
        error: message,
      });
      const mid = Math.ceil(refused.length / 2);
      const parts = refused.length < part.length ? [refused] : [refused.slice(0, mid), refused.slice(mid)];
      const outcomes: Outcome[] = [...settled];
      let halt: TargetError | undefined;
      for (const p of parts) {
        if (halt) {
          outcomes.push(
            ...p.map((o): Outcome => ({
              email: o.email,
              kind: 'failed-retryable',
              recordIds: [],
              message: `not delivered: ${halt!.message}`,
            })),
          );
          continue;
        }
        const sub = await attempt(p, true);
        if (E.isLeft(sub)) {
          halt = sub.left;
          outcomes.push(
            ...p.map((o): Outcome => ({
              email: o.email,
              kind: 'failed-retryable',
              recordIds: [],
              message: `${sub.left.kind}: ${sub.left.message}`,
            })),
          );
        } else {
          outcomes.push(...sub.right.outcomes);
          halt = sub.right.halt;
        }
      }
      return E.right(halt ? { outcomes, halt } : { outcomes });
    };
    const result = await attempt(batch, false);
    if (batch.length > 1 && rejected === batch.length) {
      return {
        calls,
        result: E.left({
          kind: 'config',
          message: `the CRM refused every one of ${batch.length} addresses on its own as a bad request, so the request itself is wrong, not the addresses (check this target's config): ${firstRejection}`,
        }),
      };
    }
    if (rejected > 0 && E.isRight(result) && !this.acceptingTargets.has(target)) {
      // no request of this target went through yet: the addresses may be fine and the request wrong
      const outcomes = result.right.outcomes.map((o): Outcome =>
        o.kind === 'failed-permanent' && o.message?.startsWith(REFUSED_ALONE)
          ? {
              ...o,
              kind: 'failed-retryable',
              message: `${o.message} (kept queued: no request to this CRM has gone through in this run, so the request itself may be at fault)`,
            }
          : o,
      );
      return { calls, result: E.right({ ...result.right, outcomes }) };
    }
    return { result, calls };
  }

  private async callDeliver(
    target: Target,
    batch: readonly OptOut[],
    mode: 'apply' | 'plan',
  ): Promise<E.Either<TargetError, DeliveryReport>> {
    try {
      return E.right(await target.deliver(batch, mode));
    } catch (err) {
      // a halt with no outcomes: nothing in the batch was done (a Left); with outcomes: the rest is deferred
      const { halt, outcomes } = readTargetFailure(err);
      return outcomes.length > 0 ? E.right({ outcomes, halt }) : E.left(halt);
    }
  }

  // ----------------------------------------------------------------------------------------- commands

  private async finish(
    command: string,
    dryRun: boolean,
    started: Date,
    detection: DetectionSummary,
    tsum: Record<string, TargetSummary>,
    plan: PlanEntry[] | undefined,
    messages: string[],
    interrupted = false,
    signal?: AbortSignal,
  ): Promise<RunSummary> {
    const { store } = this.deps;
    // the run's key/value writes (rotated tokens, usage counters) are durable before the run is recorded as ended
    await this.flushKv();
    // a paused target ("enabled": false) delivers nothing: say what waits for it, and that the run is not complete
    const paused = this.deps.config.targets.filter((t) => !t.enabled).map((t) => t.name);
    let waiting = 0;
    for (const st of await store.targetStatus([...Object.keys(tsum), ...paused], this.now())) {
      const delivered = tsum[st.target];
      if (delivered) {
        delivered.queued = st.queued;
        delivered.parked = st.parked;
      } else if (st.queued > 0) {
        waiting += st.queued;
        messages.push(
          `target ${st.target} is paused ("enabled": false): ${st.queued} opt-out(s) wait for it until it is enabled again`,
        );
      }
    }
    const incomplete =
      !detection.complete || waiting > 0 || Object.values(tsum).some((s) => s.queued > 0 || s.parked > 0 || s.halted);
    const planIncomplete = dryRun && Object.values(tsum).some((s) => s.halted);
    // interrupted by a signal (the CLI aborts with its name as the reason): the run row records the signal's exit code
    const reason = signal?.reason;
    const exitCode = interrupted
      ? reason === 'SIGTERM'
        ? 143
        : reason === 'SIGINT'
          ? 130
          : 3
      : dryRun
        ? planIncomplete || !detection.complete
          ? 3
          : 0
        : incomplete
          ? 3
          : 0;
    const summary: RunSummary = {
      command,
      dryRun,
      runId: this.runId!,
      startedAt: started.toISOString(),
      durationMs: this.now().getTime() - started.getTime(),
      detection,
      targets: tsum,
      apiCalls: { ...this.calls.counts },
      quarantined: await store.countQuarantined(),
      ...(plan ? { plan } : {}),
      exitCode,
      messages,
      ...(interrupted ? { interrupted: true } : {}),
    };
    this.runTargets = tsum;
    if (command === 'sync') this.runVariant = detection.mode === 'full' ? 'reconcile' : detection.mode;
    await store.finishRun(
      this.runId!,
      exitCode,
      { ...summary, plan: plan ? `${plan.length} entries` : undefined },
      this.now().toISOString(),
      this.runResult(),
    );
    this.runOpen = false;
    await this.releaseLease();
    return summary;
  }

  private emptyTargetSummaries(targets: readonly ResolvedTarget[]): Record<string, TargetSummary> {
    const out: Record<string, TargetSummary> = {};
    for (const t of targets) out[t.name] = { outcomes: {}, batches: 0, queued: 0, parked: 0 };
    return out;
  }

  /** Detect, then deliver every target's outbox. */
  sync(opts: SyncOptions = {}): Promise<RunSummary> {
    return this.recorded(() => this.runSync(opts));
  }

  private async runSync(opts: SyncOptions): Promise<RunSummary> {
    const dryRun = !!opts.dryRun;
    const signal = opts.signal;
    // 1. validate the targets (an unknown one leaves no run row behind) and take the run lock
    const validated = this.enabledTargets(opts.targets);
    // deliver: false (detect and queue only): no target is delivered to or planned; the outbox waits for `deliver`
    const deliverTo = opts.deliver === false ? [] : validated;
    const { started } = await this.begin('sync', dryRun);
    const mode: ScanMode = (await this.fullReconcileDue(!!opts.full)) ? 'full' : 'window';
    // A disabled target is paused, not forgotten: new opt-outs queue for it and wait until it is enabled again.
    const queueFor = this.deps.config.targets.map((t) => t.name);
    const tsum = this.emptyTargetSummaries(deliverTo);
    this.runTargets = tsum;
    this.runVariant = mode === 'full' ? 'reconcile' : 'window';
    if (dryRun) {
      // 2. (dry run) detect without committing; 3. plan what is queued plus what detection found
      const found = await this.detect(mode, { dryRun, targets: queueFor, signal });
      const plan: PlanEntry[] = [];
      await Promise.all(deliverTo.map((t) => this.planTarget(t, found.pending, tsum[t.name]!, plan, signal)));
      return this.finish(
        'sync',
        dryRun,
        started,
        found.summary,
        tsum,
        plan,
        this.detectionMessages(found.summary),
        !!signal?.aborted,
        signal,
      );
    }
    // 2. detect and deliver at once; 3. once the scan is over (who left the set is known), queue again what no
    //    CRM record matched a while ago, for the workers still draining
    let recheck: string[] = [];
    const scan = async (feed: OutboxFeed, stop: AbortSignal): Promise<DetectionSummary> => {
      const d = await this.detect(mode, { dryRun, targets: queueFor, signal: stop, feed });
      recheck = await this.requeueNotFound(stop);
      return d.summary;
    };
    const detection = await this.detectAndDeliver(scan, deliverTo, tsum, signal);
    this.runVariant = detection.mode === 'full' ? 'reconcile' : detection.mode;
    const messages = [...this.detectionMessages(detection), ...recheck];
    if (opts.deliver === false) messages.push(...(await this.queuedForDelivery(validated)));
    return this.finish('sync', dryRun, started, detection, tsum, undefined, messages, !!signal?.aborted, signal);
  }

  /** A detect-only run's word on what waits for a deliver run. */
  private async queuedForDelivery(targets: readonly ResolvedTarget[]): Promise<string[]> {
    const st = await this.deps.store.targetStatus(
      targets.map((t) => t.name),
      this.now(),
    );
    return st
      .filter((s) => s.queued > 0)
      .map((s) => `detect only: ${s.queued} opt-out(s) queued for ${s.target} wait for a deliver run`);
  }

  /**
   * Deliver only: drain the due outbox rows of `targets` (default every enabled target), reading nothing from
   * Constant Contact (run kind `deliver`). Stops as sync's delivery does: a target's halt, the signal, a lost lease.
   */
  deliver(opts: DeliverOptions = {}): Promise<RunSummary> {
    return this.recorded(() => this.runDeliver(opts));
  }

  private async runDeliver(opts: DeliverOptions): Promise<RunSummary> {
    const signal = opts.signal;
    const targets = this.enabledTargets(opts.targets);
    const { started } = await this.begin('deliver', false);
    const tsum = this.emptyTargetSummaries(targets);
    this.runTargets = tsum;
    const detection = await this.detectAndDeliver(null, targets, tsum, signal);
    return this.finish('deliver', false, started, detection, tsum, undefined, [], !!signal?.aborted, signal);
  }

  private detectionMessages(d: DetectionSummary): string[] {
    return [...(d.stoppedReason ? [d.stoppedReason] : []), ...(d.warnings ?? [])];
  }

  /** A person not in a CRM when they opted out may be added to it later (an import, a form): look again. */
  private async requeueNotFound(signal?: AbortSignal): Promise<string[]> {
    const recheck = this.deps.config.delivery.recheckNotFoundHours;
    if (recheck <= 0 || signal?.aborted) return [];
    const now = this.now();
    const n = await this.deps.store.requeueNotFound(
      new Date(now.getTime() - recheck * 3600_000).toISOString(),
      now.toISOString(),
    );
    return n > 0 ? [`looking up again ${n} opt-outs that no CRM record matched ${recheck} h or more ago`] : [];
  }

  /**
   * Queue every current opt-out (optionally since a date) for the chosen targets and deliver, delivery starting
   * while the scan goes on. Rerunning an interrupted backfill skips the scan when it had completed, and never
   * repeats a delivered write (delivered rows stay delivered unless `redeliver`).
   */
  backfill(opts: BackfillOptions = {}): Promise<RunSummary> {
    return this.recorded(() => this.runBackfill(opts));
  }

  private async runBackfill(opts: BackfillOptions = {}): Promise<RunSummary> {
    const dryRun = !!opts.dryRun;
    const signal = opts.signal;
    const only = [...(opts.targets ?? []), ...(opts.target ? [opts.target] : [])];
    // 1. validate the targets (an unknown one leaves no run row behind) and take the run lock
    const targets = this.enabledTargets(only.length ? only : null);
    const { runId, started } = await this.begin('backfill', dryRun);
    this.runVariant = opts.redeliver ? 'redeliver' : opts.since ? 'since' : null;
    const { store, logger } = this.deps;
    const names = targets.map((t) => t.name);
    const since = opts.since ? new Date(opts.since).toISOString() : null;
    const mode: ScanMode = since ? 'since' : 'full';
    const queueFor = this.deps.config.targets.map((t) => t.name);
    const tsum = this.emptyTargetSummaries(targets);
    this.runTargets = tsum;
    if (dryRun) {
      // 2. (dry run) scan without committing; 3. plan, target by target, what is queued, known or found
      const found = await this.detect(mode, { dryRun, targets: queueFor, signal, since });
      const extra = found.pending.filter((o) => !since || o.optedOutAt >= since);
      const plan: PlanEntry[] = [];
      for (const t of targets) {
        // what enqueueKnown would add for this target (queued rows are planned by planTarget itself)
        const wouldQueue = await store.backfillCandidates(t.name, since, !!opts.redeliver);
        await this.planTarget(t, [...extra, ...wouldQueue], tsum[t.name]!, plan, signal);
      }
      return this.finish(
        'backfill',
        dryRun,
        started,
        found.summary,
        tsum,
        plan,
        this.detectionMessages(found.summary),
        !!signal?.aborted,
        signal,
      );
    }
    // 2. the job (a rerun resumes the unfinished one); 3. queue the opt-outs already known, so that delivery starts on them
    const job = await store.openBackfill(since, names, started.toISOString());
    const messages: string[] = [];
    if (job.scanCompletedAt)
      messages.push(
        `resuming backfill #${job.id} started ${job.startedAt}: its scan completed at ${job.scanCompletedAt}, so only delivery continues`,
      );
    const n = await store.enqueueKnown({
      runId,
      targets: names,
      since,
      redeliver: !!opts.redeliver,
      now: this.now().toISOString(),
    });
    logger.info('backfill queued opt-outs', { queued: n, targets: names.join(',') });
    // 4. scan (new opt-outs are queued page by page) and deliver at once
    const scan = async (feed: OutboxFeed, stop: AbortSignal): Promise<DetectionSummary> => {
      const d = await this.detect(mode, { dryRun, targets: queueFor, signal: stop, since, feed });
      if (d.summary.complete) await store.markBackfillScanned(job.id, this.now().toISOString());
      return d.summary;
    };
    const detection = await this.detectAndDeliver(job.scanCompletedAt ? null : scan, targets, tsum, signal);
    messages.push(...this.detectionMessages(detection));
    const interrupted = !!signal?.aborted;
    const summary = await this.finish(
      'backfill',
      dryRun,
      started,
      detection,
      tsum,
      undefined,
      messages,
      interrupted,
      signal,
    );
    if (!interrupted && detection.complete && !Object.values(tsum).some((s) => s.halted))
      await store.finishBackfill(job.id, this.now().toISOString());
    return summary;
  }

  /** Credentials, connectivity and each target's own check. */
  check(): Promise<{ ok: boolean; source: CheckReport; targets: Record<string, CheckReport> }> {
    return this.recorded(() => this.runCheck());
  }

  private async runCheck(): Promise<{ ok: boolean; source: CheckReport; targets: Record<string, CheckReport> }> {
    await this.begin('check', true);
    const source = await this.buildSource()
      .then((s) => s.check())
      .catch((err: Error): CheckReport => ({
        ok: false,
        items: [{ name: 'constant-contact', ok: false, detail: redact(err.message) }],
      }));
    const targets: Record<string, CheckReport> = {};
    for (const t of this.enabledTargets()) {
      try {
        targets[t.name] = await (await this.openTarget(t)).check();
      } catch (err) {
        const { halt, halted } = readTargetFailure(err);
        targets[t.name] = {
          ok: false,
          items: [
            {
              name: halted ? halt.kind : 'open',
              ok: false,
              detail: halted ? halt.message : redact((err as Error).message),
            },
          ],
        };
      }
    }
    const ok = source.ok && Object.values(targets).every((r) => r.ok);
    await this.flushKv();
    await this.deps.store.finishRun(this.runId!, ok ? 0 : 1, { source, targets }, this.now().toISOString(), {
      counts: {},
      apiCalls: { ...this.calls.counts },
    });
    this.runOpen = false;
    await this.releaseLease();
    return { ok, source, targets };
  }
}

/** All outcome kinds with zero counts, for stable report columns. */
export function outcomeColumns(): OutcomeKind[] {
  return [...OUTCOME_KINDS];
}
