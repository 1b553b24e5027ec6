/**
 * `cc-optout run`: one long-running process that runs `sync` on a schedule and serves /healthz, /readyz and
 * /metrics.
 *
 * - One run at a time: a tick while a run is in progress is skipped (logged, counted).
 * - The run lease (src/store/lease.ts) is taken by each run and released when it finishes, as `sync` does; between
 *   runs the store is free, so a manual `backfill`, `sync --full` or `auth constant-contact` can run while the
 *   service is up (a tick that finds the lock held is skipped, not failed).
 * - The full reconcile keeps its own cadence (`detection.reconcileEveryHours`): each run is a plain `sync`.
 * - A failed run (an error, every target halted, or detection stopped by the daily quota) pauses the schedule:
 *   `backoff.baseSeconds` doubling per consecutive failure up to `backoff.maxSeconds`, and never before a
 *   vendor's retryAt when it named one. Single records failing keep their own per-record backoff in the outbox.
 * - SIGTERM/SIGINT: the run in hand stops after its batch (its outcomes are recorded), the lease is released, the
 *   HTTP server closed, and `stop()` resolves (the CLI exits 0).
 */
import * as os from 'os';
import { FastifyInstance } from 'fastify';
import { App } from '../app';
import { ResolvedService } from '../config';
import { RunSummary } from '../engine';
import { Logger, redact } from '../log';
import { ReauthorizationRequired } from '../source/types';
import { RunLocked } from '../store/types';
import { Alerter, Condition, Post } from './alerts';
import { nextAttemptAt } from './backoff';
import { ServiceMetrics } from './metrics';
import { Scheduler, startScheduler } from './schedule';
import { Readiness, STATUS_PREFIX, createServiceServer } from './server';
import { registerStatusPage } from './page';

export const ALERTS_KV = 'service';
/** How long `stop()` waits for alert webhook calls still in flight. */
export const ALERT_DRAIN_MS = 3000;

export interface LastRun {
  finishedAt: string;
  runId: number | null;
  /** The run threw (nothing reached its end): the message. */
  fatal: string | null;
  /** Constant Contact refused the refresh token (run `auth constant-contact`). */
  reauth: boolean;
  summary: RunSummary | null;
}

export interface ServiceOptions {
  app: App;
  service: ResolvedService;
  logger: Logger;
  /** Webhook POST (tests swap it); axios by default. */
  post?: Post;
  now?: () => Date;
}

/** `kind: message` of a halt: the kind (auth, quota, unavailable, config, ...). */
export function haltKind(halted: string): string {
  return /^([a-z-]+):/.exec(halted)?.[1] ?? 'unknown';
}

export class ServiceRunner {
  readonly metrics: ServiceMetrics;
  readonly server: FastifyInstance;
  private alerter: Alerter | null = null;
  /** What the constructor cannot read from the (asynchronous) store: the last good sync, the alert state. */
  private initialised: Promise<void> | null = null;
  private readonly controller = new AbortController();
  private scheduler: Scheduler | null = null;
  private running: Promise<void> | null = null;
  private stopping = false;
  private failures = 0;
  private notBefore: Date | null = null;
  private lastRun: LastRun | null = null;
  private lastSuccessAt: string | null = null;
  private readonly now: () => Date;
  private readonly log: Logger;

  constructor(private readonly o: ServiceOptions) {
    this.now = o.now ?? (() => new Date());
    this.log = o.logger.child({ component: 'service' });
    const { config, store } = o.app;
    this.metrics = new ServiceMetrics({
      store,
      targets: config.targets.map((t) => t.name),
      dailyBudget: config.source.rateLimit.dailyBudget,
      now: this.now,
    });
    this.server = createServiceServer({
      token: o.service.token,
      readiness: () => this.readiness(),
      metrics: () => this.metrics.metrics(),
      metricsContentType: this.metrics.registry.contentType,
      logger: this.log,
      listenHost: o.service.listen.host,
      allowedHosts: o.service.allowedHosts ?? [],
    });
    registerStatusPage(this.server, {
      store,
      targets: config.targets,
      token: o.service.token,
      prefix: STATUS_PREFIX,
      privateView: true,
      now: this.now,
    });
  }

