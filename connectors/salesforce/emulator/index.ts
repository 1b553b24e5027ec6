/**
 * Salesforce emulator: OAuth token endpoint (JWT bearer verified with RS256 against a generated key pair,
 * client credentials, refresh token), REST query with a SOQL subset and query locators, sObject Collections
 * update, single-record update, describe, limits, and Bulk API 2.0 ingest (update) jobs.
 *
 * The login URL and the instance URL are both this server's origin. Every /services/data response carries
 * `Sforce-Limit-Info: api-usage=N/M`; past the daily allocation requests get 403 REQUEST_LIMIT_EXCEEDED;
 * an invalid or expired token gets 401 INVALID_SESSION_ID. URLs over 16,384 bytes get 414, and request
 * lines plus headers over 16,384 bytes get 431.
 */
import {
  createHmac,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  verify as cryptoVerify,
  KeyObject,
} from 'crypto';
import * as http from 'http';
import {
  COMMON_DEFAULTS,
  CommonKnobs,
  DailyCounter,
  EmuRequest,
  EmuResponse,
  EmulatorServer,
  Route,
  ServerOptions,
  basicAuth,
  bearer,
  empty,
  json,
  parseForm,
  parseJson,
  text,
  parseCsv,
  toCsv,
  SfRecord,
  SfType,
  createRng,
  deriveSeed,
  Rng,
  KEY_PREFIX,
  makeSfId,
  to18,
  World,
} from '../../../src/sdk/emulator';
import {
  Cond,
  FieldDef,
  Literal,
  Row,
  SoqlError,
  SoqlQuery,
  evaluate,
  parseSoql,
  resolveField,
  validateQuery,
} from './soql';

export interface SalesforceKnobs extends CommonKnobs {
  /** Daily API request allocation (api-usage=N/M). */
  dailyApiLimit: number;
  /** Session (access token) lifetime in seconds. */
  accessTokenTtlSec: number;
  /** Probability (0..1, seeded) that a record update fails with UNABLE_TO_LOCK_ROW. */
  lockRate: number;
  /** The next N record updates fail with UNABLE_TO_LOCK_ROW. */
  lockNext: number;
  /** GET of a Bulk 2.0 job answers InProgress this many times after UploadComplete, then JobComplete. */
  bulkInProgressPolls: number;
}

export const SALESFORCE_DEFAULTS: Omit<SalesforceKnobs, keyof CommonKnobs> = {
  dailyApiLimit: 100_000,
  accessTokenTtlSec: 7200,
  lockRate: 0,
  lockNext: 0,
  bulkInProgressPolls: 0,
};

export const SALESFORCE_API_VERSION = '59.0';
export const MAX_URI_BYTES = 16_384;
/** Composite: subrequests per call, and of those, queries or sObject Collections operations. */
export const COMPOSITE_MAX_SUBREQUESTS = 25;
export const COMPOSITE_MAX_HEAVY = 5;

export interface SalesforceConnection {
  loginUrl: string;
  instanceUrl: string;
  apiVersion: string;
  clientId: string;
  clientSecret: string;
  username: string;
  /** PKCS#8 PEM of the key the connected app trusts (JWT bearer assertions must be RS256-signed with it). */
  privateKeyPem: string;
  publicKeyPem: string;
  /** A valid session, pre-issued (expires like any other). */
  accessToken: string;
  /** Valid refresh token for the refresh_token grant (not rotated). */
  refreshToken: string;
  personAccounts: boolean;
}

export interface SalesforceServerOptions extends ServerOptions {
  knobs?: Partial<SalesforceKnobs>;
  /** Reuse a key pair (PEM, PKCS#8) instead of generating one. */
  privateKeyPem?: string;
  username?: string;
  clientId?: string;
}

const ORG_ID = makeSfId(KEY_PREFIX.Organization, 1, 'Dn000');
const USER_ID = makeSfId(KEY_PREFIX.User, 1, 'Dn000');
const AUDIENCES = ['https://login.salesforce.com', 'https://test.salesforce.com'];

const CUSTOM: FieldDef[] = [
  { name: 'CC_Opt_Out_Date__c', type: 'datetime', updateable: true },
  { name: 'CC_Opt_Out_Source__c', type: 'string', updateable: true },
  { name: 'CC_Opt_Out_Reason__c', type: 'textarea', updateable: true },
];

function describeFields(type: SfType, personAccounts: boolean): FieldDef[] {
  const common: FieldDef[] = [
    { name: 'Id', type: 'id', updateable: false },
    { name: 'IsDeleted', type: 'boolean', updateable: false },
    { name: 'CreatedDate', type: 'datetime', updateable: false },
    { name: 'LastModifiedDate', type: 'datetime', updateable: false },
  ];
  if (type === 'Contact') {
    return [
      ...common,
      { name: 'FirstName', type: 'string', updateable: true },
      { name: 'LastName', type: 'string', updateable: true },
      { name: 'Email', type: 'email', updateable: true },
      { name: 'HasOptedOutOfEmail', type: 'boolean', updateable: true },
      { name: 'AccountId', type: 'reference', updateable: true },
      ...CUSTOM,
    ];
  }
  if (type === 'Lead') {
    return [
      ...common,
      { name: 'FirstName', type: 'string', updateable: true },
      { name: 'LastName', type: 'string', updateable: true },
      { name: 'Email', type: 'email', updateable: true },
      { name: 'HasOptedOutOfEmail', type: 'boolean', updateable: true },
      { name: 'Company', type: 'string', updateable: true },
      { name: 'Status', type: 'picklist', updateable: true },
      { name: 'IsConverted', type: 'boolean', updateable: false },
      { name: 'ConvertedContactId', type: 'reference', updateable: false },
      { name: 'ConvertedDate', type: 'date', updateable: false },
      ...CUSTOM,
    ];
  }
  const acc: FieldDef[] = [...common, { name: 'Name', type: 'string', updateable: true }];
  if (personAccounts) {
    acc.push(
      { name: 'IsPersonAccount', type: 'boolean', updateable: false },
      { name: 'PersonEmail', type: 'email', updateable: true },
      { name: 'PersonHasOptedOutOfEmail', type: 'boolean', updateable: true },
      { name: 'FirstName', type: 'string', updateable: true },
      { name: 'LastName', type: 'string', updateable: true },
    );
  }
  return acc;
}

const TYPES: SfType[] = ['Contact', 'Lead', 'Account'];
const isType = (s: string): s is SfType => (TYPES as string[]).includes(s);

