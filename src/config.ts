/**
 * The config file: decoded once with io-ts, `${ENV}` secret references resolved, defaults applied,
 * each target's connector config decoded by that connector's own codec. Every problem is reported with
 * its JSON path, the value (secrets masked) and what was expected, before any network call.
 */
import * as fs from 'fs';
import * as path from 'path';
import { visit, stripComments, parse as parseJsonc, printParseErrorCode, JSONPath, ParseError } from 'jsonc-parser';
import * as t from 'io-ts';
import {
  strictObject,
  NonEmptyString,
  SecureUrl,
  intRange,
  numberRange,
  formatErrors,
  contextPath,
  isSecretKey,
  isLoopbackHost,
} from './codec';
import { isLeft } from 'fp-ts/Either';
import { registerSecret } from './log';
import { DEFAULT_EVERY, Schedule, cronProblem, parseEvery } from './service/schedule';
import { PluginError, Registry } from './registry';
import { ConfigError } from './domain';
import { maskUrl } from './store/pg/url';

/** Pages one scan may read when `source.detection.maxPages` is not set (half the default daily budget). */
export const DEFAULT_MAX_PAGES = 5000;

export const DEFAULT_CONFIG_PATH = './cc-optout.config.json';
export const DEFAULT_STORE_PATH = './.cc-optout/state.db';
export const CC_API_BASE = 'https://api.cc.email/v3';
export const CC_AUTH_BASE = 'https://authz.constantcontact.com/oauth2/default/v1';

export { ConfigError };

/**
 * Upper bounds of the config's numbers (the JSON Schema in src/config.schema.json states the same maxima): a value past
 * them cannot be meant and would only break date arithmetic later (`Invalid time value` after queueing).
 */
export const LIMITS = {
  overlapMinutes: 1440,
  lagMinutes: 1440,
  /** 30 days */
  reconcileEveryHours: 720,
  /** far above Constant Contact's 4/s: room for emulators and benchmarks with lifted limits, not for typos */
  perSecond: 1000,
  dailyBudget: 10_000_000,
  maxAttempts: 1000,
  /** 7 days, for backoffBaseSeconds and backoffMaxSeconds */
  backoffSeconds: 7 * 24 * 3600,
  /** 1 year */
  recheckNotFoundHours: 8760,
} as const;

export const DetectionConfig = strictObject(
  'DetectionConfig',
  {},
  {
    mode: t.union([t.literal('window'), t.literal('full')]),
    overlapMinutes: numberRange(0, LIMITS.overlapMinutes, 'minutes'),
    lagMinutes: numberRange(0, LIMITS.lagMinutes, 'minutes'),
    reconcileEveryHours: numberRange(0, LIMITS.reconcileEveryHours, 'hours'),
    pageSize: intRange(1, 500),
    /** Most pages one scan may read (endless cursors would spend the per-application daily budget). */
    maxPages: intRange(1, 100_000),
    /** How a full reconcile reads the unsubscribed set: pages, a bulk CSV export, or chosen by size (default). */
    reconcileVia: t.union([t.literal('pages'), t.literal('export'), t.literal('auto')]),
  },
);

export const RateLimitConfig = strictObject(
  'RateLimitConfig',
  {},
  {
    perSecond: intRange(1, LIMITS.perSecond),
    dailyBudget: intRange(1, LIMITS.dailyBudget),
  },
);

export const ConstantContactConfig = strictObject(
  'ConstantContactConfig',
  {
    type: t.literal('constant-contact'),
    clientId: NonEmptyString,
  },
  {
    clientSecret: NonEmptyString,
    /** Seeds the token store the first time only; later rotations live in the store. */
    refreshToken: NonEmptyString,
    apiBaseUrl: SecureUrl,
    authBaseUrl: SecureUrl,
    rateLimit: RateLimitConfig,
    detection: DetectionConfig,
    /** Loopback port for `auth constant-contact` (authorization code + PKCE); 0 = any free port. */
    redirectPort: intRange(0, 65535),
  },
);
export type ConstantContactConfig = t.TypeOf<typeof ConstantContactConfig>;

export const TargetEntry = strictObject(
  'TargetEntry',
  {
    name: NonEmptyString,
    connector: NonEmptyString,
    config: t.UnknownRecord,
  },
  { enabled: t.boolean },
);

