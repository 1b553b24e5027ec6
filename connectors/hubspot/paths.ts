/**
 * Every HubSpot endpoint this connector calls, for each API version (method and body shapes: see README.md).
 * This is the one place that builds paths: nothing else in the connector spells a version.
 *
 * Date versions (`2026-09`, `2026-03`) are HubSpot's 2026 platform (specs: hubspot-*-2026-09.json);
 * `legacy` is the numeric v1-v4 paths (unsupported from 2027-03-30 for v4, September 2027 for v1-v3).
 */

export const API_VERSIONS = ['2026-09', '2026-03', 'legacy'] as const;
export type ApiVersion = (typeof API_VERSIONS)[number];
export const DEFAULT_API_VERSION: ApiVersion = '2026-09';

export interface Paths {
  readonly version: ApiVersion;
  readonly batchRead: string;
  readonly batchUpdate: string;
  readonly search: string;
  readonly batchUnsubscribeAll: string;
  /** Read unsubscribe-all (wide) statuses of up to 100 addresses: `{ inputs: [emails] }` -> `results[].wideStatuses`. */
  readonly batchUnsubscribeAllRead: string;
  /** Read subscription statuses of up to 100 addresses: `{ inputs: [emails] }` -> `results[].statuses`. */
  readonly batchStatusRead: string;
  readonly unsubscribeAll: (email: string) => string;
  readonly batchWrite: string;
  /** Unsubscribe one address from one subscription (v3 shape: `{ emailAddress, subscriptionId, legalBasis... }`). */
  readonly unsubscribe: string;
  readonly definitions: string;
  readonly property: (name: string) => string;
  readonly oauthToken: string;
  /** Date versions: `POST /oauth/{v}/token/introspect` (form). Legacy: `GET /oauth/v1/access-tokens/{token}`. */
  readonly oauthTokenInfo: (token: string) => string;
  /** Documented for legacy private-app tokens only (no date version exists); only `check` uses it. */
  readonly privateAppTokenInfo: string;
}

/** Path segment for an email: percent-encoded, except `@` (legal in a path segment). */
export function encodeEmail(email: string): string {
  return encodeURIComponent(email).replace(/%40/g, '@');
}

export function pathsFor(version: ApiVersion): Paths {
  const prop = (base: string) => (name: string) => `${base}/${encodeURIComponent(name)}`;
  const privateAppTokenInfo = '/oauth/v2/private-apps/get/access-token-info';
  if (version === 'legacy') {
    return {
      version,
      batchRead: '/crm/v3/objects/contacts/batch/read',
      batchUpdate: '/crm/v3/objects/contacts/batch/update',
      search: '/crm/v3/objects/contacts/search',
      batchUnsubscribeAll: '/communication-preferences/v4/statuses/batch/unsubscribe-all',
      batchUnsubscribeAllRead: '/communication-preferences/v4/statuses/batch/unsubscribe-all/read',
      batchStatusRead: '/communication-preferences/v4/statuses/batch/read',
      unsubscribeAll: (email) => `/communication-preferences/v4/statuses/${encodeEmail(email)}/unsubscribe-all`,
      batchWrite: '/communication-preferences/v4/statuses/batch/write',
      unsubscribe: '/communication-preferences/v3/unsubscribe',
      definitions: '/communication-preferences/v4/definitions',
      property: prop('/crm/v3/properties/contacts'),
      oauthToken: '/oauth/v1/token',
      oauthTokenInfo: (token) => `/oauth/v1/access-tokens/${encodeURIComponent(token)}`,
      privateAppTokenInfo,
    };
  }
  const v = version;
  return {
    version,
    batchRead: `/crm/objects/${v}/contacts/batch/read`,
    batchUpdate: `/crm/objects/${v}/contacts/batch/update`,
    search: `/crm/objects/${v}/contacts/search`,
    batchUnsubscribeAll: `/communication-preferences/${v}/statuses/batch/unsubscribe-all`,
    batchUnsubscribeAllRead: `/communication-preferences/${v}/statuses/batch/unsubscribe-all/read`,
    batchStatusRead: `/communication-preferences/${v}/statuses/batch/read`,
    unsubscribeAll: (email) => `/communication-preferences/${v}/statuses/${encodeEmail(email)}/unsubscribe-all`,
    batchWrite: `/communication-preferences/${v}/statuses/batch/write`,
    unsubscribe: `/communication-preferences/${v}/unsubscribe`,
    definitions: `/communication-preferences/${v}/definitions`,
    property: prop(`/crm/properties/${v}/contacts`),
    oauthToken: `/oauth/${v}/token`,
    oauthTokenInfo: () => `/oauth/${v}/token/introspect`,
    privateAppTokenInfo,
  };
}

/** The default version's paths. */
export const PATHS: Paths = pathsFor(DEFAULT_API_VERSION);
