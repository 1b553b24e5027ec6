/**
 * io-ts helpers shared by the core and the connectors: strict objects that name unknown keys,
 * common refinements, and a reporter that turns decode failures into readable path messages.
 */
import * as t from 'io-ts';
import { isLeft } from 'fp-ts/Either';
import { MappedValue, OPT_OUT_VALUE_KEYS } from './domain';

/**
 * An object codec with required and optional props that rejects keys it does not know (typos), except
 * comment keys starting with "//". Its JSON Schema twin: additionalProperties false + patternProperties "^//".
 */
export function strictObject<R extends t.Props, O extends t.Props>(
  name: string,
  required: R,
  optional: O,
): t.Type<t.TypeOf<t.TypeC<R>> & t.TypeOf<t.PartialC<O>>, unknown, unknown> {
  const inner = t.intersection([t.type(required), t.partial(optional)]);
  const known = new Set([...Object.keys(required), ...Object.keys(optional)]);
  return new t.Type<t.TypeOf<t.TypeC<R>> & t.TypeOf<t.PartialC<O>>, unknown, unknown>(
    name,
    (u): u is t.TypeOf<t.TypeC<R>> & t.TypeOf<t.PartialC<O>> => inner.is(u),
    (u, c) => {
      if (typeof u !== 'object' || u === null || Array.isArray(u))
        return t.failure(u, c, `${name}: expected an object`);
      // keys starting with "//" are comments (JSON has none); everything else must be known
      const unknownKeys = Object.keys(u).filter((k) => !known.has(k) && !k.startsWith('//'));
      if (unknownKeys.length > 0) {
        const errs: t.Errors = unknownKeys.map((k) => ({
          value: (u as Record<string, unknown>)[k],
          context: [...c, { key: k, type: t.never, actual: (u as Record<string, unknown>)[k] }],
          message: `unknown key "${k}" (allowed: ${[...known].join(', ')})`,
        }));
        return t.failures(errs);
      }
      // Validate both halves against the SAME context so error paths read `a.b`, not `a.0.b`.
      const req = t.type(required).validate(u, c);
      const opt = t.partial(optional).validate(u, c);
      if (isLeft(req) || isLeft(opt)) {
        return t.failures([...(isLeft(req) ? req.left : []), ...(isLeft(opt) ? opt.left : [])]);
      }
      return t.success({ ...(opt.right as object), ...(req.right as object) } as t.TypeOf<t.TypeC<R>> &
        t.TypeOf<t.PartialC<O>>);
    },
    (a) => a,
  );
}

export interface NonEmptyStringBrand {
  readonly NonEmptyString: unique symbol;
}
export const NonEmptyString = t.brand(
  t.string,
  (s): s is t.Branded<string, NonEmptyStringBrand> => s.trim().length > 0,
  'NonEmptyString',
);

export interface HttpUrlBrand {
  readonly HttpUrl: unique symbol;
}
/** An absolute http(s) URL. */
export const HttpUrl = t.brand(
  t.string,
  (s): s is t.Branded<string, HttpUrlBrand> => {
    try {
      const u = new URL(s);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  },
  'HttpUrl',
);

/** Host names plain `http://` is allowed for: loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h === 'localhost' || h === '[::1]' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** The JSON Schema twin of `SecureUrl` (case-insensitive scheme and loopback names, as the WHATWG parser is). */
export const SECURE_URL_PATTERN =
  '^([Hh][Tt][Tt][Pp][Ss]://[^\\s/?#@]+|[Hh][Tt][Tt][Pp]://([Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|127(\\.[0-9]{1,3}){3}|\\[::1\\])(:[0-9]+)?)([/?#]\\S*)?$';
const SECURE_URL_RE = new RegExp(SECURE_URL_PATTERN);

/** The URL with any `user:password@` replaced by `***@` (for messages). */
function withoutCredentials(s: string): string {
  return s.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@');
}

function secureUrlProblem(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return 'not an absolute URL';
  }
  // a user name or password in a URL would be logged with it: credentials belong in the auth settings
  if (u.username !== '' || u.password !== '')
    return 'a user name or password in the URL is not allowed (put credentials in the auth settings)';
  if (!SECURE_URL_RE.test(s)) {
    if (u.protocol === 'http:')
      return 'plain http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://';
    if (u.protocol !== 'https:') return `scheme ${u.protocol} is not https:`;
    return 'not an absolute https:// URL';
  }
  if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
    return 'plain http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `scheme ${u.protocol} is not https:`;
  return null;
}

