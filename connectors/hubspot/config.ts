/**
 * The HubSpot target's config: an io-ts codec (strict objects, so typos are named) and the defaults.
 * `spec.json` holds the equivalent JSON Schema (what `cc-optout spec hubspot` prints); test/config.test.ts and
 * test/unit/manifest.test.ts keep the two in step on test/fixtures/configs.json.
 */
import * as t from 'io-ts';
import { strictObject, NonEmptyString, SecureUrl, intRange, fieldMapping, MappedValue } from '../../src/sdk';
import { API_VERSIONS, ApiVersion, DEFAULT_API_VERSION } from './paths';

export const DEFAULT_BASE_URL = 'https://api.hubapi.com';
export const DEFAULT_PER_10_SECONDS = 100;
/** Far above any HubSpot tier's burst limit (190 / 10 s; 250 with the API add-on): room for emulators and benchmarks. */
export const MAX_PER_10_SECONDS = 100_000;
/** CRM search has its own limit: 5 requests per second per token. */
export const DEFAULT_SEARCH_PER_SECOND = 5;
export const MAX_SEARCH_PER_SECOND = 100;

/** The legal basis values (communication-preferences 2026-09 and v4 `PublicStatusRequest.legalBasis`: the same enum). */
export const LEGAL_BASIS_VALUES = [
  'CONSENT_WITH_NOTICE',
  'LEGITIMATE_INTEREST_CLIENT',
  'LEGITIMATE_INTEREST_OTHER',
  'LEGITIMATE_INTEREST_PQL',
  'NON_GDPR',
  'PERFORMANCE_OF_CONTRACT',
  'PROCESS_AND_STORE',
] as const;
export type LegalBasis = (typeof LEGAL_BASIS_VALUES)[number];

function enumOf<V extends string>(name: string, values: readonly V[]): t.Type<V, V, unknown> {
  const set = new Set<string>(values);
  const expected = values.map((v) => JSON.stringify(v)).join(' | ');
  return new t.Type<V, V, unknown>(
    expected,
    (u): u is V => typeof u === 'string' && set.has(u),
    (u, c) =>
      typeof u === 'string' && set.has(u)
        ? t.success(u as V)
        : t.failure(u, c, `${name}: got ${JSON.stringify(u)}, expected one of ${expected}`),
    (a) => a,
  );
}

/**
 * A union tagged by `type`: the tag picks the member, so errors speak about that member only
 * (an io-ts union of strict objects would report every member's complaints at once).
 */
function tagged<M extends Record<string, t.Mixed>>(
  name: string,
  members: M,
): t.Type<t.TypeOf<M[keyof M]>, unknown, unknown> {
  const tags = Object.keys(members);
  const expected = tags.map((x) => JSON.stringify(x)).join(' | ');
  return new t.Type<t.TypeOf<M[keyof M]>, unknown, unknown>(
    name,
    (u): u is t.TypeOf<M[keyof M]> => tags.some((k) => members[k]!.is(u)),
    (u, c) => {
      if (typeof u !== 'object' || u === null || Array.isArray(u))
        return t.failure(u, c, `${name}: expected an object with "type" (${expected})`);
      const tag = (u as { type?: unknown }).type;
      if (typeof tag !== 'string' || !Object.prototype.hasOwnProperty.call(members, tag)) {
        return t.failures([
          {
            value: tag,
            context: [...c, { key: 'type', type: t.string, actual: tag }],
            message: `got ${tag === undefined ? 'nothing (missing)' : JSON.stringify(tag)}, expected ${expected}`,
          },
        ]);
      }
      return members[tag]!.validate(u, c) as t.Validation<t.TypeOf<M[keyof M]>>;
    },
    (a) => a,
  );
}

export const LegalBasisCodec = enumOf('legalBasis', LEGAL_BASIS_VALUES);
export const BatchModeCodec = enumOf('batch', ['auto', 'always', 'never'] as const);
export type BatchMode = t.TypeOf<typeof BatchModeCodec>;

export const PrivateAppAuth = strictObject(
  'PrivateAppAuth',
  { type: t.literal('private-app'), accessToken: NonEmptyString },
  {},
);
export const OAuthAuth = strictObject(
  'OAuthAuth',
  { type: t.literal('oauth'), clientId: NonEmptyString, clientSecret: NonEmptyString, refreshToken: NonEmptyString },
  {},
);
/** A Service Key (Development > Keys > Service keys): a static bearer token, like a private-app token. */
export const ServiceKeyAuth = strictObject(
  'ServiceKeyAuth',
  { type: t.literal('service-key'), serviceKey: NonEmptyString },
  {},
);
export const AuthCodec = tagged('auth', {
  'service-key': ServiceKeyAuth,
  'private-app': PrivateAppAuth,
  oauth: OAuthAuth,
});
export type HubSpotAuth =
  t.TypeOf<typeof ServiceKeyAuth> | t.TypeOf<typeof PrivateAppAuth> | t.TypeOf<typeof OAuthAuth>;

export const ApiVersionCodec = enumOf('apiVersion', API_VERSIONS);

