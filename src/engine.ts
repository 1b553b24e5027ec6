/**
 * detect -> outbox -> deliver.
 *
 * Detect reads opt-outs from the source (an incremental opt-out window, or a full reconcile of the
 * unsubscribed set), computes the delta against the store, and commits new opt-outs together with one
 * outbox row per (target, email); the window checkpoint advances only after that work is committed.
 * Deliver drains each target's outbox independently, in batches, and records one outcome per email.
 * A crash at any point resumes from the store: detection re-reads an overlapping window, delivery picks
 * up every row that is still queued.
 */
import * as os from 'os';
import * as E from 'fp-ts/Either';
import { Config, ResolvedTarget } from './config';
import { computeDelta, missingFromFullScan } from './delta';
import { OUTCOME_KINDS, OptOut, Outcome, OutcomeKind, isOptedOut } from './domain';
import { Clock } from './http/clock';
import { Logger, redact } from './log';
import { CallCounter, Capabilities, CheckReport, HaltInfo, Target, isTargetHalt } from './sdk';
import { Registry } from './registry';
import { coreHttp, coreSecrets } from './capabilities';
import { OptOutSource, QuotaExceeded, SourceDeps, SourcePage } from './source/types';
import { LeaseLost, StateStore } from './store/types';
import { Lease, holdRunLock } from './store/lease';

export const CHECKPOINT_WINDOW = 'cc.optout_window.before';
export const CHECKPOINT_LAST_FULL = 'cc.last_full_reconcile';
export const SOURCE_KV = 'source:constant-contact';

/** A target name that is not in the config (a usage error: exit 2). */
export class UnknownTarget extends Error {
  constructor(readonly target: string, readonly configured: readonly string[]) {
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
  if (!isTargetHalt(err)) return { halt: { kind: 'fatal', message: redact(`connector threw: ${(err as Error)?.message ?? String(err)}`) }, outcomes: [], halted: false };
  const halt: TargetError = { kind: err.kind, message: redact(err.message), ...(err.retryAt ? { retryAt: err.retryAt } : {}) };
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
  /** Records parked (failed-permanent) by this run: the first few, with the reason. */
  parkedRecords?: { email: string; message: string }[];
}

/** How many parked records a summary names. */
export const PARKED_SHOWN = 5;

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
  return { mode: 'skipped', pages: 0, contactsSeen: 0, optOutsSeen: 0, newOptOuts: 0, resubscribed: 0, skippedNoEmail: 0, quarantined: 0, complete: true };
}

export class Engine {
  /** Targets that accepted at least one request in this engine's life (evidence for parking a refused address). */
  private readonly acceptingTargets = new WeakSet<Target>();
  private runId: number | null = null;
  private calls = new CallCounts();
  /** Handed to sources and targets: always records into the current run's counter (targets outlive runs). */
  private readonly callSink: CallCounter = { record: (vendor, n) => this.calls.record(vendor, n) };
  private readonly targets = new Map<string, Target>();

  constructor(private readonly deps: EngineDeps) {}

  private now(): Date {
    return this.deps.clock.now();
  }

  private enabledTargets(only?: readonly string[] | null): ResolvedTarget[] {
    const all = this.deps.config.targets.filter((t) => t.enabled);
    if (!only || only.length === 0) return all;
    for (const name of only) {
      if (!this.deps.config.targets.some((t) => t.name === name)) {
        throw new UnknownTarget(name, this.deps.config.targets.map((t) => t.name));
      }
    }
    return all.filter((t) => only.includes(t.name));
  }

  private buildSource(): OptOutSource {
    const { store, clock, logger } = this.deps;
    return this.deps.source({
      clock,
      logger: logger.child({ component: 'constant-contact' }),
      kv: store.kv(SOURCE_KV),
      calls: this.callSink,
      random: this.deps.random,
      quarantine: (rec) => {
        store.quarantine(this.runId, 'constant-contact', rec, this.now().toISOString());
        logger.warn('quarantined a malformed Constant Contact record', { recordId: rec.recordId, reason: rec.reason });
      },
    });
  }

