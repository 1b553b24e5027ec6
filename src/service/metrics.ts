/**
 * Prometheus metrics of `cc-optout run` (prom-client, on its own registry; every name starts with `cc_optout_`).
 * Counters and the lag histogram grow from the runs this process made; the outbox gauges and the Constant
 * Contact budget are read from the store at scrape time, so they are true whoever wrote the store.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { SOURCE_KV, RunSummary } from '../engine';
import { StateStore } from '../store/types';

export const PREFIX = 'cc_optout_';

export interface MetricsDeps {
  store: StateStore;
  /** Every configured target (enabled or paused). */
  targets: readonly string[];
  /** Constant Contact `rateLimit.dailyBudget`. */
  dailyBudget: number;
  now?: () => Date;
}

/** Lag buckets (seconds): seconds for a service polling every minute, up to days for a CRM outage. */
export const LAG_BUCKETS = [
  5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14_400, 43_200, 86_400, 259_200, 604_800,
];

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly runs: Counter<'result'>;
  readonly ticksSkipped: Counter<'reason'>;
  readonly optOutsDetected: Counter;
  readonly deliveries: Counter<'target' | 'outcome'>;
  readonly apiCalls: Counter<'vendor'>;
  readonly lag: Histogram<'target'>;
  readonly runDuration: Histogram;
  readonly lastSuccess: Gauge;
  readonly halted: Gauge<'target'>;

  constructor(private readonly deps: MetricsDeps) {
    const r = this.registry;
    const now = deps.now ?? (() => new Date());
    collectDefaultMetrics({ register: r, prefix: PREFIX });
    this.runs = new Counter({
      name: `${PREFIX}runs_total`,
      help: 'Sync runs made by this process, by result (ok, incomplete, interrupted, failed)',
      labelNames: ['result'],
      registers: [r],
    });
    this.ticksSkipped = new Counter({
      name: `${PREFIX}ticks_skipped_total`,
      help: 'Scheduled ticks that started no run: overlap (a run was in progress), backoff (after failures), locked (another run held the store)',
      labelNames: ['reason'],
      registers: [r],
    });
    this.optOutsDetected = new Counter({
      name: `${PREFIX}optouts_detected_total`,
      help: 'New opt-outs detected in Constant Contact (committed to the outbox)',
      registers: [r],
    });
    this.deliveries = new Counter({
      name: `${PREFIX}deliveries_total`,
      help: 'Delivery outcomes per target and outcome',
      labelNames: ['target', 'outcome'],
      registers: [r],
    });
    this.apiCalls = new Counter({
      name: `${PREFIX}api_calls_total`,
      help: 'API calls per vendor',
      labelNames: ['vendor'],
      registers: [r],
    });
    this.lag = new Histogram({
      name: `${PREFIX}optout_to_crm_write_lag_seconds`,
      help: 'Time from the opt-out in Constant Contact to the first CRM write (applied records)',
      labelNames: ['target'],
      buckets: LAG_BUCKETS,
      registers: [r],
    });
    this.runDuration = new Histogram({
      name: `${PREFIX}run_duration_seconds`,
      help: 'Duration of sync runs',
      buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600],
      registers: [r],
    });
    this.lastSuccess = new Gauge({
      name: `${PREFIX}last_successful_sync_timestamp_seconds`,
      help: 'Unix time of the last sync that finished with everything delivered (exit 0)',
      registers: [r],
    });
    this.halted = new Gauge({
      name: `${PREFIX}target_halted`,
      help: '1 when the target stopped the last run (auth, quota, outage, config), else 0',
      labelNames: ['target'],
      registers: [r],
    });
    for (const t of deps.targets) this.halted.set({ target: t }, 0);
    const store = deps.store;
    const statusOf = () => store.targetStatus(deps.targets, now());
    new Gauge({
      name: `${PREFIX}outbox_queued`,
      help: 'Outbox rows queued (waiting or retrying) per target',
      labelNames: ['target'],
      registers: [r],
      async collect() {
        for (const s of await statusOf()) this.set({ target: s.target }, s.queued);
      },
    });
    new Gauge({
      name: `${PREFIX}outbox_due`,
      help: 'Queued outbox rows whose next attempt is due now, per target',
      labelNames: ['target'],
      registers: [r],
      async collect() {
        for (const s of await statusOf()) this.set({ target: s.target }, s.due);
      },
    });
    new Gauge({
      name: `${PREFIX}outbox_parked`,
      help: 'Outbox rows parked (failed-permanent; `cc-optout requeue` after fixing the cause) per target',
      labelNames: ['target'],
      registers: [r],
      async collect() {
        for (const s of await statusOf()) this.set({ target: s.target }, s.parked);
      },
    });
    new Gauge({
      name: `${PREFIX}outbox_oldest_queued_age_seconds`,
      help: 'Age of the oldest queued outbox row per target (since it was queued; 0 when none)',
      labelNames: ['target'],
      registers: [r],
      async collect() {
        const t = now().getTime();
        for (const s of await statusOf()) {
          const at = s.oldestQueuedAt ? Date.parse(s.oldestQueuedAt) : NaN;
          this.set({ target: s.target }, Number.isNaN(at) ? 0 : Math.max(0, (t - at) / 1000));
        }
      },
    });
    new Gauge({
      name: `${PREFIX}constant_contact_daily_budget_remaining`,
      help: 'Constant Contact requests left today (UTC) of source.rateLimit.dailyBudget, as this store counts them',
      registers: [r],
      async collect() {
        this.set(await constantContactBudgetLeft(store, deps.dailyBudget, now()));
      },
    });
  }

  /** Count one finished run. */
  recordRun(s: RunSummary, result: 'ok' | 'incomplete' | 'interrupted'): void {
    this.runs.inc({ result });
    this.runDuration.observe(s.durationMs / 1000);
    if (s.detection.newOptOuts > 0) this.optOutsDetected.inc(s.detection.newOptOuts);
    for (const [target, t] of Object.entries(s.targets)) {
      for (const [outcome, n] of Object.entries(t.outcomes)) if (n) this.deliveries.inc({ target, outcome }, n);
      this.halted.set({ target }, t.halted ? 1 : 0);
    }
    for (const [vendor, n] of Object.entries(s.apiCalls)) if (n) this.apiCalls.inc({ vendor }, n);
    if (result === 'ok') this.lastSuccess.set(Date.parse(s.startedAt) / 1000 + s.durationMs / 1000);
  }

  /** First CRM writes made since `since` (from the audit): their opt-out-to-write lag. */
  async observeLag(since: string): Promise<void> {
    for (const row of await this.deps.store.audit(since)) {
      if (row.lagSeconds === null || !row.writtenAt || row.writtenAt < since) continue;
      this.lag.observe({ target: row.target }, row.lagSeconds);
    }
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}

/** Requests left today of the per-application daily budget (the whole budget when nothing was counted today). */
export async function constantContactBudgetLeft(store: StateStore, budget: number, now: Date): Promise<number> {
  const raw = (await store.kv(SOURCE_KV)).get('daily_usage');
  if (!raw) return budget;
  try {
    const u = JSON.parse(raw) as { day?: unknown; used?: unknown };
    if (u.day !== now.toISOString().slice(0, 10) || typeof u.used !== 'number') return budget;
    return Math.max(0, budget - u.used);
  } catch {
    return budget;
  }
}
