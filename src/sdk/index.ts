/**
 * The connector SDK (`cc-optout-connector/sdk`): the ONE module a connector imports. It holds
 *
 *  - the contract: `Connector<C>` (id, config codec, JSON Schema spec, capabilities, open, example, emulator)
 *    and `Target` (check, deliver, close), both Promise-based;
 *  - the domain values a connector reads and returns (`OptOut`, `Outcome`, `normaliseEmail`, `mappedValue`);
 *  - the io-ts codec helpers the connectors share (`strictObject`, `SecureUrl`, `fieldMapping`, ...);
 *  - ONE halt error, `TargetHalt`: the only way a target stops (auth refused, limits, outage, bad config,
 *    a bad request to bisect). It is recognised structurally (`isTargetHalt`: a `Symbol.for` brand), never by
 *    `instanceof`, so a connector built against its own copy of this SDK still stops the engine correctly;
 *  - `Capabilities`: everything with process-wide state (clock, logger, kv, call counter, secret redaction,
 *    rate limiters, retry, single-flight) is handed IN by the engine; a connector never reaches for globals.
 *
 * Names differ from the first sketch (/work/wt/SDK-SKETCH.md) in two places, kept close on purpose:
 *  - an outcome's status field is `kind` (type `OutcomeKind`, alias `OutcomeStatus`), as in the store and audit;
 *  - `caps.http.retry` is the retry runner itself (`retry(fn, classify, policy, clock)`); `DEFAULT_RETRY` is
 *    the policy value.
 *
 * The emulator kit for connector emulators (HTTP router, knobs, the shared World) is `cc-optout-connector/sdk/emulator`.
 */
import type { Either } from 'fp-ts/Either';
import type { Errors } from 'io-ts';
import type { OptOut, Outcome } from '../domain';
import type { Clock } from '../http/clock';
import type { RateLimiterOptions } from '../http/limiter';
import type { RetryDecision, RetryHooks, RetryPolicy } from '../http/retry';
import type { Logger } from '../log';
import type { World } from '../emulators/world';
import type { EndpointCount } from '../emulators/http';

// ------------------------------------------------------------------------------------------ domain values
export { OUTCOME_KINDS, OPT_OUT_VALUE_KEYS, isFinal, mappedValue, normaliseEmail } from '../domain';
export type { MappedValue, OptOut, OptOutValueKey, Outcome, OutcomeKind } from '../domain';
/** The sketch's name for `OutcomeKind`. */
export type OutcomeStatus = import('../domain').OutcomeKind;

// ------------------------------------------------------------------------------------------ codec helpers
export {
  HttpUrl,
  MappedValueCodec,
  NonEmptyString,
  NonNegativeNumber,
  PositiveInt,
  SECURE_URL_PATTERN,
  SecureUrl,
  decodeWith,
  fieldMapping,
  formatErrors,
  intRange,
  isSecretKey,
  numberRange,
  strictObject,
} from '../codec';

// ------------------------------------------------------------------------------------------ HTTP helpers (pure)
export { DEFAULT_RETRY, backoffDelay, isTransientNetworkError } from '../http/retry';
export type { RetryDecision, RetryHooks, RetryPolicy } from '../http/retry';
export type { RateLimiterOptions } from '../http/limiter';
export { nextUtcMidnight } from '../http/clock';
export type { Clock } from '../http/clock';
/**
 * Mask every registered secret (and token-looking values) in `text`: the same process-wide registry as
 * `caps.secrets.redact` (kept under a Symbol.for key, so every copy of this package shares it). Register
 * secrets with `caps.secrets.register`.
 */
export { redact } from '../log';
export type { Logger, LogLevel } from '../log';

/**
 * A rate limiter's daily budget is spent (thrown by `Limiter.acquire`). Recognised by name and shape, so a
 * limiter from another copy of the package is recognised too.
 */
export function isBudgetExhausted(e: unknown): e is Error & { resetAt: Date; budget: number } {
  const x = e as { name?: unknown; resetAt?: unknown } | null;
  return !!x && typeof x === 'object' && x.name === 'BudgetExhausted' && x.resetAt instanceof Date;
}

