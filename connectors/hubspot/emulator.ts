/**
 * HubSpot emulator: CRM contacts batch read/update, search and properties, Communication Preferences and
 * the OAuth token endpoints, on HubSpot's 2026 platform (date-versioned paths, following
 * hubspot-crm-contacts-2026-09.json, hubspot-communication-preferences-2026-09.json, hubspot-oauth-2026-09.json;
 * 2026-03 answers the same shapes) and on the numeric versions (v1-v4, hubspot-*-v3/v4/v1.json), which still
 * work but are LEGACY: every call to a `/v1/`-`/v4/` path of the CRM, Communication Preferences or OAuth APIs
 * is counted in `legacyCalls` (`/__emulator/state`, `legacyCallCount()`), so a test can assert that a default
 * run makes none.
 *
 * Auth: a private app token, OAuth access tokens (refresh grant) and a Service Key (`serviceKey`, Bearer, own
 * scopes, the limits of a private app). `POST /oauth/v2/private-apps/get/access-token-info` answers for the
 * private app token ONLY (a Service Key gets 401 there), as HubSpot documents it; a 403 for missing scopes
 * carries `context.missingScopes` (spec Error shape).
 *
 * Behaviour that matters to a suppression connector:
 * - `hs_email_optout` is read-only through the CRM API (400 VALIDATION_ERROR / READ_ONLY_VALUE); it turns
 *   "true" only through unsubscribe-all (v4 single or batch).
 * - batch/read by email is case-insensitive; missing inputs come back as HTTP 207 with one OBJECT_NOT_FOUND
 *   error whose `context.ids` lists them.
 * - Rate limits: a rolling 10-second window per app (private app 100, OAuth app 110 by default) and a daily
 *   limit; every API response carries the X-HubSpot-RateLimit-* headers; 429 bodies name the policy.
 * - `batchAllowed: false` makes the v4 batch endpoints answer 403 like a portal without Marketing Hub Enterprise:
 *   the batch writes and also the batch status reads (`statuses/batch/read`, `statuses/batch/unsubscribe-all/read`;
 *   the 2026-09 spec names only their scope, `communication_preferences.statuses.batch.read`, not a tier: the
 *   emulator treats them like the batch writes). The 403 names the endpoint's own scope.
 * - CRM search (`POST .../contacts/search`): filterGroups (OR of ANDed filters), at most 5 groups, 6 filters
 *   per group, 18 in all (400 VALIDATION_ERROR beyond), `limit` up to 200, paging with `after` up to 10,000
 *   results; its own limit of 5 requests/s per token (429 policyName SECONDLY, no rate headers), exempt
 *   from the ten-secondly window (the spec's x-hubspot-rate-limit-exemptions). See `search()` for the
 *   operators and how multi-value properties such as `hs_additional_emails` match.
 * - Secondary addresses (`hs_additional_emails`): batch read by email matches primary addresses only. A
 *   subscription write for a secondary address changes that address's status only (the holder's
 *   hs_email_optout follows its primary address) and is counted in `world.hsSecondaryStatusWrites`.
 * - The 2026-09 specs document only 200 for batch operations; partial failures answer 207 with `errors`
 *   as in v3/v4 unless `datedMultiStatus: false` (then 200 with the same body): read `errors` either way.
 */
import { randomBytes, randomUUID } from 'crypto';
import {
  COMMON_DEFAULTS,
  CommonKnobs,
  DailyCounter,
  EmuRequest,
  EmuResponse,
  EmulatorServer,
  Route,
  RollingWindow,
  ServerOptions,
  bearer,
  json,
  parseForm,
  parseJson,
  HsContact,
  splitAdditionalEmails,
  World,
} from '../../src/sdk/emulator';

export interface HubSpotKnobs extends CommonKnobs {
  /** Private app requests per rolling 10 s (100 Free/Starter, 190 Pro/Enterprise). */
  tenSecondLimit: number;
  /** Public OAuth app requests per rolling 10 s. */
  oauthTenSecondLimit: number;
  /** Requests per UTC day (all apps of the portal). */
  dailyLimit: number;
  /** v4 batch endpoints available (Marketing Hub Enterprise + batch scopes). false -> 403. */
  batchAllowed: boolean;
  /** Data-privacy settings on: legalBasis + legalBasisExplanation required on subscription writes. */
  requireLegalBasis: boolean;
  /** Largest `inputs` accepted by the v4 batch endpoints (undocumented by HubSpot). */
  v4BatchMax: number;
  /** OAuth access token lifetime (seconds). */
  accessTokenTtlSec: number;
  /** CRM search requests per second per token (HubSpot: 5). */
  searchPerSecondLimit: number;
  /** CRM search filter limits (HubSpot docs: 5 groups, 6 filters per group, 18 in all). */
  searchMaxFilterGroups: number;
  searchMaxFiltersPerGroup: number;
  searchMaxFilters: number;
  /** Values of one IN / NOT_IN filter (not documented by HubSpot; the emulator assumes 100). */
  searchMaxInValues: number;
  /** Results one search query can page through (HubSpot: 10,000). */
  searchResultCap: number;
  /** Partial failures of date-versioned batch calls answer 207 (true, as v3/v4) or 200 (the 2026-09 specs list only 200). */
  datedMultiStatus: boolean;
}

export const HUBSPOT_DEFAULTS: Omit<HubSpotKnobs, keyof CommonKnobs> = {
  tenSecondLimit: 100,
  oauthTenSecondLimit: 110,
  dailyLimit: 250_000,
  batchAllowed: true,
  requireLegalBasis: false,
  v4BatchMax: 1000,
  accessTokenTtlSec: 1800,
  searchPerSecondLimit: 5,
  searchMaxFilterGroups: 5,
  searchMaxFiltersPerGroup: 6,
  searchMaxFilters: 18,
  searchMaxInValues: 100,
  searchResultCap: 10_000,
  datedMultiStatus: true,
};

/** Date versions the emulator serves (2026-09 Current, 2026-03 Supported). */
export const HUBSPOT_API_VERSIONS = ['2026-09', '2026-03'] as const;

/** A path of the CRM, Communication Preferences or OAuth APIs with a numeric version (v1-v4): legacy. */
export const HUBSPOT_LEGACY_PATH = /^\/(crm|communication-preferences|oauth)\/v[1-4]\//;

export const HUBSPOT_DEFAULT_SCOPES = [
  'crm.objects.contacts.read',
  'crm.objects.contacts.write',
  'crm.schemas.contacts.read',
  'communication_preferences.read_write',
  'communication_preferences.statuses.batch.read',
  'communication_preferences.statuses.batch.write',
];

export interface HubSpotConnection {
  baseUrl: string;
  /** Private app access token (never expires). */
  accessToken: string;
  /** Service Key (Bearer; never expires), the successor of private apps. */
  serviceKey: string;
  serviceKeyScopes: string[];
  /** Date versions served (every numeric-version path still works, counted as legacy). */
  apiVersions: string[];
  portalId: number;
  /** Public OAuth app credentials and a valid refresh token (refresh tokens do not rotate). */
  clientId: string;
  clientSecret: string;
  refreshToken: string;
  scopes: string[];
  /** Subscription type ids of the portal (business unit 0). */
  subscriptionIds: string[];
}

export interface HubSpotServerOptions extends ServerOptions {
  knobs?: Partial<HubSpotKnobs>;
  /** Scopes of the private app token and the OAuth app. */
  scopes?: string[];
  /** Scopes of the Service Key (default: `scopes`). */
  serviceKeyScopes?: string[];
  /** A fixed Service Key to accept (default: a random one per start). */
  serviceKey?: string;
  /** Custom contact properties that exist in the portal (audit fields). */
  customProperties?: string[];
}

interface PropertyDef {
  name: string;
  label: string;
  type: 'string' | 'bool' | 'datetime' | 'number' | 'enumeration';
  fieldType: string;
  readOnlyValue: boolean;
  hubspotDefined: boolean;
}

const BUILTIN_PROPERTIES: PropertyDef[] = [
  { name: 'email', label: 'Email', type: 'string', fieldType: 'text', readOnlyValue: false, hubspotDefined: true },
  // Secondary addresses, `;`-separated (multi-value: search matches each value); set through HubSpot's UI/imports, not this API.
  {
    name: 'hs_additional_emails',
    label: 'Additional email addresses',
    type: 'enumeration',
    fieldType: 'checkbox',
    readOnlyValue: true,
    hubspotDefined: true,
  },
  {
    name: 'firstname',
    label: 'First Name',
    type: 'string',
    fieldType: 'text',
    readOnlyValue: false,
    hubspotDefined: true,
  },
  {
    name: 'lastname',
    label: 'Last Name',
    type: 'string',
    fieldType: 'text',
    readOnlyValue: false,
    hubspotDefined: true,
  },
  {
    name: 'hs_email_optout',
    label: 'Unsubscribed from all email',
    type: 'enumeration',
    fieldType: 'booleancheckbox',
    readOnlyValue: true,
    hubspotDefined: true,
  },
  {
    name: 'hs_object_id',
    label: 'Record ID',
    type: 'number',
    fieldType: 'number',
    readOnlyValue: true,
    hubspotDefined: true,
  },
  {
    name: 'createdate',
    label: 'Create Date',
    type: 'datetime',
    fieldType: 'date',
    readOnlyValue: true,
    hubspotDefined: true,
  },
  {
    name: 'lastmodifieddate',
    label: 'Last Modified Date',
    type: 'datetime',
    fieldType: 'date',
    readOnlyValue: true,
    hubspotDefined: true,
  },
];