  /** Read the last good sync before this process started and open the alert state (once; start() does it). */
  init(): Promise<void> {
    this.initialised ??= (async () => {
      const { store } = this.o.app;
      // the last good sync before this process started (a restart must not look like "never")
      const prior = (await store.recentRuns(50)).find(
        (r) => r.kind === 'sync' && !r.dryRun && r.exitCode === 0 && r.finishedAt,
      );
      if (prior?.finishedAt && this.lastSuccessAt === null) {
        this.lastSuccessAt = prior.finishedAt;
        this.metrics.lastSuccess.set(Date.parse(prior.finishedAt) / 1000);
      }
      this.alerter = new Alerter(this.o.service.alerts.webhooks, await store.kv(ALERTS_KV), this.log, this.o.post);
    })().catch((err: unknown) => {
      // a store that failed to answer: the next run or evaluation tries again
      this.initialised = null;
      throw err;
    });
    return this.initialised;
  }

  listenAddress(): { host: string; port: number } {
    return this.o.service.listen;
  }

  /** Listen, run once now, then on the schedule. Resolves with the bound address once listening. */
  async start(): Promise<string> {
    const { host, port } = this.o.service.listen;
    await this.init();
    const address = await this.server.listen({ host, port });
    if (this.stopping) return address;
    this.log.info('service listening', {
      address,
      schedule: this.o.service.schedule.text,
      auth: this.o.service.token ? 'bearer token' : 'none (loopback only)',
    });
    this.tick();
    this.scheduler = startScheduler(this.o.service.schedule, () => this.tick());
    return address;
  }

  /** A scheduled tick: start a run unless one is in progress, the service is stopping, or it is backing off. */
  tick(): void {
    if (this.stopping) return;
    if (this.running) {
      this.metrics.ticksSkipped.inc({ reason: 'overlap' });
      this.log.info('tick skipped: the previous run is still in progress');
      return;
    }
    const now = this.now();
    if (this.notBefore && now < this.notBefore) {
      this.metrics.ticksSkipped.inc({ reason: 'backoff' });
      this.log.info('tick skipped: backing off after failed runs', {
        failures: this.failures,
        until: this.notBefore.toISOString(),
      });
      void this.updateAlerts();
      return;
    }
    this.running = this.runOnce().finally(() => {
      this.running = null;
    });
  }

  /** Resolves when the run in hand (if any) has finished and the alerts it raised have been delivered (or failed). */
  async idle(): Promise<void> {
    await this.running;
    while (this.alerting) await this.alerting;
  }

