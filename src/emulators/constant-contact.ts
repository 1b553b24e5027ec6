/**
 * Constant Contact V3 emulator: the contacts collection and counts, and the OAuth2 authorization server
 * (refresh tokens that rotate, PKCE authorization code, device flow), faithful to
 * constant-contact-v3.swagger.yaml (3.0.178) and the project's API notes.
 *
 * API base `${origin}/v3`, auth base `${origin}/oauth2/default/v1`.
 * Error bodies: 401 is a single object `{error_key, error_message}`; every other error is an array of them.
 */
import { createHash, randomBytes } from 'crypto';
import { CcContact, Permission } from './dataset';
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
  basicAuth,
  bearer,
  json,
  parseForm,
  parseJson,
  text,
} from './http';
import { AddOptOutSpec, World } from './world';

export interface CcKnobs extends CommonKnobs {
  /** Requests per second per application (rolling 1 s window). */
  perSecondLimit: number;
  /** Requests per UTC day per application. */
  dailyQuota: number;
  /** Access token lifetime (seconds). */
  accessTokenTtlSec: number;
  /** Each refresh returns a new refresh token and invalidates the old one. */
  rotateRefreshTokens: boolean;
  /** Whether status=unsubscribed (and /contacts/counts) also include unsubscribed-then-deleted contacts. */
  unsubscribedIncludesDeleted: boolean;
  /** Whether deleted (not unsubscribed) contacts show opt_out_source/opt_out_date, as the swagger describes. */
  deletedShowOptOutFields: boolean;
  /** Shape of 429 bodies: "array" ([{error_key, error_message}]) or "object". */
  throttleBodyShape: 'array' | 'object';
  /** Token endpoint: sustained requests per second (bursts of twice that within 2 s). */
  tokenRatePerSecond: number;
  /** Device flow: polls answered authorization_pending before the (auto) approval. */
  deviceApprovalPolls: number;
  /** Contact export: `GET /activities/{id}` polls answered `processing` before the final state. */
  exportPollsToComplete: number;
  /** Contact export: the state the activity ends in (`never`: stays `processing`). */
  exportOutcome: 'completed' | 'failed' | 'cancelled' | 'timed_out' | 'never';
  /** Contact export: rows of the file garbled (an email that is not an address). */
  exportCorruptRows: number;
  /** Contact export: rows left out of the file (its total then disagrees with /contacts/counts). */
  exportDropRows: number;
}

export const CC_DEFAULTS: Omit<CcKnobs, keyof CommonKnobs> = {
  perSecondLimit: 4,
  dailyQuota: 10_000,
  accessTokenTtlSec: 86_400,
  rotateRefreshTokens: true,
  unsubscribedIncludesDeleted: false,
  deletedShowOptOutFields: true,
  throttleBodyShape: 'array',
  tokenRatePerSecond: 1,
  deviceApprovalPolls: 1,
  exportPollsToComplete: 0,
  exportOutcome: 'completed',
  exportCorruptRows: 0,
  exportDropRows: 0,
};

/** Columns a contact export can hold (swagger ContactsExport.fields names; the CSV header uses them as given). */
export const EXPORT_FIELD_NAMES = [
  'contact_id',
  'email_address',
  'first_name',
  'last_name',
  'job_title',
  'company_name',
  'created_at',
  'updated_at',
  'email_optin_source',
  'email_optin_date',
  'email_optout_source',
  'email_optout_date',
  'email_optout_reason',
] as const;
const EXPORT_NEEDS_EMAIL = [
  'email_optin_source',
  'email_optin_date',
  'email_optout_source',
  'email_optout_date',
  'email_optout_reason',
];

interface ExportActivity {
  id: string;
  fileId: string;
  createdMs: number;
  polls: number;
  csv: string;
  rows: number;
}

export interface CcConnection {
  origin: string;
  apiBaseUrl: string;
  authBaseUrl: string;
  clientId: string;
  clientSecret: string;
  /** Valid until first used when rotation is on. */
  refreshToken: string;
}

export interface CcServerOptions extends ServerOptions {
  knobs?: Partial<CcKnobs>;
  clientId?: string;
  clientSecret?: string;
}

const STATUSES = ['all', 'active', 'deleted', 'not_set', 'pending_confirmation', 'temp_hold', 'unsubscribed'] as const;
const INCLUDES = [
  'custom_fields',
  'list_memberships',
  'phone_numbers',
  'street_addresses',
  'taggings',
  'notes',
] as const;
const AUTH = '/oauth2/default/v1';

const randomUuid = (): string => {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
};
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const b64url = (b: Buffer): string => b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

