/**
 * Wiring: a config file -> the engine with its store, registry, source and connectors. One place, used by the
 * CLI, the demo, the end-to-end tests and the benchmarks, so they all run the product exactly as it ships.
 */
import * as fs from 'fs';
import * as path from 'path';
import { decodeAccount } from './accounts';
import { Config, loadConfig } from './config';
import { Engine, ExternalLease, ProgressEvent } from './engine';
import { Logger } from './log';
import { createRegistry, Registry } from './registry';
import { openStore } from './store/sqlite';
import { StateStore, StoreOpenError } from './store/types';
import { AccountOpenOptions, DEFAULT_ACCOUNT, PgFenceGuard, StoreBackend } from './store/backend';
import { openBackend, storeSpecFor } from './store/open';
import { UnknownAccount } from './store/sqlite-backend';
import { Clock, systemClock } from './http/clock';
import { OptOutSource } from './source/types';
import { ConstantContactSourceOptions, createConstantContactSource } from './source/constant-contact';

export interface AppOptions {
  configFile: string;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  onProgress?: (e: ProgressEvent) => void;
  /** Defaults to the manifest's connectors. */
  registry?: Registry;
  clock?: Clock;
  /** Wrap the store or the source (benchmarks measure them); identity by default. */
  wrapStore?: (s: StateStore) => StateStore;
  wrapSource?: (s: OptOutSource) => OptOutSource;
  /** Options of the Constant Contact source (benchmarks: e.g. `usageFlushEvery`). */
  sourceOptions?: ConstantContactSourceOptions;
  /**
   * false for commands that only read or fix the store (`status`, `audit`, ...): unset `${ENV}` secret
   * references are then not errors (the config's structure is still validated). Default true.
   */
  requireSecrets?: boolean;
  /** Run lease renewal interval (tests); default 30 s. */
  leaseRenewMs?: number;
}

export interface App {
  config: Config;
  store: StateStore;
  registry: Registry;
  logger: Logger;
  engine: Engine;
  /** Close the targets, release the run lock, close the store. */
  close(): Promise<void>;
}

/** The state store path: relative paths are relative to the config file's folder. */
export function storePathFor(config: Pick<Config, 'storePath' | 'file'>): string {
  if (config.storePath === ':memory:' || path.isAbsolute(config.storePath)) return config.storePath;
  const base = config.file ? path.dirname(path.resolve(config.file)) : process.cwd();
  return path.resolve(base, config.storePath);
}

/** Is a folder on `file`'s path a regular file? (openStore then names that problem, creating nothing.) */
function underRegularFile(file: string): boolean {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    if (fs.existsSync(dir)) return !fs.statSync(dir).isDirectory();
    if (path.dirname(dir) === dir) return false;
  }
}

/** The engine over an opened store (wrapped as the options say), as every entry point builds it. */
function engineFor(
  o: AppOptions,
  config: Config,
  registry: Registry,
  raw: StateStore,
  externalLease?: ExternalLease,
  account?: string,
): { store: StateStore; engine: Engine } {
  const store = o.wrapStore ? o.wrapStore(raw) : raw;
  const wrapSource = o.wrapSource ?? ((s: OptOutSource) => s);
  const engine = new Engine({
    config,
    store,
    registry,
    clock: o.clock ?? systemClock,
    logger: o.logger,
    onProgress: o.onProgress,
    leaseRenewMs: o.leaseRenewMs,
    ...(externalLease ? { externalLease } : {}),
    source: (deps) =>
      wrapSource(createConstantContactSource(config.source, deps, { ...(o.sourceOptions ?? {}), account })),
  });
  return { store, engine };
}

/**
 * On PostgreSQL every Constant Contact call reserves from its application's shared budget, also a hand-run command
 * (`--account x sync`): the fleet's workers on every host see the calls it spent, and a `quota_exceeded` it meets
 * marks the day spent for all of them. SQLite (one machine) keeps the per-store limiter alone.
 */
async function withSharedBudget(o: AsyncAppOptions, backend: StoreBackend, config: Config): Promise<AsyncAppOptions> {
  if (backend.kind !== 'postgres' || o.sourceOptions?.sharedBudget) return o;
  const pool = (backend as unknown as { pool?: import('pg').Pool }).pool;
  if (!pool) return o;
  const { createPgBudget } = await import('./fleet/postgres');
  const { budgetConfigOf } = await import('./fleet/account-app');
  const budget = createPgBudget(pool);
  const app = config.source.clientId;
  await budget.configure(app, budgetConfigOf(config));
  return { ...o, sourceOptions: { ...(o.sourceOptions ?? {}), sharedBudget: { app, budget } } };
}