  private async runOnce(): Promise<void> {
    const started = this.now();
    let summary: RunSummary | null = null;
    // the engine is called at once (a tick starts its run synchronously); the run history is read alongside
    const ready = this.init().catch((err: unknown) => {
      this.log.warn('service: could not read the run history', { error: redact((err as Error).message) });
    });
    try {
      summary = await this.o.app.engine.sync({ signal: this.controller.signal });
    } catch (err) {
      await ready;
      if (err instanceof RunLocked) {
        this.metrics.ticksSkipped.inc({ reason: 'locked' });
        this.log.warn('tick skipped: another run holds the store', { error: redact(err.message) });
        return;
      }
      const message = redact((err as Error).message ?? String(err));
      const reauth = err instanceof ReauthorizationRequired;
      this.metrics.runs.inc({ result: 'failed' });
      this.lastRun = { finishedAt: this.now().toISOString(), runId: null, fatal: message, reauth, summary: null };
      this.failed(null);
      this.log.error('run failed', {
        error: message,
        failures: this.failures,
        nextRunNotBefore: this.notBefore?.toISOString(),
      });
      void this.updateAlerts();
      return;
    }
    await ready;
    const interrupted = !!summary.interrupted;
    const result = interrupted ? 'interrupted' : summary.exitCode === 0 ? 'ok' : 'incomplete';
    this.metrics.recordRun(summary, result);
    try {
      await this.metrics.observeLag(started.toISOString());
    } catch (err) {
      this.log.warn('service: could not read the lag of this run', { error: (err as Error).message });
    }
    this.lastRun = { finishedAt: this.now().toISOString(), runId: summary.runId, fatal: null, reauth: false, summary };
    const targets = Object.values(summary.targets);
    const allHalted = targets.length > 0 && targets.every((t) => t.halted);
    const quotaStop = !summary.detection.complete && !!summary.detection.retryAt;
    if (!interrupted && (allHalted || quotaStop)) {
      // nothing can progress until the earliest time any vendor named (or the backoff, when none did)
      const dates = [
        ...(quotaStop ? [summary.detection.retryAt!] : []),
        ...(allHalted ? targets.map((t) => t.retryAt ?? '') : []),
      ];
      const retryAt = dates.every(Boolean) ? dates.sort()[0] : null;
      this.failed(retryAt ?? null);
    } else if (!interrupted) {
      this.failures = 0;
      this.notBefore = null;
      if (summary.detection.complete && !targets.some((t) => t.halted)) {
        this.lastSuccessAt = this.lastRun.finishedAt;
        this.metrics.lastSuccess.set(Date.parse(this.lastRun.finishedAt) / 1000);
      }
    }
    const delivered: Record<string, number> = {};
    // settled deliveries only: a row that failed and stays queued was not delivered
    for (const [name, t] of Object.entries(summary.targets))
      delivered[name] = Object.entries(t.outcomes)
        .filter(([kind]) => !kind.startsWith('failed-'))
        .reduce((a, [, n]) => a + (n ?? 0), 0);
    this.log.info('run finished', {
      runId: summary.runId,
      exitCode: summary.exitCode,
      result,
      durationMs: summary.durationMs,
      detection: summary.detection.mode,
      newOptOuts: summary.detection.newOptOuts,
      delivered,
      halted: Object.fromEntries(
        Object.entries(summary.targets)
          .filter(([, t]) => t.halted)
          .map(([n, t]) => [n, t.halted]),
      ),
      ...(this.notBefore ? { failures: this.failures, nextRunNotBefore: this.notBefore.toISOString() } : {}),
    });
    // off the run path: a slow webhook never holds up the next tick or a shutdown
    void this.updateAlerts();
  }

  private failed(retryAt: string | null): void {
    this.failures += 1;
    this.notBefore = nextAttemptAt(this.now(), this.failures, this.o.service.backoff, retryAt);
  }

  /** What the last run and the store say, as alert conditions. */
  async conditions(): Promise<Condition[]> {
    const { config, store } = this.o.app;
    const out: Condition[] = [];
    const last = this.lastRun;
    if (last) {
      out.push({
        key: 'run-fatal',
        active: last.fatal !== null,
        summary: last.fatal ? `a sync run failed: ${last.fatal}` : 'sync runs complete again',
      });
      // only a run that reached Constant Contact's token says anything about it
      if (last.reauth || last.summary) {
        out.push({
          key: 'cc-reauth',
          active: last.reauth,
          summary: last.reauth
            ? `Constant Contact refresh token revoked: run \`cc-optout auth constant-contact\` (${last.fatal})`
            : 'Constant Contact authorised again',
        });
      }
      for (const [name, t] of Object.entries(last.summary?.targets ?? {})) {
        // a target that tried nothing this run (its rows waiting out a backoff) says nothing about its health:
        // not observed, so a halt is not "resolved" by a run that never reached the CRM
        const tried = Object.values(t.outcomes).reduce((a, n) => a + (n ?? 0), 0) > 0;
        if (!t.halted && !tried) continue;
        out.push({
          key: `target-halted:${name}`,
          target: name,
          active: !!t.halted,
          summary: t.halted
            ? `target ${name} halted (${haltKind(t.halted)}): ${t.halted}`
            : `target ${name} delivers again`,
        });
      }
    }
    const minutes = this.o.service.alerts.oldestQueuedMinutes;
    const now = this.now().getTime();
    for (const s of await store.targetStatus(
      config.targets.map((t) => t.name),
      this.now(),
    )) {
      out.push({
        key: `parked:${s.target}`,
        target: s.target,
        active: s.parked > 0,
        summary:
          s.parked > 0
            ? `target ${s.target}: ${s.parked} record(s) parked (see \`cc-optout status\`; \`cc-optout requeue\` after fixing the cause)`
            : `target ${s.target}: no parked records`,
      });
      const at = s.oldestQueuedAt ? Date.parse(s.oldestQueuedAt) : NaN;
      const ageMin = Number.isNaN(at) ? 0 : (now - at) / 60_000;
      out.push({
        key: `oldest-queued:${s.target}`,
        target: s.target,
        active: ageMin > minutes,
        summary:
          ageMin > minutes
            ? `target ${s.target}: the oldest queued row has waited ${Math.round(ageMin)} min (threshold ${minutes} min; ${s.queued} queued)`
            : `target ${s.target}: queue within ${minutes} min`,
      });
    }
    return out;
  }

