/**
 * The config file: decoded once with io-ts, `${ENV}` secret references resolved, defaults applied,
 * each target's connector config decoded by that connector's own codec. Every problem is reported with
 * its JSON path, the value (secrets masked) and what was expected, before any network call.
 */
import * as fs from 'fs';
import * as t from 'io-ts';
import { strictObject, NonEmptyString, HttpUrl, PositiveInt, NonNegativeNumber, intRange, formatErrors, isSecretKey } from './codec';
import { isLeft } from 'fp-ts/Either';
import { registerSecret } from './log';
import { Registry } from './plugin';

export const DEFAULT_CONFIG_PATH = './cc-optout.config.json';
export const DEFAULT_STORE_PATH = './.cc-optout/state.db';
export const CC_API_BASE = 'https://api.cc.email/v3';
export const CC_AUTH_BASE = 'https://authz.constantcontact.com/oauth2/default/v1';

export class ConfigError extends Error {
  constructor(readonly problems: string[], readonly file?: string) {
    super(`${file ? `config ${file}` : 'config'} is invalid:\n` + problems.map((p) => `  - ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export const DetectionConfig = strictObject(
  'DetectionConfig',
  {},
  {
    mode: t.union([t.literal('window'), t.literal('full')]),
    overlapMinutes: NonNegativeNumber,
    lagMinutes: NonNegativeNumber,
    reconcileEveryHours: NonNegativeNumber,
    pageSize: intRange(1, 500),
    /** Most pages one scan may read (endless cursors would spend the per-application daily budget). */
    maxPages: intRange(1, 100_000),
  },
);

export const RateLimitConfig = strictObject(
  'RateLimitConfig',
  {},
  {
    perSecond: PositiveInt,
    dailyBudget: PositiveInt,
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
    apiBaseUrl: HttpUrl,
    authBaseUrl: HttpUrl,
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
    maxAttempts: PositiveInt,
    backoffBaseSeconds: NonNegativeNumber,
    backoffMaxSeconds: NonNegativeNumber,
    recheckNotFoundHours: NonNegativeNumber,
  },
);

export const FileConfig = strictObject(
  'Config',
  {
    source: ConstantContactConfig,
    targets: t.array(TargetEntry),
  },
  {
    $schema: t.string,
    $comment: t.unknown,
    store: strictObject('StoreConfig', {}, { path: NonEmptyString }),
    delivery: DeliveryConfig,
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

export interface Config {
  file: string | null;
  storePath: string;
  source: ResolvedSource;
  targets: ResolvedTarget[];
  delivery: ResolvedDelivery;
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
      ...(s.detection?.maxPages !== undefined ? { maxPages: s.detection.maxPages } : {}),
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

/**
 * Replace `${NAME}` in every string of the raw config with the environment's value. Missing variables are
 * reported with their JSON path. Values that came from the environment under a secret-looking key are
 * registered for redaction.
 */
export function resolveEnv(raw: unknown, env: NodeJS.ProcessEnv, problems: string[], path = ''): unknown {
  if (typeof raw === 'string') {
    let fromEnv = false;
    const out = raw.replace(ENV_REF, (_m, name: string) => {
      const v = env[name];
      if (v === undefined || v === '') {
        problems.push(`${path || '(root)'}: environment variable ${name} is not set (referenced as "\${${name}}")`);
        missingEnvPaths.add(path || '(root)');
        return _m;
      }
      fromEnv = true;
      return v;
    });
    const key = path.split(/[.[\]]/).filter(Boolean).pop() ?? '';
    if (fromEnv && isSecretKey(key)) registerSecret(out);
    return out;
  }
  if (Array.isArray(raw)) return raw.map((v, i) => resolveEnv(v, env, problems, `${path}[${i}]`));
  if (raw && typeof raw === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(raw)) out[k] = resolveEnv(v, env, problems, path ? `${path}.${k}` : k);
    return out;
  }
  return raw;
}

/** Register inline secrets too, so that they never reach a log even when a user put them in the file. */
function registerInlineSecrets(raw: unknown, key = ''): void {
  if (typeof raw === 'string') {
    if (isSecretKey(key)) registerSecret(raw);
    return;
  }
  if (Array.isArray(raw)) raw.forEach((v) => registerInlineSecrets(v, key));
  else if (raw && typeof raw === 'object') for (const [k, v] of Object.entries(raw)) registerInlineSecrets(v, k);
}

/** Parse JSON with a line/column in the error. */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const m = /position (\d+)/.exec(msg);
    if (m) {
      const pos = Number(m[1]);
      const before = text.slice(0, pos);
      const line = before.split('\n').length;
      const col = pos - before.lastIndexOf('\n');
      throw new ConfigError([`line ${line}, column ${col}: ${msg}`], file);
    }
    throw new ConfigError([msg], file);
  }
}

/**
 * Decode a parsed config object. Throws ConfigError listing every problem (paths, values, expectations).
 * `registry` decodes each target's connector config.
 */
export function decodeConfig(raw: unknown, env: NodeJS.ProcessEnv, registry: Registry, file: string | null = null): Config {
  const problems: string[] = [];
  missingEnvPaths.clear();
  registerInlineSecrets(raw);
  const resolved = resolveEnv(raw, env, problems);
  const decoded = FileConfig.decode(resolved);
  if (isLeft(decoded)) problems.push(...withoutEnvDuplicates(formatErrors(decoded.left)));
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
    const connector = registry.get(e.connector);
    if (!connector) {
      problems.push(`${at}.connector: got ${JSON.stringify(e.connector)}, expected one of ${registry.ids().map((x) => JSON.stringify(x)).join(', ')}`);
      return;
    }
    const r = connector.config.decode(e.config);
    if (isLeft(r)) {
      problems.push(...withoutEnvDuplicates(formatErrors(r.left, `${at}.config`)));
      return;
    }
    targets.push({ name, connector: e.connector, enabled: e.enabled !== false, config: r.right });
  });
  if (isLeft(decoded)) throw new ConfigError(problems, file ?? undefined);
  const c = decoded.right;
  if (c.targets.length === 0) problems.push('targets: expected at least one target');
  if (problems.length > 0) throw new ConfigError(problems, file ?? undefined);
  return {
    file,
    storePath: c.store?.path ?? DEFAULT_STORE_PATH,
    source: resolveSource(c.source),
    targets,
    delivery: {
      batchSize: c.delivery?.batchSize ?? 1000,
      maxAttempts: c.delivery?.maxAttempts ?? 12,
      backoffBaseSeconds: c.delivery?.backoffBaseSeconds ?? 60,
      backoffMaxSeconds: c.delivery?.backoffMaxSeconds ?? 6 * 3600,
      recheckNotFoundHours: c.delivery?.recheckNotFoundHours ?? 24,
    },
  };
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv, registry: Registry): Config {
  if (!fs.existsSync(file)) {
    throw new ConfigError([`file not found: ${file} (create one with \`cc-optout init\`, or pass --config PATH)`], file);
  }
  const raw = parseJsonText(fs.readFileSync(file, 'utf8'), file);
  return decodeConfig(raw, env, registry, file);
}

/**
 * Only the source and the store of a config file: `auth constant-contact` must work before the CRM
 * credentials exist, so their `${ENV}` references are neither resolved nor required here.
 */
export function loadSourceConfig(file: string, env: NodeJS.ProcessEnv): { file: string; storePath: string; source: ResolvedSource } {
  if (!fs.existsSync(file)) {
    throw new ConfigError([`file not found: ${file} (create one with \`cc-optout init\`, or pass --config PATH)`], file);
  }
  const raw = parseJsonText(fs.readFileSync(file, 'utf8'), file) as { source?: unknown; store?: unknown } | null;
  const problems: string[] = [];
  missingEnvPaths.clear();
  registerInlineSecrets(raw?.source);
  const source = ConstantContactConfig.decode(resolveEnv(raw?.source, env, problems, 'source'));
  const store = t.union([t.undefined, strictObject('StoreConfig', {}, { path: NonEmptyString })]).decode(raw?.store);
  if (isLeft(source)) problems.push(...withoutEnvDuplicates(formatErrors(source.left, 'source')));
  if (isLeft(store)) problems.push(...formatErrors(store.left, 'store'));
  if (problems.length > 0 || isLeft(source) || isLeft(store)) throw new ConfigError(problems, file);
  return { file, storePath: store.right?.path ?? DEFAULT_STORE_PATH, source: resolveSource(source.right) };
}
