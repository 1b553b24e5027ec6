/**
 * One account opened for a fleet lease (src/fleet/worker.ts AccountWork): the account's store opened with the
 * lease's fence guard, its config decoded from the registry document (`${ENV}` references resolved from the
 * environment now, never stored resolved) or, for `default` without a document, the config file's own, and an
 * engine that takes no store run lock (the lease is the lock: `externalLease`) and whose Constant Contact source
 * spends the application's shared budget (one application = one client id, shared by every account using it).
 *
 * The application's budget (`cc_budget` row) is configured from the account's `source.rateLimit`: the daily
 * budget as given, the per-second rate 12.5% below the vendor's (4/s -> 3.5/s, so a sliding one-second window
 * never sees 4). Accounts of one application should name the same limits; the last configured wins.
 *
 * A config that does not decode is recorded in the account's run history (a failed run naming every problem)
 * before it is reported, so `cc-optout runs --account <id>` shows why the account does not poll.
 */
import * as os from 'os';
import { decodeAccount } from '../accounts';
import { Config, ConfigError } from '../config';
import { Engine, RunSummary } from '../engine';
import { Clock, systemClock } from '../http/clock';
import { Logger, redact } from '../log';
import { Registry } from '../registry';
import { createConstantContactSource, ConstantContactSourceOptions } from '../source/constant-contact';
import { CALLS_VENDOR } from '../source/constant-contact/client';
import { AccountRecord, DEFAULT_ACCOUNT, StoreBackend } from '../store/backend';
import { LeaseLost, StateStore } from '../store/types';
import { BudgetConfig, SharedBudget } from './types';
import { hash32 } from './scheduler';
import { AccountWork, DeliverOutcome, DetectOutcome, OpenAccountInput } from './worker';

export interface AccountOpenerOptions {
  readonly backend: StoreBackend;
  readonly registry: Registry;
  readonly env: NodeJS.ProcessEnv;
  readonly logger: Logger;
  readonly budget?: SharedBudget;
  /** The config file's own account (`default`), used when the registry has no document for it. */
  readonly defaultConfig?: Config | null;
  /** The config file: relative paths in a document are resolved from its folder (as the file's own are). */
  readonly configFile?: string | null;
  readonly sourceOptions?: ConstantContactSourceOptions;
  readonly clock?: Clock;
}

/** The shared budget of an application from an account's `source.rateLimit`. */
export function budgetConfigOf(config: Config): BudgetConfig {
  const { perSecond, dailyBudget } = config.source.rateLimit;
  return { dailyLimit: dailyBudget, perSecond: Math.round(perSecond * 0.875 * 1000) / 1000 };
}

/**
 * The Constant Contact API calls a run spent: what the application's daily budget counts (the token endpoint has
 * its own 1/s limit and is not part of it).
 */
export function ccCalls(summary: RunSummary): number {
  return summary.apiCalls[CALLS_VENDOR] ?? 0;
}

/** Records settled by a run for a target (any outcome but a retryable failure). */
function settled(summary: RunSummary, target: string): number {
  const t = summary.targets[target];
  if (!t) return 0;
  return Object.entries(t.outcomes)
    .filter(([kind]) => kind !== 'failed-retryable')
    .reduce((a, [, n]) => a + (n ?? 0), 0);
}

/** When a target's outbox has rows due again: now, the earliest next attempt among the first queued, or null. */
async function nextDue(store: StateStore, target: string, now: Date): Promise<string | null> {
  if ((await store.countDue(target, now, 1)) > 0) return now.toISOString();
  const queued = await store.queuedOutbox(target, 200, 0);
  if (queued.length === 0) return null;
  return queued.map((r) => r.nextAttemptAt).sort()[0]!;
}