export const DeliveryConfig = strictObject(
  'DeliveryConfig',
  {},
  {
    batchSize: intRange(1, 10000),
    maxAttempts: intRange(1, LIMITS.maxAttempts),
    backoffBaseSeconds: numberRange(0, LIMITS.backoffSeconds, 'seconds'),
    backoffMaxSeconds: numberRange(0, LIMITS.backoffSeconds, 'seconds'),
    recheckNotFoundHours: numberRange(0, LIMITS.recheckNotFoundHours, 'hours'),
  },
);

/** `service.every`: a duration such as 30s, 5m, 1h (see src/service/schedule.ts). */
const EveryCodec = new t.Type<string, string, unknown>(
  'a duration such as 30s, 5m, 1h or 1h30m (1s..24h)',
  (u): u is string => typeof u === 'string' && typeof parseEvery(u) === 'number',
  (u, c) => (typeof u === 'string' && typeof parseEvery(u) === 'number' ? t.success(u) : t.failure(u, c)),
  (a) => a,
);
/** `service.cron`: a cron pattern croner accepts (5 fields, or 6 with seconds first). */
const CronCodec = new t.Type<string, string, unknown>(
  'a cron pattern such as "*/5 * * * *"',
  (u): u is string => typeof u === 'string' && cronProblem(u) === null,
  (u, c) => (typeof u === 'string' && cronProblem(u) === null ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

export const DEFAULT_LISTEN = '127.0.0.1:9464';

/** `host:port` (IPv6 in brackets: `[::1]:9464`); port 0 = any free port. Null when it is not one. */
export function parseListen(v: string): { host: string; port: number } | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v.trim());
  if (!m) return null;
  const port = Number(m[2]);
  if (port > 65535) return null;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const ListenCodec = new t.Type<string, string, unknown>(
  'host:port, e.g. 127.0.0.1:9464 or [::1]:9464',
  (u): u is string => typeof u === 'string' && parseListen(u) !== null,
  (u, c) => (typeof u === 'string' && parseListen(u) !== null ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

/** The bearer token of the service's HTTP endpoints: long enough not to be guessed. */
const ServiceToken = new t.Type<string, string, unknown>(
  'a string of at least 16 characters (use a ${ENV} reference)',
  (u): u is string => typeof u === 'string' && u.trim().length >= 16,
  (u, c) => (typeof u === 'string' && u.trim().length >= 16 ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

/** A host name a request's `Host` header may name (`service.allowedHosts`): a DNS name, an IPv4, or `[IPv6]`. */
const AllowedHost = new t.Type<string, string, unknown>(
  'a host name without port (e.g. cc-optout.internal, 10.0.0.5, [fd00::1])',
  (u): u is string => typeof u === 'string' && /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$/.test(u),
  (u, c) =>
    typeof u === 'string' && /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$/.test(u) ? t.success(u) : t.failure(u, c),
  (a) => a,
);

export const WebhookConfig = strictObject(
  'WebhookConfig',
  { url: SecureUrl },
  {
    /** "slack": Slack-compatible `{"text": ...}`; "json" (default): a JSON object with the alert's fields. */
    format: t.union([t.literal('slack'), t.literal('json')]),
    timeoutSeconds: numberRange(1, 60, 'seconds'),
  },
);

export const AlertsConfig = strictObject(
  'AlertsConfig',
  {},
  {
    webhooks: t.array(WebhookConfig),
    /** Alert when a target's oldest queued row waits longer than this. */
    oldestQueuedMinutes: numberRange(1, 30 * 24 * 60, 'minutes'),
  },
);

export const ServiceConfig = strictObject(
  'ServiceConfig',
  {},
  {
    every: EveryCodec,
    cron: CronCodec,
    listen: ListenCodec,
    token: ServiceToken,
    /** Without a token: more `Host` names served besides loopback and the listen host (DNS rebinding guard). */
    allowedHosts: t.array(AllowedHost),
    /** Pause after a failed run: baseSeconds, doubling per consecutive failure, at most maxSeconds. */
    backoff: strictObject(
      'ServiceBackoffConfig',
      {},
      { baseSeconds: numberRange(1, 86_400, 'seconds'), maxSeconds: numberRange(1, 86_400, 'seconds') },
    ),
    alerts: AlertsConfig,
  },
);
export type ServiceConfig = t.TypeOf<typeof ServiceConfig>;

/**
 * Where the state lives: `path` (a SQLite file; default ./.cc-optout/state.db) or `url` (a postgres:// URL: the
 * PostgreSQL store), not both. Write the URL's password as a `${ENV}` reference; it never appears in a message.
 */
export const StoreConfig = strictObject('StoreConfig', {}, { path: NonEmptyString, url: NonEmptyString });
export type StoreConfig = t.TypeOf<typeof StoreConfig>;

/** What is wrong with a decoded `store` section (both given, a url that is not postgres://); [] when fine. */
export function storeProblems(store: StoreConfig | undefined): string[] {
  if (!store) return [];
  const problems: string[] = [];
  if (store.path !== undefined && store.url !== undefined)
    problems.push('store: give either store.path (SQLite) or store.url (PostgreSQL), not both');
  if (store.url !== undefined && !/\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(store.url)) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(store.url) && !/^postgres(ql)?:\/\//i.test(store.url)) {
      problems.push(
        `store.url: ${JSON.stringify(maskUrl(store.url))} is not a postgres:// URL (a SQLite store is a file path)`,
      );
    } else if (!/^postgres(ql)?:\/\/[^/\s]/i.test(store.url)) {
      problems.push(
        `store.url: got ${JSON.stringify(maskUrl(store.url))}, expected a postgres:// (or postgresql://) URL`,
      );
    } else {
      try {
        const pw = new URL(store.url).password;
        if (pw) registerSecret(decodeURIComponent(pw));
      } catch {
        problems.push(`store.url: got ${JSON.stringify(maskUrl(store.url))}, which is not a valid URL`);
      }
    }
  }
  if (
    store.path !== undefined &&
    /^[a-z][a-z0-9+.-]*:\/\//i.test(store.path) &&
    !/\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(store.path)
  ) {
    problems.push(
      `store.path: ${JSON.stringify(maskUrl(store.path))} is not a postgres:// URL (a SQLite store is a file path)`,
    );
  }
  return problems;
}

export const FileConfig = strictObject(
  'Config',
  {
    source: ConstantContactConfig,
    targets: t.array(TargetEntry),
  },
  {
    $schema: t.string,
    $comment: t.unknown,
    store: StoreConfig,
    delivery: DeliveryConfig,
    service: ServiceConfig,
    /** Installed connectors: package names (resolved from the config's folder, the cwd, then this package) or paths. */
    plugins: t.array(NonEmptyString),
  },
);
export type FileConfig = t.TypeOf<typeof FileConfig>;

export interface ResolvedDetection {
  mode: 'window' | 'full';
  overlapMinutes: number;
  lagMinutes: number;
  reconcileEveryHours: number;
  pageSize: number;
  /** Page cap per scan; absent = the source's default (src/source/constant-contact, DEFAULT_MAX_PAGES). */
  maxPages?: number;
  /** `pages` | `export` | `auto` (default): see src/source/constant-contact/export.ts. */
  reconcileVia: 'pages' | 'export' | 'auto';
}

export interface ResolvedSource {
  type: 'constant-contact';
  clientId: string;
  clientSecret: string | null;
  refreshToken: string | null;
  apiBaseUrl: string;
  authBaseUrl: string;
  rateLimit: { perSecond: number; dailyBudget: number };
  detection: ResolvedDetection;
  redirectPort: number;
}

export interface ResolvedTarget {
  name: string;
  connector: string;
  enabled: boolean;
  /** Decoded by the connector's codec. */
  config: unknown;
}

export interface ResolvedDelivery {
  batchSize: number;
  maxAttempts: number;
  backoffBaseSeconds: number;
  backoffMaxSeconds: number;
  /** Look up `not-found` emails again after this many hours (a record created later is still suppressed); 0 = never. */
  recheckNotFoundHours: number;
}

export interface ResolvedWebhook {
  url: string;
  format: 'slack' | 'json';
  timeoutSeconds: number;
}

/** The `service` section (`cc-optout run`), defaults applied. */
export interface ResolvedService {
  schedule: Schedule;
  listen: { host: string; port: number };
  /** Bearer token for everything beyond /healthz and /readyz; null = none. */
  token: string | null;
  /** Without a token, `Host` names served besides 127.0.0.1, localhost, [::1] and the listen host. */
  allowedHosts?: string[];
  backoff: { baseSeconds: number; maxSeconds: number };
  alerts: { webhooks: ResolvedWebhook[]; oldestQueuedMinutes: number };
}

export interface Config {
  file: string | null;
  storePath: string;
  /** `store.url`: a postgres:// URL (the PostgreSQL store) instead of the SQLite file at storePath. */
  storeUrl?: string;
  source: ResolvedSource;
  targets: ResolvedTarget[];
  delivery: ResolvedDelivery;
  /** Always set by decodeConfig (optional for hand-built configs in tests). */
  service?: ResolvedService;
}

export function scheduleOf(every: string | undefined, cron: string | undefined): Schedule {
  if (cron !== undefined) return { kind: 'cron', pattern: cron, text: `cron ${cron}` };
  const text = every ?? DEFAULT_EVERY;
  return { kind: 'every', seconds: parseEvery(text) as number, text: `every ${text}` };
}

/**
 * Problems the codec cannot see: `every` and `cron` together, a non-loopback listen address without a token
 * (the metrics and the status page would be open to the network), backoff base above its cap.
 */
export function serviceProblems(
  s: {
    every?: string;
    cron?: string;
    listen?: string;
    token?: string;
    backoff?: { baseSeconds?: number; maxSeconds?: number };
  },
  at = 'service',
): string[] {
  const problems: string[] = [];
  if (s.every !== undefined && s.cron !== undefined) problems.push(`${at}: set either every or cron, not both`);
  const listen = parseListen(s.listen ?? DEFAULT_LISTEN);
  if (listen && !isLoopbackHost(listen.host) && !s.token) {
    problems.push(
      `${at === 'service' ? 'service.listen' : '--listen'}: got ${JSON.stringify(s.listen)}, a non-loopback address; set service.token (a \${ENV} reference) so that /metrics and /status are not open to the network, or listen on 127.0.0.1`,
    );
  }
  if (
    s.backoff?.baseSeconds !== undefined &&
    s.backoff.maxSeconds !== undefined &&
    s.backoff.baseSeconds > s.backoff.maxSeconds
  ) {
    problems.push(
      `${at}.backoff.baseSeconds: got ${s.backoff.baseSeconds}, expected at most backoff.maxSeconds (${s.backoff.maxSeconds})`,
    );
  }
  return problems;
}

export function resolveService(s: ServiceConfig | undefined): ResolvedService {
  const listen = parseListen(s?.listen ?? DEFAULT_LISTEN)!;
  return {
    schedule: scheduleOf(s?.every, s?.cron),
    listen,
    token: s?.token ?? null,
    allowedHosts: s?.allowedHosts ?? [],
    backoff: { baseSeconds: s?.backoff?.baseSeconds ?? 30, maxSeconds: s?.backoff?.maxSeconds ?? 1800 },
    alerts: {
      webhooks: (s?.alerts?.webhooks ?? []).map((w) => ({
        url: w.url,
        format: w.format ?? 'json',
        timeoutSeconds: w.timeoutSeconds ?? 5,
      })),
      oldestQueuedMinutes: s?.alerts?.oldestQueuedMinutes ?? 60,
    },
  };
}

/** Webhook URLs carry their credential in the path (Slack's do): masked wherever they would be printed. */
function registerWebhookSecrets(raw: unknown): void {
  const hooks = (raw as { service?: { alerts?: { webhooks?: unknown } } } | null)?.service?.alerts?.webhooks;
  if (!Array.isArray(hooks)) return;
  for (const h of hooks) {
    const url = (h as { url?: unknown } | null)?.url;
    if (typeof url === 'string' && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(url)) registerSecret(url);
  }
}

export function resolveSource(s: ConstantContactConfig): ResolvedSource {
  return {
    type: 'constant-contact',
    clientId: s.clientId,
    clientSecret: s.clientSecret ?? null,
    refreshToken: s.refreshToken ?? null,
    apiBaseUrl: (s.apiBaseUrl ?? CC_API_BASE).replace(/\/+$/, ''),
    authBaseUrl: (s.authBaseUrl ?? CC_AUTH_BASE).replace(/\/+$/, ''),
    rateLimit: { perSecond: s.rateLimit?.perSecond ?? 4, dailyBudget: s.rateLimit?.dailyBudget ?? 10_000 },
    detection: {
      mode: s.detection?.mode ?? 'window',
      overlapMinutes: s.detection?.overlapMinutes ?? 10,
      lagMinutes: s.detection?.lagMinutes ?? 2,
      reconcileEveryHours: s.detection?.reconcileEveryHours ?? 24,
      pageSize: s.detection?.pageSize ?? 500,
      maxPages: s.detection?.maxPages ?? DEFAULT_MAX_PAGES,
      reconcileVia: s.detection?.reconcileVia ?? 'auto',
    },
    redirectPort: s.redirectPort ?? 0,
  };
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
/** Paths whose env reference is missing: their decode errors would only repeat the problem. */
const missingEnvPaths = new Set<string>();
function withoutEnvDuplicates(lines: string[]): string[] {
  return lines.filter((l) => ![...missingEnvPaths].some((p) => l.startsWith(`${p}: got`)));
}

/** A comment: keys starting with "//" (at any level) and `$comment` are never resolved nor decoded. */
export function isCommentKey(key: string): boolean {
  return key.startsWith('//') || key === '$comment';
}

/**
 * Replace `${NAME}` in every string of the raw config with the environment's value. Missing variables are
 * reported with their JSON path (unless `requireEnv` is false: read-only commands need no secret, so a missing
 * variable's reference is left as it is and the decode errors it causes are dropped). Values that came from the
 * environment under a secret-looking key are registered for redaction. Comment values are copied unresolved.
 */
export function resolveEnv(
  raw: unknown,
  env: NodeJS.ProcessEnv,
  problems: string[],
  path = '',
  requireEnv = true,
): unknown {
  if (typeof raw === 'string') {
    let fromEnv = false;
    const out = raw.replace(ENV_REF, (_m, name: string) => {
      const v = env[name];
      if (v === undefined || v === '') {
        // read-only commands need no secret, but they do need the store they read: store.path is always resolved
        if (requireEnv || path.startsWith('store.'))
          problems.push(`${path || '(root)'}: environment variable ${name} is not set (referenced as "\${${name}}")`);
        missingEnvPaths.add(path || '(root)');
        return _m;
      }
      fromEnv = true;
      return v;
    });
    const key =
      path
        .split(/[.[\]]/)
        .filter(Boolean)
        .pop() ?? '';
    if (fromEnv && isSecretKey(key)) registerSecret(out);
    return out;
  }
  if (Array.isArray(raw)) return raw.map((v, i) => resolveEnv(v, env, problems, `${path}[${i}]`, requireEnv));
  if (raw && typeof raw === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(raw)) {
      // defineProperty: a "__proto__" key (rejected by decodeConfig) must never set the copy's prototype
      const value = isCommentKey(k) ? v : resolveEnv(v, env, problems, path ? `${path}.${k}` : k, requireEnv);
      Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return raw;
}

/** Keys that would reach an object's prototype machinery when copied or merged. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** `a.b[0].c` for a jsonc-parser path. */
function jsonPathText(p: JSONPath): string {
  let out = '';
  for (const seg of p) out += typeof seg === 'number' ? `[${seg}]` : out ? `.${seg}` : seg;
  return out || '(root)';
}

function forbiddenKeyProblem(where: string, key: string, at = ''): string {
  return `${where}: key "${key}" is not allowed${at} (it could alter object prototypes; rename or remove it)`;
}

/**
 * Keys JSON.parse cannot report: duplicates (JSON.parse silently keeps the last one) and prototype keys, each
 * with its JSON path and line. jsonc-parser (Microsoft's parser behind VS Code) walks the text with offsets.
 */
export function keyProblems(text: string): string[] {
  const problems: string[] = [];
  const seen: Set<string>[] = [];
  visit(
    text,
    {
      onObjectBegin: () => {
        seen.push(new Set());
      },
      onObjectEnd: () => {
        seen.pop();
      },
      onObjectProperty: (property, _offset, _length, startLine, startCharacter, pathSupplier) => {
        const where = jsonPathText([...pathSupplier(), property]);
        const at = ` (line ${startLine + 1}, column ${startCharacter + 1})`;
        if (FORBIDDEN_KEYS.has(property)) problems.push(forbiddenKeyProblem(where, property, at));
        const keys = seen[seen.length - 1];
        // repeated "//" comment lines are harmless: only their text is lost
        if (keys?.has(property) && !isCommentKey(property))
          problems.push(`${where}: duplicate key "${property}"${at}; each key may appear once in an object`);
        keys?.add(property);
      },
    },
    { disallowComments: false, allowTrailingComma: false },
  );
  return problems;
}

/** Prototype keys in an already parsed value (decodeConfig may be handed an object, not text). */
function forbiddenKeysIn(raw: unknown, where = '', out: string[] = []): string[] {
  if (Array.isArray(raw)) raw.forEach((v, i) => forbiddenKeysIn(v, `${where}[${i}]`, out));
  else if (raw && typeof raw === 'object') {
    for (const k of Object.keys(raw)) {
      const at = where ? `${where}.${k}` : k;
      if (FORBIDDEN_KEYS.has(k)) out.push(forbiddenKeyProblem(at, k));
      else forbiddenKeysIn((raw as Record<string, unknown>)[k], at, out);
    }
  }
  return out;
}

/**
 * File paths in a connector's config (every string under a key ending in "Path", e.g. `auth.privateKeyPath`)
 * made absolute from the config file's folder, as `store.path` is: the same config works from any directory.
 */
export function resolveConfigPaths(value: unknown, baseDir: string, key = ''): unknown {
  if (typeof value === 'string')
    return /Path$/.test(key) && !path.isAbsolute(value) ? path.resolve(baseDir, value) : value;
  if (Array.isArray(value)) return value.map((v) => resolveConfigPaths(v, baseDir));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = isCommentKey(k) ? v : resolveConfigPaths(v, baseDir, k);
    return out;
  }
  return value;
}

/** Register inline secrets too, so that they never reach a log even when a user put them in the file. */
function registerInlineSecrets(raw: unknown, key = ''): void {
  if (typeof raw === 'string') {
    // a bare `${NAME}` reference is not a secret (its value is registered when it is resolved)
    if (isSecretKey(key) && !/^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(raw)) registerSecret(raw);
    return;
  }
  if (Array.isArray(raw)) raw.forEach((v) => registerInlineSecrets(v, key));
  else if (raw && typeof raw === 'object') for (const [k, v] of Object.entries(raw)) registerInlineSecrets(v, k);
}

/**
 * Parse the config (JSON, plus `//` and `/* *\/` comments as in the README's examples) with a line/column in
 * the error. Comments are blanked out with spaces first, so positions in JSON.parse's errors stay true.
 */
export function parseJsonText(source: string, file: string): unknown {
  const text = stripComments(source, ' ');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    // JSON.parse's message names no position on some inputs (Node 20): jsonc-parser's scanner always has one
    const errors: ParseError[] = [];
    parseJsonc(text, errors, { disallowComments: false, allowTrailingComma: false });
    const first = errors[0];
    const pos = first ? first.offset : Number(/position (\d+)/.exec((e as Error).message)?.[1] ?? NaN);
    if (!Number.isNaN(pos)) {
      const before = text.slice(0, pos);
      const line = before.split('\n').length;
      const col = pos - before.lastIndexOf('\n');
      throw new ConfigError(
        [
          `line ${line}, column ${col}: ${first ? printParseErrorCode(first.error) : (e as Error).message} (${(e as Error).message})`,
        ],
        file,
      );
    }
    throw new ConfigError([(e as Error).message], file);
  }
  const problems = keyProblems(text);
  if (problems.length > 0) throw new ConfigError(problems, file);
  return value;
}

/** `value` without the failing strings whose `${ENV}` variable is unset (paths as resolveEnv names them). */
function withoutMissingEnv(value: unknown, at: string, failing: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) return value.map((v, i) => withoutMissingEnv(v, `${at}[${i}]`, failing));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const p = at ? `${at}.${k}` : k;
      if (typeof v === 'string' && missingEnvPaths.has(p) && failing.has(p)) continue;
      out[k] = withoutMissingEnv(v, p, failing);
    }
    return out;
  }
  return value;
}

