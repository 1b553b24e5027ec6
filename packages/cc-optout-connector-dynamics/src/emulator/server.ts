/**
 * A local emulator of the part of Microsoft Dataverse (Dynamics 365) Web API v9.2 and of Microsoft Entra ID's
 * token endpoint that a suppression connector needs, written from Microsoft's docs (see the package README,
 * "Dataverse facts"), not from the connector's code.
 *
 *   Entra (https, self-signed cert):  POST /{tenant}/oauth2/v2.0/token  (client credentials, scope <org>/.default)
 *                                     GET  /{tenant}/v2.0/.well-known/openid-configuration, /common/discovery/instance
 *   Dataverse (http on loopback):     GET  /api/data/v9.2/WhoAmI
 *                                     GET  /api/data/v9.2/contacts|leads?$select&$filter&$top (+ Prefer odata.maxpagesize)
 *                                     PATCH /api/data/v9.2/contacts(<id>)|leads(<id>)  (If-Match: * = no upsert)
 *                                     POST /api/data/v9.2/$batch  (multipart/mixed, change sets, odata.continue-on-error)
 *   Admin (never counted or limited): GET /__emulator/state|truth|verify|connection, POST /__emulator/faults|reset-counts
 *
 * Service protection: more than `requestLimit` requests per `windowSeconds` per caller answer 429 with
 * Retry-After (seconds) and error code 0x80072322; knobs `force429` / `fail5xx` inject the next N answers.
 */
import * as http from 'http';
import * as https from 'https';
import * as fs from 'fs';
import { AddressInfo } from 'net';
import { randomUUID } from 'crypto';
import {
  CONTACT_COLUMNS,
  DvRecord,
  ENTITY_SET,
  EntityName,
  ID_COLUMN,
  LEAD_COLUMNS,
  Person,
  WRITABLE,
  generateRecords,
  guid,
  hash32,
  rng,
} from './dataset';
import { Expr, FilterSyntaxError, evaluate, fieldsOf, parseFilter } from './filter';
import {
  InnerRequest,
  InnerResponse,
  MultipartError,
  boundaryOf,
  httpPart,
  parseInnerRequest,
  parseMultipart,
  renderMultipart,
} from './multipart';
import { makeLoopbackCert, TlsMaterial } from './tls';

export const API_PATH = '/api/data/v9.2';
/** Dataverse: URLs up to 32 KB (32,768 characters); inside a $batch body up to 64 KB. */
export const MAX_URL_LENGTH = 32_768;
export const MAX_BATCH_URL_LENGTH = 65_536;
/** Dataverse: a $batch holds at most 1,000 requests. */
export const MAX_BATCH_REQUESTS = 1000;

export interface DataverseKnobs {
  /** Requests allowed per caller in the sliding window (Dataverse documents 6,000 per 300 s per user). */
  requestLimit: number;
  windowSeconds: number;
  /** Fixed Retry-After (s); null: the time until the window frees enough room. */
  retryAfterSeconds: number | null;
  /** Each request inside a $batch counts against the limit (else the $batch counts once). */
  countBatchParts: boolean;
  /** The next N API requests answer 429 (Retry-After `force429RetryAfter`). */
  force429: number;
  force429RetryAfter: number;
  /** The next N API requests answer 503. */
  fail5xx: number;
  /** The next N requests inside a $batch fail with 500 (a failed change set is rolled back). */
  failBatchParts: number;
  tokenTtlSeconds: number;
  latencyMs: number;
  /** Default page size when the client sends no Prefer: odata.maxpagesize (Dataverse: 5,000). */
  maxPageSize: number;
}

export const DATAVERSE_DEFAULTS: DataverseKnobs = {
  requestLimit: 6000,
  windowSeconds: 300,
  retryAfterSeconds: null,
  countBatchParts: true,
  force429: 0,
  force429RetryAfter: 2,
  fail5xx: 0,
  failBatchParts: 0,
  tokenTtlSeconds: 3599,
  latencyMs: 0,
  maxPageSize: 5000,
};

export interface DataverseEmulatorOptions {
  host?: string;
  seed?: number;
  /** People to generate records for (e.g. every Constant Contact address of a demo world). */
  people?: readonly Person[];
  /** Without `people`: this many synthetic people (default 200), a fifth of them opted out. */
  contacts?: number;
  tenantId?: string;
  clientId?: string;
  clientSecret?: string;
  knobs?: Partial<DataverseKnobs>;
  /** Fixed ports (0 = ephemeral). */
  ports?: { dataverse?: number; entra?: number };
  /** Who is opted out NOW (e.g. the shared world's ground truth), read by truth() and verify(). */
  optedOutNow?: () => Iterable<string>;
}

