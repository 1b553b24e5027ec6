/**
 * The Dynamics 365 / Dataverse target's config: an io-ts codec (strict objects, so typos are named) and its
 * resolution into the plain settings the rest of the connector reads. The JSON Schema twin is in schema.ts
 * (test/fixtures/configs.json holds the cases both are checked against).
 */
import * as t from 'io-ts';
import { NonEmptyString, SecureUrl, intRange, strictObject } from 'cc-optout-connector/sdk';
import { EntityKey } from './odata';

export const EMAIL_FIELDS = ['emailaddress1', 'emailaddress2', 'emailaddress3'] as const;
export type EmailField = (typeof EMAIL_FIELDS)[number];

export const DEFAULTS = {
  apiVersion: '9.2',
  authorityHost: 'https://login.microsoftonline.com',
  emailFields: ['emailaddress1'] as EmailField[],
  /** Dataverse accepts 32,768; a smaller budget leaves room for proxies and gateways. */
  maxUrlLength: 16_000,
  addressesPerQuery: 50,
  /** Requests (PATCHes) per $batch; Dataverse allows 1,000. */
  requestsPerBatch: 200,
  /** Dataverse's documented per-user limit: 6,000 requests in a 300 s sliding window. */
  perWindow: 6000,
  windowSeconds: 300,
  maxRetryAfterSeconds: 60,
  maxRetries: 4,
  timeoutSeconds: 60,
};

/** An absolute https:// URL (MSAL refuses any other authority), without credentials. */
const HttpsUrl = new t.Type<string, string, unknown>(
  'https:// URL',
  (u): u is string => typeof u === 'string' && /^https:\/\//i.test(u) && SecureUrl.is(u),
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c);
    const r = SecureUrl.validate(u, c);
    if (r._tag === 'Left') return r;
    if (!/^https:\/\//i.test(u))
      return t.failure(u, c, `got ${JSON.stringify(u)}, expected an https:// URL: MSAL accepts only https authorities`);
    return t.success(u);
  },
  (a) => a,
);

/** The environment URL: an origin (https://org.crm.dynamics.com), no path. */
const EnvironmentUrl = new t.Type<string, string, unknown>(
  'Dataverse environment URL',
  (u): u is string =>
    SecureUrl.is(u) && ['', '/'].includes(new URL(u as string).pathname) && !new URL(u as string).search,
  (u, c) => {
    const r = SecureUrl.validate(u, c);
    if (r._tag === 'Left') return r;
    const p = new URL(u as string);
    if (!['', '/'].includes(p.pathname) || p.search || p.hash) {
      return t.failure(
        u,
        c,
        `got ${JSON.stringify(u)}, expected the environment URL without a path (e.g. https://contoso.crm.dynamics.com, not .../api/data/v9.2)`,
      );
    }
    return t.success(u as string);
  },
  (a) => a,
);

const ApiVersion = new t.Type<string, string, unknown>(
  'Web API version like "9.2"',
  (u): u is string => typeof u === 'string' && /^9\.[0-2]$/.test(u),
  (u, c) =>
    typeof u === 'string' && /^9\.[0-2]$/.test(u)
      ? t.success(u)
      : t.failure(u, c, `got ${JSON.stringify(u)}, expected a Web API version 9.0, 9.1 or 9.2`),
  (a) => a,
);

const EmailFields = new t.Type<EmailField[], EmailField[], unknown>(
  'email columns',
  (u): u is EmailField[] =>
    Array.isArray(u) &&
    u.length > 0 &&
    u.every((f) => (EMAIL_FIELDS as readonly unknown[]).includes(f)) &&
    new Set(u).size === u.length,
  (u, c) => {
    if (!Array.isArray(u) || u.length === 0)
      return t.failure(u, c, `expected a non-empty array of ${EMAIL_FIELDS.join(', ')}`);
    const bad = u.find((f) => !(EMAIL_FIELDS as readonly unknown[]).includes(f));
    if (bad !== undefined) return t.failure(u, c, `${JSON.stringify(bad)} is not one of ${EMAIL_FIELDS.join(', ')}`);
    if (new Set(u).size !== u.length) return t.failure(u, c, 'a column is listed twice');
    return t.success(u as EmailField[]);
  },
  (a) => a,
);