/**
 * Decode; errors caused by an unset `${ENV}` value are left out (the missing variable is reported instead). Without
 * `requireEnv` (read-only commands) a value whose variable is unset is dropped and the decode retried, so optional
 * fields take their defaults: the structure is still validated, no secret is needed.
 */
function decodeTolerant<A>(
  codec: t.Decoder<unknown, A>,
  value: unknown,
  at: string,
  requireEnv: boolean,
): { ok: true; value: A } | { ok: false; errors: string[] } {
  const r = codec.decode(value);
  if (!isLeft(r)) return { ok: true, value: r.right };
  const all = formatErrors(r.left, at);
  const errors = withoutEnvDuplicates(all);
  if (errors.length > 0 || requireEnv) return { ok: false, errors };
  const failing = new Set(r.left.map((e) => contextPath(e.context, at)));
  const retry = codec.decode(withoutMissingEnv(value, at, failing));
  return isLeft(retry) ? { ok: false, errors: all } : { ok: true, value: retry.right };
}

export interface DecodeOptions {
  /**
   * false: `${ENV}` references to unset variables are left as they are instead of being errors (read-only
   * commands such as `status` need no secret); the structure is still validated.
   */
  requireEnv?: boolean;
  /**
   * true (`cc-optout run`): the `service` section's `${ENV}` references must be set. Otherwise a service section
   * whose references are unset is left out (only `run` uses it), so `sync` from cron and the read-only commands
   * need neither the service token nor the webhook URLs.
   */
  serviceEnv?: boolean;
  /**
   * true (the CLI's `--store` was given): the config's `store` section is neither resolved nor checked (`--store`
   * replaces it entirely, so an unset `${ENV}` in store.url does not matter).
   */
  ignoreStore?: boolean;
}