export const HUBSPOT_DEFAULT_CUSTOM_PROPERTIES = [
  'cc_optout_date',
  'cc_optout_source',
  'cc_optout_reason',
  'cc_contact_id',
];

const SUBSCRIPTIONS = [
  {
    id: 1001,
    name: 'Marketing Information',
    description: 'Marketing offers and updates.',
    purpose: 'Marketing',
    isDefault: true,
    isInternal: false,
  },
  {
    id: 1002,
    name: 'One to One',
    description: 'One to one emails.',
    purpose: 'Sales',
    isDefault: true,
    isInternal: true,
  },
  {
    id: 1003,
    name: 'Customer Service Communication',
    description: 'Feedback requests and service updates.',
    purpose: 'Customer Service',
    isDefault: false,
    isInternal: false,
  },
];
const LEGAL_BASES = [
  'CONSENT_WITH_NOTICE',
  'LEGITIMATE_INTEREST_CLIENT',
  'LEGITIMATE_INTEREST_OTHER',
  'LEGITIMATE_INTEREST_PQL',
  'NON_GDPR',
  'PERFORMANCE_OF_CONTRACT',
  'PROCESS_AND_STORE',
];
const PORTAL_ID = 4242424;
const PRIVATE_APP_ID = 100001;
const OAUTH_APP_ID = 200002;
const SERVICE_KEY_ID = 300003;
const DEFINITIONS_CREATED = '2020-01-01T00:00:00.000Z';

interface Principal {
  kind: 'private' | 'oauth' | 'service-key';
  token: string;
  scopes: string[];
}

/** What the gate needs to know about a route: the scopes (any one set suffices), batch-only, search. */
interface RouteMeta {
  scopes?: string[][];
  batch?: boolean;
  search?: boolean;
}

const SEARCH_OPERATORS = [
  'BETWEEN',
  'CONTAINS_TOKEN',
  'EQ',
  'GT',
  'GTE',
  'HAS_PROPERTY',
  'IN',
  'LT',
  'LTE',
  'NEQ',
  'NOT_CONTAINS_TOKEN',
  'NOT_HAS_PROPERTY',
  'NOT_IN',
] as const;
type SearchOperator = (typeof SEARCH_OPERATORS)[number];
interface SearchFilter {
  propertyName: string;
  operator: SearchOperator;
  value?: string;
  highValue?: string;
  values?: string[];
}
const DEFAULT_SEARCH_PROPERTIES = ['createdate', 'email', 'firstname', 'hs_object_id', 'lastmodifieddate', 'lastname'];

const isoMs = (ms: number): string => new Date(ms).toISOString();
const normEmail = (s: string): string => s.trim().toLowerCase();
/** Strict: surrounding whitespace makes an address invalid (clients must normalise before calling). */
const looksLikeEmail = (s: string): boolean => /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(s);
/** Lookup key of an idProperty=email input: case-insensitive, but whitespace is not trimmed for the caller. */
const emailKey = (s: string): string | null => (s === s.trim() ? s.toLowerCase() : null);

const CONTACTS_READ = [['crm.objects.contacts.read']];
const CONTACTS_WRITE = [['crm.objects.contacts.write']];
const SCHEMAS_READ = [['crm.schemas.contacts.read'], ['crm.objects.contacts.read']];
const CP_READ = [['communication_preferences.read_write'], ['communication_preferences.read']];
const CP_WRITE = [['communication_preferences.read_write'], ['communication_preferences.write']];
const CP_BATCH_READ = [['communication_preferences.statuses.batch.read']];
const CP_BATCH_WRITE = [['communication_preferences.statuses.batch.write']];

export class HubSpotEmulator extends EmulatorServer<HubSpotKnobs> {
  readonly privateToken: string;
  readonly serviceKey: string;
  readonly serviceKeyScopes: string[];
  readonly clientId: string;
  readonly clientSecret: string;
  readonly refreshToken: string;
  readonly scopes: string[];
  private readonly properties = new Map<string, PropertyDef>();
  private readonly oauthTokens = new Map<string, { expiresMs: number }>();
  private readonly expiredTokens = new Map<string, number>();
  private readonly privateWindow: RollingWindow;
  private readonly oauthWindow: RollingWindow;
  private readonly serviceWindow: RollingWindow;
  /** CRM search: its own per-second window per token. */
  private readonly searchWindows = new Map<string, RollingWindow>();
  private readonly routeMeta = new Map<string, RouteMeta>();
  /** Calls to numeric-version paths (legacy), per endpoint label and per path as called. */
  private readonly legacy = { count: 0, byEndpoint: new Map<string, number>(), paths: new Map<string, number>() };
  readonly daily = new DailyCounter();
  /** Property history written through the API: contact id -> property -> entries (newest first). */
  private readonly history = new Map<
    string,
    Map<string, Array<{ value: string; timestamp: string; sourceType: string }>>
  >();

  constructor(world: World, opts: HubSpotServerOptions = {}) {
    super('hubspot', world, { ...COMMON_DEFAULTS, ...HUBSPOT_DEFAULTS, ...(opts.knobs ?? {}) }, opts);
    this.privateToken = `pat-na1-${randomUUID()}`;
    this.serviceKey = opts.serviceKey ?? `sk-na1-${randomUUID()}`;
    this.clientId = randomUUID();
    this.clientSecret = randomUUID();
    this.refreshToken = `na1-${randomBytes(4).toString('hex')}-${randomUUID()}`;
    this.scopes = opts.scopes ?? HUBSPOT_DEFAULT_SCOPES;
    this.serviceKeyScopes = opts.serviceKeyScopes ?? this.scopes;
    for (const p of BUILTIN_PROPERTIES) this.properties.set(p.name, p);
    for (const name of opts.customProperties ?? HUBSPOT_DEFAULT_CUSTOM_PROPERTIES) {
      this.properties.set(name, {
        name,
        label: name,
        type: name.endsWith('_date') ? 'datetime' : 'string',
        fieldType: name.endsWith('_date') ? 'date' : 'text',
        readOnlyValue: false,
        hubspotDefined: false,
      });
    }
    this.privateWindow = new RollingWindow(10_000, this.knobs.tenSecondLimit);
    this.oauthWindow = new RollingWindow(10_000, this.knobs.oauthTenSecondLimit);
    this.serviceWindow = new RollingWindow(10_000, this.knobs.tenSecondLimit);

    const dated = HUBSPOT_API_VERSIONS;
    // CRM objects: v3 (legacy) and every date version, same handlers.
    for (const base of ['/crm/v3/objects/contacts', ...dated.map((v) => `/crm/objects/${v}/contacts`)]) {
      this.reg('POST', `${base}/batch/read`, (req) => this.batchRead(req), { scopes: CONTACTS_READ });
      this.reg('POST', `${base}/batch/update`, (req) => this.batchUpdate(req), { scopes: CONTACTS_WRITE });
      this.reg('POST', `${base}/search`, (req) => this.search(req), { scopes: CONTACTS_READ, search: true });
    }
    for (const base of ['/crm/v3/properties/contacts', ...dated.map((v) => `/crm/properties/${v}/contacts`)]) {
      this.reg(
        'GET',
        base,
        () => json(200, { results: [...this.properties.values()].map((p) => this.propertyJson(p)) }),
        { scopes: SCHEMAS_READ },
      );
      this.reg('GET', `${base}/:propertyName`, (req) => this.getProperty(req), { scopes: SCHEMAS_READ });
    }
    // Communication Preferences: v4 (legacy) and the date versions (same operations and shapes as v4) ...
    for (const cp of ['/communication-preferences/v4', ...dated.map((v) => `/communication-preferences/${v}`)]) {
      this.reg('GET', `${cp}/definitions`, (req) => this.v4Definitions(req), { scopes: CP_READ });
      // batch routes before the {subscriberIdString} ones
      this.reg('POST', `${cp}/statuses/batch/unsubscribe-all/read`, (req) => this.v4BatchUnsubAllRead(req), {
        scopes: CP_BATCH_READ,
        batch: true,
      });
      this.reg('POST', `${cp}/statuses/batch/unsubscribe-all`, (req) => this.v4BatchUnsubAll(req), {
        scopes: CP_BATCH_WRITE,
        batch: true,
      });
      this.reg('POST', `${cp}/statuses/batch/read`, (req) => this.v4BatchRead(req), {
        scopes: CP_BATCH_READ,
        batch: true,
      });
      this.reg('POST', `${cp}/statuses/batch/write`, (req) => this.v4BatchWrite(req), {
        scopes: CP_BATCH_WRITE,
        batch: true,
      });
      this.reg('GET', `${cp}/statuses/:subscriberIdString/unsubscribe-all`, (req) => this.v4GetUnsubAll(req), {
        scopes: CP_READ,
      });
      this.reg('POST', `${cp}/statuses/:subscriberIdString/unsubscribe-all`, (req) => this.v4UnsubAll(req), {
        scopes: CP_WRITE,
      });
      this.reg('GET', `${cp}/statuses/:subscriberIdString`, (req) => this.v4GetStatuses(req), { scopes: CP_READ });
      this.reg('POST', `${cp}/statuses/:subscriberIdString`, (req) => this.v4SetStatus(req), { scopes: CP_WRITE });
    }
    // ... plus v3's single-subscription operations, which the date versions keep (v3 shapes).
    this.reg(
      'GET',
      '/communication-preferences/v3/definitions',
      () => json(200, { subscriptionDefinitions: SUBSCRIPTIONS.map((s) => this.definitionJson(s)) }),
      { scopes: CP_READ },
    );
    for (const cp of ['/communication-preferences/v3', ...dated.map((v) => `/communication-preferences/${v}`)]) {
      this.reg('GET', `${cp}/status/email/:emailAddress`, (req) => this.v3Status(req), { scopes: CP_READ });
      this.reg('POST', `${cp}/unsubscribe`, (req) => this.v3Unsubscribe(req), { scopes: CP_WRITE });
    }
    // OAuth: token (refresh grant) on v1 (legacy) and the date versions; introspection on the date versions.
    for (const o of ['/oauth/v1', ...dated.map((v) => `/oauth/${v}`)])
      this.reg('POST', `${o}/token`, (req) => this.oauthToken(req), {}, 'auth');
    for (const v of dated) this.reg('POST', `/oauth/${v}/token/introspect`, (req) => this.introspect(req), {}, 'auth');
    this.reg('GET', '/oauth/v1/access-tokens/:token', (req) => this.accessTokenInfo(req), {}, 'auth');
    this.reg('POST', '/oauth/v2/private-apps/get/access-token-info', (req) => this.privateTokenInfo(req), {}, 'auth');
  }