/** The replayable filter a cursor carries. */
interface ContactQuery {
  statuses: string[] | null;
  email: string | null;
  updatedAfter: number | null;
  updatedBefore: number | null;
  createdAfter: number | null;
  createdBefore: number | null;
  optoutAfter: number | null;
  optoutBefore: number | null;
  lists: string[] | null;
  include: string[];
  includeCount: boolean;
  limit: number;
}

interface AccessToken {
  expiresMs: number;
  scope: string;
}

interface AuthCode {
  redirectUri: string | null;
  challenge: string | null;
  method: string;
  scope: string;
  expiresMs: number;
}

interface DeviceCode {
  userCode: string;
  scope: string;
  polls: number;
  approved: boolean;
  expiresMs: number;
}

export class ConstantContactEmulator extends EmulatorServer<CcKnobs> {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly initialRefreshToken: string;
  private readonly refreshTokens = new Map<string, { scope: string }>();
  private readonly accessTokens = new Map<string, AccessToken>();
  private readonly codes = new Map<string, AuthCode>();
  private readonly devices = new Map<string, DeviceCode>();
  private readonly perSecond: RollingWindow;
  private readonly tokenWindow: RollingWindow;
  readonly daily = new DailyCounter();
  private countCache: { key: string; version: number; count: number } | null = null;
  /** Refresh tokens issued and invalidated so far (for tests of rotation). */
  readonly rotations: string[] = [];
  /** Contact export activities, by activity id. */
  readonly exports = new Map<string, ExportActivity>();

  constructor(world: World, opts: CcServerOptions = {}) {
    super('constant-contact', world, { ...COMMON_DEFAULTS, ...CC_DEFAULTS, ...(opts.knobs ?? {}) }, opts);
    this.clientId = opts.clientId ?? `cc-emu-${randomBytes(6).toString('hex')}`;
    this.clientSecret = opts.clientSecret ?? randomBytes(18).toString('base64url');
    this.initialRefreshToken = this.newRefreshToken('contact_data offline_access');
    this.perSecond = new RollingWindow(1000, this.knobs.perSecondLimit);
    this.tokenWindow = new RollingWindow(2000, 2 * this.knobs.tokenRatePerSecond);

    const r = this.router;
    r.add('GET', '/v3/contacts', (req) => this.listContacts(req));
    r.add('GET', '/v3/contacts/counts', (req) => this.counts_(req));
    r.add('GET', '/v3/contacts/:contact_id', (req) => this.getContact(req), 'api', 'GET /v3/contacts/{contact_id}');
    r.add('POST', '/v3/activities/contact_exports', (req) => this.createExport(req));
    r.add(
      'GET',
      '/v3/activities/:activity_id',
      (req) => this.getActivity(req),
      'api',
      'GET /v3/activities/{activity_id}',
    );
    r.add(
      'GET',
      '/v3/contact_exports/:file_export_id',
      (req) => this.getExportFile(req),
      'api',
      'GET /v3/contact_exports/{file_export_id}',
    );
    r.add('GET', '/v3/account/summary', () =>
      json(200, {
        encoded_account_id: 'a07e1emu0001',
        organization_name: 'Emulated Constant Contact Account',
        contact_email: 'owner@example.com',
        time_zone_id: 'America/New_York',
        country_code: 'US',
        state_code: 'MA',
      }),
    );
    r.add('POST', `${AUTH}/token`, (req) => this.token(req), 'auth');
    r.add('GET', `${AUTH}/authorize`, (req) => this.authorize(req), 'auth');
    r.add('POST', `${AUTH}/device/authorize`, (req) => this.deviceAuthorize(req), 'auth');
    r.add('GET', `${AUTH}/device`, (req) => this.deviceVerify(req), 'auth');

    this.admin.add('POST', '/__emulator/optouts', (req) => {
      const b = parseJson(req) as { count?: number; specs?: AddOptOutSpec[] };
      const added = this.world.addOptOuts(Array.isArray(b.specs) ? b.specs : Number(b.count ?? 1));
      return json(200, { added });
    });
    this.admin.add('POST', '/__emulator/refresh-token', () =>
      json(200, { refresh_token: this.newRefreshToken('contact_data offline_access') }),
    );
  }

  override setKnobs(patch: Record<string, unknown>): string[] {
    if (
      patch.throttleBodyShape !== undefined &&
      patch.throttleBodyShape !== 'array' &&
      patch.throttleBodyShape !== 'object'
    ) {
      return ['knob "throttleBodyShape" must be "array" or "object"'];
    }
    if (
      patch.exportOutcome !== undefined &&
      !['completed', 'failed', 'cancelled', 'timed_out', 'never'].includes(String(patch.exportOutcome))
    ) {
      return ['knob "exportOutcome" must be "completed", "failed", "cancelled", "timed_out" or "never"'];
    }
    if (patch.fail5xxMode !== undefined && patch.fail5xxMode !== 'before' && patch.fail5xxMode !== 'after') {
      return ['knob "fail5xxMode" must be "before" or "after"'];
    }
    const problems = super.setKnobs(patch);
    this.perSecond.setMax(this.knobs.perSecondLimit);
    this.tokenWindow.setMax(2 * this.knobs.tokenRatePerSecond);
    return problems;
  }