export const Auth = strictObject(
  'DynamicsAuth',
  {
    type: t.literal('client-credentials'),
    tenantId: NonEmptyString,
    clientId: NonEmptyString,
    clientSecret: NonEmptyString,
  },
  {
    /** Entra authority host (sovereign clouds: https://login.microsoftonline.us, https://login.chinacloudapi.cn). */
    authorityHost: HttpsUrl,
    /** A PEM file of a CA to trust for the authority (a TLS-inspecting proxy, the emulator). */
    caPath: NonEmptyString,
  },
);

const EntitiesBase = strictObject('DynamicsEntities', {}, { contact: t.boolean, lead: t.boolean });
/** At least one table stays on. */
export const Entities = new t.Type<t.TypeOf<typeof EntitiesBase>, unknown, unknown>(
  'DynamicsEntities',
  (u): u is t.TypeOf<typeof EntitiesBase> => EntitiesBase.is(u) && !(u.contact === false && u.lead === false),
  (u, c) => {
    const r = EntitiesBase.validate(u, c);
    if (r._tag === 'Left') return r;
    if (r.right.contact === false && r.right.lead === false)
      return t.failure(u, c, 'entities: contact and lead are both false: nothing would be suppressed');
    return t.success(r.right);
  },
  (a) => a,
);

export const RateLimit = strictObject(
  'DynamicsRateLimit',
  {},
  {
    perWindow: intRange(1, 1_000_000),
    windowSeconds: intRange(1, 3600),
    maxRetryAfterSeconds: intRange(0, 3600),
    maxRetries: intRange(0, 10),
  },
);

export const DynamicsConfig = strictObject(
  'DynamicsConfig',
  { url: EnvironmentUrl, auth: Auth },
  {
    apiVersion: ApiVersion,
    entities: Entities,
    emailFields: EmailFields,
    alsoSetDoNotEmail: t.boolean,
    maxUrlLength: intRange(1000, 32_768),
    addressesPerQuery: intRange(1, 500),
    requestsPerBatch: intRange(1, 1000),
    rateLimit: RateLimit,
    timeoutSeconds: intRange(1, 600),
  },
);
export type DynamicsConfig = t.TypeOf<typeof DynamicsConfig>;

export interface Resolved {
  url: string;
  apiVersion: string;
  auth: { tenantId: string; clientId: string; clientSecret: string; authorityHost: string; caPath: string | null };
  entities: EntityKey[];
  emailFields: EmailField[];
  alsoSetDoNotEmail: boolean;
  maxUrlLength: number;
  addressesPerQuery: number;
  requestsPerBatch: number;
  rateLimit: { perWindow: number; windowSeconds: number; maxRetryAfterSeconds: number; maxRetries: number };
  timeoutMs: number;
}

export function resolveConfig(c: DynamicsConfig): Resolved {
  const entities: EntityKey[] = [];
  if (c.entities?.contact ?? true) entities.push('contact');
  if (c.entities?.lead ?? true) entities.push('lead');
  return {
    url: new URL(c.url).origin,
    apiVersion: c.apiVersion ?? DEFAULTS.apiVersion,
    auth: {
      tenantId: c.auth.tenantId,
      clientId: c.auth.clientId,
      clientSecret: c.auth.clientSecret,
      authorityHost: (c.auth.authorityHost ?? DEFAULTS.authorityHost).replace(/\/+$/, ''),
      caPath: c.auth.caPath ?? null,
    },
    entities,
    emailFields: c.emailFields ?? DEFAULTS.emailFields,
    alsoSetDoNotEmail: c.alsoSetDoNotEmail ?? false,
    maxUrlLength: c.maxUrlLength ?? DEFAULTS.maxUrlLength,
    addressesPerQuery: c.addressesPerQuery ?? DEFAULTS.addressesPerQuery,
    requestsPerBatch: c.requestsPerBatch ?? DEFAULTS.requestsPerBatch,
    rateLimit: {
      perWindow: c.rateLimit?.perWindow ?? DEFAULTS.perWindow,
      windowSeconds: c.rateLimit?.windowSeconds ?? DEFAULTS.windowSeconds,
      maxRetryAfterSeconds: c.rateLimit?.maxRetryAfterSeconds ?? DEFAULTS.maxRetryAfterSeconds,
      maxRetries: c.rateLimit?.maxRetries ?? DEFAULTS.maxRetries,
    },
    timeoutMs: (c.timeoutSeconds ?? DEFAULTS.timeoutSeconds) * 1000,
  };
}
