/**
 * HubSpot emulator: CRM contacts batch read/update and properties, Communication Preferences v3 and v4,
 * and the OAuth token/info endpoints, following hubspot-crm-contacts-v3.json,
 * hubspot-communication-preferences-v3/v4.json and hubspot-oauth-v1.json.
 *
 * Behaviour that matters to a suppression connector:
 * - `hs_email_optout` is read-only through the CRM API (400 VALIDATION_ERROR / READ_ONLY_VALUE); it turns
 *   "true" only through unsubscribe-all (v4 single or batch).
 * - batch/read by email is case-insensitive; missing inputs come back as HTTP 207 with one OBJECT_NOT_FOUND
 *   error whose `context.ids` lists them.
 * - Rate limits: a rolling 10-second window per app (private app 100, OAuth app 110 by default) and a daily
 *   limit; every API response carries the X-HubSpot-RateLimit-* headers; 429 bodies name the policy.
 * - `batchAllowed: false` makes the v4 batch endpoints answer 403 like a portal without Marketing Hub Enterprise.
 */
import { randomBytes, randomUUID } from 'crypto';
import { HsContact } from './dataset';
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
} from './http';
import { World } from './world';

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
}

export const HUBSPOT_DEFAULTS: Omit<HubSpotKnobs, keyof CommonKnobs> = {
  tenSecondLimit: 100,
  oauthTenSecondLimit: 110,
  dailyLimit: 250_000,
  batchAllowed: true,
  requireLegalBasis: false,
  v4BatchMax: 1000,
  accessTokenTtlSec: 1800,
};

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
  { name: 'firstname', label: 'First Name', type: 'string', fieldType: 'text', readOnlyValue: false, hubspotDefined: true },
  { name: 'lastname', label: 'Last Name', type: 'string', fieldType: 'text', readOnlyValue: false, hubspotDefined: true },
  { name: 'hs_email_optout', label: 'Unsubscribed from all email', type: 'enumeration', fieldType: 'booleancheckbox', readOnlyValue: true, hubspotDefined: true },
  { name: 'hs_object_id', label: 'Record ID', type: 'number', fieldType: 'number', readOnlyValue: true, hubspotDefined: true },
  { name: 'createdate', label: 'Create Date', type: 'datetime', fieldType: 'date', readOnlyValue: true, hubspotDefined: true },
  { name: 'lastmodifieddate', label: 'Last Modified Date', type: 'datetime', fieldType: 'date', readOnlyValue: true, hubspotDefined: true },
];

export const HUBSPOT_DEFAULT_CUSTOM_PROPERTIES = ['cc_optout_date', 'cc_optout_source', 'cc_optout_reason', 'cc_contact_id'];

const SUBSCRIPTIONS = [
  { id: 1001, name: 'Marketing Information', description: 'Marketing offers and updates.', purpose: 'Marketing', isDefault: true, isInternal: false },
  { id: 1002, name: 'One to One', description: 'One to one emails.', purpose: 'Sales', isDefault: true, isInternal: true },
  { id: 1003, name: 'Customer Service Communication', description: 'Feedback requests and service updates.', purpose: 'Customer Service', isDefault: false, isInternal: false },
];
const LEGAL_BASES = ['CONSENT_WITH_NOTICE', 'LEGITIMATE_INTEREST_CLIENT', 'LEGITIMATE_INTEREST_OTHER', 'LEGITIMATE_INTEREST_PQL', 'NON_GDPR', 'PERFORMANCE_OF_CONTRACT', 'PROCESS_AND_STORE'];
const PORTAL_ID = 4242424;
const PRIVATE_APP_ID = 100001;
const OAUTH_APP_ID = 200002;
const DEFINITIONS_CREATED = '2020-01-01T00:00:00.000Z';

interface Principal {
  kind: 'private' | 'oauth';
  token: string;
  scopes: string[];
}

const isoMs = (ms: number): string => new Date(ms).toISOString();
const normEmail = (s: string): string => s.trim().toLowerCase();
/** Strict: surrounding whitespace makes an address invalid (clients must normalise before calling). */
const looksLikeEmail = (s: string): boolean => /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(s);
/** Lookup key of an idProperty=email input: case-insensitive, but whitespace is not trimmed for the caller. */
const emailKey = (s: string): string | null => (s === s.trim() ? s.toLowerCase() : null);