export interface SecureUrlBrand {
  readonly SecureUrl: unique symbol;
}
/**
 * An absolute `https://` URL, or `http://` to a loopback host only (emulators, local proxies): secrets sent to
 * these URLs must never travel in clear. Every base/login URL in a config uses this codec; the JSON Schemas use
 * `SECURE_URL_PATTERN`.
 */
export const SecureUrl = new t.Type<t.Branded<string, SecureUrlBrand>, string, unknown>(
  'HttpUrl (https://, or http:// to a loopback host)',
  (u): u is t.Branded<string, SecureUrlBrand> => typeof u === 'string' && secureUrlProblem(u) === null,
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c);
    const problem = secureUrlProblem(u);
    if (problem === null) return t.success(u as t.Branded<string, SecureUrlBrand>);
    // "got ..." first: an unresolved ${ENV} value's error is dropped as a duplicate of the missing variable;
    // credentials in the URL are never echoed
    const shown = withoutCredentials(u);
    return t.failure(
      shown,
      c,
      `got ${JSON.stringify(shown.length > 80 ? shown.slice(0, 77) + '...' : shown)}, expected HttpUrl: ${problem}`,
    );
  },
  (a) => a,
);

/** A finite number within [min, max] (durations, rates: absurd values are config errors, not crash loops). */
export function numberRange(min: number, max: number, unit = ''): t.Type<number, number, unknown> {
  const ok = (u: unknown): u is number => typeof u === 'number' && Number.isFinite(u) && u >= min && u <= max;
  return new t.Type<number, number, unknown>(
    `number ${min}..${max}${unit ? ` (${unit})` : ''}`,
    ok,
    (u, c) => (ok(u) ? t.success(u) : t.failure(u, c)),
    (a) => a,
  );
}

export interface PositiveIntBrand {
  readonly PositiveInt: unique symbol;
}
export const PositiveInt = t.brand(
  t.number,
  (n): n is t.Branded<number, PositiveIntBrand> => Number.isInteger(n) && n >= 1,
  'PositiveInt',
);

export interface NonNegativeNumberBrand {
  readonly NonNegativeNumber: unique symbol;
}
export const NonNegativeNumber = t.brand(
  t.number,
  (n): n is t.Branded<number, NonNegativeNumberBrand> => Number.isFinite(n) && n >= 0,
  'NonNegativeNumber',
);

/** An integer within [min, max]. */
export function intRange(min: number, max: number): t.Type<number, number, unknown> {
  return new t.Type<number, number, unknown>(
    `integer ${min}..${max}`,
    (u): u is number => typeof u === 'number' && Number.isInteger(u) && u >= min && u <= max,
    (u, c) => (typeof u === 'number' && Number.isInteger(u) && u >= min && u <= max ? t.success(u) : t.failure(u, c)),
    (a) => a,
  );
}

const SECRET_KEY = /(token|secret|password|privatekey|private_key|apikey|api_key|servicekey|service_key)/i;

export function isSecretKey(key: string): boolean {
  // a URL or a file path is not a secret (a key file's CONTENT is, and its reader registers it)
  return SECRET_KEY.test(key) && !/(url|path)$/i.test(key);
}

/** `a.b[0].c` from an io-ts context, skipping union/intersection member indices. */
export function contextPath(context: t.Context, prefix = ''): string {
  let out = prefix;
  for (let i = 1; i < context.length; i++) {
    const entry = context[i]!;
    const parent = context[i - 1]!.type as t.Any & { _tag?: string };
    const tag = parent._tag;
    if (tag === 'UnionType' || tag === 'IntersectionType' || entry.key === '') continue;
    if (tag === 'ArrayType' || tag === 'ReadonlyArrayType') {
      out += `[${entry.key}]`;
    } else {
      out += out ? `.${entry.key}` : entry.key;
    }
  }
  return out || '(root)';
}