  setDailyUsed(n: number): void {
    this.daily.set(this.world.now(), n);
  }

  expireTokens(): void {
    this.accessTokens.clear();
  }

  /** Invalidate every refresh token (a person must re-authorise). */
  revokeRefreshTokens(): void {
    this.refreshTokens.clear();
  }

  connection(): CcConnection {
    return {
      origin: this.origin,
      apiBaseUrl: `${this.origin}/v3`,
      authBaseUrl: `${this.origin}${AUTH}`,
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      refreshToken: this.initialRefreshToken,
    };
  }

  /** Issue a new valid refresh token (e.g. after a simulated re-authorisation). */
  newRefreshToken(scope: string): string {
    const t = `cc-rt-${randomBytes(24).toString('base64url')}`;
    this.refreshTokens.set(t, { scope });
    return t;
  }

  isRefreshTokenValid(t: string): boolean {
    return this.refreshTokens.has(t);
  }

  protected vendorState(_summary: boolean): Record<string, unknown> {
    return {
      constantContact: {
        contacts: this.world.data.cc.length,
        dailyUsed: this.daily.used(this.world.now()),
        validAccessTokens: this.accessTokens.size,
        validRefreshTokens: this.refreshTokens.size,
        refreshTokenRotations: this.rotations.length,
      },
    };
  }

  // ------------------------------------------------------------------------------------------ errors

  private errs(status: number, key: string, message: string): EmuResponse {
    return json(status, [{ error_key: key, error_message: message }]);
  }

  protected errorResponse(
    kind: 'not-found' | 'method' | 'bad-request' | 'server' | 'storm',
    status: number,
    message: string,
  ): EmuResponse {
    switch (kind) {
      case 'not-found':
        return this.errs(404, 'not_found', message);
      case 'method':
        return this.errs(405, 'method_not_allowed', message);
      case 'bad-request':
        return this.errs(400, 'malformed_request', message);
      case 'storm':
        return this.throttled('throttled', 'Too many requests (emulated 429 storm).');
      case 'server':
        return this.errs(status, status === 503 ? 'service_unavailable' : 'server_error', message);
    }
  }

  private throttled(key: 'throttled' | 'quota_exceeded', message: string): EmuResponse {
    const one = { error_key: key, error_message: message };
    return json(429, this.knobs.throttleBodyShape === 'object' ? one : [one]);
  }

  private unauthorized(message: string): EmuResponse {
    // The one error Constant Contact returns as a single object.
    return json(401, { error_key: 'unauthorized', error_message: message });
  }

  // ------------------------------------------------------------------------------------------ gate

  protected gate(req: EmuRequest, route: Route): EmuResponse | undefined {
    const now = this.world.now();
    if (route.kind === 'auth') {
      if (route.name.startsWith('POST') && !this.tokenWindow.tryTake(Date.now())) {
        return json(429, {
          errorCode: 'E0000047',
          errorSummary: 'API call exceeded rate limit due to too many requests.',
          errorLink: 'E0000047',
          errorId: `oae${randomBytes(8).toString('hex')}`,
          errorCauses: [],
        });
      }
      return undefined;
    }
    const token = bearer(req);
    if (!token) return this.unauthorized('Unauthorized: no Authorization Bearer header.');
    const t = this.accessTokens.get(token);
    if (!t || t.expiresMs <= now) {
      if (t) this.accessTokens.delete(token);
      return this.unauthorized('Unauthorized: the access token is invalid or expired.');
    }
    if (!/\bcontact_data\b/.test(t.scope))
      return this.errs(403, 'forbidden', 'The access token lacks the contact_data scope.');
    if (this.daily.used(now) >= this.knobs.dailyQuota) {
      return this.throttled(
        'quota_exceeded',
        `Daily quota of ${this.knobs.dailyQuota} requests exceeded; it resets at ${DailyCounter.resetAt(now)}.`,
      );
    }
    // Rate windows run on wall-clock time (a frozen test clock must not freeze them); quotas and tokens on the world clock.
    if (!this.perSecond.tryTake(Date.now())) {
      return this.throttled(
        'throttled',
        `Too many requests: the limit is ${this.knobs.perSecondLimit} requests per second.`,
      );
    }
    this.daily.add(now);
    return undefined;
  }

  // ------------------------------------------------------------------------------------------ contacts

  private parseDate(v: string | null, name: string): number | null | string {
    if (v === null || v === '') return null;
    const ms = Date.parse(v);
    if (!Number.isFinite(ms)) return `${name} must be an ISO-8601 date-time (got "${v}")`;
    return ms;
  }

