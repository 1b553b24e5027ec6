/**
 * Added accounts (`cc-optout accounts add|list|remove|set`, `--account <id>`): the account document kept in the
 * store's registry, how it is checked before it is written, and how it becomes a Config when the account runs.
 *
 * An account document has the config file's `source`, `targets` and `delivery` keys (JSON with comments, as a
 * config file). The `store`, `service` and `plugins` belong to the config file (one store and one service for
 * every account; connectors are loaded from the config file's `plugins`). The document is stored as written:
 * `${ENV}` references stay unresolved in the store and are resolved from the environment each time the account
 * runs. Inline secrets are accepted as in a config file (stored as given, masked in every output) and warned
 * about, naming the field: a `${ENV}` reference is recommended.
 */
import * as fs from 'fs';
import * as path from 'path';
import { isLeft } from 'fp-ts/Either';
import { formatErrors, isSecretKey } from './codec';
import { registerSecret } from './log';
import {
  Config,
  ConfigError,
  DecodeOptions,
  decodeConfig,
  isCommentKey,
  parseJsonText,
  FORBIDDEN_KEYS,
  ConstantContactConfig,
  ResolvedSource,
  resolveEnv,
  resolveSource,
} from './config';
import { PluginError, Registry } from './registry';
import { ACCOUNT_ID, AccountRecord, DEFAULT_ACCOUNT } from './store/backend';

/** Keys an account document may have (besides `//` comment keys). */
export const ACCOUNT_KEYS: readonly string[] = ['source', 'targets', 'delivery', '$schema', '$comment'];

/** Priorities: 0 pauses an account, higher polls sooner when the budget is short (default 1). */
export const PRIORITY_MAX = 1000;
export const DEFAULT_PRIORITY = 1;

/** Why an account id is not usable, or null. */
export function accountIdProblem(id: string): string | null {
  if (ACCOUNT_ID.test(id)) return null;
  return `got ${JSON.stringify(id)}, expected 1-64 lower-case letters, digits, "-" or "_", starting with a letter or digit`;
}

const BARE_REF = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;