/** Salesforce datetime format: 2024-01-31T10:11:12.000+0000. */
function sfDateTime(v: string | number | boolean | null): string | number | boolean | null {
  if (typeof v !== 'string') return v;
  if (!/^\d{4}-\d{2}-\d{2}T/.test(v)) return v;
  const ms = Date.parse(v);
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace('Z', '+0000') : v;
}

interface RecordError {
  statusCode: string;
  message: string;
  fields: string[];
}

interface PlannedUpdate {
  rec: SfRecord | null;
  id: string | null;
  values: Record<string, string | number | boolean | null>;
  error: RecordError | null;
}

interface Locator {
  rows: Row[];
  type: SfType;
  version: string;
  total: number;
  batch: number;
}

interface IngestJob {
  id: string;
  object: SfType;
  operation: string;
  state: 'Open' | 'UploadComplete' | 'InProgress' | 'JobComplete' | 'Aborted' | 'Failed';
  lineEnding: 'LF' | 'CRLF';
  createdDate: string;
  systemModstamp: string;
  apiVersion: string;
  uploads: string[];
  header: string[];
  successes: string[][];
  failures: string[][];
  unprocessed: string[][];
  processed: number;
  failed: number;
  errorMessage: string | null;
  pollsLeft: number;
  started: number;
  finished: number;
}

export class SalesforceEmulator extends EmulatorServer<SalesforceKnobs> {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly username: string;
  readonly privateKeyPem: string;
  readonly publicKeyPem: string;
  private readonly publicKey: KeyObject;
  readonly refreshToken: string;
  private readonly sessions = new Map<string, { expiresMs: number }>();
  private initialAccessToken = '';
  readonly usage = new DailyCounter();
  private readonly locators = new Map<string, Locator>();
  private readonly jobs = new Map<string, IngestJob>();
  private jobCounter = 1;
  private readonly lockRng: Rng;

  constructor(world: World, opts: SalesforceServerOptions = {}) {
    super('salesforce', world, { ...COMMON_DEFAULTS, ...SALESFORCE_DEFAULTS, ...(opts.knobs ?? {}) }, opts);
    this.clientId = opts.clientId ?? `3MVG9emu${randomBytes(20).toString('base64url')}`;
    this.clientSecret = randomBytes(24).toString('hex').toUpperCase();
    this.username = opts.username ?? 'integration@cc-optout.emulator';
    if (opts.privateKeyPem) {
      this.privateKeyPem = opts.privateKeyPem;
      this.publicKey = createPublicKey(opts.privateKeyPem);
    } else {
      const kp = generateKeyPairSync('rsa', { modulusLength: 2048 });
      this.privateKeyPem = kp.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      this.publicKey = kp.publicKey;
    }
    this.publicKeyPem = this.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    this.refreshToken = `5Aep861emu${randomBytes(32).toString('base64url')}`;
    this.lockRng = createRng(deriveSeed(world.data.seed, 'sf-locks'));
    this.initialAccessToken = this.newSession();

    const r = this.router;
    const V = '/services/data/:version';
    r.add('POST', '/services/oauth2/token', (req) => this.token(req), 'auth');
    r.add('GET', '/services/data', () =>
      json(200, [
        { label: "Winter '24", url: `/services/data/v${SALESFORCE_API_VERSION}`, version: SALESFORCE_API_VERSION },
      ]),
    );
    r.add('GET', `${V}/query`, (req) => this.query(req), 'api', 'GET /services/data/vXX.X/query');
    r.add(
      'GET',
      `${V}/query/:locator`,
      (req) => this.queryMore(req),
      'api',
      'GET /services/data/vXX.X/query/{locator}',
    );
    r.add(
      'PATCH',
      `${V}/composite/sobjects`,
      (req) => this.collectionsUpdate(req),
      'api',
      'PATCH /services/data/vXX.X/composite/sobjects',
    );
    r.add('POST', `${V}/composite`, (req) => this.composite(req), 'api', 'POST /services/data/vXX.X/composite');
    r.add('GET', `${V}/sobjects`, (req) => this.describeGlobal(req), 'api', 'GET /services/data/vXX.X/sobjects');
    r.add(
      'GET',
      `${V}/sobjects/:type/describe`,
      (req) => this.describe(req),
      'api',
      'GET /services/data/vXX.X/sobjects/{type}/describe',
    );
    r.add(
      'GET',
      `${V}/sobjects/:type/:id`,
      (req) => this.getRecord(req),
      'api',
      'GET /services/data/vXX.X/sobjects/{type}/{id}',
    );
    r.add(
      'PATCH',
      `${V}/sobjects/:type/:id`,
      (req) => this.updateOne(req),
      'api',
      'PATCH /services/data/vXX.X/sobjects/{type}/{id}',
    );
    r.add('GET', `${V}/limits`, () => this.limits(), 'api', 'GET /services/data/vXX.X/limits');
    r.add('POST', `${V}/jobs/ingest`, (req) => this.createJob(req), 'api', 'POST /services/data/vXX.X/jobs/ingest');
    r.add('GET', `${V}/jobs/ingest`, (req) => this.listJobs(req), 'api', 'GET /services/data/vXX.X/jobs/ingest');
    r.add(
      'PUT',
      `${V}/jobs/ingest/:id/batches`,
      (req) => this.upload(req),
      'api',
      'PUT /services/data/vXX.X/jobs/ingest/{id}/batches',
    );
    r.add(
      'GET',
      `${V}/jobs/ingest/:id/successfulResults`,
      (req) => this.results(req, 'success'),
      'api',
      'GET /services/data/vXX.X/jobs/ingest/{id}/successfulResults',
    );
    r.add(
      'GET',
      `${V}/jobs/ingest/:id/failedResults`,
      (req) => this.results(req, 'failed'),
      'api',
      'GET /services/data/vXX.X/jobs/ingest/{id}/failedResults',
    );
    r.add(
      'GET',
      `${V}/jobs/ingest/:id/unprocessedrecords`,
      (req) => this.results(req, 'unprocessed'),
      'api',
      'GET /services/data/vXX.X/jobs/ingest/{id}/unprocessedrecords',
    );
    r.add(
      'PATCH',
      `${V}/jobs/ingest/:id`,
      (req) => this.patchJob(req),
      'api',
      'PATCH /services/data/vXX.X/jobs/ingest/{id}',
    );
    r.add('GET', `${V}/jobs/ingest/:id`, (req) => this.getJob(req), 'api', 'GET /services/data/vXX.X/jobs/ingest/{id}');
    r.add(
      'DELETE',
      `${V}/jobs/ingest/:id`,
      (req) => this.deleteJob(req),
      'api',
      'DELETE /services/data/vXX.X/jobs/ingest/{id}',
    );

    this.admin.add('POST', '/__emulator/delete', (req) => {
      const b = parseJson(req) as { ids?: string[] };
      const done: string[] = [];
      for (const id of b.ids ?? []) {
        const rec = this.findRecord(id);
        if (rec) {
          rec.deleted = true;
          rec.fields.IsDeleted = true;
          done.push(rec.Id);
        }
      }
      return json(200, { deleted: done });
    });
  }