/** Scopes a route needs (any one of the listed sets suffices). */
const ROUTE_SCOPES: Record<string, string[][]> = {
  'POST /crm/v3/objects/contacts/batch/read': [['crm.objects.contacts.read']],
  'POST /crm/v3/objects/contacts/batch/update': [['crm.objects.contacts.write']],
  'GET /crm/v3/properties/contacts': [['crm.schemas.contacts.read'], ['crm.objects.contacts.read']],
  'GET /crm/v3/properties/contacts/{propertyName}': [['crm.schemas.contacts.read'], ['crm.objects.contacts.read']],
  'GET /communication-preferences/v4/definitions': [['communication_preferences.read_write'], ['communication_preferences.read']],
  'GET /communication-preferences/v4/statuses/{subscriberIdString}': [['communication_preferences.read_write'], ['communication_preferences.read']],
  'POST /communication-preferences/v4/statuses/{subscriberIdString}': [['communication_preferences.read_write'], ['communication_preferences.write']],
  'GET /communication-preferences/v4/statuses/{subscriberIdString}/unsubscribe-all': [['communication_preferences.read_write'], ['communication_preferences.read']],
  'POST /communication-preferences/v4/statuses/{subscriberIdString}/unsubscribe-all': [['communication_preferences.read_write'], ['communication_preferences.write']],
  'POST /communication-preferences/v4/statuses/batch/read': [['communication_preferences.statuses.batch.read']],
  'POST /communication-preferences/v4/statuses/batch/unsubscribe-all/read': [['communication_preferences.statuses.batch.read']],
  'POST /communication-preferences/v4/statuses/batch/unsubscribe-all': [['communication_preferences.statuses.batch.write']],
  'POST /communication-preferences/v4/statuses/batch/write': [['communication_preferences.statuses.batch.write']],
  'GET /communication-preferences/v3/definitions': [['communication_preferences.read_write'], ['communication_preferences.read']],
  'GET /communication-preferences/v3/status/email/{emailAddress}': [['communication_preferences.read_write'], ['communication_preferences.read']],
  'POST /communication-preferences/v3/unsubscribe': [['communication_preferences.read_write'], ['communication_preferences.write']],
};

const BATCH_ROUTES = new Set([
  'POST /communication-preferences/v4/statuses/batch/read',
  'POST /communication-preferences/v4/statuses/batch/unsubscribe-all/read',
  'POST /communication-preferences/v4/statuses/batch/unsubscribe-all',
  'POST /communication-preferences/v4/statuses/batch/write',
]);

export class HubSpotEmulator extends EmulatorServer<HubSpotKnobs> {
  readonly privateToken: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly refreshToken: string;
  readonly scopes: string[];
  private readonly properties = new Map<string, PropertyDef>();
  private readonly oauthTokens = new Map<string, { expiresMs: number }>();
  private readonly expiredTokens = new Map<string, number>();
  private readonly privateWindow: RollingWindow;
  private readonly oauthWindow: RollingWindow;
  readonly daily = new DailyCounter();
  /** Property history written through the API: contact id -> property -> entries (newest first). */
  private readonly history = new Map<string, Map<string, Array<{ value: string; timestamp: string; sourceType: string }>>>();