export interface DataverseConnection {
  /** Dataverse environment URL (the resource; scope = url + "/.default"). */
  url: string;
  apiBaseUrl: string;
  /** Entra authority host (https) and the tenant: authority = authorityHost + "/" + tenantId. */
  authorityHost: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
  /** PEM file of the self-signed certificate of the Entra endpoint (trust it as a CA). */
  caFile: string;
}

export interface EndpointCount {
  total: number;
  byStatus: Record<string, number>;
}

export interface DataverseTruth {
  /** Normalised opted-out emails the emulator was seeded with (plus added ones). */
  optedOut: string[];
  /** Records (entity:id) that must end with donotbulkemail true: not yet suppressed at generation. */
  toSuppress: string[];
  alreadySuppressed: string[];
  /** Qualified / disqualified leads holding an opted-out address: must not be written. */
  closedLeads: string[];
  /** Opted-out emails with no contact and no open lead. */
  missing: string[];
}

export interface DataverseVerification {
  ok: boolean;
  expected: number;
  notSuppressed: string[];
  /** Writes to records that had to stay as they were (not opted out, closed leads, already suppressed). */
  unexpectedWrites: string[];
  repeatedWrites: string[];
  writes: number;
}

export interface VerifyOptions {
  /** Email columns the connector is configured to match (default all three). */
  emailFields?: readonly string[];
  /** Also require donotemail true on every suppressed record. */
  donotemail?: boolean;
}

interface ErrorBody {
  error: { code: string; message: string };
}

const odataError = (
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): InnerResponse & { status: number } => ({
  status,
  headers: { 'Content-Type': 'application/json; odata.metadata=minimal', 'OData-Version': '4.0', ...headers },
  body: JSON.stringify({ error: { code, message } } satisfies ErrorBody),
});

function columnsOf(entity: EntityName): readonly string[] {
  return entity === 'contact' ? CONTACT_COLUMNS : LEAD_COLUMNS;
}

function syntheticPeople(n: number, seed: number): Person[] {
  const r = rng(hash32(`people|${seed}`));
  return Array.from({ length: n }, (_, i) => ({
    email: `person${i}.${Math.floor(r() * 1e6)}@example.com`,
    optedOut: r() < 0.2,
  }));
}

export class DataverseEmulator {
  readonly knobs: DataverseKnobs;
  readonly records = new Map<string, DvRecord>();
  readonly writes = new Map<string, number>();
  readonly counts = new Map<string, EndpointCount>();
  /** Discovery calls (MSAL instance / OIDC metadata): a configured connector makes none. */
  readonly discoveryCalls: string[] = [];
  /** Authorization headers seen, per server ("entra" must never see a Dataverse bearer token). */
  readonly bearerSeenBy = { entra: 0, dataverse: 0 };
  readonly tenantId: string;
  readonly clientId: string;
  readonly clientSecret: string;
  private readonly optedOut = new Set<string>();
  private readonly tokens = new Map<string, { principal: string; expiresMs: number; audience: string }>();
  private readonly stamps = new Map<string, number[]>();
  private readonly userId: string;
  private readonly orgId: string;
  private readonly buId: string;
  private dvServer: http.Server | null = null;
  private entraServer: https.Server | null = null;
  private tls: TlsMaterial | null = null;
  private dvOrigin = '';
  private entraOrigin = '';

  constructor(private readonly opts: DataverseEmulatorOptions = {}) {
    this.knobs = { ...DATAVERSE_DEFAULTS, ...(opts.knobs ?? {}) };
    const seed = opts.seed ?? 1;
    const r = rng(hash32(`ids|${seed}`));
    this.tenantId = opts.tenantId ?? guid(r);
    this.clientId = opts.clientId ?? guid(r);
    this.clientSecret = opts.clientSecret ?? `emu~${guid(r).replace(/-/g, '')}`;
    this.userId = guid(r);
    this.orgId = guid(r);
    this.buId = guid(r);
    const people = opts.people ?? syntheticPeople(opts.contacts ?? 200, seed);
    for (const p of people) if (p.optedOut) this.optedOut.add(p.email.trim().toLowerCase());
    for (const rec of generateRecords({ seed, people })) this.records.set(`${rec.entity}:${rec.id}`, rec);
  }