export function accountOpener(o: AccountOpenerOptions): (input: OpenAccountInput) => Promise<AccountWork> {
  const configured = new Map<string, string>();
  const clock = o.clock ?? systemClock;
  const configFor = (record: AccountRecord): Config => {
    if (record.id === DEFAULT_ACCOUNT && (record.config === null || record.config === undefined)) {
      if (!o.defaultConfig)
        throw new ConfigError([`account ${DEFAULT_ACCOUNT}: no config (neither in the registry nor a config file)`]);
      return o.defaultConfig;
    }
    try {
      return decodeAccount(record.config, o.env, o.registry, { configFile: o.configFile ?? null });
    } catch (err) {
      if (err instanceof ConfigError) throw new ConfigError(err.problems.map((p) => `account ${record.id}: ${p}`));
      throw err;
    }
  };
  return async ({ record, guard, lease, signal }) => {
    const store = await o.backend.account(record.id, { guard });
    // a PostgreSQL account store is this lease's own (closed with it: its queued key/value writes flushed); a SQLite
    // one is the backend's, shared by every lease of the account in this process (closed with the backend)
    const closeStore = async (): Promise<void> => {
      if (o.backend.kind === 'postgres') await store.close();
    };
    let config: Config;
    try {
      config = configFor(record);
    } catch (err) {
      await recordFailure(store, record.id, err, clock, o.logger);
      await closeStore();
      throw err;
    }
    const app = config.source.clientId;
    const logger = o.logger.child({ account: record.id });
    try {
      if (o.budget) {
        const cfg = budgetConfigOf(config);
        const key = JSON.stringify(cfg);
        if (configured.get(app) !== key) {
          await o.budget.configure(app, cfg);
          configured.set(app, key);
        }
      }
    } catch (err) {
      await closeStore();
      throw err;
    }
    const engine = new Engine({
      config,
      store,
      registry: o.registry,
      clock,
      logger,
      // the fleet's lease is the lock: lost once the worker's heartbeat found it taken over (the signal says why)
      // this account's own slot in each reconcile period (a hash of its id): reconciles spread over the day
      reconcilePhase: hash32(record.id) / 2 ** 32,
      externalLease: {
        owner: lease.owner,
        lost: () => (signal.aborted && signal.reason instanceof LeaseLost ? signal.reason.message : null),
      },
      source: (deps) =>
        createConstantContactSource(config.source, deps, {
          ...(o.sourceOptions ?? {}),
          account: record.id,
          ...(o.budget ? { sharedBudget: { app, budget: o.budget } } : {}),
        }),
    });
    return {
      store,
      app,
      async detect(signal): Promise<DetectOutcome> {
        const s = await engine.sync({ deliver: false, signal });
        return {
          calls: ccCalls(s),
          found: s.detection.newOptOuts,
          exitCode: s.exitCode,
          retryAt: s.detection.retryAt ?? null,
          interrupted: !!s.interrupted,
        };
      },
      async deliver(target, signal): Promise<DeliverOutcome> {
        // nothing due: no run recorded, the lease comes back when the next queued row is due
        if ((await store.countDue(target, clock.now(), 1)) === 0)
          return { settled: 0, nextDueAt: await nextDue(store, target, clock.now()) };
        const s = await engine.deliver({ targets: [target], signal });
        const t = s.targets[target];
        return {
          settled: settled(s, target),
          nextDueAt: await nextDue(store, target, clock.now()),
          halted: t?.halted ?? null,
          retryAt: t?.retryAt ?? null,
          interrupted: !!s.interrupted,
        };
      },
      async close() {
        try {
          await engine.close();
        } finally {
          await closeStore();
        }
      },
    };
  };
}

/** A config problem as a failed run in the account's history (best effort: a failure to record is logged). */
async function recordFailure(
  store: StateStore,
  account: string,
  err: unknown,
  clock: Clock,
  logger: Logger,
): Promise<void> {
  const now = clock.now().toISOString();
  try {
    const id = await store.startRun('sync', false, now, {
      owner: `fleet:${os.hostname()}:${process.pid}`,
      pid: process.pid,
      host: os.hostname(),
    });
    await store.failRun(id, 2, redact((err as Error).message ?? String(err)), now);
  } catch (e) {
    logger.warn('could not record the failed run in the account', { account, error: redact((e as Error).message) });
  }
}