  private openTarget(t: ResolvedTarget): Target {
    const existing = this.targets.get(t.name);
    if (existing) return existing;
    const connector = this.deps.registry.get(t.connector);
    if (!connector) throw new Error(`target "${t.name}": connector "${t.connector}" is not installed`);
    const caps: Capabilities = {
      clock: this.deps.clock,
      logger: this.deps.logger.child({ target: t.name }),
      kv: this.deps.store.kv(`target:${t.name}`),
      calls: this.callSink,
      targetName: t.name,
      readFile: this.deps.readFile ?? ((p: string) => require('fs').readFileSync(p, 'utf8') as string),
      secrets: coreSecrets,
      http: coreHttp(this.deps.clock),
    };
    const target = connector.open(t.config, caps);
    this.targets.set(t.name, target);
    return target;
  }

  async close(): Promise<void> {
    for (const t of this.targets.values()) await t.close?.();
    this.targets.clear();
    this.releaseLease();
  }

  private readonly lockOwner = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  private lease: Lease | null = null;

  private releaseLease(): void {
    this.lease?.release();
    this.lease = null;
    this.deps.store.releaseRunLock(this.lockOwner);
  }

  /** Stop before the next page or batch once the lease is lost (the store refuses the writes anyway). */
  private assertLease(): void {
    const lost = this.lease?.lost();
    if (lost) throw new LeaseLost(lost);
  }

  private begin(kind: string, dryRun: boolean): { runId: number; started: Date } {
    this.calls = new CallCounts();
    const started = this.now();
    // One run at a time per store: overlapping runs would race the rotating refresh token and double-deliver.
    // The lock is a lease renewed in the background: a holder that died on any host is taken over once it expires.
    this.lease?.release();
    this.lease = holdRunLock(
      this.deps.store,
      { owner: this.lockOwner, pid: process.pid, host: os.hostname(), command: kind },
      { renewMs: this.deps.leaseRenewMs, now: () => this.now(), onLost: (m) => this.deps.logger.error(m) },
    );
    this.runId = this.deps.store.startRun(kind, dryRun, started.toISOString());
    return { runId: this.runId, started };
  }

  // ---------------------------------------------------------------------------------------- detection

  /** What a garbage stored checkpoint was repaired with, for the next detection's warnings. */
  private checkpointRepairs: string[] = [];