  private alerting: Promise<void> | null = null;
  private alertAgain = false;

  /**
   * One evaluation at a time (a slow webhook must not let two evaluations send the same change twice). An
   * evaluation asked for while one is in flight coalesces into one more evaluation after it (not one per ask).
   */
  private updateAlerts(): Promise<void> {
    if (this.alerting) {
      this.alertAgain = true;
      return this.alerting;
    }
    this.alerting = (async () => {
      do {
        this.alertAgain = false;
        await this.evaluateAlerts();
      } while (this.alertAgain);
    })().finally(() => {
      this.alerting = null;
    });
    return this.alerting;
  }

  private async evaluateAlerts(): Promise<void> {
    let conditions: Condition[];
    try {
      await this.init();
      conditions = await this.conditions();
    } catch (err) {
      this.log.warn('service: could not evaluate alert conditions', { error: redact((err as Error).message) });
      return;
    }
    await this.alerter!.update(conditions, this.now());
  }

  async readiness(): Promise<Readiness> {
    const reasons: string[] = [];
    try {
      await this.o.app.store.countOptOuts();
    } catch (err) {
      reasons.push(`store: ${redact((err as Error).message)}`);
    }
    if (this.stopping) reasons.push('shutting down');
    const last = this.lastRun;
    if (!last) reasons.push('waiting for the first run to finish');
    else {
      if (last.reauth)
        reasons.push(`Constant Contact credentials: ${last.fatal} (run \`cc-optout auth constant-contact\`)`);
      else if (last.fatal) reasons.push(`last run failed: ${last.fatal}`);
      for (const [name, t] of Object.entries(last.summary?.targets ?? {})) {
        if (t.halted && ['auth', 'config'].includes(haltKind(t.halted))) reasons.push(`target ${name}: ${t.halted}`);
      }
    }
    return {
      ready: reasons.length === 0,
      reasons,
      host: os.hostname(),
      lastRun: last
        ? {
            finishedAt: last.finishedAt,
            runId: last.runId,
            exitCode: last.summary?.exitCode ?? null,
            fatal: last.fatal,
          }
        : null,
      lastSuccessfulSyncAt: this.lastSuccessAt,
      nextRunAt: this.scheduler?.next()?.toISOString() ?? null,
      backingOffUntil: this.notBefore && this.notBefore > this.now() ? this.notBefore.toISOString() : null,
    };
  }

  /** Stop the schedule, let the run in hand finish its batch, close the HTTP server. Idempotent. */
  async stop(reason: NodeJS.Signals | 'stop' = 'stop'): Promise<void> {
    if (this.stopping) return this.running ?? undefined;
    this.stopping = true;
    this.scheduler?.stop();
    this.controller.abort(reason);
    await this.running;
    // alerts in flight get a few seconds (each webhook call has its own whole-call deadline anyway)
    if (this.alerting) {
      let timer: NodeJS.Timeout | undefined;
      const drained = await Promise.race([
        this.alerting.then(() => true),
        new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ALERT_DRAIN_MS))),
      ]);
      clearTimeout(timer);
      if (!drained)
        this.log.warn('service: stopping with an alert webhook call still in flight', { waitedMs: ALERT_DRAIN_MS });
    }
    await this.server.close();
    this.log.info('service stopped', { reason });
  }
}