  private parseQuery(q: URLSearchParams): ContactQuery | string {
    let statuses: string[] | null = null;
    const st = q.get('status');
    if (st !== null) {
      statuses = st
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const bad = statuses.filter((s) => !(STATUSES as readonly string[]).includes(s));
      if (bad.length || statuses.length === 0)
        return `status "${bad.join(',') || st}" is not valid; use one or more of ${STATUSES.join(', ')}`;
    }
    const include = (q.get('include') ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const badInc = include.filter((s) => !(INCLUDES as readonly string[]).includes(s));
    if (badInc.length) return `include "${badInc.join(',')}" is not valid; use ${INCLUDES.join(', ')}`;
    const limRaw = q.get('limit');
    let limit = 50;
    if (limRaw !== null) {
      if (!/^\d+$/.test(limRaw)) return `limit must be an integer from 1 to 500 (got "${limRaw}")`;
      limit = Number(limRaw);
      if (limit < 1 || limit > 500) return `limit must be an integer from 1 to 500 (got ${limit})`;
    }
    const ic = q.get('include_count');
    if (ic !== null && ic !== 'true' && ic !== 'false') return `include_count must be true or false`;
    const dates: Record<string, number | null> = {};
    for (const name of [
      'updated_after',
      'updated_before',
      'created_after',
      'created_before',
      'optout_after',
      'optout_before',
    ]) {
      const v = this.parseDate(q.get(name), name);
      if (typeof v === 'string') return v;
      dates[name] = v;
    }
    const lists = q.get('lists');
    return {
      statuses,
      email: q.get('email') !== null ? q.get('email')!.trim().toLowerCase() : null,
      updatedAfter: dates.updated_after,
      updatedBefore: dates.updated_before,
      createdAfter: dates.created_after,
      createdBefore: dates.created_before,
      optoutAfter: dates.optout_after,
      optoutBefore: dates.optout_before,
      lists: lists
        ? lists
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : null,
      include,
      includeCount: ic === 'true',
      limit,
    };
  }

  /** The opt-out date a client can see (deleted contacts may show the deletion as an opt-out date). */
  private visibleOptOut(c: CcContact): number | null {
    const e = c.email;
    if (!e || e.optOutMs === null) return null;
    if (e.permission !== 'unsubscribed' && !this.knobs.deletedShowOptOutFields) return null;
    return e.optOutMs;
  }

  private statusMatch(s: string, c: CcContact): boolean {
    const deleted = c.deletedMs !== null;
    if (s === 'all') return true;
    if (s === 'deleted') return deleted;
    if (deleted && !(s === 'unsubscribed' && this.knobs.unsubscribedIncludesDeleted)) return false;
    const perm: Permission = c.email ? c.email.permission : 'not_set';
    if (s === 'active') return perm === 'explicit' || perm === 'implicit';
    return perm === s;
  }

  private matches(c: CcContact, q: ContactQuery): boolean {
    if (q.statuses === null) {
      if (c.deletedMs !== null) return false;
    } else if (!q.statuses.some((s) => this.statusMatch(s, c))) return false;
    if (q.email !== null && (!c.email || c.email.norm !== q.email)) return false;
    // updated_after / updated_before: the TOP-LEVEL updated_at only (personal details). The trap.
    if (q.updatedAfter !== null && c.updatedMs < q.updatedAfter) return false;
    if (q.updatedBefore !== null && c.updatedMs > q.updatedBefore) return false;
    if (q.createdAfter !== null && c.createdMs < q.createdAfter) return false;
    if (q.createdBefore !== null && c.createdMs > q.createdBefore) return false;
    if (q.optoutAfter !== null || q.optoutBefore !== null) {
      const o = this.visibleOptOut(c);
      if (o === null) return false;
      if (q.optoutAfter !== null && o < q.optoutAfter) return false;
      if (q.optoutBefore !== null && o > q.optoutBefore) return false;
    }
    if (q.lists !== null && !c.listIds.some((l) => q.lists!.includes(l))) return false;
    return true;
  }

  contactJson(c: CcContact, include: readonly string[]): Record<string, unknown> {
    const o: Record<string, unknown> = { contact_id: c.id };
    const e = c.email;
    if (e) {
      const ea: Record<string, unknown> = {
        address: e.raw,
        permission_to_send: e.permission,
        created_at: iso(e.createdMs),
        updated_at: iso(e.updatedMs),
        opt_in_source: e.optInSource,
      };
      if (e.optInMs !== null) ea.opt_in_date = iso(e.optInMs);
      const out = this.visibleOptOut(c);
      if (out !== null) {
        ea.opt_out_source = e.optOutSource ?? 'Account';
        ea.opt_out_date = iso(out);
        if (e.optOutReason) ea.opt_out_reason = e.optOutReason;
      }
      ea.confirm_status = e.confirmStatus;
      o.email_address = ea;
    }
    o.first_name = c.firstName;
    o.last_name = c.lastName;
    if (c.jobTitle) o.job_title = c.jobTitle;
    if (c.companyName) o.company_name = c.companyName;
    o.create_source = c.createSource;
    if (c.updateSource) o.update_source = c.updateSource;
    o.created_at = iso(c.createdMs);
    o.updated_at = iso(c.updatedMs);
    if (c.deletedMs !== null) o.deleted_at = new Date(c.deletedMs).toISOString().slice(0, 10);
    if (c.sms) {
      o.sms_channel = {
        sms_channel_id: c.sms.id,
        sms_address: c.sms.address,
        dial_code: c.sms.dialCode,
        country_code: c.sms.countryCode,
        create_source: c.createSource,
        sms_channel_consents: [
          {
            sms_consent_permission: c.sms.permission,
            consent_type: 'promotional_sms',
            opt_in_date: iso(c.sms.createdMs),
            created_at: iso(c.sms.createdMs),
            updated_at: iso(c.sms.createdMs),
          },
        ],
      };
    }
    for (const inc of include) {
      if (inc === 'list_memberships') o.list_memberships = [...c.listIds];
      else o[inc] = [];
    }
    return o;
  }

  private encodeCursor(q: ContactQuery, after: number): string {
    return b64url(Buffer.from(JSON.stringify({ v: 1, q, a: after }), 'utf8'));
  }

  private decodeCursor(s: string): { q: ContactQuery; a: number } | null {
    try {
      const o = JSON.parse(Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8')) as {
        v: number;
        q: ContactQuery;
        a: number;
      };
      if (o.v !== 1 || typeof o.a !== 'number' || !o.q || typeof o.q.limit !== 'number') return null;
      return { q: o.q, a: o.a };
    } catch {
      return null;
    }
  }

  private listContacts(req: EmuRequest): EmuResponse {
    let q: ContactQuery;
    let after = -1;
    const cursor = req.query.get('cursor');
    if (cursor !== null) {
      const d = this.decodeCursor(cursor);
      if (!d) return this.errs(400, 'query.param.invalid', 'The cursor is invalid.');
      q = d.q;
      after = d.a;
    } else {
      const p = this.parseQuery(req.query);
      if (typeof p === 'string') return this.errs(400, 'query.param.invalid', p);
      q = p;
    }
    const all = this.world.data.cc;
    const page: CcContact[] = [];
    let i = after + 1;
    for (; i < all.length && page.length < q.limit; i++) if (this.matches(all[i], q)) page.push(all[i]);
    // Is there anything after this page?
    let more = false;
    for (let j = i; j < all.length; j++) {
      if (this.matches(all[j], q)) {
        more = true;
        break;
      }
    }
    const body: Record<string, unknown> = { contacts: page.map((c) => this.contactJson(c, q.include)) };
    if (q.includeCount) body.contacts_count = this.countMatching(q);
    if (more && page.length > 0)
      body._links = { next: { href: `/v3/contacts?cursor=${this.encodeCursor(q, page[page.length - 1].idx)}` } };
    return json(200, body);
  }

  private countMatching(q: ContactQuery): number {
    const key = JSON.stringify({ ...q, limit: 0 });
    if (this.countCache && this.countCache.key === key && this.countCache.version === this.world.version)
      return this.countCache.count;
    let n = 0;
    for (const c of this.world.data.cc) if (this.matches(c, q)) n++;
    this.countCache = { key, version: this.world.version, count: n };
    return n;
  }

  // ------------------------------------------------------------------------------------------ bulk export

  /** `POST /activities/contact_exports` (swagger ContactsExport: `status` and `fields` are emulated; the file is taken now). */
  private createExport(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as Record<string, unknown>;
    if (!b || typeof b !== 'object' || Array.isArray(b))
      return this.errs(400, 'malformed_request', 'The body must be a ContactsExport object.');
    const other = Object.keys(b).filter((k) => k !== 'status' && k !== 'fields');
    if (other.length)
      return this.errs(400, 'malformed_request', `ContactsExport properties not emulated: ${other.join(', ')}`);
    let status: string | null = null;
    if (b.status !== undefined) {
      if (typeof b.status !== 'string' || !(STATUSES as readonly string[]).includes(b.status))
        return this.errs(400, 'malformed_request', `status "${String(b.status)}" is not valid`);
      status = b.status;
    }
    let fields: string[] = [...EXPORT_FIELD_NAMES];
    if (b.fields !== undefined) {
      if (!Array.isArray(b.fields) || b.fields.some((f) => typeof f !== 'string'))
        return this.errs(400, 'malformed_request', 'fields must be an array of strings');
      const bad = (b.fields as string[]).filter((f) => !(EXPORT_FIELD_NAMES as readonly string[]).includes(f));
      if (bad.length) return this.errs(400, 'malformed_request', `unknown export field(s): ${bad.join(', ')}`);
      fields = b.fields as string[];
      if (fields.some((f) => EXPORT_NEEDS_EMAIL.includes(f)) && !fields.includes('email_address')) {
        return this.errs(
          400,
          'malformed_request',
          'email_address must be exported to export the email opt-in/opt-out fields',
        );
      }
    }
    const q: ContactQuery = {
      statuses: status === null ? null : [status],
      email: null,
      updatedAfter: null,
      updatedBefore: null,
      createdAfter: null,
      createdBefore: null,
      optoutAfter: null,
      optoutBefore: null,
      lists: null,
      include: [],
      includeCount: false,
      limit: 500,
    };
    const rows: string[][] = [];
    for (const c of this.world.data.cc) if (this.matches(c, q)) rows.push(fields.map((f) => this.exportCell(c, f)));
    rows.splice(Math.max(0, rows.length - this.knobs.exportDropRows), this.knobs.exportDropRows);
    const ie = fields.indexOf('email_address');
    for (let i = 0; i < Math.min(this.knobs.exportCorruptRows, rows.length); i++)
      if (ie >= 0) rows[i]![ie] = `not-an-address-${i}`;
    const esc = (v: string): string => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
    const csv = [fields, ...rows].map((r) => r.map(esc).join(',')).join('\r\n') + '\r\n';
    const a: ExportActivity = {
      id: randomUuid(),
      fileId: randomUuid(),
      createdMs: this.world.now(),
      polls: 0,
      csv,
      rows: rows.length,
    };
    this.exports.set(a.id, a);
    return json(201, this.activityJson(a, 'initialized'));
  }

  private exportCell(c: CcContact, f: string): string {
    const e = c.email;
    const out = this.visibleOptOut(c);
    switch (f) {
      case 'contact_id':
        return c.id;
      case 'email_address':
        return e ? e.raw : '';
      case 'first_name':
        return c.firstName;
      case 'last_name':
        return c.lastName;
      case 'job_title':
        return c.jobTitle ?? '';
      case 'company_name':
        return c.companyName ?? '';
      case 'created_at':
        return iso(c.createdMs);
      case 'updated_at':
        return iso(c.updatedMs);
      case 'email_optin_source':
        return e ? e.optInSource : '';
      case 'email_optin_date':
        return e && e.optInMs !== null ? iso(e.optInMs) : '';
      case 'email_optout_source':
        return e && out !== null ? (e.optOutSource ?? 'Account') : '';
      case 'email_optout_date':
        return out !== null ? iso(out) : '';
      case 'email_optout_reason':
        return e && out !== null ? (e.optOutReason ?? '') : '';
      default:
        return '';
    }
  }

  private activityJson(a: ExportActivity, state: string): Record<string, unknown> {
    const done = state === 'completed';
    const body: Record<string, unknown> = {
      activity_id: a.id,
      state,
      created_at: iso(a.createdMs),
      updated_at: iso(this.world.now()),
      percent_done: done ? 100 : state === 'initialized' ? 0 : 50,
      activity_errors: state === 'failed' ? ['Export failed (emulated).'] : [],
      status: { items_total_count: a.rows, items_completed_count: done ? a.rows : 0 },
      _links: {
        self: { href: `/v3/activities/${a.id}` },
        ...(done ? { results: { href: `/v3/contact_exports/${a.fileId}` } } : {}),
      },
    };
    if (state !== 'initialized') body.started_at = iso(a.createdMs);
    if (done) body.completed_at = iso(this.world.now());
    return body;
  }

  /** `GET /activities/{id}`: `processing` for exportPollsToComplete polls, then exportOutcome. */
  private getActivity(req: EmuRequest): EmuResponse {
    const a = this.exports.get(req.params.activity_id);
    if (!a) return this.errs(404, 'not_found', `Activity ${req.params.activity_id} not found.`);
    a.polls += 1;
    const outcome = this.knobs.exportOutcome;
    const state = a.polls <= this.knobs.exportPollsToComplete || outcome === 'never' ? 'processing' : outcome;
    return json(200, this.activityJson(a, state));
  }

  private getExportFile(req: EmuRequest): EmuResponse {
    for (const a of this.exports.values())
      if (a.fileId === req.params.file_export_id) return text(200, a.csv, 'text/csv');
    return this.errs(404, 'not_found', `Export file ${req.params.file_export_id} not found.`);
  }

  private getContact(req: EmuRequest): EmuResponse {
    const c = this.world.ccById.get(req.params.contact_id);
    if (!c) return this.errs(404, 'not_found', `Contact ${req.params.contact_id} not found.`);
    const include = (req.query.get('include') ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    return json(200, this.contactJson(c, include));
  }

  private counts_(req: EmuRequest): EmuResponse {
    let total = 0;
    let explicit = 0;
    let implicit = 0;
    let pending = 0;
    let unsubscribed = 0;
    let newSubs = 0;
    const since = this.world.now() - 30 * 86_400_000;
    for (const c of this.world.data.cc) {
      const deleted = c.deletedMs !== null;
      const p = c.email?.permission;
      if (deleted) {
        if (p === 'unsubscribed' && this.knobs.unsubscribedIncludesDeleted) unsubscribed++;
        continue;
      }
      total++;
      if (p === 'explicit') explicit++;
      else if (p === 'implicit') implicit++;
      else if (p === 'pending_confirmation') pending++;
      else if (p === 'unsubscribed') unsubscribed++;
      if (
        c.email?.optInMs !== null &&
        c.email?.optInMs !== undefined &&
        c.email.optInMs >= since &&
        p !== 'unsubscribed'
      )
        newSubs++;
    }
    const body: Record<string, number> = { total, explicit, implicit, pending, unsubscribed };
    if ((req.query.get('include') ?? '').split(',').includes('new_subscriber')) body.new_subscriber = newSubs;
    return json(200, body);
  }

  // ------------------------------------------------------------------------------------------ OAuth2

  private oauthError(status: number, error: string, description: string): EmuResponse {
    return json(status, { error, error_description: description });
  }

  private issue(scope: string, withRefresh: string | null): EmuResponse {
    const access = `cc-at-${randomBytes(24).toString('base64url')}`;
    const ttl = this.knobs.accessTokenTtlSec;
    this.accessTokens.set(access, { expiresMs: this.world.now() + ttl * 1000, scope });
    const body: Record<string, unknown> = { token_type: 'Bearer', expires_in: ttl, access_token: access, scope };
    if (withRefresh) body.refresh_token = withRefresh;
    return json(200, body, { 'cache-control': 'no-store', pragma: 'no-cache' });
  }

  /** Client authentication: Basic header, or client_id (+ client_secret) in the form. */
  private client(req: EmuRequest, form: URLSearchParams, secretRequired: boolean): EmuResponse | undefined {
    const basic = basicAuth(req);
    const id = basic ? basic.user : form.get('client_id');
    const secret = basic ? basic.pass : form.get('client_secret');
    if (!id) return this.oauthError(401, 'invalid_client', 'Client authentication failed: no client credentials.');
    if (id !== this.clientId) return this.oauthError(401, 'invalid_client', 'The client_id is not known.');
    if (secret !== null && secret !== this.clientSecret)
      return this.oauthError(401, 'invalid_client', 'The client secret supplied for a confidential client is invalid.');
    if (secretRequired && secret === null)
      return this.oauthError(401, 'invalid_client', 'Client authentication failed: a client secret is required.');
    return undefined;
  }

  private token(req: EmuRequest): EmuResponse {
    const ct = String(req.headers['content-type'] ?? '');
    if (!ct.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return this.oauthError(400, 'invalid_request', 'The token request must be application/x-www-form-urlencoded.');
    }
    const form = parseForm(req);
    const grant = form.get('grant_type');
    const now = this.world.now();
    switch (grant) {
      case 'refresh_token': {
        // Confidential clients authenticate; PKCE-issued tokens may refresh with client_id only.
        const bad = this.client(req, form, false);
        if (bad) return bad;
        const rt = form.get('refresh_token') ?? '';
        const rec = this.refreshTokens.get(rt);
        if (!rec) return this.oauthError(400, 'invalid_grant', 'The refresh token is invalid or expired.');
        let next = rt;
        if (this.knobs.rotateRefreshTokens) {
          this.refreshTokens.delete(rt);
          this.rotations.push(rt);
          next = this.newRefreshToken(rec.scope);
        }
        return this.issue(rec.scope, next);
      }
      case 'authorization_code': {
        const bad = this.client(req, form, false);
        if (bad) return bad;
        const code = form.get('code') ?? '';
        const c = this.codes.get(code);
        if (!c || c.expiresMs <= now)
          return this.oauthError(400, 'invalid_grant', 'The authorization code is invalid or has expired.');
        this.codes.delete(code); // single use
        if (c.redirectUri !== null && form.get('redirect_uri') !== c.redirectUri) {
          return this.oauthError(
            400,
            'invalid_grant',
            "The 'redirect_uri' does not match the redirection URI used in the authorization request.",
          );
        }
        if (c.challenge !== null) {
          const verifier = form.get('code_verifier');
          if (!verifier)
            return this.oauthError(400, 'invalid_grant', 'PKCE verification failed: code_verifier is required.');
          const computed = c.method === 'S256' ? b64url(createHash('sha256').update(verifier).digest()) : verifier;
          if (computed !== c.challenge) return this.oauthError(400, 'invalid_grant', 'PKCE verification failed.');
        } else if (basicAuth(req) === null && form.get('client_secret') === null) {
          return this.oauthError(401, 'invalid_client', 'Client authentication failed.');
        }
        const offline = /\boffline_access\b/.test(c.scope);
        return this.issue(c.scope, offline ? this.newRefreshToken(c.scope) : null);
      }
      case 'urn:ietf:params:oauth:grant-type:device_code': {
        const bad = this.client(req, form, false);
        if (bad) return bad;
        const dc = form.get('device_code') ?? '';
        const d = this.devices.get(dc);
        if (!d) return this.oauthError(400, 'invalid_grant', 'The device code is invalid.');
        if (d.expiresMs <= now) {
          this.devices.delete(dc);
          return this.oauthError(400, 'expired_token', 'The device code has expired.');
        }
        d.polls++;
        if (!d.approved && d.polls > this.knobs.deviceApprovalPolls) d.approved = true;
        if (!d.approved)
          return this.oauthError(
            400,
            'authorization_pending',
            'The device authorization is pending. Please try again later.',
          );
        this.devices.delete(dc);
        const offline = /\boffline_access\b/.test(d.scope);
        return this.issue(d.scope, offline ? this.newRefreshToken(d.scope) : null);
      }
      default:
        return this.oauthError(400, 'unsupported_grant_type', `The grant type "${grant ?? ''}" is not supported.`);
    }
  }

  /** Auto-approving authorization endpoint: redirects straight back with a code (and the state). */
  private authorize(req: EmuRequest): EmuResponse {
    const q = req.query;
    if (q.get('client_id') !== this.clientId) return text(400, 'Unknown client_id', 'text/plain');
    const redirect = q.get('redirect_uri');
    if (!redirect) return text(400, 'redirect_uri is required', 'text/plain');
    let target: URL;
    try {
      target = new URL(redirect);
    } catch {
      return text(400, 'redirect_uri is not a URL', 'text/plain');
    }
    if (q.get('response_type') !== 'code') {
      target.searchParams.set('error', 'unsupported_response_type');
      if (q.get('state') !== null) target.searchParams.set('state', q.get('state')!);
      return { status: 302, headers: { location: target.toString() } };
    }
    const challenge = q.get('code_challenge');
    const method = q.get('code_challenge_method') ?? (challenge ? 'plain' : 'none');
    if (challenge && method !== 'S256' && method !== 'plain') {
      target.searchParams.set('error', 'invalid_request');
      target.searchParams.set('error_description', 'code_challenge_method must be S256');
      return { status: 302, headers: { location: target.toString() } };
    }
    const code = randomBytes(16).toString('base64url');
    this.codes.set(code, {
      redirectUri: redirect,
      challenge,
      method,
      scope: q.get('scope') ?? 'contact_data',
      expiresMs: this.world.now() + 5 * 60_000,
    });
    target.searchParams.set('code', code);
    if (q.get('state') !== null) target.searchParams.set('state', q.get('state')!);
    return { status: 302, headers: { location: target.toString() } };
  }

  private deviceAuthorize(req: EmuRequest): EmuResponse {
    const form = parseForm(req);
    const basic = basicAuth(req);
    const id = basic ? basic.user : form.get('client_id');
    if (id !== this.clientId) return this.oauthError(401, 'invalid_client', 'The client_id is not known.');
    const deviceCode = randomBytes(24).toString('base64url');
    const userCode = `${randomBytes(2).toString('hex').toUpperCase()}-${randomBytes(2).toString('hex').toUpperCase()}`;
    this.devices.set(deviceCode, {
      userCode,
      scope: form.get('scope') ?? 'contact_data offline_access',
      polls: 0,
      approved: false,
      expiresMs: this.world.now() + 600_000,
    });
    return json(200, {
      device_code: deviceCode,
      user_code: userCode,
      verification_uri: `${this.origin}${AUTH}/device`,
      verification_uri_complete: `${this.origin}${AUTH}/device?user_code=${encodeURIComponent(userCode)}`,
      expires_in: 600,
      interval: 1,
    });
  }

  private deviceVerify(req: EmuRequest): EmuResponse {
    const code = req.query.get('user_code');
    for (const d of this.devices.values()) {
      if (d.userCode === code) {
        d.approved = true;
        return text(
          200,
          '<html><body>Device approved (emulator). You can close this window.</body></html>',
          'text/html',
        );
      }
    }
    return text(404, '<html><body>Unknown user code.</body></html>', 'text/html');
  }
}

export async function startConstantContactServer(
  world: World,
  opts: CcServerOptions = {},
): Promise<ConstantContactEmulator> {
  return new ConstantContactEmulator(world, opts).start();
}