  constructor(world: World, opts: HubSpotServerOptions = {}) {
    super('hubspot', world, { ...COMMON_DEFAULTS, ...HUBSPOT_DEFAULTS, ...(opts.knobs ?? {}) }, opts);
    this.privateToken = `pat-na1-${randomUUID()}`;
    this.clientId = randomUUID();
    this.clientSecret = randomUUID();
    this.refreshToken = `na1-${randomBytes(4).toString('hex')}-${randomUUID()}`;
    this.scopes = opts.scopes ?? HUBSPOT_DEFAULT_SCOPES;
    for (const p of BUILTIN_PROPERTIES) this.properties.set(p.name, p);
    for (const name of opts.customProperties ?? HUBSPOT_DEFAULT_CUSTOM_PROPERTIES) {
      this.properties.set(name, { name, label: name, type: name.endsWith('_date') ? 'datetime' : 'string', fieldType: name.endsWith('_date') ? 'date' : 'text', readOnlyValue: false, hubspotDefined: false });
    }
    this.privateWindow = new RollingWindow(10_000, this.knobs.tenSecondLimit);
    this.oauthWindow = new RollingWindow(10_000, this.knobs.oauthTenSecondLimit);

    const r = this.router;
    const CP4 = '/communication-preferences/v4';
    r.add('POST', '/crm/v3/objects/contacts/batch/read', (req) => this.batchRead(req));
    r.add('POST', '/crm/v3/objects/contacts/batch/update', (req) => this.batchUpdate(req));
    r.add('GET', '/crm/v3/properties/contacts', () => json(200, { results: [...this.properties.values()].map((p) => this.propertyJson(p)) }));
    r.add('GET', '/crm/v3/properties/contacts/:propertyName', (req) => this.getProperty(req), 'api', 'GET /crm/v3/properties/contacts/{propertyName}');
    r.add('GET', `${CP4}/definitions`, (req) => this.v4Definitions(req));
    // batch routes before the {subscriberIdString} ones
    r.add('POST', `${CP4}/statuses/batch/unsubscribe-all/read`, (req) => this.v4BatchUnsubAllRead(req));
    r.add('POST', `${CP4}/statuses/batch/unsubscribe-all`, (req) => this.v4BatchUnsubAll(req));
    r.add('POST', `${CP4}/statuses/batch/read`, (req) => this.v4BatchRead(req));
    r.add('POST', `${CP4}/statuses/batch/write`, (req) => this.v4BatchWrite(req));
    r.add('GET', `${CP4}/statuses/:subscriberIdString/unsubscribe-all`, (req) => this.v4GetUnsubAll(req), 'api', `GET ${CP4}/statuses/{subscriberIdString}/unsubscribe-all`);
    r.add('POST', `${CP4}/statuses/:subscriberIdString/unsubscribe-all`, (req) => this.v4UnsubAll(req), 'api', `POST ${CP4}/statuses/{subscriberIdString}/unsubscribe-all`);
    r.add('GET', `${CP4}/statuses/:subscriberIdString`, (req) => this.v4GetStatuses(req), 'api', `GET ${CP4}/statuses/{subscriberIdString}`);
    r.add('POST', `${CP4}/statuses/:subscriberIdString`, (req) => this.v4SetStatus(req), 'api', `POST ${CP4}/statuses/{subscriberIdString}`);
    r.add('GET', '/communication-preferences/v3/definitions', () => json(200, { subscriptionDefinitions: SUBSCRIPTIONS.map((s) => this.definitionJson(s)) }));
    r.add('GET', '/communication-preferences/v3/status/email/:emailAddress', (req) => this.v3Status(req), 'api', 'GET /communication-preferences/v3/status/email/{emailAddress}');
    r.add('POST', '/communication-preferences/v3/unsubscribe', (req) => this.v3Unsubscribe(req));
    r.add('POST', '/oauth/v1/token', (req) => this.oauthToken(req), 'auth');
    r.add('GET', '/oauth/v1/access-tokens/:token', (req) => this.accessTokenInfo(req), 'auth', 'GET /oauth/v1/access-tokens/{token}');
    r.add('POST', '/oauth/v2/private-apps/get/access-token-info', (req) => this.privateTokenInfo(req), 'auth');
  }