/** Decode the config (throws ConfigError before any network call or file is created), then open everything. */
export function openApp(o: AppOptions): App {
  const registry = o.registry ?? createRegistry();
  const config = loadConfig(o.configFile, o.env, registry, { requireEnv: o.requireSecrets !== false });
  const storePath = storePathFor(config);
  // a command that only reads the store never creates one: a missing file is a wrong store.path (or nothing ran yet)
  if (
    o.requireSecrets === false &&
    storePath !== ':memory:' &&
    !fs.existsSync(storePath) &&
    !underRegularFile(storePath)
  ) {
    throw new StoreOpenError(
      storePath,
      'no state store here: nothing has run with this config yet, or store.path is wrong (sync, backfill or check creates it)',
    );
  }
  const raw = openStore(storePath);
  const { store, engine } = engineFor(o, config, registry, raw);
  return {
    config,
    store,
    registry,
    logger: o.logger,
    engine,
    close: async () => {
      try {
        await engine.close();
      } finally {
        raw.close();
      }
    },
  };
}

export interface AsyncAppOptions extends AppOptions {
  /** `--store`: a path (SQLite) or a postgres:// URL, instead of the config's store.url / store.path. */
  store?: string;
  /** The account to open (default `default`: the config file's own source and targets). */
  account?: string;
  /** An already open backend (the fleet's workers share one); it is NOT closed by `close()`. */
  backend?: StoreBackend;
  /** PostgreSQL: the lease fence checked in every write transaction of the account's store. */
  guard?: PgFenceGuard;
  /** The fleet holds this account's lease: the engine takes no store run lock (see EngineDeps.externalLease). */
  externalLease?: ExternalLease;
}

export interface AsyncApp extends App {
  /** Where the state lives (the registry of accounts, and each account's store). */
  backend: StoreBackend;
  /** The account `store` belongs to. */
  account: string;
}

/**
 * The config of an added account: its registry document decoded (as `accounts add` and the fleet decode it), in
 * place of the config file's `source`, `targets` and `delivery`; the file's other sections (store, service) stay.
 */
function accountConfig(o: AsyncAppOptions, registry: Registry, fileConfig: Config, accountDoc: unknown): Config {
  const c = decodeAccount(accountDoc, o.env, registry, {
    configFile: o.configFile,
    requireEnv: o.requireSecrets !== false,
  });
  return { ...fileConfig, source: c.source, targets: c.targets, delivery: c.delivery };
}

/**
 * openApp for any backend (SQLite or PostgreSQL) and any account: decode the config (ConfigError before anything is
 * opened), open the backend (`o.store`, else the config's store.url / store.path), the account's store, and the engine.
 * A read-only command (`requireSecrets: false`) never creates a SQLite store. `close()` closes the targets and
 * releases the run lock, then the backend when this call opened it.
 */
export async function openAppAsync(o: AsyncAppOptions): Promise<AsyncApp> {
  const registry = o.registry ?? createRegistry();
  const account = o.account ?? DEFAULT_ACCOUNT;
  // an added account needs its own secrets, not those of the config file's source and targets (`default`'s)
  const fileConfig = loadConfig(o.configFile, o.env, registry, {
    requireEnv: account === DEFAULT_ACCOUNT && o.requireSecrets !== false,
    ignoreStore: !!o.store,
  });
  const backend =
    o.backend ?? (await openBackend(storeSpecFor(fileConfig, o.store), { mustExist: o.requireSecrets === false }));
  const owned = !o.backend;
  try {
    let config = fileConfig;
    if (account !== DEFAULT_ACCOUNT) {
      const rec = await backend.getAccount(account);
      if (!rec) throw new UnknownAccount(account);
      config = accountConfig(o, registry, fileConfig, rec.config);
    }
    const accountOpts: AccountOpenOptions = o.guard ? { guard: o.guard } : {};
    const raw = await backend.account(account, accountOpts);
    const { store, engine } = engineFor(
      await withSharedBudget(o, backend, config),
      config,
      registry,
      raw,
      o.externalLease,
      account,
    );
    return {
      config,
      store,
      registry,
      logger: o.logger,
      engine,
      backend,
      account,
      close: async () => {
        try {
          await engine.close();
        } finally {
          if (owned) await backend.close();
        }
      },
    };
  } catch (err) {
    if (owned) await backend.close().catch(() => undefined);
    throw err;
  }
}