// ------------------------------------------------------------------------------------------ the halt error
export type HaltKind = 'auth' | 'rate-limit' | 'quota' | 'unavailable' | 'config' | 'fatal' | 'bad-request';
export const HALT_KINDS: readonly HaltKind[] = [
  'auth',
  'rate-limit',
  'quota',
  'unavailable',
  'config',
  'fatal',
  'bad-request',
];

/** The brand `isTargetHalt` looks for: the same symbol in every copy of this module (Symbol.for). */
export const HALT_BRAND: unique symbol = Symbol.for('cc-optout.halt') as never;

/** What a halt says, as plain data (a `TargetHalt` is one). */
export interface HaltInfo {
  readonly kind: HaltKind;
  readonly message: string;
  /** ISO time from which trying again is worth it, when the vendor said (a daily limit's reset). */
  readonly retryAt?: string;
}

export interface HaltOptions {
  readonly retryAt?: string;
  /**
   * What this batch already settled before the stop: these outcomes are recorded; every other email of the
   * batch stays queued (failed-retryable, deferred). Absent or empty: nothing in the batch was done.
   */
  readonly outcomes?: readonly Outcome[];
}

/**
 * The ONE way a target stops: throw it from `check()` or `deliver()`.
 *
 * - A target-wide stop (auth refused, daily limit, outage, bad mapping): the engine records `outcomes` (if
 *   any), keeps the rest of the outbox, defers it (to `retryAt` when given) and stops this target for the run.
 * - `bad-request` is NOT target-wide: the vendor refused a request because of what THIS batch holds (one odd
 *   address), before writing anything for the emails not in `outcomes`. The engine splits those emails in
 *   halves and delivers each, down to single addresses, and parks only addresses refused on their own. Throw
 *   it only when the request would succeed without the offending input (a broken mapping is `config`).
 */
export class TargetHalt extends Error implements HaltInfo {
  readonly [HALT_BRAND] = true as const;
  readonly kind: HaltKind;
  readonly retryAt?: string;
  readonly outcomes?: readonly Outcome[];

  constructor(info: HaltInfo & HaltOptions);
  constructor(kind: HaltKind, message: string, opts?: HaltOptions);
  constructor(a: HaltKind | (HaltInfo & HaltOptions), message?: string, opts: HaltOptions = {}) {
    // (an Error's `message` is not enumerable: read the fields, never spread a halt)
    const info: HaltInfo & HaltOptions =
      typeof a === 'string' ? { kind: a, message: message ?? a, retryAt: opts.retryAt, outcomes: opts.outcomes } : a;
    super(info.message);
    this.name = 'TargetHalt';
    this.kind = info.kind;
    if (info.retryAt !== undefined) this.retryAt = info.retryAt;
    if (info.outcomes !== undefined) this.outcomes = info.outcomes;
  }

  /** The same halt with the outcomes the batch settled before it (what `deliver` throws). */
  withOutcomes(outcomes: readonly Outcome[]): TargetHalt {
    return new TargetHalt({ kind: this.kind, message: this.message, retryAt: this.retryAt, outcomes });
  }
}

/** What the engine reads from a halt: any object carrying the brand and a known kind (any copy of the SDK). */
export interface HaltLike extends HaltInfo {
  readonly outcomes?: readonly Outcome[];
}

/** Is `e` a halt, from this or any other copy of the SDK? Structural: brand + kind + message. */
export function isTargetHalt(e: unknown): e is HaltLike {
  if (!e || typeof e !== 'object') return false;
  const x = e as Record<string | symbol, unknown>;
  return (
    x[HALT_BRAND] === true &&
    typeof x.kind === 'string' &&
    (HALT_KINDS as readonly string[]).includes(x.kind) &&
    typeof x.message === 'string'
  );
}

