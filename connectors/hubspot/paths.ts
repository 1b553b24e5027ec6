/** Every HubSpot endpoint this connector calls (method and body shapes: see README.md). */

export const PATHS = {
  batchRead: '/crm/v3/objects/contacts/batch/read',
  batchUpdate: '/crm/v3/objects/contacts/batch/update',
  batchUnsubscribeAll: '/communication-preferences/v4/statuses/batch/unsubscribe-all',
  unsubscribeAll: (email: string) => `/communication-preferences/v4/statuses/${encodeEmail(email)}/unsubscribe-all`,
  batchWrite: '/communication-preferences/v4/statuses/batch/write',
  v3Unsubscribe: '/communication-preferences/v3/unsubscribe',
  definitions: '/communication-preferences/v4/definitions',
  property: (name: string) => `/crm/v3/properties/contacts/${encodeURIComponent(name)}`,
  privateAppTokenInfo: '/oauth/v2/private-apps/get/access-token-info',
  oauthTokenInfo: (token: string) => `/oauth/v1/access-tokens/${encodeURIComponent(token)}`,
};

/** Path segment for an email: percent-encoded, except `@` (legal in a path segment). */
export function encodeEmail(email: string): string {
  return encodeURIComponent(email).replace(/%40/g, '@');
}
