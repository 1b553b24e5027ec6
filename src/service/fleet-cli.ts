/**
 * `cc-optout run` in fleet mode: the options, the rule that picks the mode, and the wiring of the store backend,
 * the fleet's tables (leases, the shared budget) and N FleetWorkers (src/fleet/worker.ts) in this process.
 *
 * FLEET MODE is on when `--fleet` or `--workers N` is given, or when the store's account registry lists an
 * account other than `default` (`cc-optout accounts add`). Otherwise `run` is the single-account service as
 * before (src/service/runner.ts). In fleet mode every account of the registry runs, and so does the config
 * file's own account as `default` (its `source` and `targets`), each with its own lease rows.
 */
import * as fs from 'fs';
import { Config, isCommentKey, parseJsonText } from '../config';
import { openBackend, storeSpecFor } from '../store/open';
import { accountOpener } from '../fleet/account-app';
import { createPgBudget, createPgLeases } from '../fleet/postgres';
import { createSqliteBudget, createSqliteLeases } from '../fleet/sqlite';
import { DEFAULT_MAX_INTERVAL_MS, DEFAULT_MIN_INTERVAL_MS } from '../fleet/scheduler';
import { Leases, SharedBudget } from '../fleet/types';
import { pgWake, sqliteWake, Wake } from '../fleet/wake';
import { Logger } from '../log';
import { Registry } from '../registry';
import { AccountRecord, DEFAULT_ACCOUNT, StoreBackend } from '../store/backend';
import { parseEvery } from './schedule';

export interface FleetRunOpts {
  fleet?: boolean;
  workers?: string;
  concurrency?: string;
  leaseTtl?: string;
}

/** Defaults of the fleet options (README "More than one machine"). */
export const FLEET_DEFAULTS = { workers: 1, concurrency: 2, leaseTtlSeconds: 30 } as const;

export interface FleetSettings {
  workers: number;
  concurrency: number;
  ttlMs: number;
}

function positiveInt(v: string, flag: string, max: number, problems: string[]): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < 1 || n > max) {
    problems.push(`${flag}: got ${JSON.stringify(v)}, expected a whole number from 1 to ${max}`);
    return 1;
  }
  return n;
}

/** The fleet options checked before anything is opened (each problem names its option). */
export function checkFleetOptions(o: FleetRunOpts): { settings: FleetSettings; problems: string[] } {
  const problems: string[] = [];
  const workers = o.workers !== undefined ? positiveInt(o.workers, '--workers', 64, problems) : FLEET_DEFAULTS.workers;
  const concurrency =
    o.concurrency !== undefined
      ? positiveInt(o.concurrency, '--concurrency', 64, problems)
      : FLEET_DEFAULTS.concurrency;
  let ttlMs = FLEET_DEFAULTS.leaseTtlSeconds * 1000;
  if (o.leaseTtl !== undefined) {
    const s = parseEvery(o.leaseTtl);
    if (typeof s === 'string') problems.push(`--lease-ttl: ${s}`);
    else ttlMs = s * 1000;
  }
  return { settings: { workers, concurrency, ttlMs }, problems };
}

/** Is this a fleet run? (see the file comment) */
export function fleetModeWanted(o: FleetRunOpts, accounts: readonly AccountRecord[]): boolean {
  return !!o.fleet || o.workers !== undefined || accounts.some((a) => a.id !== DEFAULT_ACCOUNT);
}

/** The config file's `source`, `targets` and `delivery` as an account document (`default`), unresolved. */
export function fileAccountDocument(configFile: string): Record<string, unknown> | null {
  if (!fs.existsSync(configFile)) return null;
  const raw = parseJsonText(fs.readFileSync(configFile, 'utf8'), configFile) as Record<string, unknown> | null;
  if (!raw || typeof raw !== 'object' || !('source' in raw)) return null;
  const doc: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw))
    if (['source', 'targets', 'delivery'].includes(k) && !isCommentKey(k)) doc[k] = v;
  return doc;
}

/** The fleet's tables next to the store: on PostgreSQL its pool, on SQLite its registry database. */
export interface FleetTables {
  leases: Leases;
  budget: SharedBudget;
  wake: Wake;
}

export async function fleetTablesOf(backend: StoreBackend): Promise<FleetTables> {
  const pg = (backend as { pool?: import('pg').Pool }).pool;
  if (backend.kind === 'postgres' && pg)
    return { leases: createPgLeases(pg), budget: createPgBudget(pg), wake: pgWake(pg) };
  if (backend.kind === 'sqlite') {
    // the store.path file (the default account's, which holds the registry) holds the fleet's tables too
    const db = ((await backend.account(DEFAULT_ACCOUNT)) as unknown as { db?: import('better-sqlite3').Database }).db;
    if (db) return { leases: createSqliteLeases(db), budget: createSqliteBudget(db), wake: sqliteWake(db) };
  }
  throw new Error(`the ${backend.kind} store at ${backend.location} has no fleet tables this cc-optout can open`);
}

export interface FleetWiring {
  readonly backend: StoreBackend;
  readonly tables: FleetTables;
  readonly config: Config;
  readonly configFile: string;
  readonly registry: Registry;
  readonly env: NodeJS.ProcessEnv;
  readonly logger: Logger;
  readonly settings: FleetSettings;
  /** The shortest poll interval (the service schedule's `every`); default the scheduler's 1 min. */
  readonly minIntervalMs?: number;
}

/** What FleetRunner's workers run with (src/service/fleet-runner.ts). */
export function fleetWorkerOptions(w: FleetWiring): import('./fleet-runner').FleetRunnerOptions['worker'] {
  const fileDoc = fileAccountDocument(w.configFile);
  const accounts = async (): Promise<AccountRecord[]> => {
    const list = (await w.backend.listAccounts()).filter(
      (a) => a.id !== DEFAULT_ACCOUNT || (a.config !== null && a.config !== undefined),
    );
    if (fileDoc && !list.some((a) => a.id === DEFAULT_ACCOUNT)) {
      const at = new Date(0).toISOString();
      list.push({ id: DEFAULT_ACCOUNT, config: fileDoc, priority: 1, createdAt: at, updatedAt: at });
    }
    return list;
  };
  return {
    backend: w.backend,
    leases: w.tables.leases,
    budget: w.tables.budget,
    wake: w.tables.wake,
    accounts,
    open: accountOpener({
      backend: w.backend,
      registry: w.registry,
      env: w.env,
      logger: w.logger,
      budget: w.tables.budget,
      defaultConfig: w.config,
      configFile: w.configFile,
    }),
    concurrency: w.settings.concurrency,
    ttlMs: w.settings.ttlMs,
    // a claim loop with nothing due looks again this often: a handed-over lease waits at most this long
    idleMs: Math.min(1000, Math.max(100, Math.floor(w.settings.ttlMs / 6))),
    minIntervalMs: w.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS,
    maxIntervalMs: Math.max(w.minIntervalMs ?? 0, DEFAULT_MAX_INTERVAL_MS),
  };
}

/**
 * The store backend `run` works on (`--store`, else the config's store.url / store.path), opened to read its
 * registry: the caller decides fleet mode from it (and closes it when it runs the single-account service).
 */
export async function openRunBackend(store: string | undefined, config: Config): Promise<StoreBackend> {
  return openBackend(storeSpecFor(config, store));
}