  /** Register a route; its label is the template with `{param}` placeholders, e.g. "GET /crm/v3/properties/contacts/{propertyName}". */
  private reg(
    method: string,
    template: string,
    handler: (req: EmuRequest) => EmuResponse,
    meta: RouteMeta = {},
    kind: 'api' | 'auth' = 'api',
  ): void {
    const name = `${method} ${template.replace(/:(\w+)/g, '{$1}')}`;
    this.router.add(method, template, handler, kind, name);
    this.routeMeta.set(name, meta);
  }

  /** Calls made to numeric-version (legacy) paths since the start or the last reset-counts. */
  legacyCallCount(): number {
    return this.legacy.count;
  }

  legacyCalls(): { count: number; byEndpoint: Record<string, number>; paths: string[] } {
    return {
      count: this.legacy.count,
      byEndpoint: Object.fromEntries(this.legacy.byEndpoint),
      paths: [...this.legacy.paths.keys()],
    };
  }

  protected override onResetCounts(): void {
    this.legacy.count = 0;
    this.legacy.byEndpoint.clear();
    this.legacy.paths.clear();
  }

  override setKnobs(patch: Record<string, unknown>): string[] {
    if (patch.fail5xxMode !== undefined && patch.fail5xxMode !== 'before' && patch.fail5xxMode !== 'after') {
      return ['knob "fail5xxMode" must be "before" or "after"'];
    }
    const problems = super.setKnobs(patch);
    this.privateWindow.setMax(this.knobs.tenSecondLimit);
    this.oauthWindow.setMax(this.knobs.oauthTenSecondLimit);
    this.serviceWindow.setMax(this.knobs.tenSecondLimit);
    for (const w of this.searchWindows.values()) w.setMax(this.knobs.searchPerSecondLimit);
    return problems;
  }

  setDailyUsed(n: number): void {
    this.daily.set(this.world.now(), n);
  }

  /** OAuth access tokens expire (private app tokens do not: nothing could renew them). */
  expireTokens(): void {
    const now = this.world.now();
    for (const t of this.oauthTokens.keys()) this.expiredTokens.set(t, now);
    this.oauthTokens.clear();
  }

  connection(): HubSpotConnection {
    return {
      baseUrl: this.origin,
      accessToken: this.privateToken,
      serviceKey: this.serviceKey,
      serviceKeyScopes: [...this.serviceKeyScopes],
      apiVersions: [...HUBSPOT_API_VERSIONS],
      portalId: PORTAL_ID,
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      refreshToken: this.refreshToken,
      scopes: [...this.scopes],
      subscriptionIds: SUBSCRIPTIONS.map((s) => String(s.id)),
    };
  }

  protected vendorState(summary: boolean): Record<string, unknown> {
    const state = this.world.hubspotState();
    return {
      hubspot: summary
        ? {
            contacts: state.contacts.length,
            suppressed: state.contacts.filter((c) => c.hs_email_optout === 'true').length,
            secondaryAddresses: state.secondaryAddresses.length,
            secondaryUnsubscribed: state.secondaryAddresses.filter((a) => a.unsubscribed).length,
            dailyUsed: this.daily.used(this.world.now()),
          }
        : { ...state, dailyUsed: this.daily.used(this.world.now()) },
      legacyCalls: this.legacyCalls(),
    };
  }

  // ------------------------------------------------------------------------------------------ errors

  private err(status: number, category: string, message: string, extra: Record<string, unknown> = {}): EmuResponse {
    return json(status, { status: 'error', message, correlationId: randomUUID(), category, ...extra });
  }

  protected errorResponse(
    kind: 'not-found' | 'method' | 'bad-request' | 'server' | 'storm',
    status: number,
    message: string,
  ): EmuResponse {
    switch (kind) {
      case 'not-found':
        return this.err(404, 'OBJECT_NOT_FOUND', message);
      case 'method':
        return this.err(405, 'METHOD_NOT_ALLOWED', message);
      case 'bad-request':
        return this.err(400, 'VALIDATION_ERROR', `Invalid input JSON: ${message}`);
      case 'storm':
        return this.rateLimited('TEN_SECONDLY_ROLLING', null);
      case 'server':
        return this.err(status, status === 503 ? 'SERVICE_UNAVAILABLE' : 'INTERNAL_ERROR', message);
    }
  }

  private rateLimited(policy: 'TEN_SECONDLY_ROLLING' | 'DAILY' | 'SECONDLY', p: Principal | null): EmuResponse {
    const app = p?.kind === 'oauth' ? OAUTH_APP_ID : p?.kind === 'service-key' ? SERVICE_KEY_ID : PRIVATE_APP_ID;
    const who = p?.kind === 'oauth' ? 'oauth-app' : p?.kind === 'service-key' ? 'service-key' : 'private-app';
    return json(429, {
      status: 'error',
      message:
        policy === 'DAILY'
          ? 'You have reached your daily limit.'
          : policy === 'SECONDLY'
            ? 'You have reached your secondly limit.'
            : 'You have reached your ten_secondly_rolling limit.',
      errorType: 'RATE_LIMIT',
      correlationId: randomUUID(),
      policyName: policy,
      groupName: policy === 'SECONDLY' ? `publicapi:crm-search:${who}:${app}` : `publicapi:${who}:${app}`,
    });
  }

  private windowFor(p: Principal): RollingWindow {
    return p.kind === 'oauth' ? this.oauthWindow : p.kind === 'service-key' ? this.serviceWindow : this.privateWindow;
  }

  private searchWindow(token: string): RollingWindow {
    let w = this.searchWindows.get(token);
    if (!w) {
      w = new RollingWindow(1000, this.knobs.searchPerSecondLimit);
      this.searchWindows.set(token, w);
    }
    return w;
  }

  /** The scopes of the cheapest scope set not granted, or null when one set is granted in full. */
  private static missingScopes(needs: string[][], have: readonly string[]): string[] | null {
    let best: string[] | null = null;
    for (const set of needs) {
      const miss = set.filter((x) => !have.includes(x));
      if (miss.length === 0) return null;
      if (!best || miss.length < best.length) best = miss;
    }
    return best;
  }

  // ------------------------------------------------------------------------------------------ gate

  private principal(token: string): Principal | { expiredAgoMs: number } | null {
    if (token === this.privateToken) return { kind: 'private', token, scopes: this.scopes };
    if (token === this.serviceKey) return { kind: 'service-key', token, scopes: this.serviceKeyScopes };
    const t = this.oauthTokens.get(token);
    const now = this.world.now();
    if (t) {
      if (t.expiresMs > now) return { kind: 'oauth', token, scopes: this.scopes };
      this.oauthTokens.delete(token);
      this.expiredTokens.set(token, t.expiresMs);
    }
    const exp = this.expiredTokens.get(token);
    if (exp !== undefined) return { expiredAgoMs: now - exp };
    return null;
  }