  override setKnobs(patch: Record<string, unknown>): string[] {
    if (patch.fail5xxMode !== undefined && patch.fail5xxMode !== 'before' && patch.fail5xxMode !== 'after') {
      return ['knob "fail5xxMode" must be "before" or "after"'];
    }
    return super.setKnobs(patch);
  }

  setDailyUsed(n: number): void {
    this.usage.set(this.world.now(), n);
  }

  expireTokens(): void {
    this.sessions.clear();
  }

  /** Mark records deleted (in the recycle bin): queries skip them, updates get ENTITY_IS_DELETED. */
  deleteRecords(ids: readonly string[]): void {
    for (const id of ids) {
      const rec = this.findRecord(id);
      if (rec) {
        rec.deleted = true;
        rec.fields.IsDeleted = true;
      }
    }
  }

  connection(): SalesforceConnection {
    return {
      loginUrl: this.origin,
      instanceUrl: this.origin,
      apiVersion: SALESFORCE_API_VERSION,
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      username: this.username,
      privateKeyPem: this.privateKeyPem,
      publicKeyPem: this.publicKeyPem,
      accessToken: this.initialAccessToken,
      refreshToken: this.refreshToken,
      personAccounts: this.world.data.personAccounts,
    };
  }

  protected vendorState(summary: boolean): Record<string, unknown> {
    const state = this.world.salesforceState();
    const usage = { used: this.usage.used(this.world.now()), limit: this.knobs.dailyApiLimit };
    return {
      salesforce: summary
        ? {
            records: state.records.length,
            suppressed: state.records.filter((r) => r.optedOut).length,
            apiUsage: usage,
            jobs: this.jobs.size,
          }
        : { ...state, apiUsage: usage, jobs: [...this.jobs.values()].map((j) => this.jobInfo(j)) },
    };
  }

  // ------------------------------------------------------------------------------------------ errors

  private errs(status: number, errorCode: string, message: string, fields?: string[]): EmuResponse {
    const e: Record<string, unknown> = { message, errorCode };
    if (fields) e.fields = fields;
    return json(status, [e]);
  }

  protected errorResponse(
    kind: 'not-found' | 'method' | 'bad-request' | 'server' | 'storm',
    status: number,
    message: string,
  ): EmuResponse {
    switch (kind) {
      case 'not-found':
        return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
      case 'method':
        return this.errs(405, 'METHOD_NOT_ALLOWED', message);
      case 'bad-request':
        return this.errs(400, 'JSON_PARSER_ERROR', message);
      case 'storm':
        return {
          ...this.errs(429, 'TOO_MANY_REQUESTS', 'Too many requests (emulated 429 storm); retry later.'),
          headers: { 'Retry-After': '1' },
        };
      case 'server':
        return status === 503
          ? this.errs(503, 'SERVER_UNAVAILABLE', 'Server temporarily unavailable (emulated fault).')
          : this.errs(
              status,
              'UNKNOWN_EXCEPTION',
              `An unexpected error occurred. Please include this ErrorId if you contact support: ${randomBytes(4).toString('hex')}-emulated (${message})`,
            );
    }
  }

  // ------------------------------------------------------------------------------------------ gate

  protected override precheck(raw: http.IncomingMessage): EmuResponse | undefined {
    const url = raw.url ?? '/';
    if (url.startsWith('/__emulator/')) return undefined;
    if (Buffer.byteLength(url) > MAX_URI_BYTES) {
      return this.errs(
        414,
        'URI_TOO_LONG',
        `The request URI is ${Buffer.byteLength(url)} bytes; the limit is ${MAX_URI_BYTES} bytes.`,
      );
    }
    let size = Buffer.byteLength(`${raw.method ?? 'GET'} ${url} HTTP/1.1\r\n`);
    for (let i = 0; i < raw.rawHeaders.length; i += 2)
      size += Buffer.byteLength(raw.rawHeaders[i]) + 2 + Buffer.byteLength(raw.rawHeaders[i + 1] ?? '') + 2;
    if (size > MAX_URI_BYTES) {
      return this.errs(
        431,
        'REQUEST_HEADER_FIELDS_TOO_LARGE',
        `The request line and headers are ${size} bytes; the limit is ${MAX_URI_BYTES} bytes.`,
      );
    }
    return undefined;
  }

  protected gate(req: EmuRequest, route: Route): EmuResponse | undefined {
    if (route.kind === 'auth') return undefined;
    const v = req.params.version;
    if (v !== undefined && !/^v\d{2}\.0$/.test(v))
      return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
    if (req.path === '/services/data' || req.path === '/services/data/') return undefined;
    const token = bearer(req);
    const s = token ? this.sessions.get(token) : undefined;
    const now = this.world.now();
    if (!token || !s || s.expiresMs <= now) {
      if (token && s) this.sessions.delete(token);
      return {
        ...this.errs(401, 'INVALID_SESSION_ID', 'Session expired or invalid'),
        headers: { 'WWW-Authenticate': 'Token' },
      };
    }
    if (this.usage.used(now) >= this.knobs.dailyApiLimit) {
      return this.errs(403, 'REQUEST_LIMIT_EXCEEDED', 'TotalRequests Limit exceeded.');
    }
    this.usage.add(now);
    return undefined;
  }

  protected override decorate(req: EmuRequest, res: EmuResponse, route: Route | null): void {
    if (!req.path.startsWith('/services/data')) return;
    res.headers = {
      ...(res.headers ?? {}),
      'Sforce-Limit-Info': `api-usage=${this.usage.used(this.world.now())}/${this.knobs.dailyApiLimit}`,
    };
    void route;
  }

  // ------------------------------------------------------------------------------------------ OAuth

  private newSession(): string {
    const token = `${ORG_ID.slice(0, 15)}!AQ${randomBytes(40).toString('base64url')}`;
    this.sessions.set(token, { expiresMs: this.world.now() + this.knobs.accessTokenTtlSec * 1000 });
    return token;
  }