function show(value: unknown, key: string): string {
  if (isSecretKey(key) && value !== undefined) return '[redacted]';
  if (value === undefined) return 'nothing (missing)';
  const s = JSON.stringify(value);
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

/** Readable, one line per problem: `targets[0].config.suppression.type: got "x", expected ...`. */
export function formatErrors(errors: t.Errors, prefix = ''): string[] {
  const lines = new Set<string>();
  for (const e of errors) {
    const path = contextPath(e.context, prefix);
    const last = e.context[e.context.length - 1];
    const key = last?.key ?? '';
    if (e.message) {
      lines.add(`${path}: ${e.message}`);
      continue;
    }
    const expected = last?.type.name ?? 'a valid value';
    lines.add(`${path}: got ${show(e.value, key)}, expected ${expected}`);
  }
  return [...lines];
}

/** Decode or return readable error lines. */
export function decodeWith<A>(
  codec: t.Type<A, unknown, unknown>,
  value: unknown,
  prefix = '',
): { ok: true; value: A } | { ok: false; errors: string[] } {
  const r = codec.decode(value);
  if (isLeft(r)) return { ok: false, errors: formatErrors(r.left, prefix) };
  return { ok: true, value: r.right };
}

const ConstantValue = strictObject('ConstantValue', { constant: t.union([t.string, t.number, t.boolean]) }, {});
const VALUE_KEYS = OPT_OUT_VALUE_KEYS as readonly string[];

/** A CRM field's value taken from the opt-out (`"optOutDate"`, `"reason"`, ...) or `{ "constant": ... }`. */
export const MappedValueCodec = new t.Type<MappedValue, MappedValue, unknown>(
  `${OPT_OUT_VALUE_KEYS.map((k) => JSON.stringify(k)).join(' | ')} | { "constant": string | number | boolean }`,
  (u): u is MappedValue => (typeof u === 'string' && VALUE_KEYS.includes(u)) || ConstantValue.is(u),
  (u, c) => {
    if (typeof u === 'string') {
      return VALUE_KEYS.includes(u)
        ? t.success(u as MappedValue)
        : t.failure(
            u,
            c,
            `got ${JSON.stringify(u)}, expected one of ${OPT_OUT_VALUE_KEYS.map((k) => JSON.stringify(k)).join(', ')} or { "constant": ... }`,
          );
    }
    return ConstantValue.validate(u, c);
  },
  (a) => a,
);

/**
 * `{ crmFieldName: MappedValue }` for a connector's audit fields. Unlike io-ts `t.record`, a bad key is an error
 * that names it: `checkKey` returns why a key is not acceptable (null when it is).
 */
export function fieldMapping(
  name: string,
  expected: string,
  checkKey: (key: string) => string | null,
): t.Type<Record<string, MappedValue>, Record<string, MappedValue>, unknown> {
  return new t.Type<Record<string, MappedValue>, Record<string, MappedValue>, unknown>(
    name,
    (u): u is Record<string, MappedValue> =>
      t.UnknownRecord.is(u) &&
      !Array.isArray(u) &&
      Object.entries(u).every(([k, v]) => checkKey(k) === null && MappedValueCodec.is(v)),
    (u, c) => {
      if (!t.UnknownRecord.is(u) || Array.isArray(u)) return t.failure(u, c, `expected an object ${expected}`);
      const errors: t.Errors = [];
      const out: Record<string, MappedValue> = {};
      for (const [k, v] of Object.entries(u)) {
        const ctx = [...c, { key: k, type: MappedValueCodec, actual: v }];
        const problem = checkKey(k);
        if (problem !== null) {
          errors.push({ value: k, context: ctx, message: problem });
          continue;
        }
        const r = MappedValueCodec.validate(v, ctx);
        if (isLeft(r)) errors.push(...r.left);
        else out[k] = r.right;
      }
      return errors.length > 0 ? t.failures(errors) : t.success(out);
    },
    (a) => a,
  );
}