  /**
   * A stored checkpoint as a time: null when absent, and null too (with a repair note) when it is not a
   * date-time or lies in the future (beyond a day of clock skew). Either way a full reconcile follows, and
   * it writes both checkpoints afresh: a garbage value never reaches date arithmetic.
   */
  private checkpointTime(key: string): number | null {
    const raw = this.deps.store.getCheckpoint(key);
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
  fullReconcileDue(force: boolean): boolean {
    const d = this.deps.config.source.detection;
    // both are read (not short-circuited) so that each garbage value is reported
    const window = this.checkpointTime(CHECKPOINT_WINDOW);
    const last = this.checkpointTime(CHECKPOINT_LAST_FULL);
    if (force || d.mode === 'full') return true;
    if (window === null || last === null) return true;
    return this.now().getTime() - last >= d.reconcileEveryHours * 3600_000;
  }

  /**
   * Detect opt-outs. When `dryRun`, nothing is committed: the new opt-outs are returned in `pending`.
   */
  private async detect(
    full: boolean,
    dryRun: boolean,
    targets: readonly string[],
    summary: DetectionSummary,
    pending: OptOut[],
    opts: { signal?: AbortSignal; since?: string | null } = {},
  ): Promise<void> {
    const { store, config, logger } = this.deps;
    const runId = this.runId!;
    const source = this.buildSource();
    const lagMs = config.source.detection.lagMinutes * MINUTE;
    const started = this.now();
    const pendingSeen = new Set<string>();
    const seen = new Set<string>();
    // Emails of quarantined records: their contact's permission is unknown, so they never count as "left".
    const quarantinedEmails = new Set<string>();
    let quarantinedUnidentified = 0;
    // Marked as having left from a well-formed record on a page: not counted again as missing.
    const alreadyLeft = new Set<string>();
    let optedOutNotDeleted = 0;
    if (this.checkpointRepairs.length > 0) (summary.warnings ??= []).push(...this.checkpointRepairs.splice(0));
    let scanTotal: number | null = null;

    const onPage = (page: SourcePage): void => {
      this.assertLease();
      summary.pages += 1;
      summary.contactsSeen += page.contacts.length;
      summary.skippedNoEmail += page.skippedNoEmail;
      summary.quarantined += page.quarantined;
      for (const e of page.quarantinedEmails ?? []) quarantinedEmails.add(e);
      quarantinedUnidentified += page.quarantinedUnidentified ?? 0;
      const emails = page.contacts.map((c) => c.email);
      const known = store.knownOptOuts(emails);
      const nowIso = this.now().toISOString();
      const delta = computeDelta(known, page.contacts, nowIso);
      const optedOut = page.contacts.filter(isOptedOut);
      summary.optOutsSeen += optedOut.length;
      for (const c of optedOut) seen.add(c.email);
      for (const c of delta.resubscribed) alreadyLeft.add(c.email);
      optedOutNotDeleted += optedOut.filter((c) => !c.deleted).length;
      if (dryRun) {
        for (const o of delta.added) {
          if (!pendingSeen.has(o.email)) {
            pendingSeen.add(o.email);
            pending.push(o);
          }
        }
        summary.newOptOuts = pending.length;
        summary.resubscribed += delta.resubscribed.length;
      } else {
        store.commitDetection({
          runId,
          added: delta.added,
          resubscribed: delta.resubscribed,
          seen: delta.unchanged,
          targets,
          now: nowIso,
        });
        summary.newOptOuts += delta.added.length;
        summary.resubscribed += delta.resubscribed.length;
      }
      this.deps.onProgress?.({ phase: 'scan', pages: summary.pages, contacts: summary.contactsSeen, optOuts: summary.optOutsSeen, total: scanTotal });
      // this page is committed; stop before the next one is requested
      if (opts.signal?.aborted) throw new RunInterrupted();
    };

    try {
      if (opts.since) {
        // backfill --since: read only the opt-outs since that date (an opt-out window), not the whole set
        summary.mode = 'window';
        const before = new Date(started.getTime() - lagMs);
        summary.window = { after: opts.since, before: before.toISOString() };
        if (before.getTime() > Date.parse(opts.since)) await source.scanWindow(new Date(opts.since), before, onPage);
      } else if (full) {
        summary.mode = 'full';
        // Everything opted out before `started` is in the unsubscribed set we are about to read.
        const knownActive = store.activeOptOutEmails();
        // the count the API reports sizes the progress bar (and sanity-checks the scan afterwards)
        try {
          scanTotal = await source.unsubscribedCount();
        } catch (err) {
          logger.debug('could not read /contacts/counts', { error: (err as Error).message });
        }
        summary.unsubscribedCount = scanTotal;
        await source.scanUnsubscribed(onPage);
        // Only a well-formed record (or, here, the absence of one) may say a known opt-out left the set: a
        // quarantined record of that person says nothing either way.
        let missing = missingFromFullScan(knownActive, seen).filter((e) => !quarantinedEmails.has(e) && !alreadyLeft.has(e));
        if (quarantinedUnidentified > 0 && missing.length > 0) {
          const note =
            `${missing.length} known opt-out(s) were not in the unsubscribed set, but ${quarantinedUnidentified} quarantined record(s) ` +
            `have an unreadable email address and may be theirs: none is marked as having left the set this run (see \`cc-optout quarantine\`)`;
          logger.warn(note);
          (summary.warnings ??= []).push(note);
          missing = [];
        }
        const checkpointBefore = new Date(started.getTime() - lagMs).toISOString();
        if (dryRun) {
          summary.resubscribed += missing.length;
        } else {
          store.commitDetection({
            runId,
            added: [],
            resubscribed: missing,
            targets,
            now: this.now().toISOString(),
            checkpoints: { [CHECKPOINT_WINDOW]: checkpointBefore, [CHECKPOINT_LAST_FULL]: started.toISOString() },
          });
          summary.resubscribed += missing.length;
        }
        // /contacts/counts counts live (not deleted) contacts; the scan also read unsubscribed-then-deleted ones
        if (summary.unsubscribedCount !== null && summary.unsubscribedCount !== optedOutNotDeleted) {
          logger.warn('full scan count differs from /contacts/counts (contacts may have changed during the scan)', {
            scannedNotDeleted: optedOutNotDeleted,
            counts: summary.unsubscribedCount,
          });
        }
      } else {
        summary.mode = 'window';
        const checkpoint = store.getCheckpoint(CHECKPOINT_WINDOW)!;
        if (Number.isNaN(Date.parse(checkpoint))) {
          // fullReconcileDue() sends a garbage checkpoint to a full reconcile; never do date arithmetic on one
          throw new Error(`the stored checkpoint ${CHECKPOINT_WINDOW} is not a date-time (${JSON.stringify(checkpoint.slice(0, 60))}); run \`cc-optout sync --full\` to repair it`);
        }
        const after = new Date(Date.parse(checkpoint) - config.source.detection.overlapMinutes * MINUTE);
        const before = new Date(started.getTime() - lagMs);
        summary.window = { after: after.toISOString(), before: before.toISOString() };
        if (before.getTime() <= Date.parse(checkpoint)) {
          logger.info('opt-out window is empty (last run was less than the lag ago); nothing to read');
        } else {
          await source.scanWindow(after, before, onPage);
          if (!dryRun) {
            // The window's opt-outs are committed (page by page); only now may the checkpoint move.
            store.commitDetection({
              runId,
              added: [],
              resubscribed: [],
              targets,
              now: this.now().toISOString(),
              checkpoints: { [CHECKPOINT_WINDOW]: before.toISOString() },
            });
          }
        }
      }
      summary.complete = true;
    } catch (err) {
      if (err instanceof RunInterrupted) {
        summary.complete = false;
        summary.stoppedReason = 'interrupted: detection stopped after a committed page; a rerun resumes';
        return;
      }
      if (err instanceof QuotaExceeded) {
        summary.complete = false;
        summary.stoppedReason = `Constant Contact daily quota reached: ${err.message.replace(/\.$/, '')}. Detection resumes after ${err.resetAt.toISOString()}; everything found so far is kept and queued.`;
        logger.warn(summary.stoppedReason);
        return;
      }
      throw err;
    }
  }

  // ----------------------------------------------------------------------------------------- delivery

  private async deliverTarget(
    t: ResolvedTarget,
    dryRun: boolean,
    extra: readonly OptOut[],
    summary: TargetSummary,
    plan: PlanEntry[],
    signal?: AbortSignal,
  ): Promise<void> {
    const { store, config, logger } = this.deps;
    const log = logger.child({ target: t.name });
    let target: Target;
    try {
      target = this.openTarget(t);
    } catch (err) {
      summary.halted = redact((err as Error).message);
      log.error('could not open target', { error: summary.halted });
      return;
    }
    const connector = this.deps.registry.get(t.connector)!;
    const batchSize = Math.max(1, Math.min(config.delivery.batchSize, connector.maxBatch ?? config.delivery.batchSize));
    const policy = config.delivery;
    const count = (o: Outcome): void => {
      summary.outcomes[o.kind] = (summary.outcomes[o.kind] ?? 0) + 1;
      if (o.kind === 'failed-permanent') {
        const named = (summary.parkedRecords ??= []);
        if (named.length < PARKED_SHOWN) named.push({ email: o.email, message: o.message ?? 'no reason given' });
      }
    };

    if (dryRun) {
      // Plan: every queued row (due or not) plus what detection would add; nothing is written anywhere.
      const batches: OptOut[][] = [];
      let offset = 0;
      for (;;) {
        const rows = store.queuedOutbox(t.name, batchSize, offset);
        if (rows.length === 0) break;
        batches.push(rows.map((r) => r.optOut));
        offset += rows.length;
      }
      const queuedEmails = new Set(batches.flat().map((o) => o.email));
      const fresh = extra.filter((o) => !queuedEmails.has(o.email));
      for (let i = 0; i < fresh.length; i += batchSize) batches.push(fresh.slice(i, i + batchSize));
      const total = batches.reduce((n, b) => n + b.length, 0);
      let done = 0;
      for (const batch of batches) {
        if (signal?.aborted) break;
        const { result: r, calls } = await this.deliverIsolating(target, batch, 'plan', log);
        if (E.isLeft(r)) {
          summary.halted = r.left.message;
          break;
        }
        summary.batches += calls;
        for (const o of r.right.outcomes) {
          count(o);
          plan.push({ target: t.name, email: o.email, kind: o.kind, recordIds: o.recordIds, action: o.action, message: o.message });
        }
        done += batch.length;
        this.deps.onProgress?.({ phase: 'deliver', target: t.name, done, total });
        if (r.right.halt) {
          summary.halted = r.right.halt.message;
          break;
        }
      }
      return;
    }

    const total = store.targetStatus([t.name], this.now())[0]?.due ?? 0;
    let done = 0;
    for (;;) {
      this.assertLease();
      // stop after the batch in hand: its outcomes are recorded, the rest stays queued for the rerun
      if (signal?.aborted) break;
      const rows = store.dueOutbox(t.name, this.now(), batchSize);
      if (rows.length === 0) break;
      const batch = rows.map((r) => r.optOut);
      const { result: r, calls } = await this.deliverIsolating(target, batch, 'apply', log);
      summary.batches += calls;
      if (E.isLeft(r)) {
        // Target-wide failure: nothing in the batch was delivered. Keep every row, defer it, stop this target.
        const err = r.left;
        const deferUntil = err.retryAt ? new Date(err.retryAt) : new Date(this.now().getTime() + policy.backoffBaseSeconds * 1000);
        store.recordOutcomes({
          runId: this.runId!,
          target: t.name,
          outcomes: batch.map((o) => ({ email: o.email, kind: 'failed-retryable', recordIds: [], message: `${err.kind}: ${err.message}` })),
          now: this.now(),
          policy,
          deferUntil,
          random: this.deps.random,
        });
        summary.outcomes['failed-retryable'] = (summary.outcomes['failed-retryable'] ?? 0) + batch.length;
        summary.halted = `${err.kind}: ${err.message}`;
        // a dated stop (daily limit) holds the whole outbox of this target, not just this batch
        if (err.retryAt) store.deferQueued(t.name, new Date(err.retryAt).toISOString());
        log.error('target stopped for this run; its outbox is kept', { error: summary.halted, retryAt: err.retryAt });
        break;
      }
      const report = r.right;
      const outcomes = this.completeOutcomes(batch, report.outcomes, log);
      const deferUntil = report.halt ? (report.halt.retryAt ? new Date(report.halt.retryAt) : new Date(this.now().getTime() + policy.backoffBaseSeconds * 1000)) : undefined;
      store.recordOutcomes({ runId: this.runId!, target: t.name, outcomes, now: this.now(), policy, deferUntil, random: this.deps.random });
      outcomes.forEach(count);
      done += batch.length;
      this.deps.onProgress?.({ phase: 'deliver', target: t.name, done, total: Math.max(total, done) });
      if (report.halt) {
        summary.halted = `${report.halt.kind}: ${report.halt.message}`;
        if (report.halt.retryAt) store.deferQueued(t.name, new Date(report.halt.retryAt).toISOString());
        log.error('target stopped for this run; its outbox is kept', { error: summary.halted, retryAt: report.halt.retryAt });
        break;
      }
    }
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
      (o) => byEmail.get(o.email) ?? { email: o.email, kind: 'failed-retryable', recordIds: [], message: 'connector returned no outcome for this email' },
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
    const attempt = async (part: readonly OptOut[], nested: boolean): Promise<E.Either<TargetError, DeliveryReport>> => {
      calls += 1;
      const r = await this.callDeliver(target, part, mode);
      const refusal = E.isLeft(r) ? r.left : r.right.halt;
      if (E.isRight(r) && refusal?.kind !== 'bad-request') this.acceptingTargets.add(target);
      if (!refusal || refusal.kind !== 'bad-request') {
        // the whole batch as before; a part's outcomes are completed here, as they are merged
        return E.isRight(r) && nested ? E.right({ ...r.right, outcomes: this.completeOutcomes(part, r.right.outcomes, log) }) : r;
      }
      const message = redact(refusal.message);
      // outcomes the connector did settle stand; the emails it left retryable are the ones refused
      const settled = E.isRight(r) ? this.completeOutcomes(part, r.right.outcomes, log).filter((o) => o.kind !== 'failed-retryable') : [];
      if (settled.length > 0) this.acceptingTargets.add(target);
      const settledEmails = new Set(settled.map((o) => o.email));
      const refused = part.filter((o) => !settledEmails.has(o.email));
      if (part.length === 1 && refused.length === 1) {
        rejected += 1;
        firstRejection ||= message;
        log.warn('the CRM refused a request for one address on its own; parking it', { email: part[0]!.email, error: message });
        return E.right({ outcomes: [{ email: part[0]!.email, kind: 'failed-permanent', recordIds: [], message: `${REFUSED_ALONE}: ${message}` }] });
      }
      if (refused.length === 0) return E.right({ outcomes: settled });
      log.warn('the CRM refused a batch as a bad request; splitting it to isolate the address(es) at fault', { size: refused.length, error: message });
      const mid = Math.ceil(refused.length / 2);
      const parts = refused.length < part.length ? [refused] : [refused.slice(0, mid), refused.slice(mid)];
      const outcomes: Outcome[] = [...settled];
      let halt: TargetError | undefined;
      for (const p of parts) {
        if (halt) {
          outcomes.push(...p.map((o): Outcome => ({ email: o.email, kind: 'failed-retryable', recordIds: [], message: `not delivered: ${halt!.message}` })));
          continue;
        }
        const sub = await attempt(p, true);
        if (E.isLeft(sub)) {
          halt = sub.left;
          outcomes.push(...p.map((o): Outcome => ({ email: o.email, kind: 'failed-retryable', recordIds: [], message: `${sub.left.kind}: ${sub.left.message}` })));
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
          ? { ...o, kind: 'failed-retryable', message: `${o.message} (kept queued: no request to this CRM has gone through in this run, so the request itself may be at fault)` }
          : o,
      );
      return { calls, result: E.right({ ...result.right, outcomes }) };
    }
    return { result, calls };
  }

  private async callDeliver(target: Target, batch: readonly OptOut[], mode: 'apply' | 'plan'): Promise<E.Either<TargetError, DeliveryReport>> {
    try {
      return E.right(await target.deliver(batch, mode));
    } catch (err) {
      // a halt with no outcomes: nothing in the batch was done (a Left); with outcomes: the rest is deferred
      const { halt, outcomes } = readTargetFailure(err);
      return outcomes.length > 0 ? E.right({ outcomes, halt }) : E.left(halt);
    }
  }

  // ----------------------------------------------------------------------------------------- commands

  private finish(
    command: string,
    dryRun: boolean,
    started: Date,
    detection: DetectionSummary,
    tsum: Record<string, TargetSummary>,
    plan: PlanEntry[] | undefined,
    messages: string[],
    interrupted = false,
    signal?: AbortSignal,
  ): RunSummary {
    const { store } = this.deps;
    const names = Object.keys(tsum);
    for (const st of store.targetStatus(names, this.now())) {
      tsum[st.target]!.queued = st.queued;
      tsum[st.target]!.parked = st.parked;
    }
    // a paused target ("enabled": false) delivers nothing: say what waits for it, and that the run is not complete
    const paused = this.deps.config.targets.filter((t) => !t.enabled).map((t) => t.name);
    let waiting = 0;
    for (const st of paused.length ? store.targetStatus(paused, this.now()) : []) {
      if (st.queued === 0) continue;
      waiting += st.queued;
      messages.push(`target ${st.target} is paused ("enabled": false): ${st.queued} opt-out(s) wait for it until it is enabled again`);
    }
    const incomplete = !detection.complete || waiting > 0 || Object.values(tsum).some((s) => s.queued > 0 || s.parked > 0 || s.halted);
    const planIncomplete = dryRun && Object.values(tsum).some((s) => s.halted);
    // interrupted by a signal (the CLI aborts with its name as the reason): the run row records the signal's exit code
    const reason = signal?.reason;
    const exitCode = interrupted ? (reason === 'SIGTERM' ? 143 : reason === 'SIGINT' ? 130 : 3) : dryRun ? (planIncomplete || !detection.complete ? 3 : 0) : incomplete ? 3 : 0;
    const summary: RunSummary = {
      command,
      dryRun,
      runId: this.runId!,
      startedAt: started.toISOString(),
      durationMs: this.now().getTime() - started.getTime(),
      detection,
      targets: tsum,
      apiCalls: { ...this.calls.counts },
      quarantined: store.countQuarantined(),
      ...(plan ? { plan } : {}),
      exitCode,
      messages,
      ...(interrupted ? { interrupted: true } : {}),
    };
    store.finishRun(this.runId!, exitCode, { ...summary, plan: plan ? `${plan.length} entries` : undefined }, this.now().toISOString());
    this.releaseLease();
    return summary;
  }

  private emptyTargetSummaries(targets: readonly ResolvedTarget[]): Record<string, TargetSummary> {
    const out: Record<string, TargetSummary> = {};
    for (const t of targets) out[t.name] = { outcomes: {}, batches: 0, queued: 0, parked: 0 };
    return out;
  }

  /** Detect, then deliver every target's outbox. */
  async sync(opts: SyncOptions = {}): Promise<RunSummary> {
    const dryRun = !!opts.dryRun;
    const signal = opts.signal;
    // validated before the run starts: an unknown target leaves no run row behind
    const deliverTo = this.enabledTargets(opts.targets);
    const { started } = this.begin('sync', dryRun);
    // A disabled target is paused, not forgotten: new opt-outs queue for it and wait until it is enabled again.
    const queueFor = this.deps.config.targets.map((t) => t.name);
    const detection = emptyDetection();
    const pending: OptOut[] = [];
    const messages: string[] = [];
    await this.detect(this.fullReconcileDue(!!opts.full), dryRun, queueFor, detection, pending, { signal });
    if (detection.stoppedReason) messages.push(detection.stoppedReason);
    messages.push(...(detection.warnings ?? []));
    const recheck = this.deps.config.delivery.recheckNotFoundHours;
    if (!dryRun && recheck > 0 && !signal?.aborted) {
      // A person not in a CRM when they opted out may be added to it later (an import, a form): look again.
      const now = this.now();
      const n = this.deps.store.requeueNotFound(new Date(now.getTime() - recheck * 3600_000).toISOString(), now.toISOString());
      if (n > 0) messages.push(`looking up again ${n} opt-outs that no CRM record matched ${recheck} h or more ago`);
    }
    const tsum = this.emptyTargetSummaries(deliverTo);
    const plan: PlanEntry[] | undefined = dryRun ? [] : undefined;
    await Promise.all(deliverTo.map((t) => this.deliverTarget(t, dryRun, pending, tsum[t.name]!, plan ?? [], signal)));
    return this.finish('sync', dryRun, started, detection, tsum, plan, messages, !!signal?.aborted, signal);
  }

  /**
   * Queue every current opt-out (optionally since a date) for the chosen targets and deliver.
   * Rerunning an interrupted backfill skips the scan when it had completed, and never repeats a delivered
   * write (delivered rows stay delivered unless `redeliver`).
   */
  async backfill(opts: BackfillOptions = {}): Promise<RunSummary> {
    const dryRun = !!opts.dryRun;
    const signal = opts.signal;
    const only = [...(opts.targets ?? []), ...(opts.target ? [opts.target] : [])];
    // validated before the run starts: an unknown target leaves no run row behind
    const targets = this.enabledTargets(only.length ? only : null);
    const { runId, started } = this.begin('backfill', dryRun);
    const { store, logger } = this.deps;
    const names = targets.map((t) => t.name);
    const since = opts.since ? new Date(opts.since).toISOString() : null;
    const detection = emptyDetection();
    const pending: OptOut[] = [];
    const messages: string[] = [];
    const job = dryRun ? null : store.openBackfill(since, names, started.toISOString());
    if (job && job.scanCompletedAt) {
      messages.push(`resuming backfill #${job.id} started ${job.startedAt}: its scan completed at ${job.scanCompletedAt}, so only delivery continues`);
      detection.mode = 'skipped';
    } else {
      await this.detect(true, dryRun, this.deps.config.targets.map((t) => t.name), detection, pending, { signal, since });
      if (job && detection.complete) store.markBackfillScanned(job.id, this.now().toISOString());
    }
    if (detection.stoppedReason) messages.push(detection.stoppedReason);
    messages.push(...(detection.warnings ?? []));
    let extra: OptOut[] = [];
    if (dryRun) {
      // everything known (plus what the scan found) that is not delivered yet to the chosen targets
      extra = pending.filter((o) => !since || o.optedOutAt >= since);
    } else {
      const n = store.enqueueKnown({ runId, targets: names, since, redeliver: !!opts.redeliver, now: this.now().toISOString() });
      logger.info('backfill queued opt-outs', { queued: n, targets: names.join(',') });
    }
    const tsum = this.emptyTargetSummaries(targets);
    const plan: PlanEntry[] | undefined = dryRun ? [] : undefined;
    if (dryRun) {
      for (const t of targets) {
        // what enqueueKnown would add for this target (queued rows are planned by deliverTarget itself)
        const wouldQueue = store.backfillCandidates(t.name, since, !!opts.redeliver);
        await this.deliverTarget(t, true, [...extra, ...wouldQueue], tsum[t.name]!, plan!, signal);
      }
    } else {
      await Promise.all(targets.map((t) => this.deliverTarget(t, false, [], tsum[t.name]!, [], signal)));
    }
    const interrupted = !!signal?.aborted;
    const summary = this.finish('backfill', dryRun, started, detection, tsum, plan, messages, interrupted, signal);
    if (job && !interrupted && detection.complete && !Object.values(tsum).some((s) => s.halted)) store.finishBackfill(job.id, this.now().toISOString());
    return summary;
  }

  /** Credentials, connectivity and each target's own check. */
  async check(): Promise<{ ok: boolean; source: CheckReport; targets: Record<string, CheckReport> }> {
    this.begin('check', true);
    const source = await this.buildSource()
      .check()
      .catch((err: Error): CheckReport => ({ ok: false, items: [{ name: 'constant-contact', ok: false, detail: redact(err.message) }] }));
    const targets: Record<string, CheckReport> = {};
    for (const t of this.enabledTargets()) {
      try {
        targets[t.name] = await this.openTarget(t).check();
      } catch (err) {
        const { halt, halted } = readTargetFailure(err);
        targets[t.name] = { ok: false, items: [{ name: halted ? halt.kind : 'open', ok: false, detail: halted ? halt.message : redact((err as Error).message) }] };
      }
    }
    const ok = source.ok && Object.values(targets).every((r) => r.ok);
    this.deps.store.finishRun(this.runId!, ok ? 0 : 1, { source, targets }, this.now().toISOString());
    this.releaseLease();
    return { ok, source, targets };
  }
}

/** All outcome kinds with zero counts, for stable report columns. */
export function outcomeColumns(): OutcomeKind[] {
  return [...OUTCOME_KINDS];
}