// ------------------------------------------------------------------------------------------ capabilities
/** Durable key/value storage scoped to one target (OAuth tokens, last API usage, decisions). */
export interface KeyValue {
  get(key: string): string | null;
  /**
   * Store a value. An embedded store (SQLite) writes it durably (committed) before it returns; a server-backed
   * store (PostgreSQL) may queue the write and make it durable in `flush()`: a caller that must not lose the value
   * (a rotated refresh token) awaits `kv.flush?.()` right after.
   */
  set(key: string, value: string): void;
  /**
   * Resolves once every `set()` so far is durable; rejects when one could not be stored. Absent (or a no-op) when
   * `set()` is durable already. Call it as `await kv.flush?.()`.
   */
  flush?(): Promise<void>;
  /**
   * Store a credential the vendor just issued (a rotated refresh token). Like `set()`, but a server-backed store
   * writes it even when the run's fleet lease moved on to another worker: the rotation killed the old token, so the
   * new one must not be refused with the stale worker's other writes. Absent: use `set()`.
   */
  setCredential?(key: string, value: string): void;
}

/** Counts API requests per vendor for the run summary ("API calls used against the minimum"). */
export interface CallCounter {
  record(vendor: string, n?: number): void;
}

/** Secret redaction, process-wide: register every secret the connector learns; redact what it prints. */
export interface Secrets {
  /** Mask this value wherever it would be printed (logs, errors, audit). Values shorter than 6 are ignored. */
  register(value: string | undefined | null): void;
  /** The text with every registered secret (and token-looking values) masked. */
  redact(text: string): string;
}

/** A rate limiter (window + optional daily budget), made by `caps.http.limiter`. */
export interface Limiter {
  /** Wait for a slot; throws a BudgetExhausted (see `isBudgetExhausted`) when the daily budget is spent. */
  acquire(): Promise<void>;
  /** Hold every caller for `ms` (the vendor asked us to back off). */
  pause(ms: number): void;
  /** Mark the daily budget as spent (the vendor said so). */
  exhaust(): void;
  usedToday(): number;
  /**
   * Optional (the core's limiter has them): a slot held until `done()`, its window counted from then, so a
   * vendor that counts on arrival never sees more than the limit; the window's state, to reconcile it with
   * the vendor's rate-limit headers. A connector falls back to `acquire` / `pause` without them.
   */
  acquireHeld?(): Promise<{ done(): void }>;
  inWindow?(): number;
  occupy?(n: number): void;
  readonly windowMs?: number;
  readonly perWindow?: number;
}

/** One call in flight at a time: concurrent callers share the running promise (token refreshes). */
export interface SingleFlight<T> {
  run(): Promise<T>;
  running(): Promise<T> | null;
}

export interface HttpCapabilities {
  limiter(opts: Omit<RateLimiterOptions, 'clock'> & { clock?: Clock }): Limiter;
  /** Run `fn` until it succeeds, `classify` says stop, or attempts run out (exponential backoff, full jitter). */
  retry<T>(
    fn: (attempt: number) => Promise<T>,
    classify: (err: unknown) => RetryDecision,
    policy: RetryPolicy,
    clock?: Clock,
    hooks?: RetryHooks,
  ): Promise<T>;
  singleFlight<T>(fn: () => Promise<T>): SingleFlight<T>;
}

/** Effects handed to a connector by the engine, so production and tests can swap implementations. */
export interface Capabilities {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly kv: KeyValue;
  readonly calls: CallCounter;
  /** The target's name from the config (e.g. "hubspot-main"), for messages. */
  readonly targetName: string;
  /**
   * Reads files named in a config (e.g. a Salesforce JWT private key path). Config values under keys ending
   * in "Path" arrive absolute, resolved from the config file's folder.
   */
  readonly readFile: (p: string) => string;
  readonly secrets: Secrets;
  readonly http: HttpCapabilities;
  /** Aborted when the run is asked to stop (stop after the request in hand). */
  readonly signal?: AbortSignal;
}