  override setKnobs(patch: Record<string, unknown>): string[] {
    if (patch.fail5xxMode !== undefined && patch.fail5xxMode !== 'before' && patch.fail5xxMode !== 'after') {
      return ['knob "fail5xxMode" must be "before" or "after"'];
    }
    const problems = super.setKnobs(patch);
    this.privateWindow.setMax(this.knobs.tenSecondLimit);
    this.oauthWindow.setMax(this.knobs.oauthTenSecondLimit);
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
        ? { contacts: state.contacts.length, suppressed: state.contacts.filter((c) => c.hs_email_optout === 'true').length, dailyUsed: this.daily.used(this.world.now()) }
        : { ...state, dailyUsed: this.daily.used(this.world.now()) },
    };
  }

  // ------------------------------------------------------------------------------------------ errors

  private err(status: number, category: string, message: string, extra: Record<string, unknown> = {}): EmuResponse {
    return json(status, { status: 'error', message, correlationId: randomUUID(), category, ...extra });
  }

  protected errorResponse(kind: 'not-found' | 'method' | 'bad-request' | 'server' | 'storm', status: number, message: string): EmuResponse {
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

  private rateLimited(policy: 'TEN_SECONDLY_ROLLING' | 'DAILY', p: Principal | null): EmuResponse {
    const app = p?.kind === 'oauth' ? OAUTH_APP_ID : PRIVATE_APP_ID;
    return json(429, {
      status: 'error',
      message: policy === 'DAILY' ? 'You have reached your daily limit.' : 'You have reached your ten_secondly_rolling limit.',
      errorType: 'RATE_LIMIT',
      correlationId: randomUUID(),
      policyName: policy,
      groupName: `publicapi:${p?.kind === 'oauth' ? 'oauth-app' : 'private-app'}:${app}`,
    });
  }

  // ------------------------------------------------------------------------------------------ gate

  private principal(token: string): Principal | { expiredAgoMs: number } | null {
    if (token === this.privateToken) return { kind: 'private', token, scopes: this.scopes };
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
      return this.err(401, 'INVALID_AUTHENTICATION', 'Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview');
    }
    const p = this.principal(token);
    if (p === null) return this.err(401, 'INVALID_AUTHENTICATION', 'Authentication credentials not found or invalid.');
    if ('expiredAgoMs' in p) {
      return this.err(401, 'EXPIRED_AUTHENTICATION', `The OAuth token used to make this call expired ${Math.max(0, Math.round(p.expiredAgoMs / 60_000))} minute(s) ago.`);
    }
    req.principal = p;
    const now = this.world.now();
    if (this.daily.used(now) >= this.knobs.dailyLimit) return this.rateLimited('DAILY', p);
    const win = p.kind === 'oauth' ? this.oauthWindow : this.privateWindow;
    // Rolling windows run on wall-clock time (a frozen test clock must not freeze them).
    if (!win.tryTake(Date.now())) return this.rateLimited('TEN_SECONDLY_ROLLING', p);
    this.daily.add(now);
    if (BATCH_ROUTES.has(route.name) && !this.knobs.batchAllowed) {
      return this.err(403, 'MISSING_SCOPES', 'This app hasn\'t been granted all required scopes to make this call. Batch subscription status endpoints require Marketing Hub Enterprise.', {
        errors: [{ message: 'One or more of the following scopes are required.', context: { requiredGranularScopes: ['communication_preferences.statuses.batch.write'] } }],
        links: { 'scopes-docs': 'https://developers.hubspot.com/scopes' },
      });
    }
    const needs = ROUTE_SCOPES[route.name];
    if (needs && !needs.some((set) => set.every((s) => p.scopes.includes(s)))) {
      return this.err(403, 'MISSING_SCOPES', 'This app hasn\'t been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.', {
        errors: [{ message: 'One or more of the following scopes are required.', context: { requiredGranularScopes: needs[0] } }],
      });
    }
    return undefined;
  }

  protected override decorate(req: EmuRequest, res: EmuResponse, route: Route | null): void {
    const p = req.principal as Principal | undefined;
    if (!route || route.kind !== 'api') return;
    const now = this.world.now();
    const win = p?.kind === 'oauth' ? this.oauthWindow : this.privateWindow;
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
      options: p.name === 'hs_email_optout' ? [{ label: 'Yes', value: 'true', displayOrder: 0, hidden: false }, { label: 'No', value: 'false', displayOrder: 1, hidden: false }] : [],
      displayOrder: -1,
      calculated: false,
      externalOptions: false,
      hasUniqueValue: false,
      hidden: false,
      hubspotDefined: p.hubspotDefined,
      modificationMetadata: { archivable: !p.hubspotDefined, readOnlyDefinition: p.hubspotDefined, readOnlyValue: p.readOnlyValue },
      formField: !p.readOnlyValue,
      createdAt: DEFINITIONS_CREATED,
      updatedAt: DEFINITIONS_CREATED,
      archived: false,
    };
  }

  private getProperty(req: EmuRequest): EmuResponse {
    const p = this.properties.get(req.params.propertyName);
    if (!p) return this.err(404, 'OBJECT_NOT_FOUND', `Unable to find property ${req.params.propertyName} for object type 0-1`);
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
    const o: Record<string, unknown> = { id: h.id, properties, createdAt: isoMs(h.createdMs), updatedAt: isoMs(h.updatedMs), archived: false };
    if (withHistory.length) {
      const hist: Record<string, unknown[]> = {};
      for (const name of withHistory) {
        if (!this.properties.has(name)) continue;
        const written = this.history.get(h.id)?.get(name);
        const v = this.propValue(h, name);
        hist[name] = written ? [...written] : v === null ? [] : [{ value: v, timestamp: isoMs(h.createdMs), sourceType: 'IMPORT' }];
      }
      o.propertiesWithHistory = hist;
    }
    return o;
  }

  private batchEnvelope(started: number, results: unknown[], errors: unknown[]): EmuResponse {
    const body: Record<string, unknown> = { status: 'COMPLETE', results, startedAt: isoMs(started), completedAt: isoMs(this.world.now()) };
    if (errors.length) {
      body.numErrors = errors.length;
      body.errors = errors;
    }
    return json(errors.length ? 207 : 200, body);
  }

  private batchRead(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as Record<string, unknown>;
    if (!b || typeof b !== 'object' || Array.isArray(b)) return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: expected an object');
    const missingAttrs = ['inputs', 'properties', 'propertiesWithHistory'].filter((k) => !Array.isArray(b[k]));
    if (missingAttrs.length) {
      return this.err(400, 'VALIDATION_ERROR', `Invalid input JSON on line 1, column 1: Cannot build BatchReadInputSimplePublicObjectId, some of required attributes are not set [${missingAttrs.join(', ')}]`);
    }
    const inputs = b.inputs as unknown[];
    if (inputs.length > 100) return this.err(400, 'VALIDATION_ERROR', `Batch input limit exceeded: ${inputs.length} inputs given, at most 100 allowed.`);
    const idProperty = typeof b.idProperty === 'string' ? b.idProperty : null;
    if (idProperty !== null && idProperty !== 'email' && idProperty !== 'hs_object_id') {
      return this.err(400, 'VALIDATION_ERROR', `Property ${idProperty} is not a unique identifier property for object type 0-1`);
    }
    const archived = req.query.get('archived') === 'true';
    const props = (b.properties as unknown[]).filter((x): x is string => typeof x === 'string');
    const hist = (b.propertiesWithHistory as unknown[]).filter((x): x is string => typeof x === 'string');
    const results: unknown[] = [];
    const seen = new Set<string>();
    const missing: string[] = [];
    for (const inp of inputs) {
      const id = inp && typeof inp === 'object' ? (inp as { id?: unknown }).id : undefined;
      if (typeof id !== 'string' && typeof id !== 'number') return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: every input needs an "id" string');
      const key = String(id);
      const ek = emailKey(key);
      const h = archived ? undefined : idProperty === 'email' ? (ek === null ? undefined : this.world.hsByNorm.get(ek)) : this.world.hsById.get(key);
      if (!h) {
        missing.push(key);
        continue;
      }
      if (seen.has(h.id)) continue;
      seen.add(h.id);
      results.push(this.objectJson(h, props, hist));
    }
    const errors = missing.length
      ? [{ status: 'error', category: 'OBJECT_NOT_FOUND', message: 'Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.', context: { ids: missing }, errors: [], links: {} }]
      : [];
    return this.batchEnvelope(started, results, errors);
  }

  private batchUpdate(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as { inputs?: unknown };
    if (!b || !Array.isArray(b.inputs)) return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: Cannot build BatchInputSimplePublicObjectBatchInput, some of required attributes are not set [inputs]');
    const inputs = b.inputs as Array<{ id?: unknown; idProperty?: unknown; properties?: unknown }>;
    if (inputs.length > 100) return this.err(400, 'VALIDATION_ERROR', `Batch input limit exceeded: ${inputs.length} inputs given, at most 100 allowed.`);
    // Validate every property first: one bad property rejects the whole batch.
    const invalid: Array<{ isValid: false; message: string; error: string; name: string }> = [];
    const ids: string[] = [];
    for (const inp of inputs) {
      if (!inp || typeof inp !== 'object' || (typeof inp.id !== 'string' && typeof inp.id !== 'number') || !inp.properties || typeof inp.properties !== 'object') {
        return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: every input needs "id" and "properties"');
      }
      ids.push(String(inp.id));
      for (const name of Object.keys(inp.properties as object)) {
        const def = this.properties.get(name);
        if (!def) invalid.push({ isValid: false, message: `Property "${name}" does not exist`, error: 'PROPERTY_DOESNT_EXIST', name });
        else if (def.readOnlyValue) invalid.push({ isValid: false, message: `Property "${name}" is a read only property; its value cannot be set.`, error: 'READ_ONLY_VALUE', name });
      }
    }
    if (invalid.length) {
      return this.err(400, 'VALIDATION_ERROR', `Property values were not valid: ${JSON.stringify(invalid)}`, {
        errors: invalid.map((i) => ({ message: i.message, code: i.error, context: { propertyName: [i.name] } })),
      });
    }
    const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
    if (dupes.length) return this.err(400, 'VALIDATION_ERROR', `Duplicate IDs found in batch input: [${[...new Set(dupes)].join(', ')}]. IDs must be unique`);
    const results: unknown[] = [];
    const missing: string[] = [];
    const now = this.world.now();
    for (const inp of inputs) {
      const key = String(inp.id);
      const ek = emailKey(key);
      const h = inp.idProperty === 'email' ? (ek === null ? undefined : this.world.hsByNorm.get(ek)) : this.world.hsById.get(key);
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
      ? [{ status: 'error', category: 'OBJECT_NOT_FOUND', message: 'Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.', context: { ids: missing }, errors: [], links: {} }]
      : [];
    return this.batchEnvelope(started, results, errors);
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
    const body: Record<string, unknown> = { status: 'COMPLETE', results, requestedAt: isoMs(started), startedAt: isoMs(started), completedAt: isoMs(this.world.now()) };
    if (errors.length) {
      body.errors = errors;
      body.numErrors = errors.length;
    }
    return json(200, body);
  }

  private checkChannel(req: EmuRequest): EmuResponse | undefined {
    const ch = req.query.get('channel');
    if (ch !== 'EMAIL') return this.err(400, 'VALIDATION_ERROR', `Query parameter "channel" is required and must be EMAIL (got ${ch === null ? 'nothing' : `"${ch}"`})`);
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
      this.world.countHsWrite(h.id);
    } else {
      this.world.hsOrphanStatusWrites.set(norm, (this.world.hsOrphanStatusWrites.get(norm) ?? 0) + 1);
    }
    return changed;
  }

  private v4UnsubAll(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const email = req.params.subscriberIdString;
    if (!looksLikeEmail(email)) return this.err(400, 'VALIDATION_ERROR', `Invalid email address: ${email}`);
    const changed = this.unsubscribeAll(email);
    return this.action(started, this.statusesFor(email, changed ? 'UNSUBSCRIBE_FROM_ALL_OCCURRED' : 'NO_STATUS_CHANGE'));
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
      return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: Cannot build BatchInputString, "inputs" must be an array of strings');
    }
    if (b.inputs.length > this.knobs.v4BatchMax) return this.err(400, 'VALIDATION_ERROR', `Batch input limit exceeded: at most ${this.knobs.v4BatchMax} inputs allowed`);
    return b.inputs as string[];
  }

  private invalidEmailError(emails: string[]): Record<string, unknown> {
    return { status: 'error', category: 'VALIDATION_ERROR', message: 'Invalid email addresses', context: { subscriberIdStrings: emails }, errors: [], links: {} };
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
      return { subscriberIdString: email, statuses: this.statusesFor(email, changed ? 'UNSUBSCRIBE_FROM_ALL_OCCURRED' : 'NO_STATUS_CHANGE') };
    });
    return this.action(started, results, invalid.length ? [this.invalidEmailError(invalid)] : []);
  }

  private v4BatchUnsubAllRead(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const inputs = this.batchInputs(req);
    if (!Array.isArray(inputs)) return inputs;
    return this.action(started, inputs.map((email) => ({ subscriberIdString: email, wideStatuses: [this.wideStatus(email)] })));
  }

  private v4BatchRead(req: EmuRequest): EmuResponse {
    const bad = this.checkChannel(req);
    if (bad) return bad;
    const started = this.world.now();
    const inputs = this.batchInputs(req);
    if (!Array.isArray(inputs)) return inputs;
    return this.action(started, inputs.map((email) => ({ subscriberIdString: email, statuses: this.statusesFor(email) })));
  }

  /** Validate one subscription write; returns an error message or the resolved subscription. */
  private checkWrite(i: Record<string, unknown>, needEmail: boolean): string | { email: string; subId: number; state: 'SUBSCRIBED' | 'UNSUBSCRIBED' | 'NOT_SPECIFIED' } {
    const email = typeof i.subscriberIdString === 'string' ? i.subscriberIdString : '';
    if (needEmail && !looksLikeEmail(email)) return `Invalid email address: ${email}`;
    if (i.channel !== 'EMAIL') return 'channel is required and must be EMAIL';
    const subId = typeof i.subscriptionId === 'number' ? i.subscriptionId : typeof i.subscriptionId === 'string' && /^\d+$/.test(i.subscriptionId) ? Number(i.subscriptionId) : NaN;
    if (!SUBSCRIPTIONS.some((s) => s.id === subId)) return `Subscription ${String(i.subscriptionId)} does not exist`;
    const state = i.statusState;
    if (state !== 'SUBSCRIBED' && state !== 'UNSUBSCRIBED' && state !== 'NOT_SPECIFIED') return 'statusState must be SUBSCRIBED, UNSUBSCRIBED or NOT_SPECIFIED';
    if (i.legalBasis !== undefined && !LEGAL_BASES.includes(String(i.legalBasis))) return `legalBasis must be one of ${LEGAL_BASES.join(', ')}`;
    if (this.knobs.requireLegalBasis && (!i.legalBasis || !i.legalBasisExplanation)) {
      return 'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled';
    }
    return { email, subId, state };
  }

  private writeSub(email: string, subId: number, state: 'SUBSCRIBED' | 'UNSUBSCRIBED' | 'NOT_SPECIFIED', i: Record<string, unknown>): void {
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
    const h = this.world.hsByNorm.get(norm);
    if (h) this.world.countHsWrite(h.id);
    else this.world.hsOrphanStatusWrites.set(norm, (this.world.hsOrphanStatusWrites.get(norm) ?? 0) + 1);
  }

  private v4BatchWrite(req: EmuRequest): EmuResponse {
    const started = this.world.now();
    const b = parseJson(req) as { inputs?: unknown };
    if (!b || !Array.isArray(b.inputs)) return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: Cannot build BatchInputPublicStatusRequest, some of required attributes are not set [inputs]');
    if (b.inputs.length > this.knobs.v4BatchMax) return this.err(400, 'VALIDATION_ERROR', `Batch input limit exceeded: at most ${this.knobs.v4BatchMax} inputs allowed`);
    const checked = (b.inputs as Record<string, unknown>[]).map((i) => ({ i, c: this.checkWrite(i ?? {}, true) }));
    if (this.knobs.requireLegalBasis && checked.some(({ c }) => typeof c === 'string' && c.startsWith('Legal basis'))) {
      return this.err(400, 'VALIDATION_ERROR', 'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled');
    }
    const results: unknown[] = [];
    const errors: unknown[] = [];
    for (const { i, c } of checked) {
      if (typeof c === 'string') {
        errors.push({ status: 'error', category: 'VALIDATION_ERROR', message: c, context: { subscriberIdString: [String(i?.subscriberIdString ?? '')] }, errors: [], links: {} });
        continue;
      }
      this.writeSub(c.email, c.subId, c.state, i);
      const st = this.statusesFor(c.email, 'REQUESTED_CHANGE_OCCURRED').find((s) => s.subscriptionId === c.subId);
      results.push(st);
    }
    const res = this.action(started, results, errors);
    if (errors.length) res.status = 207;
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
    return this.action(started, this.statusesFor(email, 'REQUESTED_CHANGE_OCCURRED').filter((s) => s.subscriptionId === c.subId));
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
      return this.err(400, 'VALIDATION_ERROR', 'Invalid input JSON: Cannot build PublicUpdateSubscriptionStatusRequest, some of required attributes are not set [emailAddress, subscriptionId]');
    }
    const email = b.emailAddress;
    if (!looksLikeEmail(email)) return this.err(400, 'VALIDATION_ERROR', `Invalid email address: ${email}`);
    const subId = Number(b.subscriptionId);
    const sub = SUBSCRIPTIONS.find((s) => s.id === subId);
    if (!sub) return this.err(400, 'VALIDATION_ERROR', `Subscription ${String(b.subscriptionId)} does not exist`);
    if (b.legalBasis !== undefined && !LEGAL_BASES.includes(String(b.legalBasis))) return this.err(400, 'VALIDATION_ERROR', `legalBasis must be one of ${LEGAL_BASES.join(', ')}`);
    if (this.knobs.requireLegalBasis && (!b.legalBasis || !b.legalBasisExplanation)) {
      return this.err(400, 'VALIDATION_ERROR', 'Legal basis and legal basis explanation are required because this portal has data privacy settings enabled');
    }
    const st = this.world.hubspotStatuses.get(normEmail(email));
    if (st && (st.allUnsubMs !== null || st.subs.get(subId)?.status === 'UNSUBSCRIBED')) {
      return this.err(400, 'VALIDATION_ERROR', `${email} is already unsubscribed from subscription ${subId}`);
    }
    this.writeSub(email, subId, 'UNSUBSCRIBED', b);
    const o: Record<string, unknown> = { id: String(sub.id), name: sub.name, description: sub.description, status: 'NOT_SUBSCRIBED', sourceOfStatus: 'SUBSCRIPTION_STATUS', brandId: 0 };
    if (b.legalBasis) o.legalBasis = b.legalBasis;
    if (b.legalBasisExplanation) o.legalBasisExplanation = b.legalBasisExplanation;
    return json(200, o);
  }

  // ------------------------------------------------------------------------------------------ OAuth

  private oauthToken(req: EmuRequest): EmuResponse {
    const form = parseForm(req);
    const bad = (status: string, message: string): EmuResponse => json(400, { status, message, correlationId: randomUUID() });
    if (form.get('grant_type') !== 'refresh_token') return bad('BAD_GRANT_TYPE', `grant_type must be refresh_token (got ${form.get('grant_type') ?? 'nothing'})`);
    if (form.get('client_id') !== this.clientId) return bad('BAD_CLIENT_ID', 'missing or unknown client id');
    if (form.get('client_secret') !== this.clientSecret) return bad('BAD_CLIENT_SECRET', 'missing or invalid client secret');
    if (form.get('refresh_token') !== this.refreshToken) return bad('BAD_REFRESH_TOKEN', 'missing or unknown refresh token');
    const access = `CO${randomBytes(32).toString('base64url')}`;
    const ttl = this.knobs.accessTokenTtlSec;
    this.oauthTokens.set(access, { expiresMs: this.world.now() + ttl * 1000 });
    return json(200, { token_type: 'bearer', refresh_token: this.refreshToken, access_token: access, expires_in: ttl });
  }

  private accessTokenInfo(req: EmuRequest): EmuResponse {
    const token = req.params.token;
    const t = this.oauthTokens.get(token);
    const isPrivate = token === this.privateToken;
    if (!isPrivate && (!t || t.expiresMs <= this.world.now())) return this.err(404, 'OBJECT_NOT_FOUND', 'Access token not found or expired');
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

  private privateTokenInfo(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as { tokenKey?: unknown };
    if (!b || typeof b.tokenKey !== 'string') return this.err(400, 'VALIDATION_ERROR', 'tokenKey is required');
    if (b.tokenKey !== this.privateToken) return this.err(401, 'INVALID_AUTHENTICATION', 'The private app access token is invalid');
    return json(200, { userId: 7, hubId: PORTAL_ID, appId: PRIVATE_APP_ID, scopes: [...this.scopes] });
  }
}

const DEFINITIONS_MS = Date.parse(DEFINITIONS_CREATED);

export async function startHubSpotServer(world: World, opts: HubSpotServerOptions = {}): Promise<HubSpotEmulator> {
  return new HubSpotEmulator(world, opts).start();
}