  protected gate(req: EmuRequest, route: Route): EmuResponse | undefined {
    if (route.kind === 'auth') return undefined;
    const token = bearer(req);
    if (!token) {
      return this.err(
        401,
        'INVALID_AUTHENTICATION',
        'Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview',
      );
    }
    const p = this.principal(token);
    if (p === null) return this.err(401, 'INVALID_AUTHENTICATION', 'Authentication credentials not found or invalid.');
    if ('expiredAgoMs' in p) {
      return this.err(
        401,
        'EXPIRED_AUTHENTICATION',
        `The OAuth token used to make this call expired ${Math.max(0, Math.round(p.expiredAgoMs / 60_000))} minute(s) ago.`,
      );
    }
    req.principal = p;
    const meta = this.routeMeta.get(route.name) ?? {};
    const now = this.world.now();
    if (this.daily.used(now) >= this.knobs.dailyLimit) return this.rateLimited('DAILY', p);
    // Rolling windows run on wall-clock time (a frozen test clock must not freeze them). Search is exempt
    // from the ten-secondly window and has its own per-second one.
    if (meta.search) {
      if (!this.searchWindow(token).tryTake(Date.now())) return this.rateLimited('SECONDLY', p);
    } else if (!this.windowFor(p).tryTake(Date.now())) return this.rateLimited('TEN_SECONDLY_ROLLING', p);
    this.daily.add(now);
    if (meta.batch && !this.knobs.batchAllowed) {
      return this.err(
        403,
        'MISSING_SCOPES',
        "This app hasn't been granted all required scopes to make this call. Batch subscription status endpoints require Marketing Hub Enterprise.",
        {
          errors: [
            {
              message: 'One or more of the following scopes are required.',
              context: {
                requiredGranularScopes: meta.scopes?.[0] ?? ['communication_preferences.statuses.batch.write'],
              },
            },
          ],
          links: { 'scopes-docs': 'https://developers.hubspot.com/scopes' },
        },
      );
    }
    const needs = meta.scopes;
    const missing = needs ? HubSpotEmulator.missingScopes(needs, p.scopes) : null;
    if (needs && missing) {
      return this.err(
        403,
        'MISSING_SCOPES',
        "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        {
          context: { missingScopes: missing },
          errors: [
            {
              message: 'One or more of the following scopes are required.',
              context: { missingScopes: missing, requiredGranularScopes: needs[0] },
            },
          ],
          links: { 'scopes-docs': 'https://developers.hubspot.com/scopes' },
        },
      );
    }
    return undefined;
  }

  protected override decorate(req: EmuRequest, res: EmuResponse, route: Route | null): void {
    if (HUBSPOT_LEGACY_PATH.test(req.path)) {
      const label = route?.name ?? `${req.method} (unmatched)`;
      this.legacy.count++;
      this.legacy.byEndpoint.set(label, (this.legacy.byEndpoint.get(label) ?? 0) + 1);
      const key = `${req.method} ${req.path}`;
      if (this.legacy.paths.has(key) || this.legacy.paths.size < 500)
        this.legacy.paths.set(key, (this.legacy.paths.get(key) ?? 0) + 1);
    }
    const p = req.principal as Principal | undefined;
    if (!route || route.kind !== 'api') return;
    // Search sends no rate-limit headers (API-NOTES).
    if (this.routeMeta.get(route.name)?.search) return;
    const now = this.world.now();
    const win = p ? this.windowFor(p) : this.privateWindow;
    res.headers = {
      ...(res.headers ?? {}),
      'X-HubSpot-RateLimit-Max': String(win.max),
      'X-HubSpot-RateLimit-Remaining': String(win.remaining(Date.now())),
      'X-HubSpot-RateLimit-Interval-Milliseconds': '10000',
      'X-HubSpot-RateLimit-Daily': String(this.knobs.dailyLimit),
      'X-HubSpot-RateLimit-Daily-Remaining': String(Math.max(0, this.knobs.dailyLimit - this.daily.used(now))),
    };
    if (res.status === 429) res.headers['Retry-After'] = String(Math.max(1, Math.ceil(win.waitMs(Date.now()) / 1000)));
  }

  // ------------------------------------------------------------------------------------------ CRM

  private propertyJson(p: PropertyDef): Record<string, unknown> {
    return {
      name: p.name,
      label: p.label,
      type: p.type,
      fieldType: p.fieldType,
      description: '',
      groupName: p.hubspotDefined ? 'contactinformation' : 'cc_optout',
      options:
        p.name === 'hs_email_optout'
          ? [
              { label: 'Yes', value: 'true', displayOrder: 0, hidden: false },
              { label: 'No', value: 'false', displayOrder: 1, hidden: false },
            ]
          : [],
      displayOrder: -1,
      calculated: false,
      externalOptions: false,
      hasUniqueValue: false,
      hidden: false,
      hubspotDefined: p.hubspotDefined,
      modificationMetadata: {
        archivable: !p.hubspotDefined,
        readOnlyDefinition: p.hubspotDefined,
        readOnlyValue: p.readOnlyValue,
      },
      formField: !p.readOnlyValue,
      createdAt: DEFINITIONS_CREATED,
      updatedAt: DEFINITIONS_CREATED,
      archived: false,
    };
  }

  private getProperty(req: EmuRequest): EmuResponse {
    const p = this.properties.get(req.params.propertyName);
    if (!p)
      return this.err(
        404,
        'OBJECT_NOT_FOUND',
        `Unable to find property ${req.params.propertyName} for object type 0-1`,
      );
    return json(200, this.propertyJson(p));
  }

  private propValue(h: HsContact, name: string): string | null {
    if (name === 'hs_object_id') return h.id;
    if (name === 'createdate') return isoMs(h.createdMs);
    if (name === 'lastmodifieddate') return isoMs(h.updatedMs);
    const v = h.props[name];
    return v === undefined ? null : v;
  }

  private objectJson(h: HsContact, props: readonly string[], withHistory: readonly string[]): Record<string, unknown> {
    const properties: Record<string, string | null> = {};
    for (const name of new Set([...props, 'createdate', 'hs_object_id', 'lastmodifieddate'])) {
      if (this.properties.has(name)) properties[name] = this.propValue(h, name);
    }
    const o: Record<string, unknown> = {
      id: h.id,
      properties,
      createdAt: isoMs(h.createdMs),
      updatedAt: isoMs(h.updatedMs),
      archived: false,
    };
    if (withHistory.length) {
      const hist: Record<string, unknown[]> = {};
      for (const name of withHistory) {
        if (!this.properties.has(name)) continue;
        const written = this.history.get(h.id)?.get(name);
        const v = this.propValue(h, name);
        hist[name] = written
          ? [...written]
          : v === null
            ? []
            : [{ value: v, timestamp: isoMs(h.createdMs), sourceType: 'IMPORT' }];
      }
      o.propertiesWithHistory = hist;
    }
    return o;
  }

  /** 207 for a partial failure; 200 on date-versioned paths when the datedMultiStatus knob is off. */
  private partialStatus(req: EmuRequest): number {
    return !this.knobs.datedMultiStatus && /^\/[a-z-]+\/(?:[a-z]+\/)?\d{4}-\d{2}\//.test(req.path) ? 200 : 207;
  }

  private batchEnvelope(req: EmuRequest, started: number, results: unknown[], errors: unknown[]): EmuResponse {
    const body: Record<string, unknown> = {
      status: 'COMPLETE',
      results,
      startedAt: isoMs(started),
      completedAt: isoMs(this.world.now()),
    };
    if (errors.length) {
      body.numErrors = errors.length;
      body.errors = errors;
    }
    return json(errors.length ? this.partialStatus(req) : 200, body);
  }

  private batchRead(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as Record<string, unknown>;
    if (!b || typeof b !== 'object' || Array.isArray(b))
      return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: expected an object');
    const missingAttrs = ['inputs', 'properties', 'propertiesWithHistory'].filter((k) => !Array.isArray(b[k]));
    if (missingAttrs.length) {
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Invalid input JSON on line 1, column 1: Cannot build BatchReadInputSimplePublicObjectId, some of required attributes are not set [${missingAttrs.join(', ')}]`,
      );
    }
    const inputs = b.inputs as unknown[];
    if (inputs.length > 100)
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Batch input limit exceeded: ${inputs.length} inputs given, at most 100 allowed.`,
      );
    const idProperty = typeof b.idProperty === 'string' ? b.idProperty : null;
    if (idProperty !== null && idProperty !== 'email' && idProperty !== 'hs_object_id') {
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Property ${idProperty} is not a unique identifier property for object type 0-1`,
      );
    }
    const archived = req.query.get('archived') === 'true';
    const props = (b.properties as unknown[]).filter((x): x is string => typeof x === 'string');
    const hist = (b.propertiesWithHistory as unknown[]).filter((x): x is string => typeof x === 'string');
    const results: unknown[] = [];
    const seen = new Set<string>();
    const missing: string[] = [];
    for (const inp of inputs) {
      const id = inp && typeof inp === 'object' ? (inp as { id?: unknown }).id : undefined;
      if (typeof id !== 'string' && typeof id !== 'number')
        return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: every input needs an "id" string');
      const key = String(id);
      const ek = emailKey(key);
      const h = archived
        ? undefined
        : idProperty === 'email'
          ? ek === null
            ? undefined
            : this.world.hsByNorm.get(ek)
          : this.world.hsById.get(key);
      if (!h) {
        missing.push(key);
        continue;
      }
      if (seen.has(h.id)) continue;
      seen.add(h.id);
      results.push(this.objectJson(h, props, hist));
    }
    const errors = missing.length
      ? [
          {
            status: 'error',
            category: 'OBJECT_NOT_FOUND',
            message: 'Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.',
            context: { ids: missing },
            errors: [],
            links: {},
          },
        ]
      : [];
    return this.batchEnvelope(req, started, results, errors);
  }

  private batchUpdate(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as { inputs?: unknown };
    if (!b || !Array.isArray(b.inputs))
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Invalid input JSON: Cannot build BatchInputSimplePublicObjectBatchInput, some of required attributes are not set [inputs]',
      );
    const inputs = b.inputs as Array<{ id?: unknown; idProperty?: unknown; properties?: unknown }>;
    if (inputs.length > 100)
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Batch input limit exceeded: ${inputs.length} inputs given, at most 100 allowed.`,
      );
    // Validate every property first: one bad property rejects the whole batch.
    const invalid: Array<{ isValid: false; message: string; error: string; name: string }> = [];
    const ids: string[] = [];
    for (const inp of inputs) {
      if (
        !inp ||
        typeof inp !== 'object' ||
        (typeof inp.id !== 'string' && typeof inp.id !== 'number') ||
        !inp.properties ||
        typeof inp.properties !== 'object'
      ) {
        return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: every input needs "id" and "properties"');
      }
      ids.push(String(inp.id));
      for (const name of Object.keys(inp.properties as object)) {
        const def = this.properties.get(name);
        if (!def)
          invalid.push({
            isValid: false,
            message: `Property "${name}" does not exist`,
            error: 'PROPERTY_DOESNT_EXIST',
            name,
          });
        else if (def.readOnlyValue)
          invalid.push({
            isValid: false,
            message: `Property "${name}" is a read only property; its value cannot be set.`,
            error: 'READ_ONLY_VALUE',
            name,
          });
      }
    }
    if (invalid.length) {
      return this.err(400, 'VALIDATION_ERROR', `Property values were not valid: ${JSON.stringify(invalid)}`, {
        errors: invalid.map((i) => ({ message: i.message, code: i.error, context: { propertyName: [i.name] } })),
      });
    }
    const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
    if (dupes.length)
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Duplicate IDs found in batch input: [${[...new Set(dupes)].join(', ')}]. IDs must be unique`,
      );
    const results: unknown[] = [];
    const missing: string[] = [];
    const now = this.world.now();
    for (const inp of inputs) {
      const key = String(inp.id);
      const ek = emailKey(key);
      const h =
        inp.idProperty === 'email'
          ? ek === null
            ? undefined
            : this.world.hsByNorm.get(ek)
          : this.world.hsById.get(key);
      if (!h) {
        missing.push(key);
        continue;
      }
      const props = inp.properties as Record<string, unknown>;
      for (const [name, v] of Object.entries(props)) {
        const value = v === null || v === undefined ? '' : String(v);
        h.props[name] = value === '' ? null : value;
        let ph = this.history.get(h.id);
        if (!ph) {
          ph = new Map();
          this.history.set(h.id, ph);
        }
        const list = ph.get(name) ?? [];
        list.unshift({ value, timestamp: isoMs(now), sourceType: 'INTEGRATION' });
        ph.set(name, list);
      }
      if (Object.prototype.hasOwnProperty.call(props, 'email')) this.reindexEmail(h);
      h.updatedMs = now;
      this.world.countHsWrite(h.id);
      results.push(this.objectJson(h, Object.keys(props), []));
    }
    const errors = missing.length
      ? [
          {
            status: 'error',
            category: 'OBJECT_NOT_FOUND',
            message: 'Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.',
            context: { ids: missing },
            errors: [],
            links: {},
          },
        ]
      : [];
    return this.batchEnvelope(req, started, results, errors);
  }

  // ------------------------------------------------------------------------------------------ search

  private searchError(message: string, code: string, field: string): EmuResponse {
    return this.err(400, 'VALIDATION_ERROR', message, { errors: [{ message, code, in: field }], links: {} });
  }

  /**
   * `POST .../contacts/search` (PublicObjectSearchRequest). filterGroups are ORed, the filters of a group
   * ANDed; no filterGroups = every contact. Archived contacts are never found. Results are sorted by
   * `sorts` (strings "prop" / "-prop" or {propertyName, direction}), else by record id; `after` is the
   * offset cursor this emulator hands out in `paging.next.after`.
   *
   * Matching (assumptions where HubSpot's docs are silent, stated so a connector does not lean on more):
   * - String comparisons ignore case; surrounding whitespace of a FILTER value is not trimmed (clients
   *   normalise, as for batch read); stored values are trimmed.
   * - A multi-value property (fieldType "checkbox", here `hs_additional_emails`, `;`-separated) is split
   *   into its values (each trimmed, lower-cased, empties dropped) and matched value by value: EQ matches
   *   when ANY value equals the filter value, IN when any value is one of `values`; NEQ / NOT_IN match
   *   when NO value does (a contact without the property matches them too). `email` is single-valued and
   *   matches the PRIMARY address only: secondary addresses are found through hs_additional_emails.
   * - CONTAINS_TOKEN / NOT_CONTAINS_TOKEN: the value (optionally with `*` wildcards) against each whole
   *   value and each alphanumeric token of it. HAS_PROPERTY / NOT_HAS_PROPERTY: set and non-empty or not.
   * - GT/GTE/LT/LTE/BETWEEN compare numbers (hs_object_id) or dates (createdate, lastmodifieddate: ISO or
   *   epoch ms).
   * - `query` (free text): a contact matches when a token of email, firstname, lastname or
   *   hs_additional_emails starts with it (case-insensitive).
   * Limits: `searchMaxFilterGroups` (5), `searchMaxFiltersPerGroup` (6), `searchMaxFilters` (18),
   * `searchMaxInValues` (100, assumed), `limit` 0-200 (default 10), at most `searchResultCap` (10,000)
   * results per query: a cursor at or past it is a 400.
   */
  private search(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as Record<string, unknown>;
    if (!b || typeof b !== 'object' || Array.isArray(b))
      return this.searchError(
        'Invalid input JSON: expected a PublicObjectSearchRequest object',
        'INVALID_JSON',
        'body',
      );
    const k = this.knobs;
    const fgs = b.filterGroups === undefined ? [] : b.filterGroups;
    if (!Array.isArray(fgs))
      return this.searchError('filterGroups must be an array', 'INVALID_FILTER_GROUPS', 'filterGroups');
    if (fgs.length > k.searchMaxFilterGroups) {
      return this.searchError(
        `Too many filter groups: ${fgs.length}. At most ${k.searchMaxFilterGroups} filterGroups are allowed`,
        'TOO_MANY_FILTER_GROUPS',
        'filterGroups',
      );
    }
    const groups: SearchFilter[][] = [];
    let filterCount = 0;
    for (const [gi, g] of fgs.entries()) {
      const filters = g && typeof g === 'object' ? (g as { filters?: unknown }).filters : undefined;
      if (!Array.isArray(filters))
        return this.searchError(
          `filterGroups[${gi}].filters must be an array`,
          'INVALID_FILTER_GROUPS',
          `filterGroups[${gi}]`,
        );
      if (filters.length > k.searchMaxFiltersPerGroup) {
        return this.searchError(
          `Too many filters in filterGroups[${gi}]: ${filters.length}. At most ${k.searchMaxFiltersPerGroup} filters per group are allowed`,
          'TOO_MANY_FILTERS',
          `filterGroups[${gi}].filters`,
        );
      }
      filterCount += filters.length;
      const group: SearchFilter[] = [];
      for (const [fi, f] of filters.entries()) {
        const at = `filterGroups[${gi}].filters[${fi}]`;
        const parsed = this.parseFilter(f, at);
        if (!('operator' in parsed)) return parsed;
        group.push(parsed);
      }
      groups.push(group);
    }
    if (filterCount > k.searchMaxFilters) {
      return this.searchError(
        `Too many filters: ${filterCount} in all. At most ${k.searchMaxFilters} filters are allowed across all filterGroups`,
        'TOO_MANY_FILTERS',
        'filterGroups',
      );
    }
    const limit = b.limit === undefined ? 10 : b.limit;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > 200) {
      return this.searchError(
        `limit must be an integer from 0 to 200 (got ${JSON.stringify(limit)})`,
        'INVALID_LIMIT',
        'limit',
      );
    }
    const afterRaw = b.after === undefined || b.after === null || b.after === '' ? '0' : b.after;
    if ((typeof afterRaw !== 'string' && typeof afterRaw !== 'number') || !/^\d+$/.test(String(afterRaw))) {
      return this.searchError(
        `after must be a paging cursor from paging.next.after (got ${JSON.stringify(afterRaw)})`,
        'INVALID_AFTER',
        'after',
      );
    }
    const after = Number(afterRaw);
    if (after >= k.searchResultCap) {
      return this.searchError(
        `Search results are limited to ${k.searchResultCap} per query: cannot page past ${k.searchResultCap} (after=${after})`,
        'RESULT_LIMIT_EXCEEDED',
        'after',
      );
    }
    const props =
      b.properties === undefined || (Array.isArray(b.properties) && b.properties.length === 0)
        ? DEFAULT_SEARCH_PROPERTIES
        : b.properties;
    if (!Array.isArray(props) || props.some((x) => typeof x !== 'string'))
      return this.searchError('properties must be an array of property names', 'INVALID_PROPERTIES', 'properties');
    const sorts = this.parseSorts(b.sorts);
    if (!Array.isArray(sorts)) return sorts;
    if (b.query !== undefined && (typeof b.query !== 'string' || b.query.length > 3000))
      return this.searchError('query must be a string of at most 3000 characters', 'INVALID_QUERY', 'query');
    const query = typeof b.query === 'string' ? b.query.trim().toLowerCase() : '';

    const matches = this.world.data.hubspot.filter(
      (h) =>
        (groups.length === 0 || groups.some((g) => g.every((f) => this.filterMatches(h, f)))) &&
        (query === '' || this.queryMatches(h, query)),
    );
    const numId = (h: HsContact): number => Number(h.id);
    matches.sort((x, y) => {
      for (const s of sorts) {
        const a = this.sortKey(x, s.propertyName);
        const c = this.sortKey(y, s.propertyName);
        if (a < c) return s.desc ? 1 : -1;
        if (a > c) return s.desc ? -1 : 1;
      }
      return numId(x) - numId(y);
    });
    const end = Math.min(after + limit, matches.length, k.searchResultCap);
    const page = matches.slice(after, Math.max(after, end));
    const body: Record<string, unknown> = {
      total: matches.length,
      results: page.map((h) => this.objectJson(h, props as string[], [])),
    };
    if (limit > 0 && end < Math.min(matches.length, k.searchResultCap)) body.paging = { next: { after: String(end) } };
    return json(200, body);
  }

  private parseFilter(f: unknown, at: string): SearchFilter | EmuResponse {
    if (!f || typeof f !== 'object' || Array.isArray(f))
      return this.searchError(`${at} must be an object`, 'INVALID_FILTER', at);
    const o = f as Record<string, unknown>;
    if (typeof o.propertyName !== 'string' || o.propertyName === '')
      return this.searchError(`${at}.propertyName is required`, 'INVALID_FILTER', `${at}.propertyName`);
    if (!this.properties.has(o.propertyName))
      return this.searchError(
        `${at}: property ${o.propertyName} does not exist for object type 0-1`,
        'PROPERTY_DOESNT_EXIST',
        `${at}.propertyName`,
      );
    if (typeof o.operator !== 'string' || !(SEARCH_OPERATORS as readonly string[]).includes(o.operator)) {
      return this.searchError(
        `${at}.operator must be one of ${SEARCH_OPERATORS.join(', ')} (got ${JSON.stringify(o.operator)})`,
        'INVALID_OPERATOR',
        `${at}.operator`,
      );
    }
    const op = o.operator as SearchOperator;
    const out: SearchFilter = { propertyName: o.propertyName, operator: op };
    if (op === 'IN' || op === 'NOT_IN') {
      if (
        !Array.isArray(o.values) ||
        o.values.length === 0 ||
        o.values.some((v) => typeof v !== 'string' && typeof v !== 'number')
      ) {
        return this.searchError(
          `${at}: operator ${op} needs "values", a non-empty array of strings`,
          'INVALID_FILTER',
          `${at}.values`,
        );
      }
      if (o.values.length > this.knobs.searchMaxInValues) {
        return this.searchError(
          `${at}: at most ${this.knobs.searchMaxInValues} values are allowed for ${op} (got ${o.values.length})`,
          'TOO_MANY_VALUES',
          `${at}.values`,
        );
      }
      out.values = o.values.map((v) => String(v));
    } else if (op !== 'HAS_PROPERTY' && op !== 'NOT_HAS_PROPERTY') {
      if (typeof o.value !== 'string' && typeof o.value !== 'number')
        return this.searchError(`${at}: operator ${op} needs "value"`, 'INVALID_FILTER', `${at}.value`);
      out.value = String(o.value);
      if (op === 'BETWEEN') {
        if (typeof o.highValue !== 'string' && typeof o.highValue !== 'number')
          return this.searchError(`${at}: operator BETWEEN needs "highValue"`, 'INVALID_FILTER', `${at}.highValue`);
        out.highValue = String(o.highValue);
      }
    }
    return out;
  }

  private parseSorts(raw: unknown): Array<{ propertyName: string; desc: boolean }> | EmuResponse {
    if (raw === undefined) return [];
    if (!Array.isArray(raw)) return this.searchError('sorts must be an array', 'INVALID_SORTS', 'sorts');
    const out: Array<{ propertyName: string; desc: boolean }> = [];
    for (const [i, s] of raw.entries()) {
      let name: unknown;
      let desc = false;
      if (typeof s === 'string') {
        desc = s.startsWith('-');
        name = desc ? s.slice(1) : s;
      } else if (s && typeof s === 'object') {
        name = (s as { propertyName?: unknown }).propertyName;
        const d = (s as { direction?: unknown }).direction;
        if (d !== undefined && d !== 'ASCENDING' && d !== 'DESCENDING')
          return this.searchError(
            `sorts[${i}].direction must be ASCENDING or DESCENDING`,
            'INVALID_SORTS',
            `sorts[${i}]`,
          );
        desc = d === 'DESCENDING';
      }
      if (typeof name !== 'string' || !this.properties.has(name))
        return this.searchError(
          `sorts[${i}]: unknown property ${JSON.stringify(name)}`,
          'INVALID_SORTS',
          `sorts[${i}]`,
        );
      out.push({ propertyName: name, desc });
    }
    return out;
  }

  /** The normalised values of a property: one for single-valued properties, each `;`-separated value for multi-value ones. */
  private searchValues(h: HsContact, name: string): string[] {
    const raw = this.propValue(h, name);
    if (this.properties.get(name)?.fieldType === 'checkbox') return splitAdditionalEmails(raw);
    const v = raw === null ? '' : raw.trim().toLowerCase();
    return v === '' ? [] : [v];
  }

  private static toNumber(s: string): number {
    if (/^-?\d+(\.\d+)?$/.test(s.trim())) return Number(s);
    return Date.parse(s);
  }

  private static tokenMatch(values: readonly string[], pattern: string): boolean {
    const re = new RegExp(
      `^${pattern
        .toLowerCase()
        .split('*')
        .map((x) => x.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
    );
    return values.some((v) => re.test(v) || v.split(/[^a-z0-9]+/).some((t) => t !== '' && re.test(t)));
  }

  private filterMatches(h: HsContact, f: SearchFilter): boolean {
    const vals = this.searchValues(h, f.propertyName);
    const v = f.value?.toLowerCase();
    switch (f.operator) {
      case 'EQ':
        return vals.includes(v!);
      case 'NEQ':
        return !vals.includes(v!);
      case 'IN':
        return f.values!.some((x) => vals.includes(x.toLowerCase()));
      case 'NOT_IN':
        return !f.values!.some((x) => vals.includes(x.toLowerCase()));
      case 'HAS_PROPERTY':
        return vals.length > 0;
      case 'NOT_HAS_PROPERTY':
        return vals.length === 0;
      case 'CONTAINS_TOKEN':
        return HubSpotEmulator.tokenMatch(vals, v!);
      case 'NOT_CONTAINS_TOKEN':
        return !HubSpotEmulator.tokenMatch(vals, v!);
      default: {
        const nums = vals.map((x) => HubSpotEmulator.toNumber(x)).filter((x) => Number.isFinite(x));
        const lo = HubSpotEmulator.toNumber(f.value!);
        const hi = f.highValue === undefined ? NaN : HubSpotEmulator.toNumber(f.highValue);
        return nums.some((n) =>
          f.operator === 'GT'
            ? n > lo
            : f.operator === 'GTE'
              ? n >= lo
              : f.operator === 'LT'
                ? n < lo
                : f.operator === 'LTE'
                  ? n <= lo
                  : n >= lo && n <= hi,
        );
      }
    }
  }

  private queryMatches(h: HsContact, q: string): boolean {
    for (const name of ['email', 'firstname', 'lastname', 'hs_additional_emails']) {
      for (const v of this.searchValues(h, name))
        if (v.startsWith(q) || v.split(/[^a-z0-9]+/).some((t) => t.startsWith(q))) return true;
    }
    return false;
  }

  private sortKey(h: HsContact, name: string): string | number {
    const v = this.propValue(h, name);
    if (v === null) return '';
    const def = this.properties.get(name);
    if (def?.type === 'number' || def?.type === 'datetime') {
      const n = HubSpotEmulator.toNumber(v);
      return Number.isFinite(n) ? n : v;
    }
    return v.toLowerCase();
  }

  private reindexEmail(h: HsContact): void {
    const raw = h.props.email;
    this.world.hsByNorm.delete(h.norm);
    if (raw) {
      h.norm = normEmail(raw);
      this.world.hsByNorm.set(h.norm, h);
    }
  }

  // ------------------------------------------------------------------------------------------ comm prefs

  private definitionJson(s: (typeof SUBSCRIPTIONS)[number]): Record<string, unknown> {
    return {
      id: String(s.id),
      name: s.name,
      description: s.description,
      purpose: s.purpose,
      communicationMethod: 'Email',
      isActive: true,
      isDefault: s.isDefault,
      isInternal: s.isInternal,
      businessUnitId: 0,
      createdAt: DEFINITIONS_CREATED,
      updatedAt: DEFINITIONS_CREATED,
    };
  }

  private action(started: number, results: unknown[], errors: unknown[] = []): EmuResponse {
    const body: Record<string, unknown> = {
      status: 'COMPLETE',
      results,
      requestedAt: isoMs(started),
      startedAt: isoMs(started),
      completedAt: isoMs(this.world.now()),
    };
    if (errors.length) {
      body.errors = errors;
      body.numErrors = errors.length;
    }
    return json(200, body);
  }

  private checkChannel(req: EmuRequest): EmuResponse | undefined {
    const ch = req.query.get('channel');
    if (ch !== 'EMAIL')
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Query parameter "channel" is required and must be EMAIL (got ${ch === null ? 'nothing' : `"${ch}"`})`,
      );
    const bu = req.query.get('businessUnitId');
    if (bu !== null && !/^\d+$/.test(bu)) return this.err(400, 'VALIDATION_ERROR', 'businessUnitId must be an integer');
    return undefined;
  }

  private v4Definitions(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const bu = req.query.get('businessUnitId');
    const results = bu === null || bu === '0' ? SUBSCRIPTIONS.map((s) => this.definitionJson(s)) : [];
    return this.action(started, results);
  }

  private statusesFor(email: string, reason?: string): Record<string, unknown>[] {
    const norm = normEmail(email);
    const st = this.world.hubspotStatuses.get(norm);
    return SUBSCRIPTIONS.map((s) => {
      const sub = st?.subs.get(s.id);
      const all = st?.allUnsubMs ?? null;
      const status = all !== null ? 'UNSUBSCRIBED' : sub ? sub.status : 'NOT_SPECIFIED';
      const o: Record<string, unknown> = {
        subscriberIdString: email,
        subscriptionId: s.id,
        subscriptionName: s.name,
        status,
        source: all !== null ? 'Unsubscribe from all' : sub ? sub.source : 'Not specified',
        timestamp: isoMs(all ?? sub?.ms ?? DEFINITIONS_MS),
        channel: 'EMAIL',
        businessUnitId: 0,
      };
      if (sub?.legalBasis) o.legalBasis = sub.legalBasis;
      if (sub?.legalBasisExplanation) o.legalBasisExplanation = sub.legalBasisExplanation;
      if (reason) o.setStatusSuccessReason = reason;
      return o;
    });
  }

  /** Unsubscribe an email from all email; flips hs_email_optout on its contact. Returns whether it changed. */
  private unsubscribeAll(email: string): boolean {
    const norm = normEmail(email);
    const now = this.world.now();
    let st = this.world.hubspotStatuses.get(norm);
    if (!st) {
      st = { allUnsubMs: null, subs: new Map() };
      this.world.hubspotStatuses.set(norm, st);
    }
    const changed = st.allUnsubMs === null;
    if (changed) st.allUnsubMs = now;
    const h = this.world.hsByNorm.get(norm);
    if (h) {
      if (h.props.hs_email_optout !== 'true') {
        h.props.hs_email_optout = 'true';
        h.updatedMs = now;
      }
    }
    // A secondary address: only its own status changes (hs_email_optout follows the primary address).
    this.world.countHsStatusWrite(norm);
    return changed;
  }

  private v4UnsubAll(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const email = req.params.subscriberIdString;
    if (!looksLikeEmail(email)) return this.err(400, 'VALIDATION_ERROR', `Invalid email address: ${email}`);
    const changed = this.unsubscribeAll(email);
    return this.action(
      started,
      this.statusesFor(email, changed ? 'UNSUBSCRIBE_FROM_ALL_OCCURRED' : 'NO_STATUS_CHANGE'),
    );
  }

  private wideStatus(email: string): Record<string, unknown> {
    const st = this.world.hubspotStatuses.get(normEmail(email));
    const unsub = st?.allUnsubMs ?? null;
    return {
      subscriberIdString: email,
      wideStatusType: 'PORTAL_WIDE',
      status: unsub !== null ? 'UNSUBSCRIBED' : st ? 'SUBSCRIBED' : 'NOT_SPECIFIED',
      channel: 'EMAIL',
      businessUnitId: 0,
      timestamp: isoMs(unsub ?? this.world.now()),
    };
  }

  private v4GetUnsubAll(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const email = req.params.subscriberIdString;
    const st = this.world.hubspotStatuses.get(normEmail(email));
    return this.action(started, st?.allUnsubMs != null ? [this.wideStatus(email)] : []);
  }

  private v4GetStatuses(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    return this.action(this.world.now(), this.statusesFor(req.params.subscriberIdString));
  }

  private batchInputs(req: EmuRequest): string[] | EmuResponse {
    const b = parseJson(req) as { inputs?: unknown };
    if (!b || !Array.isArray(b.inputs) || b.inputs.some((x) => typeof x !== 'string')) {
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Invalid input JSON: Cannot build BatchInputString, "inputs" must be an array of strings',
      );
    }
    if (b.inputs.length > this.knobs.v4BatchMax)
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Batch input limit exceeded: at most ${this.knobs.v4BatchMax} inputs allowed`,
      );
    return b.inputs as string[];
  }

  private invalidEmailError(emails: string[]): Record<string, unknown> {
    return {
      status: 'error',
      category: 'VALIDATION_ERROR',
      message: 'Invalid email addresses',
      context: { subscriberIdStrings: emails },
      errors: [],
      links: {},
    };
  }

  private v4BatchUnsubAll(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const inputs = this.batchInputs(req);
    if (!Array.isArray(inputs)) return inputs;
    const invalid = inputs.filter((e) => !looksLikeEmail(e));
    const results = inputs.filter(looksLikeEmail).map((email) => {
      const changed = this.unsubscribeAll(email);
      return {
        subscriberIdString: email,
        statuses: this.statusesFor(email, changed ? 'UNSUBSCRIBE_FROM_ALL_OCCURRED' : 'NO_STATUS_CHANGE'),
      };
    });
    return this.action(started, results, invalid.length ? [this.invalidEmailError(invalid)] : []);
  }

  private v4BatchUnsubAllRead(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const inputs = this.batchInputs(req);
    if (!Array.isArray(inputs)) return inputs;
    return this.action(
      started,
      inputs.map((email) => ({ subscriberIdString: email, wideStatuses: [this.wideStatus(email)] })),
    );
  }

  private v4BatchRead(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const inputs = this.batchInputs(req);
    if (!Array.isArray(inputs)) return inputs;
    return this.action(
      started,
      inputs.map((email) => ({ subscriberIdString: email, statuses: this.statusesFor(email) })),
    );
  }

  /** Validate one subscription write; returns an error message or the resolved subscription. */
  private checkWrite(
    i: Record<string, unknown>,
    needEmail: boolean,
  ): string | { email: string; subId: number; state: 'SUBSCRIBED' | 'UNSUBSCRIBED' | 'NOT_SPECIFIED' } {
    const email = typeof i.subscriberIdString === 'string' ? i.subscriberIdString : '';
    if (needEmail && !looksLikeEmail(email)) return `Invalid email address: ${email}`;
    if (i.channel !== 'EMAIL') return 'channel is required and must be EMAIL';
    const subId =
      typeof i.subscriptionId === 'number'
        ? i.subscriptionId
        : typeof i.subscriptionId === 'string' && /^\d+$/.test(i.subscriptionId)
          ? Number(i.subscriptionId)
          : NaN;
    if (!SUBSCRIPTIONS.some((s) => s.id === subId)) return `Subscription ${String(i.subscriptionId)} does not exist`;
    const state = i.statusState;
    if (state !== 'SUBSCRIBED' && state !== 'UNSUBSCRIBED' && state !== 'NOT_SPECIFIED')
      return 'statusState must be SUBSCRIBED, UNSUBSCRIBED or NOT_SPECIFIED';
    if (i.legalBasis !== undefined && !LEGAL_BASES.includes(String(i.legalBasis)))
      return `legalBasis must be one of ${LEGAL_BASES.join(', ')}`;
    if (this.knobs.requireLegalBasis && (!i.legalBasis || !i.legalBasisExplanation)) {
      return 'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled';
    }
    return { email, subId, state };
  }

  private writeSub(
    email: string,
    subId: number,
    state: 'SUBSCRIBED' | 'UNSUBSCRIBED' | 'NOT_SPECIFIED',
    i: Record<string, unknown>,
  ): void {
    const norm = normEmail(email);
    let st = this.world.hubspotStatuses.get(norm);
    if (!st) {
      st = { allUnsubMs: null, subs: new Map() };
      this.world.hubspotStatuses.set(norm, st);
    }
    st.subs.set(subId, {
      status: state,
      ms: this.world.now(),
      legalBasis: typeof i.legalBasis === 'string' ? i.legalBasis : null,
      legalBasisExplanation: typeof i.legalBasisExplanation === 'string' ? i.legalBasisExplanation : null,
      source: 'Public Status API',
    });
    this.world.countHsStatusWrite(norm);
  }

  private v4BatchWrite(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as { inputs?: unknown };
    if (!b || !Array.isArray(b.inputs))
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Invalid input JSON: Cannot build BatchInputPublicStatusRequest, some of required attributes are not set [inputs]',
      );
    if (b.inputs.length > this.knobs.v4BatchMax)
      return this.err(
        400,
        'VALIDATION_ERROR',
        `Batch input limit exceeded: at most ${this.knobs.v4BatchMax} inputs allowed`,
      );
    const checked = (b.inputs as Record<string, unknown>[]).map((i) => ({ i, c: this.checkWrite(i ?? {}, true) }));
    if (this.knobs.requireLegalBasis && checked.some(({ c }) => typeof c === 'string' && c.startsWith('Legal basis'))) {
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled',
      );
    }
    const results: unknown[] = [];
    const errors: unknown[] = [];
    for (const { i, c } of checked) {
      if (typeof c === 'string') {
        errors.push({
          status: 'error',
          category: 'VALIDATION_ERROR',
          message: c,
          context: { subscriberIdString: [String(i?.subscriberIdString ?? '')] },
          errors: [],
          links: {},
        });
        continue;
      }
      this.writeSub(c.email, c.subId, c.state, i);
      const st = this.statusesFor(c.email, 'REQUESTED_CHANGE_OCCURRED').find((s) => s.subscriptionId === c.subId);
      results.push(st);
    }
    const res = this.action(started, results, errors);
    if (errors.length) res.status = this.partialStatus(req);
    return res;
  }

  private v4SetStatus(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as Record<string, unknown>;
    const email = req.params.subscriberIdString;
    if (!looksLikeEmail(email)) return this.err(400, 'VALIDATION_ERROR', `Invalid email address: ${email}`);
    const c = this.checkWrite({ ...(b ?? {}), subscriberIdString: email }, true);
    if (typeof c === 'string') return this.err(400, 'VALIDATION_ERROR', c);
    this.writeSub(email, c.subId, c.state, b);
    return this.action(
      started,
      this.statusesFor(email, 'REQUESTED_CHANGE_OCCURRED').filter((s) => s.subscriptionId === c.subId),
    );
  }

  private v3Status(req: EmuRequest): EmuResponse {
    const email = req.params.emailAddress;
    const st = this.world.hubspotStatuses.get(normEmail(email));
    const statuses: unknown[] = [];
    for (const s of SUBSCRIPTIONS) {
      const sub = st?.subs.get(s.id);
      const all = st?.allUnsubMs ?? null;
      if (all === null && (!sub || sub.status === 'NOT_SPECIFIED')) continue;
      const o: Record<string, unknown> = {
        id: String(s.id),
        name: s.name,
        description: s.description,
        status: all !== null || sub?.status === 'UNSUBSCRIBED' ? 'NOT_SUBSCRIBED' : 'SUBSCRIBED',
        sourceOfStatus: all !== null ? 'PORTAL_WIDE_STATUS' : 'SUBSCRIPTION_STATUS',
        brandId: 0,
      };
      if (sub?.legalBasis) o.legalBasis = sub.legalBasis;
      if (sub?.legalBasisExplanation) o.legalBasisExplanation = sub.legalBasisExplanation;
      statuses.push(o);
    }
    return json(200, { recipient: email, subscriptionStatuses: statuses });
  }

  private v3Unsubscribe(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as Record<string, unknown>;
    if (!b || typeof b.emailAddress !== 'string' || b.subscriptionId === undefined) {
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Invalid input JSON: Cannot build PublicUpdateSubscriptionStatusRequest, some of required attributes are not set [emailAddress, subscriptionId]',
      );
    }
    const email = b.emailAddress;
    if (!looksLikeEmail(email)) return this.err(400, 'VALIDATION_ERROR', `Invalid email address: ${email}`);
    const subId = Number(b.subscriptionId);
    const sub = SUBSCRIPTIONS.find((s) => s.id === subId);
    if (!sub) return this.err(400, 'VALIDATION_ERROR', `Subscription ${String(b.subscriptionId)} does not exist`);
    if (b.legalBasis !== undefined && !LEGAL_BASES.includes(String(b.legalBasis)))
      return this.err(400, 'VALIDATION_ERROR', `legalBasis must be one of ${LEGAL_BASES.join(', ')}`);
    if (this.knobs.requireLegalBasis && (!b.legalBasis || !b.legalBasisExplanation)) {
      return this.err(
        400,
        'VALIDATION_ERROR',
        'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled',
      );
    }
    const st = this.world.hubspotStatuses.get(normEmail(email));
    if (st && (st.allUnsubMs !== null || st.subs.get(subId)?.status === 'UNSUBSCRIBED')) {
      return this.err(400, 'VALIDATION_ERROR', `${email} is already unsubscribed from subscription ${subId}`);
    }
    this.writeSub(email, subId, 'UNSUBSCRIBED', b);
    const o: Record<string, unknown> = {
      id: String(sub.id),
      name: sub.name,
      description: sub.description,
      status: 'NOT_SUBSCRIBED',
      sourceOfStatus: 'SUBSCRIPTION_STATUS',
      brandId: 0,
    };
    if (b.legalBasis) o.legalBasis = b.legalBasis;
    if (b.legalBasisExplanation) o.legalBasisExplanation = b.legalBasisExplanation;
    return json(200, o);
  }

  // ------------------------------------------------------------------------------------------ OAuth

  private oauthToken(req: EmuRequest): EmuResponse {
    const form = parseForm(req);
    const bad = (status: string, message: string): EmuResponse =>
      json(400, { status, message, correlationId: randomUUID() });
    if (form.get('grant_type') !== 'refresh_token')
      return bad('BAD_GRANT_TYPE', `grant_type must be refresh_token (got ${form.get('grant_type') ?? 'nothing'})`);
    if (form.get('client_id') !== this.clientId) return bad('BAD_CLIENT_ID', 'missing or unknown client id');
    if (form.get('client_secret') !== this.clientSecret)
      return bad('BAD_CLIENT_SECRET', 'missing or invalid client secret');
    if (form.get('refresh_token') !== this.refreshToken)
      return bad('BAD_REFRESH_TOKEN', 'missing or unknown refresh token');
    const access = `CO${randomBytes(32).toString('base64url')}`;
    const ttl = this.knobs.accessTokenTtlSec;
    this.oauthTokens.set(access, { expiresMs: this.world.now() + ttl * 1000 });
    return json(200, { token_type: 'bearer', refresh_token: this.refreshToken, access_token: access, expires_in: ttl });
  }

  private accessTokenInfo(req: EmuRequest): EmuResponse {
    const token = req.params.token;
    const t = this.oauthTokens.get(token);
    const isPrivate = token === this.privateToken;
    if (!isPrivate && (!t || t.expiresMs <= this.world.now()))
      return this.err(404, 'OBJECT_NOT_FOUND', 'Access token not found or expired');
    return json(200, {
      token,
      user: 'owner@example.com',
      hub_domain: 'emulated.hubspot.local',
      scopes: [...this.scopes],
      hub_id: PORTAL_ID,
      app_id: isPrivate ? PRIVATE_APP_ID : OAUTH_APP_ID,
      expires_in: isPrivate ? 0 : Math.round((t!.expiresMs - this.world.now()) / 1000),
      user_id: 7,
      token_type: 'access',
    });
  }

  /** RFC 7662-style introspection of an OAuth token of this app (2026-09 spec: `{active}` required). */
  private introspect(req: EmuRequest): EmuResponse {
    const form = parseForm(req);
    const bad = (status: string, message: string): EmuResponse =>
      json(400, { status, message, correlationId: randomUUID() });
    if (form.get('client_id') !== this.clientId) return bad('BAD_CLIENT_ID', 'missing or unknown client id');
    if (form.get('client_secret') !== this.clientSecret)
      return bad('BAD_CLIENT_SECRET', 'missing or invalid client secret');
    const token = form.get('token');
    if (!token) return bad('BAD_REQUEST', 'token is required');
    if (token === this.refreshToken)
      return json(200, {
        active: true,
        token_type: 'refresh_token',
        client_id: this.clientId,
        hub_id: PORTAL_ID,
        app_id: OAUTH_APP_ID,
        scope: this.scopes.join(' '),
      });
    const t = this.oauthTokens.get(token);
    // Private app tokens and Service Keys are not OAuth tokens of this app: inactive here.
    if (!t || t.expiresMs <= this.world.now()) return json(200, { active: false });
    return json(200, {
      active: true,
      token_type: 'access_token',
      client_id: this.clientId,
      hub_id: PORTAL_ID,
      hub_domain: 'emulated.hubspot.local',
      app_id: OAUTH_APP_ID,
      user_id: 7,
      scope: this.scopes.join(' '),
      exp: Math.floor(t.expiresMs / 1000),
      expires_in: Math.round((t.expiresMs - this.world.now()) / 1000),
    });
  }

  /** Documented for private-app tokens only: a Service Key (or anything else) is answered 401. */
  private privateTokenInfo(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as { tokenKey?: unknown };
    if (!b || typeof b.tokenKey !== 'string') return this.err(400, 'VALIDATION_ERROR', 'tokenKey is required');
    if (b.tokenKey !== this.privateToken)
      return this.err(401, 'INVALID_AUTHENTICATION', 'The private app access token is invalid');
    return json(200, { userId: 7, hubId: PORTAL_ID, appId: PRIVATE_APP_ID, scopes: [...this.scopes] });
  }
}

const DEFINITIONS_MS = Date.parse(DEFINITIONS_CREATED);

export async function startHubSpotServer(world: World, opts: HubSpotServerOptions = {}): Promise<HubSpotEmulator> {
  return new HubSpotEmulator(world, opts).start();
}