/**
 * Decode a parsed config object. Throws ConfigError listing every problem (paths, values, expectations).
 * `registry` decodes each target's connector config.
 */
/** resolveEnv over the whole config, the `service` section on its own terms (see DecodeOptions.serviceEnv). */
function resolveWithService(raw: unknown, env: NodeJS.ProcessEnv, problems: string[], opts: DecodeOptions): unknown {
  const requireEnv = opts.requireEnv !== false;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw) || !('service' in raw)) {
    return resolveEnv(raw, env, problems, '', requireEnv);
  }
  const { service, ...rest } = raw as Record<string, unknown>;
  const resolved = resolveEnv(rest, env, problems, '', requireEnv) as Record<string, unknown>;
  const serviceProblemsFound: string[] = [];
  const before = new Set(missingEnvPaths);
  const svc = resolveEnv(service, env, serviceProblemsFound, 'service', opts.serviceEnv === true && requireEnv);
  const unset = [...missingEnvPaths].some((p) => !before.has(p) && p.startsWith('service'));
  problems.push(...serviceProblemsFound);
  if (unset && opts.serviceEnv !== true) return resolved; // only `run` uses it: it is checked there
  return { ...resolved, service: svc };
}

export function decodeConfig(
  raw: unknown,
  env: NodeJS.ProcessEnv,
  registry: Registry,
  file: string | null = null,
  opts: DecodeOptions = {},
): Config {
  if (opts.ignoreStore && raw && typeof raw === 'object' && !Array.isArray(raw) && 'store' in raw) {
    const { store: _ignored, ...rest } = raw as Record<string, unknown>;
    void _ignored;
    raw = rest;
  }
  const forbidden = forbiddenKeysIn(raw);
  if (forbidden.length > 0) throw new ConfigError(forbidden, file ?? undefined);
  const problems: string[] = [];
  missingEnvPaths.clear();
  registerInlineSecrets(raw);
  const resolved = resolveWithService(raw, env, problems, opts);
  registerWebhookSecrets(raw);
  registerWebhookSecrets(resolved);
  const baseDir = file ? path.dirname(path.resolve(file)) : null;
  const requireEnv = opts.requireEnv !== false;
  const decoded = decodeTolerant(FileConfig, resolved, '', requireEnv);
  if (!decoded.ok) problems.push(...decoded.errors);
  // Plugins first: the targets may name their connectors. A broken plugin is a config error naming it.
  const rawPlugins = (resolved as { plugins?: unknown } | null)?.plugins;
  if (Array.isArray(rawPlugins)) {
    rawPlugins.forEach((spec: unknown, i) => {
      if (typeof spec !== 'string' || spec.trim() === '') return; // reported by FileConfig
      try {
        registry.usePlugins([spec], baseDir ?? process.cwd());
      } catch (err) {
        if (!(err instanceof PluginError)) throw err;
        problems.push(`plugins[${i}]: ${err.message}`);
      }
    });
  }
  // Decode every target's connector config even when the rest failed, so one run reports every problem.
  const rawTargets = (resolved as { targets?: unknown } | null)?.targets;
  const names = new Set<string>();
  const targets: ResolvedTarget[] = [];
  (Array.isArray(rawTargets) ? rawTargets : []).forEach((entry: unknown, i) => {
    const at = `targets[${i}]`;
    const e = entry as { name?: unknown; connector?: unknown; config?: unknown; enabled?: unknown } | null;
    if (!e || typeof e !== 'object' || typeof e.connector !== 'string') return; // reported by FileConfig
    const name = typeof e.name === 'string' ? e.name : '';
    if (name && names.has(name)) problems.push(`${at}.name: duplicate target name "${name}"`);
    names.add(name);
    if (name && !/^[A-Za-z0-9_.-]+$/.test(name)) {
      problems.push(`${at}.name: got ${JSON.stringify(name)}, expected letters, digits, ".", "_" or "-"`);
    }
    let connector;
    try {
      connector = registry.get(e.connector);
    } catch (err) {
      if (!(err instanceof PluginError)) throw err;
      problems.push(`${at}.connector: ${err.message}`);
      return;
    }
    if (!connector) {
      problems.push(
        `${at}.connector: got ${JSON.stringify(e.connector)}, expected one of ${registry
          .ids()
          .map((x) => JSON.stringify(x))
          .join(', ')}`,
      );
      return;
    }
    // the codec is checked structurally (decode), so a connector's own io-ts copy works: its errors have io-ts's shape
    const r = decodeTolerant(
      connector.config as unknown as t.Decoder<unknown, unknown>,
      e.config,
      `${at}.config`,
      requireEnv,
    );
    if (!r.ok) {
      problems.push(...r.errors);
      return;
    }
    const config = baseDir ? resolveConfigPaths(r.value, baseDir) : r.value;
    targets.push({ name, connector: e.connector, enabled: e.enabled !== false, config });
  });
  if (!decoded.ok) throw new ConfigError(problems, file ?? undefined);
  const c = decoded.value;
  if (c.targets.length === 0) problems.push('targets: expected at least one target');
  if (c.service) problems.push(...serviceProblems(c.service));
  problems.push(...storeProblems(c.store));
  if (problems.length > 0) throw new ConfigError(problems, file ?? undefined);
  return {
    file,
    storePath: c.store?.path ?? DEFAULT_STORE_PATH,
    ...(c.store?.url !== undefined ? { storeUrl: c.store.url } : {}),
    source: resolveSource(c.source),
    targets,
    delivery: {
      batchSize: c.delivery?.batchSize ?? 1000,
      maxAttempts: c.delivery?.maxAttempts ?? 12,
      backoffBaseSeconds: c.delivery?.backoffBaseSeconds ?? 60,
      backoffMaxSeconds: c.delivery?.backoffMaxSeconds ?? 6 * 3600,
      recheckNotFoundHours: c.delivery?.recheckNotFoundHours ?? 24,
    },
    service: resolveService(c.service),
  };
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv, registry: Registry, opts: DecodeOptions = {}): Config {
  if (!fs.existsSync(file)) {
    throw new ConfigError(
      [`file not found: ${file} (create one with \`cc-optout init\`, or pass --config PATH)`],
      file,
    );
  }
  const raw = parseJsonText(fs.readFileSync(file, 'utf8'), file);
  return decodeConfig(raw, env, registry, file, opts);
}