  async start(): Promise<this> {
    const host = this.opts.host ?? '127.0.0.1';
    this.tls = await makeLoopbackCert(host);
    // room for URLs up to (and past) Dataverse's 32,768 characters, so the 414 is ours, not Node's 431
    this.dvServer = http.createServer(
      { maxHeaderSize: 96 * 1024 },
      (req, res) => void this.serve(req, res, 'dataverse'),
    );
    this.entraServer = https.createServer(
      { key: this.tls.key, cert: this.tls.cert },
      (req, res) => void this.serve(req, res, 'entra'),
    );
    const listen = (s: http.Server, port: number): Promise<number> =>
      new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, host, () => resolve((s.address() as AddressInfo).port));
      });
    const dvPort = await listen(this.dvServer, this.opts.ports?.dataverse ?? 0);
    const entraPort = await listen(this.entraServer, this.opts.ports?.entra ?? 0);
    this.dvOrigin = `http://${host}:${dvPort}`;
    this.entraOrigin = `https://${host}:${entraPort}`;
    return this;
  }

  async stop(): Promise<void> {
    const close = (s: http.Server | null): Promise<void> =>
      new Promise((resolve) => {
        if (!s) return resolve();
        s.close(() => resolve());
        s.closeAllConnections?.();
      });
    await Promise.all([close(this.dvServer), close(this.entraServer)]);
    this.dvServer = null;
    this.entraServer = null;
    if (this.tls) fs.rmSync(this.tls.dir, { recursive: true, force: true });
  }

  connection(): DataverseConnection {
    return {
      url: this.dvOrigin,
      apiBaseUrl: this.dvOrigin + API_PATH,
      authorityHost: this.entraOrigin,
      tenantId: this.tenantId,
      clientId: this.clientId,
      clientSecret: this.clientSecret,
      caFile: this.tls?.caFile ?? '',
    };
  }

  // ------------------------------------------------------------------------------------------
  // State for tests and the demo

  /** Add a record (tests); returns its id. */
  addRecord(entity: EntityName, fields: Record<string, string | number | boolean | null>): string {
    const id = guid(rng(hash32(`add|${this.records.size}|${JSON.stringify(fields)}`)));
    const full: Record<string, string | number | boolean | null> = {
      [ID_COLUMN[entity]]: id,
      emailaddress1: null,
      emailaddress2: null,
      emailaddress3: null,
      donotbulkemail: false,
      donotemail: false,
      statecode: 0,
      statuscode: 1,
      modifiedon: new Date().toISOString(),
      ...fields,
    };
    this.records.set(`${entity}:${id}`, {
      entity,
      id,
      fields: full,
      initialBulk: full.donotbulkemail === true,
      initialEmail: full.donotemail === true,
      initialState: Number(full.statecode),
    });
    return id;
  }

  /** Mark emails as opted out (what the source now says), for truth() and verify(). */
  addOptedOut(emails: readonly string[]): void {
    for (const e of emails) this.optedOut.add(e.trim().toLowerCase());
  }

  record(entity: EntityName, id: string): DvRecord | undefined {
    return this.records.get(`${entity}:${id}`);
  }

  expireTokens(): void {
    this.tokens.clear();
  }

  setKnobs(patch: Record<string, unknown>): string[] {
    const problems: string[] = [];
    for (const [k, v] of Object.entries(patch)) {
      if (k === 'expireTokens') {
        if (v === true) this.expireTokens();
        continue;
      }
      if (!(k in DATAVERSE_DEFAULTS)) {
        problems.push(`unknown knob "${k}"`);
        continue;
      }
      const def = DATAVERSE_DEFAULTS[k as keyof DataverseKnobs];
      const ok = k === 'retryAfterSeconds' ? v === null || typeof v === 'number' : typeof v === typeof def;
      if (!ok) problems.push(`knob "${k}" must be a ${typeof def}`);
    }
    if (problems.length === 0)
      for (const [k, v] of Object.entries(patch))
        if (k !== 'expireTokens') (this.knobs as unknown as Record<string, unknown>)[k] = v;
    return problems;
  }

  private matches(rec: DvRecord, emailFields: readonly string[]): string[] {
    const out: string[] = [];
    for (const f of emailFields) {
      const v = rec.fields[f];
      if (typeof v === 'string' && this.optedOut.has(v.trim().toLowerCase())) out.push(v.trim().toLowerCase());
    }
    return out;
  }

  truth(opts: VerifyOptions = {}): DataverseTruth {
    if (this.opts.optedOutNow) for (const e of this.opts.optedOutNow()) this.optedOut.add(e.trim().toLowerCase());
    const fields = opts.emailFields ?? ['emailaddress1', 'emailaddress2', 'emailaddress3'];
    const t: DataverseTruth = {
      optedOut: [...this.optedOut].sort(),
      toSuppress: [],
      alreadySuppressed: [],
      closedLeads: [],
      missing: [],
    };
    const covered = new Set<string>();
    for (const rec of this.records.values()) {
      const m = this.matches(rec, fields);
      if (m.length === 0) continue;
      const key = `${rec.entity}:${rec.id}`;
      if (rec.entity === 'lead' && rec.initialState !== 0) {
        t.closedLeads.push(key);
        continue;
      }
      for (const e of m) covered.add(e);
      const done = rec.initialBulk && (!opts.donotemail || rec.initialEmail);
      (done ? t.alreadySuppressed : t.toSuppress).push(key);
    }
    t.missing = t.optedOut.filter((e) => !covered.has(e));
    return t;
  }

  verify(opts: VerifyOptions = {}): DataverseVerification {
    const t = this.truth(opts);
    const toSuppress = new Set(t.toSuppress);
    const notSuppressed: string[] = [];
    for (const key of t.toSuppress) {
      const rec = this.records.get(key)!;
      if (rec.fields.donotbulkemail !== true || (opts.donotemail && rec.fields.donotemail !== true))
        notSuppressed.push(key);
    }
    const unexpectedWrites = [...this.writes.keys()].filter((k) => !toSuppress.has(k)).sort();
    const repeatedWrites = [...this.writes.entries()]
      .filter(([, n]) => n > 1)
      .map(([k]) => k)
      .sort();
    let writes = 0;
    for (const n of this.writes.values()) writes += n;
    return {
      ok: notSuppressed.length === 0 && unexpectedWrites.length === 0 && repeatedWrites.length === 0,
      expected: t.toSuppress.length,
      notSuppressed,
      unexpectedWrites,
      repeatedWrites,
      writes,
    };
  }

  requestCounts(): Record<string, EndpointCount> {
    return Object.fromEntries(this.counts);
  }

  // ------------------------------------------------------------------------------------------
  // HTTP

  private count(name: string, status: number): void {
    const c = this.counts.get(name) ?? { total: 0, byStatus: {} };
    c.total++;
    c.byStatus[String(status)] = (c.byStatus[String(status)] ?? 0) + 1;
    this.counts.set(name, c);
  }

  private async serve(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    server: 'dataverse' | 'entra',
  ): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const rawUrl = req.url ?? '/';
    let out: InnerResponse & { name?: string };
    try {
      if (/^Bearer /i.test(String(req.headers.authorization ?? ''))) this.bearerSeenBy[server]++;
      if (rawUrl.startsWith('/__emulator/')) out = this.admin(req.method ?? 'GET', rawUrl, body);
      else if (server === 'entra') out = this.entra(req.method ?? 'GET', rawUrl, body);
      else {
        if (this.knobs.latencyMs > 0) await new Promise((r) => setTimeout(r, this.knobs.latencyMs));
        out = this.api(req, rawUrl, body);
      }
    } catch (e) {
      out = { ...odataError(500, '0x80040216', `emulator error: ${(e as Error).message}`), name: 'error' };
    }
    if (out.name) this.count(out.name, out.status);
    res.writeHead(out.status, out.headers ?? {});
    res.end(out.body ?? '');
  }

  private admin(method: string, rawUrl: string, body: string): InnerResponse {
    const path = rawUrl.split('?')[0];
    const json = (status: number, v: unknown): InnerResponse => ({
      status,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(v),
    });
    if (method === 'GET' && path === '/__emulator/connection') return json(200, this.connection());
    if (method === 'GET' && path === '/__emulator/truth') return json(200, this.truth());
    if (method === 'GET' && path === '/__emulator/verify') return json(200, this.verify());
    if (method === 'GET' && path === '/__emulator/state') {
      return json(200, {
        knobs: this.knobs,
        counts: this.requestCounts(),
        verify: this.verify(),
        discoveryCalls: this.discoveryCalls,
        records: this.records.size,
      });
    }
    if (method === 'POST' && path === '/__emulator/reset-counts') {
      this.counts.clear();
      return json(200, { ok: true });
    }
    if (method === 'POST' && path === '/__emulator/faults') {
      let patch: unknown;
      try {
        patch = JSON.parse(body);
      } catch {
        return json(400, { error: 'body must be a JSON object of knobs' });
      }
      if (!patch || typeof patch !== 'object' || Array.isArray(patch))
        return json(400, { error: 'body must be a JSON object of knobs' });
      const problems = this.setKnobs(patch as Record<string, unknown>);
      return problems.length ? json(400, { error: problems.join('; ') }) : json(200, { knobs: this.knobs });
    }
    return json(404, { error: `no admin route ${method} ${path}` });
  }

  // -------------------------------------------------------------------------------- Entra ID

  private entra(method: string, rawUrl: string, body: string): InnerResponse & { name: string } {
    const path = rawUrl.split('?')[0];
    const aad = (
      status: number,
      error: string,
      code: number,
      description: string,
    ): InnerResponse & { name: string } => ({
      name: 'POST /{tenant}/oauth2/v2.0/token',
      status,
      headers: { 'Content-Type': 'application/json; charset=utf-8' },
      body: JSON.stringify({
        error,
        error_description: `AADSTS${code}: ${description} Trace ID: ${randomUUID()} Correlation ID: ${randomUUID()} Timestamp: ${new Date().toISOString()}`,
        error_codes: [code],
        timestamp: new Date().toISOString(),
        trace_id: randomUUID(),
        correlation_id: randomUUID(),
      }),
    });
    if (
      method === 'GET' &&
      (/\/\.well-known\/openid-configuration$/.test(path) || /\/discovery\/instance$/.test(path))
    ) {
      this.discoveryCalls.push(path);
      const base = `${this.entraOrigin}/${this.tenantId}`;
      const doc = /discovery\/instance$/.test(path)
        ? { tenant_discovery_endpoint: `${base}/v2.0/.well-known/openid-configuration`, metadata: [] }
        : {
            token_endpoint: `${base}/oauth2/v2.0/token`,
            authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
            issuer: `${base}/v2.0`,
            jwks_uri: `${base}/discovery/v2.0/keys`,
          };
      return {
        name: 'GET discovery',
        status: 200,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(doc),
      };
    }
    const m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(path);
    if (method !== 'POST' || !m)
      return {
        name: 'entra other',
        status: 404,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ error: 'not_found' }),
      };
    if (m[1] !== this.tenantId) return aad(400, 'invalid_request', 90002, `Tenant '${m[1]}' not found.`);
    const form = new URLSearchParams(body);
    if (form.get('grant_type') !== 'client_credentials')
      return aad(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
    if (form.get('client_id') !== this.clientId)
      return aad(
        400,
        'unauthorized_client',
        700016,
        `Application with identifier '${form.get('client_id')}' was not found in the directory.`,
      );
    if (form.get('client_secret') !== this.clientSecret)
      return aad(401, 'invalid_client', 7000215, 'Invalid client secret provided.');
    const scopes = (form.get('scope') ?? '')
      .split(/\s+/)
      .filter((s) => s && !['openid', 'profile', 'offline_access'].includes(s));
    const wanted = `${this.dvOrigin}/.default`;
    if (scopes.length !== 1 || scopes[0] !== wanted)
      return aad(
        400,
        'invalid_scope',
        1002012,
        `The provided value for scope ${scopes.join(' ')} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
      );
    const token = `dvemu.${randomUUID().replace(/-/g, '')}`;
    this.tokens.set(token, {
      principal: this.clientId,
      expiresMs: Date.now() + this.knobs.tokenTtlSeconds * 1000,
      audience: this.dvOrigin,
    });
    return {
      name: 'POST /{tenant}/oauth2/v2.0/token',
      status: 200,
      headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' },
      body: JSON.stringify({
        token_type: 'Bearer',
        expires_in: this.knobs.tokenTtlSeconds,
        ext_expires_in: this.knobs.tokenTtlSeconds,
        access_token: token,
      }),
    };
  }

  // -------------------------------------------------------------------------------- Dataverse

  private routeName(method: string, path: string): string {
    const p = path.replace(API_PATH, '');
    if (/^\/\$batch$/.test(p)) return 'POST $batch';
    if (/^\/WhoAmI(\(\))?$/.test(p)) return 'GET WhoAmI';
    const m = /^\/(contacts|leads)(\([^)]*\))?$/.exec(p);
    if (m) return `${method} ${m[1]}${m[2] ? '(id)' : ''}`;
    return `${method} other`;
  }

  private api(req: http.IncomingMessage, rawUrl: string, body: string): InnerResponse & { name: string } {
    const method = req.method ?? 'GET';
    const path = rawUrl.split('?')[0];
    const name = this.routeName(method, path);
    const withName = (r: InnerResponse): InnerResponse & { name: string } => ({ ...r, name });
    if (rawUrl.length > MAX_URL_LENGTH)
      return withName(odataError(414, '0x8004430d', `The request URL is longer than ${MAX_URL_LENGTH} characters.`));
    // authentication: a token issued for this environment
    const auth = String(req.headers.authorization ?? '');
    const token = /^Bearer (.+)$/i.exec(auth)?.[1];
    const rec = token ? this.tokens.get(token) : undefined;
    if (!rec || rec.expiresMs <= Date.now() || rec.audience !== this.dvOrigin) {
      return withName({
        status: 401,
        headers: {
          'WWW-Authenticate': `Bearer authorization_uri=${this.entraOrigin}/${this.tenantId}/oauth2/authorize, resource_id=${this.dvOrigin}/`,
        },
        body: '',
      });
    }
    // injected faults
    if (this.knobs.force429 > 0) {
      this.knobs.force429--;
      return withName(this.throttled(this.knobs.force429RetryAfter));
    }
    if (this.knobs.fail5xx > 0) {
      this.knobs.fail5xx--;
      return withName(odataError(503, '0x80040216', 'Service Unavailable (emulated).'));
    }
    // service protection: requests per caller in a sliding window
    let batchParts: BatchPart[] | null = null;
    if (name === 'POST $batch') {
      const parsed = this.parseBatch(String(req.headers['content-type'] ?? ''), body);
      if ('status' in parsed) return withName(parsed);
      batchParts = parsed.parts;
    }
    const cost =
      batchParts && this.knobs.countBatchParts
        ? Math.max(
            1,
            batchParts.reduce((n, p) => n + (p.kind === 'changeset' ? p.requests.length : 1), 0),
          )
        : 1;
    const limited = this.admit(rec.principal, cost);
    if (limited !== null) return withName(this.throttled(limited));

    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    if (batchParts) return withName(this.runBatch(batchParts, headers));
    return withName(this.execute({ method, url: rawUrl, headers, body }, false));
  }

  private throttled(retryAfter: number): InnerResponse {
    return odataError(
      429,
      '0x80072322',
      `Number of requests exceeded the limit of ${this.knobs.requestLimit} over time window of ${this.knobs.windowSeconds} seconds.`,
      {
        'Retry-After': String(retryAfter),
      },
    );
  }

  /** null when admitted; else the Retry-After seconds. */
  private admit(principal: string, cost: number): number | null {
    const now = Date.now();
    const windowMs = this.knobs.windowSeconds * 1000;
    const list = (this.stamps.get(principal) ?? []).filter((t) => t > now - windowMs);
    if (list.length + cost > this.knobs.requestLimit) {
      this.stamps.set(principal, list);
      if (this.knobs.retryAfterSeconds !== null) return this.knobs.retryAfterSeconds;
      const freeAt = list[Math.max(0, list.length + cost - this.knobs.requestLimit - 1)] ?? now;
      return Math.max(1, Math.ceil((freeAt + windowMs - now) / 1000));
    }
    for (let i = 0; i < cost; i++) list.push(now);
    this.stamps.set(principal, list);
    return null;
  }

  /** Resolve a request URL (absolute, server-relative or relative to the API root) to the resource path + query. */
  private resolve(url: string): { path: string; query: URLSearchParams } | null {
    let u: URL;
    try {
      u = new URL(url, `${this.dvOrigin}${API_PATH}/`);
    } catch {
      return null;
    }
    if (u.origin !== this.dvOrigin || !u.pathname.startsWith(API_PATH + '/')) return null;
    return { path: decodeURIComponent(u.pathname.slice(API_PATH.length)), query: u.searchParams };
  }

  /** One request (outside or inside a $batch); `inChangeSet` writes are staged by the caller. */
  private execute(r: InnerRequest, inBatch: boolean): InnerResponse {
    const target = this.resolve(r.url);
    if (!target) return odataError(404, '0x80060888', `Resource not found for the segment '${r.url.slice(0, 100)}'.`);
    const { path, query } = target;
    if (r.method === 'GET' && /^\/WhoAmI(\(\))?$/.test(path)) {
      return this.ok({
        '@odata.context': `${this.dvOrigin}${API_PATH}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse`,
        BusinessUnitId: this.buId,
        UserId: this.userId,
        OrganizationId: this.orgId,
      });
    }
    const coll = /^\/(contacts|leads)$/.exec(path);
    if (coll && r.method === 'GET')
      return this.query(coll[1] === 'contacts' ? 'contact' : 'lead', query, r.headers, inBatch);
    const one = /^\/(contacts|leads)\(([0-9a-fA-F-]{36})\)$/.exec(path);
    if (one && r.method === 'PATCH')
      return this.patch(one[1] === 'contacts' ? 'contact' : 'lead', one[2].toLowerCase(), r);
    if (one && r.method === 'GET') {
      const rec = this.records.get(`${one[1] === 'contacts' ? 'contact' : 'lead'}:${one[2].toLowerCase()}`);
      return rec
        ? this.ok({ '@odata.etag': `W/"${hash32(JSON.stringify(rec.fields))}"`, ...rec.fields })
        : this.notFound(one[1] === 'contacts' ? 'contact' : 'lead', one[2]);
    }
    return odataError(
      405,
      '0x80060888',
      `The HTTP method '${r.method}' is not allowed for '${path}' in this emulator.`,
    );
  }

  private ok(v: unknown): InnerResponse {
    return {
      status: 200,
      headers: { 'Content-Type': 'application/json; odata.metadata=minimal', 'OData-Version': '4.0' },
      body: JSON.stringify(v),
    };
  }

  private notFound(entity: EntityName, id: string): InnerResponse {
    return odataError(404, '0x80040217', `${entity} With Id = ${id} Does Not Exist`);
  }

  private query(
    entity: EntityName,
    q: URLSearchParams,
    headers: Record<string, string>,
    inBatch: boolean,
  ): InnerResponse {
    const cols = columnsOf(entity);
    const type = `Microsoft.Dynamics.CRM.${entity}`;
    for (const k of q.keys()) {
      if (k.startsWith('$') && !['$select', '$filter', '$top', '$skiptoken', '$count'].includes(k))
        return odataError(400, '0x80060888', `The query parameter ${k} is not supported`);
    }
    const select =
      q
        .get('$select')
        ?.split(',')
        .map((s) => s.trim())
        .filter(Boolean) ?? null;
    for (const c of select ?? [])
      if (!cols.includes(c))
        return odataError(400, '0x80060888', `Could not find a property named '${c}' on type '${type}'.`);
    let filter: Expr | null = null;
    const raw = q.get('$filter');
    if (raw !== null) {
      try {
        filter = parseFilter(raw);
      } catch (e) {
        if (e instanceof FilterSyntaxError)
          return odataError(400, '0x80060888', `Syntax error in $filter: ${e.message}`);
        throw e;
      }
      for (const f of fieldsOf(filter))
        if (!cols.includes(f))
          return odataError(400, '0x80060888', `Could not find a property named '${f}' on type '${type}'.`);
    }
    const top = q.get('$top');
    if (top !== null && !/^[0-9]+$/.test(top))
      return odataError(400, '0x80060888', `Invalid value '${top}' for $top query option found.`);
    const m = /odata\.maxpagesize=(\d+)/.exec(headers['prefer'] ?? '');
    const pageSize = Math.max(1, Math.min(5000, m ? Number(m[1]) : this.knobs.maxPageSize));
    let rows = [...this.records.values()].filter(
      (rec) => rec.entity === entity && (!filter || evaluate(filter, rec.fields)),
    );
    if (top !== null) rows = rows.slice(0, Number(top));
    const skip = Number(q.get('$skiptoken') ?? '0') || 0;
    const page = rows.slice(skip, skip + pageSize);
    const value = page.map((rec) => {
      const row: Record<string, unknown> = { '@odata.etag': `W/"${hash32(JSON.stringify(rec.fields))}"` };
      for (const c of select ?? cols) row[c] = rec.fields[c] ?? null;
      if (select && !select.includes(ID_COLUMN[entity])) row[ID_COLUMN[entity]] = rec.id; // the primary key is always returned
      return row;
    });
    const out: Record<string, unknown> = {
      '@odata.context': `${this.dvOrigin}${API_PATH}/$metadata#${ENTITY_SET[entity]}${select ? `(${select.join(',')})` : ''}`,
      value,
    };
    if (skip + pageSize < rows.length) {
      const next = new URLSearchParams(q);
      next.set('$skiptoken', String(skip + pageSize));
      out['@odata.nextLink'] = `${this.dvOrigin}${API_PATH}/${ENTITY_SET[entity]}?${next.toString()}`;
    }
    void inBatch;
    return this.ok(out);
  }

  private patch(entity: EntityName, id: string, r: InnerRequest): InnerResponse {
    let body: unknown;
    try {
      body = JSON.parse(r.body);
    } catch {
      return odataError(400, '0x80060888', 'The request body is not valid JSON.');
    }
    if (!body || typeof body !== 'object' || Array.isArray(body))
      return odataError(400, '0x80060888', 'The request body must be a JSON object.');
    const type = `Microsoft.Dynamics.CRM.${entity}`;
    for (const k of Object.keys(body)) {
      if (!columnsOf(entity).includes(k))
        return odataError(400, '0x80060888', `Invalid property '${k}' was found in entity '${type}'.`);
      if (!WRITABLE[entity].has(k)) return odataError(400, '0x80048d19', `Field '${k}' is not valid for update.`);
    }
    const key = `${entity}:${id}`;
    let rec = this.records.get(key);
    if (!rec) {
      // PATCH is an upsert unless the client sends If-Match: *
      if ((r.headers['if-match'] ?? '').trim() === '*') return this.notFound(entity, id);
      this.addRecordWithId(entity, id);
      rec = this.records.get(key)!;
    }
    for (const [k, v] of Object.entries(body as Record<string, string | number | boolean | null>)) rec.fields[k] = v;
    rec.fields.modifiedon = new Date().toISOString();
    this.writes.set(key, (this.writes.get(key) ?? 0) + 1);
    return {
      status: 204,
      headers: { 'OData-Version': '4.0', 'OData-EntityId': `${this.dvOrigin}${API_PATH}/${ENTITY_SET[entity]}(${id})` },
    };
  }

  private addRecordWithId(entity: EntityName, id: string): void {
    const fields: Record<string, string | number | boolean | null> = {
      [ID_COLUMN[entity]]: id,
      emailaddress1: null,
      emailaddress2: null,
      emailaddress3: null,
      donotbulkemail: false,
      donotemail: false,
      statecode: 0,
      statuscode: 1,
    };
    this.records.set(`${entity}:${id}`, {
      entity,
      id,
      fields,
      initialBulk: false,
      initialEmail: false,
      initialState: 0,
    });
  }

  // -------------------------------------------------------------------------------- $batch

  private parseBatch(contentType: string, body: string): { parts: BatchPart[] } | InnerResponse {
    const boundary = boundaryOf(contentType);
    if (!boundary)
      return odataError(
        400,
        '0x80060888',
        'The $batch request must have Content-Type multipart/mixed with a boundary.',
      );
    try {
      const parts: BatchPart[] = [];
      let n = 0;
      for (const p of parseMultipart(body, boundary)) {
        const inner = boundaryOf(p.headers['content-type']);
        if (inner) {
          const requests: Array<InnerRequest & { contentId?: string }> = [];
          for (const q of parseMultipart(p.body, inner)) {
            if (!/^application\/http/i.test(q.headers['content-type'] ?? ''))
              throw new MultipartError('a change set part must be application/http');
            const r = parseInnerRequest(q.body);
            if (r.method === 'GET') throw new MultipartError('GET requests are not allowed inside a change set');
            if (r.url.length > MAX_BATCH_URL_LENGTH)
              throw new MultipartError('a request URL inside the $batch is too long');
            requests.push({ ...r, contentId: q.headers['content-id'] });
            n++;
          }
          parts.push({ kind: 'changeset', requests });
        } else if (/^application\/http/i.test(p.headers['content-type'] ?? '')) {
          const r = parseInnerRequest(p.body);
          if (r.url.length > MAX_BATCH_URL_LENGTH)
            throw new MultipartError('a request URL inside the $batch is too long');
          parts.push({ kind: 'single', request: { ...r, contentId: p.headers['content-id'] } });
          n++;
        } else throw new MultipartError(`unexpected part Content-Type "${p.headers['content-type'] ?? ''}"`);
      }
      if (n > MAX_BATCH_REQUESTS)
        return odataError(
          400,
          '0x8004800d',
          `The number of requests in a batch (${n}) exceeds the limit of ${MAX_BATCH_REQUESTS}.`,
        );
      return { parts };
    } catch (e) {
      if (e instanceof MultipartError)
        return odataError(400, '0x80060888', `The batch request is malformed: ${e.message}`);
      throw e;
    }
  }

  private runBatch(parts: BatchPart[], headers: Record<string, string>): InnerResponse {
    const continueOnError = /odata\.continue-on-error/i.test(headers['prefer'] ?? '');
    const out: string[] = [];
    const failInjected = (): InnerResponse | null => {
      if (this.knobs.failBatchParts > 0) {
        this.knobs.failBatchParts--;
        return odataError(500, '0x80040216', 'An unexpected error occurred (emulated).');
      }
      return null;
    };
    for (const part of parts) {
      let failed = false;
      if (part.kind === 'single') {
        const inj = failInjected();
        const res = inj ?? this.execute(part.request, true);
        failed = res.status >= 400;
        out.push(httpPart({ ...res, contentId: part.request.contentId }));
      } else {
        // a change set is one transaction: on the first failure every write in it is rolled back
        const snapshot = new Map<
          string,
          { fields: Record<string, string | number | boolean | null>; writes: number | undefined; existed: boolean }
        >();
        const responses: InnerResponse[] = [];
        let failure: InnerResponse | null = null;
        for (const r of part.requests) {
          const target = this.resolve(r.url);
          const m = target ? /^\/(contacts|leads)\(([0-9a-fA-F-]{36})\)$/.exec(target.path) : null;
          if (m) {
            const key = `${m[1] === 'contacts' ? 'contact' : 'lead'}:${m[2].toLowerCase()}`;
            if (!snapshot.has(key)) {
              const rec = this.records.get(key);
              snapshot.set(key, { fields: rec ? { ...rec.fields } : {}, writes: this.writes.get(key), existed: !!rec });
            }
          }
          const res = failInjected() ?? this.execute(r, true);
          if (res.status >= 400) {
            failure = { ...res, contentId: r.contentId };
            break;
          }
          responses.push({ ...res, contentId: r.contentId });
        }
        if (failure) {
          for (const [key, s] of snapshot) {
            if (!s.existed) this.records.delete(key);
            else Object.assign(this.records.get(key)!.fields, s.fields);
            if (s.writes === undefined) this.writes.delete(key);
            else this.writes.set(key, s.writes);
          }
          failed = true;
          out.push(httpPart(failure));
        } else {
          const cs = `changesetresponse_${randomUUID()}`;
          out.push(
            `Content-Type: multipart/mixed; boundary=${cs}\r\n\r\n` +
              renderMultipart(
                cs,
                responses.map((r) => httpPart(r)),
              ),
          );
        }
      }
      if (failed && !continueOnError) break;
    }
    const boundary = `batchresponse_${randomUUID()}`;
    const h: Record<string, string> = {
      'Content-Type': `multipart/mixed; boundary=${boundary}`,
      'OData-Version': '4.0',
    };
    if (continueOnError) h['Preference-Applied'] = 'odata.continue-on-error';
    return { status: 200, headers: h, body: renderMultipart(boundary, out) };
  }
}

type BatchPart =
  | { kind: 'single'; request: InnerRequest & { contentId?: string } }
  | { kind: 'changeset'; requests: Array<InnerRequest & { contentId?: string }> };

export async function startDataverseEmulator(opts: DataverseEmulatorOptions = {}): Promise<DataverseEmulator> {
  return new DataverseEmulator(opts).start();
}