const SUBSCRIPTION_ID = /^[0-9]+$/;
export const SubscriptionIdCodec = new t.Type<string, string, unknown>(
  'subscription id (digits, e.g. "123456")',
  (u): u is string => typeof u === 'string' && SUBSCRIPTION_ID.test(u),
  (u, c) => (typeof u === 'string' && SUBSCRIPTION_ID.test(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
);

/** Non-empty, no duplicates. */
export const SubscriptionIdsCodec = new t.Type<string[], string[], unknown>(
  'non-empty array of distinct subscription ids',
  (u): u is string[] =>
    Array.isArray(u) && u.length > 0 && u.every((x) => SubscriptionIdCodec.is(x)) && new Set(u).size === u.length,
  (u, c) => {
    const r = t.array(SubscriptionIdCodec).validate(u, c);
    if (r._tag === 'Left') return r;
    if (r.right.length === 0)
      return t.failure(
        u,
        c,
        'subscriptionIds: expected at least one subscription id (find them with GET /communication-preferences/2026-09/definitions)',
      );
    if (new Set(r.right).size !== r.right.length) return t.failure(u, c, 'subscriptionIds: duplicate subscription id');
    return t.success(r.right);
  },
  (a) => a,
);

export const UnsubscribeAllSuppression = strictObject(
  'UnsubscribeAllSuppression',
  { type: t.literal('unsubscribe-all') },
  { batch: BatchModeCodec },
);
export const SubscriptionsSuppression = strictObject(
  'SubscriptionsSuppression',
  { type: t.literal('subscriptions'), subscriptionIds: SubscriptionIdsCodec },
  { batch: BatchModeCodec },
);
export const SuppressionCodec = tagged('suppression', {
  'unsubscribe-all': UnsubscribeAllSuppression,
  subscriptions: SubscriptionsSuppression,
});

/** HubSpot internal property names: lower-case letter first, then lower-case letters, digits, underscores. */
export const PROPERTY_NAME = /^[a-z][a-z0-9_]*$/;
/** Read-only in HubSpot: suppression goes through Communication Preferences, never through this property. */
export const READ_ONLY_OPTOUT_PROPERTY = 'hs_email_optout';

export const AuditPropertiesCodec = fieldMapping(
  'audit properties { hubspotPropertyName: mapped value }',
  '{ hubspotPropertyName: value }',
  (k) =>
    !PROPERTY_NAME.test(k)
      ? `"${k}" is not a HubSpot internal property name (lower-case letters, digits, "_", starting with a letter)`
      : k === READ_ONLY_OPTOUT_PROPERTY
        ? `${READ_ONLY_OPTOUT_PROPERTY} is read-only in HubSpot; suppression is written through Communication Preferences (see suppression)`
        : null,
);

export const RateLimitCodec = strictObject(
  'HubSpotRateLimit',
  {},
  {
    per10Seconds: intRange(1, MAX_PER_10_SECONDS),
    searchPerSecond: intRange(1, MAX_SEARCH_PER_SECOND),
  },
);

export const HubSpotConfigCodec = strictObject(
  'HubSpotConfig',
  { auth: AuthCodec },
  {
    baseUrl: SecureUrl,
    apiVersion: ApiVersionCodec,
    matchAdditionalEmails: t.boolean,
    suppression: SuppressionCodec,
    legalBasis: LegalBasisCodec,
    legalBasisExplanation: NonEmptyString,
    businessUnitId: intRange(0, Number.MAX_SAFE_INTEGER),
    onlyExistingContacts: t.boolean,
    properties: AuditPropertiesCodec,
    rateLimit: RateLimitCodec,
  },
);
export type HubSpotConfig = t.TypeOf<typeof HubSpotConfigCodec>;

export type Suppression =
  | { readonly type: 'unsubscribe-all'; readonly batch: BatchMode }
  | { readonly type: 'subscriptions'; readonly subscriptionIds: readonly string[]; readonly batch: BatchMode };

/** The config with every default applied. */
export interface ResolvedHubSpotConfig {
  readonly baseUrl: string;
  readonly apiVersion: ApiVersion;
  readonly auth: HubSpotAuth;
  /** After the primary-address lookup, find the rest by CRM search on hs_additional_emails. */
  readonly matchAdditionalEmails: boolean;
  readonly suppression: Suppression;
  readonly legalBasis: LegalBasis | null;
  readonly legalBasisExplanation: string | null;
  readonly businessUnitId: number;
  readonly onlyExistingContacts: boolean;
  readonly properties: Readonly<Record<string, MappedValue>>;
  readonly per10Seconds: number;
  readonly searchPerSecond: number;
}

export function resolveConfig(c: HubSpotConfig): ResolvedHubSpotConfig {
  const s = c.suppression;
  const suppression: Suppression =
    s === undefined
      ? { type: 'unsubscribe-all', batch: 'auto' }
      : s.type === 'subscriptions'
        ? {
            type: 'subscriptions',
            subscriptionIds: [...(s as { subscriptionIds: string[] }).subscriptionIds],
            batch: s.batch ?? 'auto',
          }
        : { type: 'unsubscribe-all', batch: s.batch ?? 'auto' };
  return {
    baseUrl: (c.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, ''),
    apiVersion: c.apiVersion ?? DEFAULT_API_VERSION,
    auth: c.auth as HubSpotAuth,
    matchAdditionalEmails: c.matchAdditionalEmails ?? true,
    suppression,
    legalBasis: c.legalBasis ?? null,
    legalBasisExplanation: c.legalBasisExplanation ?? null,
    businessUnitId: c.businessUnitId ?? 0,
    onlyExistingContacts: c.onlyExistingContacts ?? true,
    properties: c.properties ?? {},
    per10Seconds: c.rateLimit?.per10Seconds ?? DEFAULT_PER_10_SECONDS,
    searchPerSecond: c.rateLimit?.searchPerSecond ?? DEFAULT_SEARCH_PER_SECOND,
  };
}