  private tokenResponse(withRefresh: boolean): EmuResponse {
    const access = this.newSession();
    const issued = String(this.world.now());
    const id = `${this.origin}/id/${ORG_ID}/${USER_ID}`;
    const body: Record<string, unknown> = {
      access_token: access,
      scope: 'api',
      instance_url: this.origin,
      id,
      token_type: 'Bearer',
      issued_at: issued,
      signature: createHmac('sha256', this.clientSecret)
        .update(id + issued)
        .digest('base64'),
    };
    if (withRefresh) body.refresh_token = this.refreshToken;
    return json(200, body);
  }

  private oauthErr(error: string, description: string, status = 400): EmuResponse {
    return json(status, { error, error_description: description });
  }

  private token(req: EmuRequest): EmuResponse {
    const form = parseForm(req);
    const grant = form.get('grant_type');
    switch (grant) {
      case 'urn:ietf:params:oauth:grant-type:jwt-bearer':
        return this.jwtBearer(form.get('assertion') ?? '');
      case 'client_credentials': {
        const basic = basicAuth(req);
        const id = basic?.user ?? form.get('client_id');
        const secret = basic?.pass ?? form.get('client_secret');
        if (id !== this.clientId) return this.oauthErr('invalid_client_id', 'client identifier invalid');
        if (secret !== this.clientSecret) return this.oauthErr('invalid_client', 'invalid client credentials');
        return this.tokenResponse(false);
      }
      case 'refresh_token': {
        if (form.get('client_id') !== this.clientId)
          return this.oauthErr('invalid_client_id', 'client identifier invalid');
        const secret = form.get('client_secret');
        if (secret !== null && secret !== this.clientSecret)
          return this.oauthErr('invalid_client', 'invalid client credentials');
        if (form.get('refresh_token') !== this.refreshToken)
          return this.oauthErr('invalid_grant', 'expired access/refresh token');
        return this.tokenResponse(false);
      }
      case 'password':
        return this.oauthErr(
          'unsupported_grant_type',
          'grant type not supported: the username-password flow is blocked in this org',
        );
      default:
        return this.oauthErr('unsupported_grant_type', 'grant type not supported');
    }
  }

