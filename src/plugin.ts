/**
 * The Connector/Target contract and the registry that loads connectors named in manifest.json.
 *
 * A connector is a folder under `connectors/` whose `index.ts` exports `connector: Connector<C>`.
 * Connectors import only this module, `src/domain` and the shared HTTP helpers in `src/http`;
 * never the engine, the store or the CLI. Adding a CRM = a new folder + a manifest entry.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as t from 'io-ts';
import * as TE from 'fp-ts/TaskEither';
import { OptOut, Outcome } from './domain';
import { Logger } from './log';
import { Clock } from './http/clock';

/** Durable key/value storage scoped to one target (OAuth tokens, last API usage, decisions). */
import type { KeyValue } from './domain';
export type { KeyValue };

/** Counts API requests per vendor for the run summary ("API calls used against the minimum"). */
export interface CallCounter {
  record(vendor: string, n?: number): void;
}

/** Effects handed to a connector, so production and tests can swap implementations. */
export interface Capabilities {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly kv: KeyValue;
  readonly calls: CallCounter;
  /** The target's name from the config (e.g. "hubspot-main"), for messages. */
  readonly targetName: string;
  /**
   * Reads files named in a config (e.g. a Salesforce JWT private key path). Config values under keys ending in
   * "Path" arrive absolute, resolved from the config file's folder.
   */
  readonly readFile: (p: string) => string;
}

/**
 * A target-wide failure: nothing in the batch was delivered (auth refused, daily limit, outage).
 * `halt` tells the engine to stop delivering to this target for the rest of the run (its outbox is kept);
 * `retryAt` (ISO) says when it is worth trying again, when the vendor told us.
 *
 * `bad-request` is not target-wide: the vendor refused a request because of what THIS batch holds (e.g. a
 * Salesforce MALFORMED_QUERY caused by one odd address), before anything was written. Return it only when
 * the request would succeed without the offending input (not for a broken mapping: that is `config`).
 * The engine then splits the batch and delivers the halves, down to single addresses, and parks only the
 * addresses still refused on their own, with this message (`halt` is ignored for this kind).
 */
export interface TargetError {
  readonly kind: 'auth' | 'rate-limit' | 'quota' | 'unavailable' | 'config' | 'fatal' | 'bad-request';
  readonly message: string;
  readonly halt: boolean;
  readonly retryAt?: string;
}

export interface CheckItem {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface CheckReport {
  readonly ok: boolean;
  readonly items: readonly CheckItem[];
}

/**
 * The result of one `deliver` call: one outcome per email of the batch (same emails, any order).
 * When the target had to stop part-way (daily limit, request limit), the emails not handled carry
 * `failed-retryable` and `halt` says why; the engine then stops this target for the run.
 */
export interface DeliveryReport {
  readonly outcomes: readonly Outcome[];
  /** A `bad-request` halt here means: the emails still `failed-retryable` were refused as a bad request. */
  readonly halt?: TargetError;
}

export type DeliveryMode = 'apply' | 'plan';

export interface Target {
  check(): TE.TaskEither<TargetError, CheckReport>;
  deliver(batch: readonly OptOut[], mode: DeliveryMode): TE.TaskEither<TargetError, DeliveryReport>;
  /** Release sockets, timers. Optional. */
  close?(): Promise<void>;
}

export interface Connector<C> {
  readonly id: string;
  /** io-ts codec of this connector's config (mapping + auth). Secrets arrive already resolved. */
  readonly config: t.Type<C, unknown, unknown>;
  /** Largest batch `deliver` wants (the engine may send fewer). */
  readonly maxBatch?: number;
  open(config: C, caps: Capabilities): Target;
}

// ---------------------------------------------------------------------------------------------
// Manifest and registry

export interface ManifestConnector {
  id: string;
  /** Path of the compiled module relative to the package root, without `dist/` (e.g. "connectors/hubspot"). */
  module: string;
  description?: string;
  configSchema: Record<string, unknown>;
  capabilities: {
    dryRun: boolean;
    backfill: boolean;
    suppressionModes: string[];
    /** Keys of the target's key/value store that `status` shows (API usage, batch decisions). */
    statusKeys?: string[];
    [k: string]: unknown;
  };
}

export interface Manifest {
  name: string;
  version: string;
  /** JSON Schema of the whole config file (targets[].config is checked by each connector's schema). */
  configSchema?: Record<string, unknown>;
  source: { id: string; description?: string; configSchema: Record<string, unknown>; capabilities: Record<string, unknown> };
  connectors: ManifestConnector[];
}

/** The package root (where manifest.json lives), from either `src/` or `dist/src/`. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'manifest.json')) && fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`manifest.json not found above ${__dirname}`);
}

/** The directory compiled modules live in (dist/ when running compiled code). */
export function compiledRoot(): string {
  const root = packageRoot();
  const dist = path.join(root, 'dist');
  return __dirname.startsWith(dist) ? dist : root;
}

export function loadManifest(file: string = path.join(packageRoot(), 'manifest.json')): Manifest {
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
  if (!raw || !Array.isArray(raw.connectors)) throw new Error(`${file}: "connectors" must be an array`);
  return raw;
}

export interface Registry {
  ids(): string[];
  get(id: string): Connector<unknown> | undefined;
  entry(id: string): ManifestConnector | undefined;
}

function isConnector(x: unknown): x is Connector<unknown> {
  const c = x as Connector<unknown> | null;
  return !!c && typeof c.id === 'string' && typeof c.open === 'function' && c.config instanceof t.Type;
}

/**
 * Load every connector the manifest lists. `moduleRoot` is where `entry.module` paths are resolved
 * (the compiled root by default); tests pass their own manifest to add a connector without touching src/.
 */
export function createRegistry(manifest: Manifest = loadManifest(), moduleRoot: string = compiledRoot()): Registry {
  const loaded = new Map<string, Connector<unknown>>();
  const entries = new Map<string, ManifestConnector>();
  for (const entry of manifest.connectors) {
    const file = path.resolve(moduleRoot, entry.module);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(file) as { connector?: unknown; default?: unknown };
    const connector = mod.connector ?? mod.default;
    if (!isConnector(connector)) {
      throw new Error(`manifest connector "${entry.id}": ${file} does not export a Connector named "connector"`);
    }
    if (connector.id !== entry.id) {
      throw new Error(`manifest connector "${entry.id}": module exports connector id "${connector.id}"`);
    }
    loaded.set(entry.id, connector);
    entries.set(entry.id, entry);
  }
  return {
    ids: () => [...loaded.keys()],
    get: (id) => loaded.get(id),
    entry: (id) => entries.get(id),
  };
}
