/**
 * The Salesforce connector's config: an io-ts codec (strict objects, so typos are named) and the
 * resolution of defaults into a plain `ResolvedConfig` the rest of the connector reads.
 *
 * The JSON Schema in `spec.json` (what `cc-optout spec salesforce` prints) must accept exactly what this codec accepts
 * (connectors/salesforce/test/fixtures/configs.json holds the cases both are checked against).
 */
import * as t from 'io-ts';
import { strictObject, NonEmptyString, SecureUrl, intRange, fieldMapping, MappedValue } from '../../src/sdk';

export const DEFAULT_LOGIN_URL = 'https://login.salesforce.com';
export const DEFAULT_API_VERSION = '62.0';
export const DEFAULT_BULK_THRESHOLD = 2000;
export const DEFAULT_QUERY_CHUNK_SIZE = 200;
/** Bulk API 2.0 ingests at most 150,000,000 records per 24 h; a larger threshold cannot be meant. */
export const MAX_BULK_THRESHOLD = 150_000_000;

/** API versions 42.0+ (sObject Collections update needs 42.0, Bulk API 2.0 ingest 41.0). */
export const API_VERSION_PATTERN = '^(4[2-9]|[5-9][0-9]|[1-9][0-9]{2})\\.0$';
/** A Salesforce field API name: `HasOptedOutOfEmail`, `CC_Opted_Out_At__c`, `ns__Field__c`. */
export const FIELD_NAME_PATTERN = '^[A-Za-z][A-Za-z0-9_]*$';

function patternString(name: string, pattern: string): t.Type<string, string, unknown> {
  const re = new RegExp(pattern);
  return new t.Type<string, string, unknown>(
    name,
    (u): u is string => typeof u === 'string' && re.test(u),
    (u, c) => (typeof u === 'string' && re.test(u) ? t.success(u) : t.failure(u, c)),
    (a) => a,
  );
}

export const ApiVersion = patternString('API version like "62.0" (42.0 or later)', API_VERSION_PATTERN);
export const FieldName = patternString('Salesforce field API name', FIELD_NAME_PATTERN);

/** `{ FieldApiName: MappedValue }`; a bad key is an error, not silently dropped. */
export const ExtraFields = fieldMapping('ExtraFields', 'of { FieldApiName: value }', (k) =>
  FieldName.is(k)
    ? null
    : `"${k}" is not a Salesforce field API name (letters, digits, underscores; e.g. CC_Opted_Out_At__c)`,
);

export const ObjectMapping = strictObject(
  'ObjectMapping',
  {},
  {
    enabled: t.boolean,
    /** The boolean field set to true (default HasOptedOutOfEmail / PersonHasOptedOutOfEmail). */
    field: FieldName,
    /** Audit fields written alongside: `{ "CC_Opted_Out_At__c": "optOutDate" }`. */
    extraFields: ExtraFields,
  },
);
export type ObjectMapping = t.TypeOf<typeof ObjectMapping>;

const JwtAuthBase = strictObject(
  'JwtAuth',
  { type: t.literal('jwt'), clientId: NonEmptyString, username: NonEmptyString },
  { privateKeyPath: NonEmptyString, privateKey: NonEmptyString },
);
/** Exactly one of privateKeyPath / privateKey. */
const JwtAuth = new t.Type<t.TypeOf<typeof JwtAuthBase>, unknown, unknown>(
  'JwtAuth',
  (u): u is t.TypeOf<typeof JwtAuthBase> =>
    JwtAuthBase.is(u) && (u.privateKey === undefined) !== (u.privateKeyPath === undefined),
  (u, c) => {
    const r = JwtAuthBase.validate(u, c);
    if (r._tag === 'Left') return r;
    const a = r.right;
    if ((a.privateKey === undefined) === (a.privateKeyPath === undefined)) {
      return t.failure(
        u,
        c,
        'jwt auth needs exactly one of "privateKeyPath" (a PEM file) or "privateKey" (the PEM text, e.g. "${SF_PRIVATE_KEY}")',
      );
    }
    return t.success(a);
  },
  (a) => a,
);

const ClientCredentialsAuth = strictObject(
  'ClientCredentialsAuth',
  { type: t.literal('client-credentials'), clientId: NonEmptyString, clientSecret: NonEmptyString },
  {},
);
const RefreshTokenAuth = strictObject(
  'RefreshTokenAuth',
  { type: t.literal('refresh-token'), clientId: NonEmptyString, refreshToken: NonEmptyString },
  { clientSecret: NonEmptyString },
);
const AccessTokenAuth = strictObject(
  'AccessTokenAuth',
  { type: t.literal('access-token'), accessToken: NonEmptyString },
  {},
);

const AUTH_BY_TYPE: Record<string, t.Decoder<unknown, unknown> & { is: t.Is<unknown> }> = {
  jwt: JwtAuth,
  'client-credentials': ClientCredentialsAuth,
  'refresh-token': RefreshTokenAuth,
  'access-token': AccessTokenAuth,
};

export type SalesforceAuth =
  | t.TypeOf<typeof JwtAuth>
  | t.TypeOf<typeof ClientCredentialsAuth>
  | t.TypeOf<typeof RefreshTokenAuth>
  | t.TypeOf<typeof AccessTokenAuth>;