  /** Verify an RS256 JWT bearer assertion: signature with the connected app's certificate, iss, sub, aud, exp. */
  private jwtBearer(assertion: string): EmuResponse {
    const parts = assertion.split('.');
    if (parts.length !== 3) return this.oauthErr('invalid_grant', 'invalid assertion');
    let header: { alg?: string };
    let claims: { iss?: string; sub?: string; aud?: string | string[]; exp?: number };
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')) as typeof header;
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as typeof claims;
    } catch {
      return this.oauthErr('invalid_grant', 'invalid assertion');
    }
    if (header.alg !== 'RS256') return this.oauthErr('invalid_grant', 'invalid assertion: alg must be RS256');
    const ok = cryptoVerify(
      'RSA-SHA256',
      Buffer.from(`${parts[0]}.${parts[1]}`),
      this.publicKey,
      Buffer.from(parts[2], 'base64url'),
    );
    if (!ok) return this.oauthErr('invalid_grant', 'invalid assertion');
    if (claims.iss !== this.clientId) return this.oauthErr('invalid_client_id', 'client identifier invalid');
    const auds = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    const okAud = [this.origin, ...AUDIENCES].map((a) => a.replace(/\/$/, ''));
    if (!auds.some((a) => typeof a === 'string' && okAud.includes(a.replace(/\/$/, ''))))
      return this.oauthErr('invalid_grant', 'audience is invalid');
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= this.world.now())
      return this.oauthErr('invalid_grant', 'expired authorization code');
    if (claims.sub !== this.username) return this.oauthErr('invalid_grant', "user hasn't approved this consumer");
    return this.tokenResponse(false);
  }

  // ------------------------------------------------------------------------------------------ records

  private fieldsOf(type: SfType): FieldDef[] {
    return describeFields(type, this.world.data.personAccounts);
  }

  private findRecord(id: string): SfRecord | undefined {
    const id18 = to18(id);
    return id18 ? this.world.sfById.get(id18) : undefined;
  }

  private row(rec: SfRecord): Row {
    return rec.fields;
  }

  private recordJson(rec: SfRecord, fields: readonly string[], version: string): Record<string, unknown> {
    const defs = this.fieldsOf(rec.type);
    const o: Record<string, unknown> = {
      attributes: { type: rec.type, url: `/services/data/${version}/sobjects/${rec.type}/${rec.Id}` },
    };
    for (const f of fields) {
      const d = resolveField(defs, f, rec.type);
      o[d.name] = sfDateTime(rec.fields[d.name] ?? null);
    }
    return o;
  }

  /** Candidate records from an Email/PersonEmail/Id index when the WHERE clause allows it; null = scan all. */
  private candidates(c: Cond | null, type: SfType): SfRecord[] | null {
    if (!c) return null;
    if (c.op === 'and') {
      return this.candidates(c.left, type) ?? this.candidates(c.right, type);
    }
    if (c.op === 'or') {
      const l = this.candidates(c.left, type);
      const r = this.candidates(c.right, type);
      return l && r ? [...new Set([...l, ...r])] : null;
    }
    let values: Literal[];
    if (c.op === 'in') values = c.values;
    else if (c.op === '=') values = [c.value];
    else return null;
    if (values.some((v) => v.kind !== 'string')) return null;
    const field = c.field.toLowerCase();
    const out: SfRecord[] = [];
    if (field === 'email' || field === 'personemail') {
      for (const v of values)
        for (const rec of this.world.sfByNorm.get((v as { value: string }).value.trim().toLowerCase()) ?? [])
          out.push(rec);
      return [...new Set(out)];
    }
    if (field === 'id') {
      for (const v of values) {
        const rec = this.findRecord((v as { value: string }).value);
        if (rec) out.push(rec);
      }
      return out;
    }
    return null;
  }

  private runQuery(q: SoqlQuery): SfRecord[] {
    const type = q.object as SfType;
    const defs = this.fieldsOf(type);
    const indexed = this.candidates(q.where, type);
    const pool = indexed ?? this.world.data.salesforce;
    const rows = pool.filter(
      (r) => r.type === type && !r.deleted && (q.where === null || evaluate(q.where, this.row(r), defs, type)),
    );
    // Natural (creation) order; ids are sequential, so sorting index hits by Id restores it.
    if (indexed) rows.sort((a, b) => (a.Id < b.Id ? -1 : a.Id > b.Id ? 1 : 0));
    for (const o of [...q.orderBy].reverse()) {
      const d = resolveField(defs, o.field, type);
      rows.sort((a, b) => {
        const x = a.fields[d.name];
        const y = b.fields[d.name];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const c = String(x).toLowerCase() < String(y).toLowerCase() ? -1 : 1;
        return o.desc ? -c : c;
      });
    }
    const start = q.offset ?? 0;
    return rows.slice(start, q.limit === null ? undefined : start + q.limit);
  }

  private batchSize(req: EmuRequest): number {
    const h = req.headers['sforce-query-options'];
    const m = typeof h === 'string' ? /batchSize\s*=\s*(\d+)/i.exec(h) : null;
    if (!m) return 2000;
    return Math.min(2000, Math.max(200, Number(m[1])));
  }

  private page(loc: Locator, id: string, offset: number): Record<string, unknown> {
    const end = Math.min(loc.total, offset + loc.batch);
    const records = loc.rows.slice(offset, end);
    const body: Record<string, unknown> = { totalSize: loc.total, done: end >= loc.total, records };
    if (end < loc.total) body.nextRecordsUrl = `/services/data/${loc.version}/query/${id}-${end}`;
    return body;
  }

  private query(req: EmuRequest): EmuResponse {
    const src = req.query.get('q');
    if (!src) return this.errs(400, 'MALFORMED_QUERY', 'A query string has to be specified');
    let q: SoqlQuery;
    try {
      q = parseSoql(src);
      const type = TYPES.find((t) => t.toLowerCase() === q.object.toLowerCase());
      if (!type)
        throw new SoqlError(
          `sObject type '${q.object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name.`,
          'INVALID_TYPE',
        );
      q = { ...q, object: type };
      validateQuery(q, this.fieldsOf(type));
      const recs = this.runQuery(q);
      const version = req.params.version;
      const rows = recs.map((r) => this.recordJson(r, q.fields, version) as Row);
      const id = `01g${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').slice(0, 12)}AAA`;
      const loc: Locator = { rows, type, version, total: rows.length, batch: this.batchSize(req) };
      if (rows.length > loc.batch) {
        this.locators.set(id, loc);
        while (this.locators.size > 500) this.locators.delete(this.locators.keys().next().value as string);
      }
      return json(200, this.page(loc, id, 0));
    } catch (e) {
      if (e instanceof SoqlError) return this.errs(400, e.code, e.message);
      throw e;
    }
  }

  private queryMore(req: EmuRequest): EmuResponse {
    const m = /^(01g[A-Za-z0-9]+)-(\d+)$/.exec(req.params.locator);
    const loc = m ? this.locators.get(m[1]) : undefined;
    if (!m || !loc) return this.errs(400, 'INVALID_QUERY_LOCATOR', 'invalid query locator');
    const offset = Number(m[2]);
    const body = this.page(loc, m[1], offset);
    if (body.done) this.locators.delete(m[1]);
    return json(200, body);
  }

  /** Plan one record update without applying it (so allOrNone can roll back). */
  private plan(type: string | undefined, id: unknown, values: Record<string, unknown>): PlannedUpdate {
    const fail = (statusCode: string, message: string, fields: string[] = []): PlannedUpdate => ({
      rec: null,
      id: typeof id === 'string' ? id : null,
      values: {},
      error: { statusCode, message, fields },
    });
    if (!type || !isType(type)) return fail('INVALID_TYPE', `sObject type '${String(type)}' is not supported.`);
    if (typeof id !== 'string' || id === '')
      return fail('MISSING_ARGUMENT', 'Id not specified in an update call', ['Id']);
    const id18 = to18(id);
    if (!id18 || !id18.startsWith(KEY_PREFIX[type]))
      return fail('MALFORMED_ID', `${type} ID: id value of incorrect type: ${id}`, ['Id']);
    const rec = this.world.sfById.get(id18);
    if (!rec) return fail('INVALID_CROSS_REFERENCE_KEY', 'invalid cross reference id');
    if (rec.deleted) return fail('ENTITY_IS_DELETED', 'entity is deleted');
    const defs = this.fieldsOf(type);
    const out: Record<string, string | number | boolean | null> = {};
    for (const [k, v] of Object.entries(values)) {
      if (k === 'attributes' || k.toLowerCase() === 'id') continue;
      const d = defs.find((f) => f.name.toLowerCase() === k.toLowerCase());
      if (!d) return fail('INVALID_FIELD', `No such column '${k}' on sobject of type ${type}`, [k]);
      if (!d.updateable) {
        return fail(
          'INVALID_FIELD_FOR_INSERT_UPDATE',
          `Unable to create/update fields: ${d.name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.`,
          [d.name],
        );
      }
      let val: string | number | boolean | null;
      if (d.type === 'boolean') {
        if (typeof v === 'boolean') val = v;
        else if (v === 'true' || v === 'false') val = v === 'true';
        else
          return fail('INVALID_TYPE_ON_FIELD_IN_RECORD', `${d.name}: value not of required type: ${String(v)}`, [
            d.name,
          ]);
      } else if (v === null || v === undefined || v === '') val = null;
      else if (typeof v === 'string' || typeof v === 'number')
        val = d.type === 'datetime' && typeof v === 'string' ? this.normDateTime(v, d.name) : v;
      else
        return fail('INVALID_TYPE_ON_FIELD_IN_RECORD', `${d.name}: value not of required type: ${JSON.stringify(v)}`, [
          d.name,
        ]);
      if (val === '__invalid__')
        return fail('INVALID_TYPE_ON_FIELD_IN_RECORD', `${d.name}: value not of required type: ${String(v)}`, [d.name]);
      out[d.name] = val;
    }
    if (type === 'Lead' && rec.fields.IsConverted === true)
      return fail('CANNOT_UPDATE_CONVERTED_LEAD', 'cannot reference converted lead');
    if (this.knobs.lockNext > 0) {
      this.knobs.lockNext--;
      return fail('UNABLE_TO_LOCK_ROW', `unable to obtain exclusive access to this record or 1 records: ${rec.Id}`);
    }
    if (this.knobs.lockRate > 0 && this.lockRng.next() < this.knobs.lockRate) {
      return fail('UNABLE_TO_LOCK_ROW', `unable to obtain exclusive access to this record or 1 records: ${rec.Id}`);
    }
    return { rec, id: rec.Id, values: out, error: null };
  }

  private normDateTime(v: string, _field: string): string {
    const ms = Date.parse(v);
    return Number.isFinite(ms) ? new Date(ms).toISOString() : '__invalid__';
  }

  private apply(p: PlannedUpdate): void {
    const rec = p.rec!;
    Object.assign(rec.fields, p.values);
    if ('Email' in p.values || 'PersonEmail' in p.values) this.reindex(rec);
    rec.fields.LastModifiedDate = new Date(this.world.now()).toISOString();
    this.world.countSfWrite(rec.Id);
  }

  private reindex(rec: SfRecord): void {
    if (rec.norm !== null) {
      const list = this.world.sfByNorm.get(rec.norm) ?? [];
      this.world.sfByNorm.set(
        rec.norm,
        list.filter((r) => r !== rec),
      );
    }
    const e = (rec.type === 'Account' ? rec.fields.PersonEmail : rec.fields.Email) as string | null;
    rec.norm = e ? e.trim().toLowerCase() : null;
    if (rec.norm !== null) this.world.sfByNorm.set(rec.norm, [...(this.world.sfByNorm.get(rec.norm) ?? []), rec]);
  }

  private collectionsUpdate(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as { allOrNone?: unknown; records?: unknown };
    if (!b || !Array.isArray(b.records))
      return this.errs(400, 'JSON_PARSER_ERROR', 'The request body must have a "records" array');
    const records = b.records as Array<Record<string, unknown>>;
    if (records.length > 200)
      return this.errs(
        400,
        'EXCEEDED_ID_LIMIT',
        'record limit reached. cannot submit more than 200 records into this call',
        [],
      );
    if (records.length === 0) return json(200, []);
    const allOrNone = b.allOrNone === true;
    const plans = records.map((r) => {
      const attrs = (r?.attributes ?? {}) as { type?: string };
      // Field names are case-insensitive: jsforce sends "id", Workbench "Id".
      const idKey = Object.keys(r ?? {}).find((k) => k.toLowerCase() === 'id');
      return this.plan(attrs.type, idKey ? r[idKey] : undefined, r ?? {});
    });
    const anyFailed = plans.some((p) => p.error);
    if (allOrNone && anyFailed) {
      return json(
        200,
        plans.map((p) => ({
          success: false,
          errors: [
            p.error ?? {
              statusCode: 'ALL_OR_NONE_OPERATION_ROLLED_BACK',
              message:
                'Record rolled back because not all records were valid and the request was using AllOrNone header',
              fields: [],
            },
          ],
        })),
      );
    }
    return json(
      200,
      plans.map((p) => {
        if (p.error) return { success: false, errors: [p.error] };
        this.apply(p);
        return { id: p.rec!.Id, success: true, errors: [] };
      }),
    );
  }

  /**
   * Composite (`POST /composite`): up to 25 independent subrequests, at most 5 of them queries (Query, Query
   * More) or sObject Collections operations; the whole call is ONE unit of the daily API allocation (the gate
   * counted it; subrequests bypass the gate). Each subrequest is answered as the same request on its own
   * would be, as `{body, httpHeaders, httpStatusCode, referenceId}`. allOrNone false: a failed subrequest leaves
   * the others alone. allOrNone true: the emulator refuses it (this connector never sends it; Salesforce would
   * roll every subrequest back). References between subrequests (`@{ref.field}`) are not supported.
   * The docs state no URL length limit for a subrequest; the emulator applies none.
   */
  private async composite(req: EmuRequest): Promise<EmuResponse> {
    const b = parseJson(req) as { allOrNone?: unknown; compositeRequest?: unknown } | null;
    if (!b || !Array.isArray(b.compositeRequest) || b.compositeRequest.length === 0) {
      return this.errs(400, 'JSON_PARSER_ERROR', 'The request body must have a non-empty "compositeRequest" array');
    }
    if (b.allOrNone === true) return this.errs(400, 'INVALID_INPUT', 'emulator: allOrNone true is not supported');
    const subs = b.compositeRequest as Array<{
      method?: unknown;
      url?: unknown;
      referenceId?: unknown;
      body?: unknown;
    }>;
    if (subs.length > COMPOSITE_MAX_SUBREQUESTS) {
      return this.errs(
        400,
        'LIMIT_EXCEEDED',
        `A composite request can contain at most ${COMPOSITE_MAX_SUBREQUESTS} subrequests; got ${subs.length}`,
      );
    }
    const heavy = (method: string, path: string): boolean =>
      (method === 'GET' && /\/(query|queryAll)(\/|$)/.test(path)) || /\/composite\/sobjects(\/|$)/.test(path);
    const seen = new Set<string>();
    let heavyCount = 0;
    for (const sub of subs) {
      if (typeof sub?.method !== 'string' || typeof sub.url !== 'string' || typeof sub.referenceId !== 'string') {
        return this.errs(400, 'JSON_PARSER_ERROR', 'Each subrequest needs "method", "url" and "referenceId"');
      }
      if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(sub.referenceId) || seen.has(sub.referenceId)) {
        return this.errs(400, 'INVALID_INPUT', `Invalid or duplicate referenceId: ${sub.referenceId}`);
      }
      seen.add(sub.referenceId);
      if (heavy(sub.method.toUpperCase(), sub.url.split('?')[0]!)) heavyCount += 1;
    }
    if (heavyCount > COMPOSITE_MAX_HEAVY) {
      return this.errs(
        400,
        'LIMIT_EXCEEDED',
        `A composite request can contain at most ${COMPOSITE_MAX_HEAVY} query or sObject Collections subrequests; got ${heavyCount}`,
      );
    }
    const compositeResponse: Array<Record<string, unknown>> = [];
    for (const sub of subs) {
      const method = (sub.method as string).toUpperCase();
      const url = sub.url as string;
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      const answer = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
        compositeResponse.push({ body, httpHeaders: headers, httpStatusCode: status, referenceId: sub.referenceId });
      };
      const m =
        path.startsWith('/services/data/') && !/\/composite\/?$/.test(path) ? this.router.match(method, path) : null;
      if (!m || !('route' in m) || m.route.kind !== 'api' || /\/jobs\//.test(path)) {
        answer(404, [
          {
            errorCode: 'NOT_FOUND',
            message: `The requested resource does not exist (composite subrequest ${method} ${path})`,
          },
        ]);
        continue;
      }
      const subReq: EmuRequest = {
        method,
        path,
        rawUrl: url,
        query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)),
        headers: { ...req.headers, 'content-type': 'application/json' },
        body: Buffer.from(sub.body === undefined ? '' : JSON.stringify(sub.body)),
        params: m.params,
        route: m.route,
      };
      const v = m.params.version;
      if (v !== undefined && !/^v\d{2}\.0$/.test(v)) {
        answer(404, [{ errorCode: 'NOT_FOUND', message: 'The requested resource does not exist' }]);
        continue;
      }
      const res = await m.route.handler(subReq);
      const raw = res.raw === undefined ? undefined : Buffer.isBuffer(res.raw) ? res.raw.toString('utf8') : res.raw;
      answer(res.status, raw !== undefined ? raw : res.body === undefined ? null : res.body);
    }
    return json(200, { compositeResponse });
  }

  private updateOne(req: EmuRequest): EmuResponse {
    const type = req.params.type;
    if (!isType(type)) return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
    const b = parseJson(req) as Record<string, unknown>;
    const p = this.plan(type, req.params.id, b ?? {});
    if (p.error) {
      if (p.error.statusCode === 'INVALID_CROSS_REFERENCE_KEY' || p.error.statusCode === 'MALFORMED_ID')
        return this.errs(
          404,
          'NOT_FOUND',
          'Provided external ID field does not exist or is not accessible: ' + req.params.id,
        );
      return this.errs(400, p.error.statusCode, p.error.message, p.error.fields);
    }
    this.apply(p);
    return empty(204);
  }

  private getRecord(req: EmuRequest): EmuResponse {
    const type = req.params.type;
    if (!isType(type)) return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
    const rec = this.findRecord(req.params.id);
    if (!rec || rec.type !== type) return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
    if (rec.deleted) return this.errs(404, 'ENTITY_IS_DELETED', 'entity is deleted');
    const want = req.query.get('fields');
    const names = want
      ? want
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : this.fieldsOf(type).map((f) => f.name);
    try {
      return json(200, this.recordJson(rec, names, req.params.version));
    } catch (e) {
      if (e instanceof SoqlError) return this.errs(400, 'INVALID_FIELD', e.message);
      throw e;
    }
  }

  private describe(req: EmuRequest): EmuResponse {
    const type = TYPES.find((t) => t.toLowerCase() === req.params.type.toLowerCase());
    if (!type) return this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
    const fields = this.fieldsOf(type).map((f) => ({
      name: f.name,
      label: f.name.replace(/__c$/, '').replace(/_/g, ' '),
      type: f.type,
      updateable: f.updateable,
      createable: f.updateable,
      nillable: f.type !== 'boolean' && f.name !== 'Id',
      custom: f.name.endsWith('__c'),
      length: f.type === 'string' || f.type === 'email' ? 255 : f.type === 'textarea' ? 32768 : 0,
      filterable: true,
      calculated: false,
      soapType:
        f.type === 'boolean'
          ? 'xsd:boolean'
          : f.type === 'datetime'
            ? 'xsd:dateTime'
            : f.type === 'id' || f.type === 'reference'
              ? 'tns:ID'
              : 'xsd:string',
    }));
    return json(200, {
      name: type,
      label: type,
      labelPlural: `${type}s`,
      keyPrefix: KEY_PREFIX[type],
      custom: false,
      queryable: true,
      updateable: true,
      createable: true,
      deletable: true,
      fields,
      urls: { describe: `/services/data/${req.params.version}/sobjects/${type}/describe` },
    });
  }

  private describeGlobal(req: EmuRequest): EmuResponse {
    return json(200, {
      encoding: 'UTF-8',
      maxBatchSize: 200,
      sobjects: TYPES.map((t) => ({
        name: t,
        label: t,
        keyPrefix: KEY_PREFIX[t],
        queryable: true,
        updateable: true,
        custom: false,
        urls: { describe: `/services/data/${req.params.version}/sobjects/${t}/describe` },
      })),
    });
  }

  private limits(): EmuResponse {
    const used = this.usage.used(this.world.now());
    return json(200, {
      DailyApiRequests: { Max: this.knobs.dailyApiLimit, Remaining: Math.max(0, this.knobs.dailyApiLimit - used) },
      DailyBulkApiBatches: { Max: 15000, Remaining: 15000 - this.jobs.size },
      DailyBulkV2QueryJobs: { Max: 10000, Remaining: 10000 },
    });
  }

  // ------------------------------------------------------------------------------------------ Bulk API 2.0 ingest

  private jobInfo(j: IngestJob): Record<string, unknown> {
    const done = j.state === 'JobComplete' || j.state === 'Failed' || j.state === 'Aborted';
    const info: Record<string, unknown> = {
      id: j.id,
      operation: j.operation,
      object: j.object,
      createdById: USER_ID,
      createdDate: j.createdDate,
      systemModstamp: j.systemModstamp,
      state: j.state,
      concurrencyMode: 'Parallel',
      contentType: 'CSV',
      apiVersion: Number(j.apiVersion.replace(/^v/, '')),
      jobType: 'V2Ingest',
      lineEnding: j.lineEnding,
      columnDelimiter: 'COMMA',
      contentUrl: `services/data/${j.apiVersion}/jobs/ingest/${j.id}/batches`,
      numberRecordsProcessed: done ? j.processed : 0,
      numberRecordsFailed: done ? j.failed : 0,
      retries: 0,
      totalProcessingTime: done ? j.finished - j.started : 0,
      apiActiveProcessingTime: done ? j.finished - j.started : 0,
      apexProcessingTime: 0,
    };
    if (j.errorMessage) info.errorMessage = j.errorMessage;
    return info;
  }

  private job(req: EmuRequest): IngestJob | EmuResponse {
    const j = this.jobs.get(req.params.id);
    return j ?? this.errs(404, 'NOT_FOUND', 'The requested resource does not exist');
  }

  private createJob(req: EmuRequest): EmuResponse {
    const b = parseJson(req) as Record<string, unknown>;
    const object = TYPES.find((t) => t.toLowerCase() === String(b?.object ?? '').toLowerCase());
    if (!object) return this.errs(400, 'INVALIDJOB', `InvalidJob : Invalid object: ${String(b?.object)}`);
    if (b.operation !== 'update')
      return this.errs(
        400,
        'INVALIDJOB',
        `InvalidJob : operation ${String(b.operation)} is not supported by the emulator (only update)`,
      );
    if (b.contentType !== undefined && b.contentType !== 'CSV')
      return this.errs(400, 'INVALIDJOB', 'InvalidJob : contentType must be CSV');
    if (b.columnDelimiter !== undefined && b.columnDelimiter !== 'COMMA')
      return this.errs(400, 'INVALIDJOB', 'InvalidJob : only COMMA column delimiters are supported');
    const now = new Date(this.world.now()).toISOString().replace('Z', '+0000');
    const j: IngestJob = {
      id: makeSfId('750', this.jobCounter++),
      object,
      operation: 'update',
      state: 'Open',
      lineEnding: b.lineEnding === 'CRLF' ? 'CRLF' : 'LF',
      createdDate: now,
      systemModstamp: now,
      apiVersion: req.params.version,
      uploads: [],
      header: [],
      successes: [],
      failures: [],
      unprocessed: [],
      processed: 0,
      failed: 0,
      errorMessage: null,
      pollsLeft: 0,
      started: 0,
      finished: 0,
    };
    this.jobs.set(j.id, j);
    return json(200, this.jobInfo(j));
  }

  private listJobs(_req: EmuRequest): EmuResponse {
    return json(200, {
      done: true,
      records: [...this.jobs.values()].map((j) => this.jobInfo(j)),
      nextRecordsUrl: null,
    });
  }

  private upload(req: EmuRequest): EmuResponse {
    const j = this.job(req);
    if (!('uploads' in j)) return j;
    const ct = String(req.headers['content-type'] ?? '');
    if (!ct.toLowerCase().startsWith('text/csv')) return this.errs(400, 'INVALIDJOB', 'Content-Type must be text/csv');
    if (j.state !== 'Open')
      return this.errs(
        409,
        'INVALIDJOBSTATE',
        `Job ${j.id} is not Open (state ${j.state}); data can be uploaded only to an Open job`,
      );
    j.uploads.push(req.body.toString('utf8'));
    return empty(201);
  }

  private patchJob(req: EmuRequest): EmuResponse {
    const j = this.job(req);
    if (!('uploads' in j)) return j;
    const b = parseJson(req) as { state?: unknown };
    if (b?.state === 'UploadComplete') {
      if (j.state !== 'Open')
        return this.errs(409, 'INVALIDJOBSTATE', `Job ${j.id} is ${j.state}; only an Open job can be closed`);
      j.state = 'UploadComplete';
      this.process(j);
    } else if (b?.state === 'Aborted') {
      if (j.state === 'JobComplete' || j.state === 'Failed' || j.state === 'Aborted')
        return this.errs(409, 'INVALIDJOBSTATE', `Job ${j.id} is already ${j.state}`);
      j.state = 'Aborted';
      if (j.processed === 0) {
        const rows = j.uploads.flatMap((u) => parseCsv(u));
        j.header = rows[0] ?? [];
        j.unprocessed = rows.slice(1);
      }
    } else
      return this.errs(400, 'INVALIDJOBSTATE', `Invalid state: ${String(b?.state)}; use UploadComplete or Aborted`);
    j.systemModstamp = new Date(this.world.now()).toISOString().replace('Z', '+0000');
    return json(200, this.jobInfo(j));
  }

  /** Process every uploaded row (synchronously; GET reports InProgress for bulkInProgressPolls polls). */
  private process(j: IngestJob): void {
    j.started = this.world.now();
    let rows: string[][] = [];
    let header: string[] = [];
    try {
      for (const u of j.uploads) {
        const parsed = parseCsv(u);
        if (parsed.length === 0) continue;
        if (header.length === 0) header = parsed[0];
        else if (parsed[0].join(',') !== header.join(','))
          throw new Error('InvalidBatch : all uploads must share one header row');
        rows = rows.concat(parsed.slice(1));
      }
    } catch (e) {
      j.state = 'Failed';
      j.errorMessage = (e as Error).message.startsWith('InvalidBatch')
        ? (e as Error).message
        : `InvalidBatch : ${(e as Error).message}`;
      j.finished = this.world.now();
      return;
    }
    j.header = header;
    const defs = this.fieldsOf(j.object);
    const idCol = header.findIndex((h) => h.toLowerCase() === 'id');
    const unknown = header.find((h) => !defs.some((d) => d.name.toLowerCase() === h.toLowerCase()));
    if (header.length === 0 || idCol < 0 || unknown !== undefined) {
      j.state = 'Failed';
      j.errorMessage =
        unknown !== undefined
          ? `InvalidBatch : Field name not found : ${unknown}`
          : 'InvalidBatch : Id field is required for update';
      j.unprocessed = rows;
      j.finished = this.world.now();
      return;
    }
    for (const row of rows) {
      const values: Record<string, unknown> = {};
      header.forEach((h, i) => {
        if (i === idCol) return;
        const v = row[i] ?? '';
        if (v === '') return; // empty = leave unchanged
        values[h] = v === '#N/A' ? null : v;
      });
      const p = this.plan(j.object, row[idCol] ?? '', values);
      j.processed++;
      if (p.error) {
        j.failed++;
        j.failures.push([
          p.rec?.Id ?? row[idCol] ?? '',
          `${p.error.statusCode}:${p.error.message}:${p.error.fields.join(',') || '--'}`,
          ...row,
        ]);
      } else {
        this.apply(p);
        j.successes.push([p.rec!.Id, 'false', ...row]);
      }
    }
    j.finished = this.world.now();
    j.pollsLeft = this.knobs.bulkInProgressPolls;
    j.state = j.pollsLeft > 0 ? 'InProgress' : 'JobComplete';
  }

  private getJob(req: EmuRequest): EmuResponse {
    const j = this.job(req);
    if (!('uploads' in j)) return j;
    const info = this.jobInfo(j);
    if (j.state === 'InProgress') {
      j.pollsLeft--;
      if (j.pollsLeft <= 0) j.state = 'JobComplete';
    }
    return json(200, info);
  }

  private results(req: EmuRequest, which: 'success' | 'failed' | 'unprocessed'): EmuResponse {
    const j = this.job(req);
    if (!('uploads' in j)) return j;
    if (j.state === 'Open' || j.state === 'UploadComplete' || j.state === 'InProgress') {
      if (which !== 'unprocessed')
        return this.errs(400, 'INVALIDJOBSTATE', `Job ${j.id} is not complete (state ${j.state})`);
    }
    let rows: string[][];
    if (which === 'success') rows = [['sf__Id', 'sf__Created', ...j.header], ...j.successes];
    else if (which === 'failed') rows = [['sf__Id', 'sf__Error', ...j.header], ...j.failures];
    else rows = [j.header, ...j.unprocessed];
    return text(200, toCsv(rows, j.lineEnding), 'text/csv');
  }

  private deleteJob(req: EmuRequest): EmuResponse {
    const j = this.job(req);
    if (!('uploads' in j)) return j;
    if (j.state === 'Open' || j.state === 'UploadComplete' || j.state === 'InProgress')
      return this.errs(400, 'INVALIDJOBSTATE', `Job ${j.id} must be complete, failed or aborted before deletion`);
    this.jobs.delete(j.id);
    return empty(204);
  }
}

export async function startSalesforceServer(
  world: World,
  opts: SalesforceServerOptions = {},
): Promise<SalesforceEmulator> {
  return new SalesforceEmulator(world, opts).start();
}