/** Paths (`source.clientSecret`) of secret fields whose value is written inline instead of as a `${ENV}` reference. */
export function literalSecretFields(raw: unknown, at = ''): string[] {
  const found: string[] = [];
  const walk = (v: unknown, p: string, key: string): void => {
    if (typeof v === 'string') {
      if (isSecretKey(key) && v !== '' && !BARE_REF.test(v)) found.push(p);
    } else if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${p}[${i}]`, key));
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) if (!isCommentKey(k)) walk(x, p ? `${p}.${k}` : k, k);
  };
  walk(raw, at, '');
  return found;
}

/** Problems of the document's shape that the config decoder would not name the way an account needs. */
export function accountDocumentProblems(raw: unknown): string[] {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    return ['(root): expected a JSON object with "source" and "targets" (and optionally "delivery")'];
  const problems: string[] = [];
  for (const k of Object.keys(raw)) {
    if (isCommentKey(k) || ACCOUNT_KEYS.includes(k)) continue;
    if (k === 'store' || k === 'service' || k === 'plugins')
      problems.push(
        `${k}: not allowed in an account (one ${k === 'plugins' ? 'set of plugins' : k} serves every account: set it in the config file${k === 'store' ? ' or with --store' : ''})`,
      );
    else if (!FORBIDDEN_KEYS.has(k))
      problems.push(`${k}: unknown key; an account has ${['source', 'targets', 'delivery'].join(', ')}`);
  }
  return problems;
}

/**
 * The stored form of a document read from `file`: relative file paths written inline (connector keys ending in
 * `Path`) made absolute from the file's folder, as a config file's are from its own; everything else as written.
 */
export function storedDocument(raw: unknown, baseDir: string, key = ''): unknown {
  if (typeof raw === 'string')
    return /Path$/.test(key) && !raw.includes('${') && !path.isAbsolute(raw) ? path.resolve(baseDir, raw) : raw;
  if (Array.isArray(raw)) return raw.map((v) => storedDocument(v, baseDir));
  if (raw && typeof raw === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(raw)) out[k] = isCommentKey(k) ? v : storedDocument(v, baseDir, k);
    return out;
  }
  return raw;
}

/** Read an account file (JSON with comments, as a config file). Problems are ConfigErrors naming the file. */
export function readAccountFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      [`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`],
      file,
    );
  }
  return parseJsonText(text, file);
}

/**
 * Load the connectors the config file's `plugins` name into `registry` (an account's targets may use them),
 * when there is a config file. A plugin that does not load is a ConfigError naming it.
 */
export function usePluginsOf(configFile: string, registry: Registry): void {
  if (!fs.existsSync(configFile) || fs.statSync(configFile).isDirectory()) return;
  const raw = parseJsonText(fs.readFileSync(configFile, 'utf8'), configFile) as { plugins?: unknown } | null;
  const plugins = raw && typeof raw === 'object' ? raw.plugins : undefined;
  if (!Array.isArray(plugins)) return;
  const problems: string[] = [];
  plugins.forEach((spec: unknown, i) => {
    if (typeof spec !== 'string' || spec.trim() === '') return;
    try {
      registry.usePlugins([spec], path.dirname(path.resolve(configFile)));
    } catch (err) {
      if (!(err instanceof PluginError)) throw err;
      problems.push(`plugins[${i}]: ${err.message}`);
    }
  });
  if (problems.length) throw new ConfigError(problems, configFile);
}

/**
 * Decode an account document into a Config (throws ConfigError; its problems name the JSON path inside the
 * document). `configFile`: the config file, whose folder `${ENV}`-given relative paths are resolved from and
 * whose `store.path` the account shares (the backend finds the account's own state).
 */
export function decodeAccount(
  doc: unknown,
  env: NodeJS.ProcessEnv,
  registry: Registry,
  o: DecodeOptions & { configFile?: string | null; storePath?: string } = {},
): Config {
  const shape = accountDocumentProblems(doc);
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(shape);
  const d = doc as Record<string, unknown>;
  const raw: Record<string, unknown> = {};
  for (const k of ['source', 'targets', 'delivery'])
    if (k in d) Object.defineProperty(raw, k, { value: d[k], enumerable: true });
  // the config decoder labels problems with the file it is given: the document's own paths are what matter
  let config: Config;
  try {
    config = decodeConfig(raw, env, registry, o.configFile ?? null, { requireEnv: o.requireEnv });
  } catch (err) {
    // every problem at once: the document's shape, then what the decoder found
    if (err instanceof ConfigError) throw new ConfigError([...shape, ...err.problems]);
    throw err;
  }
  if (shape.length) throw new ConfigError(shape);
  return { ...config, ...(o.storePath ? { storePath: o.storePath } : {}) };
}

/** The target names an account document lists (for `accounts list`; no decoding). */
export function documentTargets(doc: unknown): string[] {
  const targets = (doc as { targets?: unknown } | null)?.targets;
  if (!Array.isArray(targets)) return [];
  return targets.map((t) => (t as { name?: unknown } | null)?.name).filter((n): n is string => typeof n === 'string');
}

/** `accounts add acme: source.clientId: ...`, one line per problem. */
export function prefixed(prefix: string, problems: readonly string[]): string {
  return problems.map((p) => `${prefix}: ${p}`).join('\n');
}

/** The message for an id that is neither `default` nor in the registry. */
export function unknownAccountMessage(id: string, known: readonly AccountRecord[], flag = '--account'): string {
  const ids = [DEFAULT_ACCOUNT, ...known.map((a) => a.id).filter((x) => x !== DEFAULT_ACCOUNT)];
  return `${flag} ${id}: no such account; known accounts: ${ids.join(', ')} (\`cc-optout accounts list\`; add one with \`cc-optout accounts add ${id} --from FILE\`)`;
}

/**
 * Only the Constant Contact `source` of an added account (`auth constant-contact --account <id>` needs no CRM
 * credential), its `${ENV}` references resolved. Throws ConfigError naming the account and the field.
 */
export function accountSource(id: string, rec: AccountRecord | null, env: NodeJS.ProcessEnv): ResolvedSource {
  const source = (rec?.config as { source?: unknown } | null)?.source;
  const where = `account ${id}`;
  const walk = (v: unknown, key: string): void => {
    if (typeof v === 'string') {
      if (isSecretKey(key) && !BARE_REF.test(v)) registerSecret(v);
    } else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(source, '');
  const problems: string[] = [];
  const resolved = resolveEnv(source, env, problems, 'source');
  const r = ConstantContactConfig.decode(resolved);
  if (isLeft(r)) {
    const missing = new Set(problems.map((p) => p.slice(0, p.indexOf(':'))));
    problems.push(...formatErrors(r.left, 'source').filter((l) => !missing.has(l.slice(0, l.indexOf(':')))));
  }
  if (problems.length > 0 || isLeft(r)) throw new ConfigError(problems, where);
  return resolveSource(r.right);
}