/** Dispatches on `type` so errors talk about the chosen auth only (not every member of a union). */
export const Auth = new t.Type<SalesforceAuth, unknown, unknown>(
  'SalesforceAuth',
  (u): u is SalesforceAuth => Object.values(AUTH_BY_TYPE).some((codec) => codec.is(u)),
  (u, c) => {
    const type = typeof u === 'object' && u !== null ? (u as { type?: unknown }).type : undefined;
    const codec = typeof type === 'string' ? AUTH_BY_TYPE[type] : undefined;
    if (!codec) {
      return t.failure(
        u,
        c,
        `auth.type must be one of ${Object.keys(AUTH_BY_TYPE)
          .map((k) => `"${k}"`)
          .join(', ')}`,
      );
    }
    return codec.validate(u, c) as t.Validation<SalesforceAuth>;
  },
  (a) => a,
);

export const Objects = strictObject(
  'SalesforceObjects',
  {},
  { Contact: ObjectMapping, Lead: ObjectMapping, PersonAccount: ObjectMapping },
);

const SalesforceConfigBase = strictObject(
  'SalesforceConfig',
  { auth: Auth },
  {
    loginUrl: SecureUrl,
    instanceUrl: SecureUrl,
    apiVersion: ApiVersion,
    objects: Objects,
    bulkThreshold: intRange(1, MAX_BULK_THRESHOLD),
    queryChunkSize: intRange(1, 1000),
  },
);
export type SalesforceConfig = t.TypeOf<typeof SalesforceConfigBase>;

/** `instanceUrl` is required for access-token and client-credentials auth (no login host hands it out). */
export const SalesforceConfig = new t.Type<SalesforceConfig, unknown, unknown>(
  'SalesforceConfig',
  (u): u is SalesforceConfig => SalesforceConfigBase.is(u) && !needsInstanceUrl(u),
  (u, c) => {
    const r = SalesforceConfigBase.validate(u, c);
    if (r._tag === 'Left') return r;
    if (needsInstanceUrl(r.right)) {
      return t.failure(
        (r.right as { instanceUrl?: unknown }).instanceUrl,
        [...c, { key: 'instanceUrl', type: SecureUrl, actual: undefined }],
        `instanceUrl is required with auth.type "${r.right.auth.type}" (your My Domain URL, e.g. https://acme.my.salesforce.com)`,
      );
    }
    return t.success(r.right);
  },
  (a) => a,
);

function needsInstanceUrl(c: SalesforceConfig): boolean {
  return (c.auth.type === 'access-token' || c.auth.type === 'client-credentials') && c.instanceUrl === undefined;
}

// ---------------------------------------------------------------------------------------------
// Resolution

export type ObjectKey = 'Contact' | 'Lead' | 'PersonAccount';
export const OBJECT_KEYS: readonly ObjectKey[] = ['Contact', 'Lead', 'PersonAccount'];

/** One mapped object, ready to query and write. */
export interface ResolvedObject {
  readonly key: ObjectKey;
  /** The sObject queried and written (PersonAccount lives on Account). */
  readonly sobject: 'Contact' | 'Lead' | 'Account';
  readonly emailField: 'Email' | 'PersonEmail';
  readonly field: string;
  readonly extraFields: ReadonlyArray<readonly [string, MappedValue]>;
  /** SOQL conditions ANDed after the email IN list. */
  readonly conditions: readonly string[];
}

export interface ResolvedConfig {
  readonly loginUrl: string;
  readonly instanceUrl: string | null;
  readonly apiVersion: string;
  readonly auth: SalesforceAuth;
  readonly objects: readonly ResolvedObject[];
  readonly bulkThreshold: number;
  readonly queryChunkSize: number;
}

const trimSlash = (s: string): string => s.replace(/\/+$/, '');

export function resolveConfig(c: SalesforceConfig): ResolvedConfig {
  const personAccounts = c.objects?.PersonAccount?.enabled ?? false;
  const objects: ResolvedObject[] = [];
  for (const key of OBJECT_KEYS) {
    const m = c.objects?.[key];
    const enabled = m?.enabled ?? key !== 'PersonAccount';
    if (!enabled) continue;
    const extraFields = Object.entries(m?.extraFields ?? {}) as Array<[string, MappedValue]>;
    if (key === 'PersonAccount') {
      objects.push({
        key,
        sobject: 'Account',
        emailField: 'PersonEmail',
        field: m?.field ?? 'PersonHasOptedOutOfEmail',
        extraFields,
        conditions: ['IsPersonAccount = true'],
      });
    } else {
      objects.push({
        key,
        sobject: key,
        emailField: 'Email',
        field: m?.field ?? 'HasOptedOutOfEmail',
        extraFields,
        // Person Accounts are written on Account; their person Contacts are left to that mapping.
        // (Contact.IsPersonAccount only exists where Person Accounts are enabled.)
        conditions: key === 'Lead' ? ['IsConverted = false'] : personAccounts ? ['IsPersonAccount = false'] : [],
      });
    }
  }
  return {
    loginUrl: trimSlash(c.loginUrl ?? DEFAULT_LOGIN_URL),
    instanceUrl: c.instanceUrl ? trimSlash(c.instanceUrl) : null,
    apiVersion: c.apiVersion ?? DEFAULT_API_VERSION,
    auth: c.auth,
    objects,
    bulkThreshold: c.bulkThreshold ?? DEFAULT_BULK_THRESHOLD,
    queryChunkSize: c.queryChunkSize ?? DEFAULT_QUERY_CHUNK_SIZE,
  };
}