/**
 * Only the source and the store of a config file: `auth constant-contact` must work before the CRM
 * credentials exist, so their `${ENV}` references are neither resolved nor required here.
 */
export function loadSourceConfig(
  file: string,
  env: NodeJS.ProcessEnv,
  opts: Pick<DecodeOptions, 'ignoreStore'> = {},
): { file: string; storePath: string; storeUrl?: string; source: ResolvedSource } {
  if (!fs.existsSync(file)) {
    throw new ConfigError(
      [`file not found: ${file} (create one with \`cc-optout init\`, or pass --config PATH)`],
      file,
    );
  }
  const raw = parseJsonText(fs.readFileSync(file, 'utf8'), file) as { source?: unknown; store?: unknown } | null;
  const problems: string[] = [];
  missingEnvPaths.clear();
  registerInlineSecrets(raw?.source);
  const source = ConstantContactConfig.decode(resolveEnv(raw?.source, env, problems, 'source'));
  // the store section's `${ENV}` references are always resolved (the command needs the store it writes to)
  // (`--store` given: the store section is not looked at)
  const store = t
    .union([t.undefined, StoreConfig])
    .decode(opts.ignoreStore ? undefined : resolveEnv(raw?.store, env, problems, 'store'));
  if (isLeft(source)) problems.push(...withoutEnvDuplicates(formatErrors(source.left, 'source')));
  if (isLeft(store)) problems.push(...formatErrors(store.left, 'store'));
  else problems.push(...storeProblems(store.right));
  if (problems.length > 0 || isLeft(source) || isLeft(store)) throw new ConfigError(problems, file);
  return {
    file,
    storePath: store.right?.path ?? DEFAULT_STORE_PATH,
    ...(store.right?.url !== undefined ? { storeUrl: store.right.url } : {}),
    source: resolveSource(source.right),
  };
}