// ------------------------------------------------------------------------------------------ the contract
export interface CheckItem {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface CheckReport {
  readonly ok: boolean;
  readonly items: readonly CheckItem[];
}

/** The result of one `deliver` call: one outcome per email of the batch (same emails, any order). */
export interface DeliveryReport {
  readonly outcomes: readonly Outcome[];
}

export type DeliveryMode = 'apply' | 'plan';

export interface Target {
  /** Named items (token, scopes, objects, fields); nothing is written. Throw a TargetHalt if it cannot run. */
  check(): Promise<CheckReport>;
  /** One outcome per email; throw a TargetHalt (with the outcomes settled so far) to stop. */
  deliver(batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport>;
  /** Release sockets, timers, flush usage. Optional. */
  close?(): Promise<void>;
}

/**
 * The codec shape the core relies on (io-ts's `Type` has it): a connector is checked structurally at load
 * (`decode` is a function), so a plugin's own copy of io-ts works; its errors have io-ts's shape.
 */
export interface ConfigCodec<C> {
  readonly name?: string;
  decode(u: unknown): Either<Errors, C>;
}

export interface ConnectorCapabilities {
  /** `deliver(batch, 'plan')` writes nothing and returns `planned` outcomes with an `action`. */
  readonly dryRun: boolean;
  readonly backfill: boolean;
  /** Suppression modes the config may choose (documentation, `cc-optout connectors`). */
  readonly suppressionModes: readonly string[];
  /** Keys of the target's key/value store that `status` shows (API usage, batch decisions). */
  readonly statusKeys?: readonly string[];
  /** Anything else worth listing (`cc-optout connectors`), e.g. Salesforce's objects. */
  readonly [extra: string]: unknown;
}

/** A running emulator of a connector's vendor API (127.0.0.1), over the shared World. */
export interface RunningEmulator {
  /** Base URL of the emulated API. */
  readonly url: string;
  /** The `targets[]` entry that points this connector at the emulator, with its secrets as ${ENV} references. */
  targetConfig(): { config: unknown; env: Record<string, string> };
  /** Requests per endpoint label (for the demo's and benchmarks' call counts). */
  requestCounts?(): Record<string, EndpointCount>;
  /** This CRM's state against the shared World's ground truth (`ok`: every opt-out suppressed, nothing else touched). */
  verify?(): { ok: boolean; expected: number; notSuppressed: readonly string[] };
  stop(): Promise<void>;
}

export interface EmulatorStartOptions {
  port?: number;
  host?: string;
  /** A folder the emulator may write files into (e.g. a JWT key the target config names). */
  dir: string;
}

export interface EmulatorFactory {
  start(world: World, opts: EmulatorStartOptions): Promise<RunningEmulator>;
}

export interface Connector<C = unknown> {
  /** The `connector` value a target names ("hubspot"). Unique among loaded connectors. */
  readonly id: string;
  readonly version?: string;
  readonly description?: string;
  /** io-ts codec of this connector's config (mapping + auth): the source of truth. Secrets arrive resolved. */
  readonly config: ConfigCodec<C>;
  /** JSON Schema of the config (`cc-optout spec <id>`), checked against the codec by the agreement tests. */
  readonly schema: Record<string, unknown>;
  readonly capabilities: ConnectorCapabilities;
  /** Largest batch `deliver` wants (the engine may send fewer). */
  readonly maxBatch?: number;
  /** An example target config for `init` and the docs (secrets as ${ENV} references). */
  example?(): unknown;
  /** An emulator of the vendor API for `demo`, `emulate` and end-to-end tests. */
  emulator?(): EmulatorFactory;
  open(config: C, caps: Capabilities): Target;
}

/** Identity, for type inference: `export const connector = defineConnector({ ... })`. */
export function defineConnector<C>(c: Connector<C>): Connector<C> {
  return c;
}

/** What a plugin module exports: `connector`, or `connectors` (several), or a default export of either. */
// `any`: a module's connectors each have their own config type, which the loader checks structurally
/* eslint-disable @typescript-eslint/no-explicit-any */
export type PluginModule =
  { connector: Connector<any> } | { connectors: readonly Connector<any>[] } | { default: Connector<any> };
/* eslint-enable @typescript-eslint/no-explicit-any */

/** SDK contract version: a plugin may compare it; the core refuses nothing yet. */
export const SDK_VERSION = 1;
