/**
 * A small HTTP server core shared by the three emulators, on Node's `http` module only: routing, body
 * reading, per-endpoint request counts, injected latency, 429 storms and seeded 5xx faults, run-time knobs
 * (`POST /__emulator/faults`) and the inspection endpoint (`GET /__emulator/state`).
 *
 * Request pipeline: admin routes (/__emulator/*, never faulted or counted) -> route match -> count ->
 * latency -> 429 storm -> 5xx (mode "before") -> vendor gate (auth, rate limits, quotas) -> handler ->
 * 5xx (mode "after": the handler's effects happened, the client sees an error) -> vendor headers -> send.
 */
import * as http from 'http';
import { AddressInfo } from 'net';
import { createRng, deriveSeed, Rng } from './prng';
import { World } from './world';

export type Vendor = 'constant-contact' | 'hubspot' | 'salesforce';

export interface EmuRequest {
  readonly method: string;
  readonly path: string;
  readonly rawUrl: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  params: Record<string, string>;
  route: Route | null;
  /** Set by the vendor gate: who is calling (token record), for handlers that need it. */
  principal?: unknown;
}

export interface EmuResponse {
  status: number;
  headers?: Record<string, string>;
  /** JSON-serialised unless `raw` is given. Undefined = empty body. */
  body?: unknown;
  raw?: string | Buffer;
}

export type Handler = (req: EmuRequest) => EmuResponse | Promise<EmuResponse>;

/** api: a vendor API call (counted, faulted, gated); auth: a token/authorize endpoint (counted; faulted only with faultAuthEndpoints). */
export type RouteKind = 'api' | 'auth';

export interface Route {
  method: string;
  regex: RegExp;
  keys: string[];
  /** Endpoint label used in request counts, e.g. "GET /v3/contacts". */
  name: string;
  kind: RouteKind;
  handler: Handler;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): EmuResponse {
  return { status, body, headers };
}

export function text(
  status: number,
  raw: string,
  contentType: string,
  headers: Record<string, string> = {},
): EmuResponse {
  return { status, raw, headers: { 'content-type': contentType, ...headers } };
}

export function empty(status: number, headers: Record<string, string> = {}): EmuResponse {
  return { status, headers };
}

export class BadRequestBody extends Error {}

export function parseJson(req: EmuRequest): unknown {
  const s = req.body.toString('utf8');
  if (s.trim() === '') throw new BadRequestBody('request body is empty');
  try {
    return JSON.parse(s);
  } catch (e) {
    throw new BadRequestBody(`request body is not valid JSON: ${(e as Error).message}`);
  }
}

export function parseForm(req: EmuRequest): URLSearchParams {
  return new URLSearchParams(req.body.toString('utf8'));
}

export function bearer(req: EmuRequest): string | null {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return null;
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  return m ? m[1].trim() : null;
}

export function basicAuth(req: EmuRequest): { user: string; pass: string } | null {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return null;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(h.trim());
  if (!m) return null;
  const dec = Buffer.from(m[1], 'base64').toString('utf8');
  const i = dec.indexOf(':');
  if (i < 0) return null;
  return { user: decodeURIComponent(dec.slice(0, i)), pass: decodeURIComponent(dec.slice(i + 1)) };
}

export class Router {
  readonly routes: Route[] = [];

  add(method: string, template: string, handler: Handler, kind: RouteKind = 'api', name?: string): void {
    const keys: string[] = [];
    const pattern = template
      .split('/')
      .map((seg) => {
        if (seg.startsWith(':')) {
          const rest = seg.slice(1);
          const greedy = rest.endsWith('*');
          keys.push(greedy ? rest.slice(0, -1) : rest);
          return greedy ? '(.+)' : '([^/]+)';
        }
        return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      })
      .join('/');
    this.routes.push({
      method,
      regex: new RegExp(`^${pattern}/?$`),
      keys,
      name: name ?? `${method} ${template}`,
      kind,
      handler,
    });
  }

  match(method: string, path: string): { route: Route; params: Record<string, string> } | { allowed: string[] } | null {
    const allowed: string[] = [];
    for (const r of this.routes) {
      const m = r.regex.exec(path);
      if (!m) continue;
      if (r.method !== method) {
        allowed.push(r.method);
        continue;
      }
      const params: Record<string, string> = {};
      r.keys.forEach((k, i) => {
        params[k] = decodeURIComponent(m[i + 1]);
      });
      return { route: r, params };
    }
    return allowed.length ? { allowed } : null;
  }
}

/** Knobs every emulator has. */
export interface CommonKnobs {
  /** Probability (0..1) that an API request fails with a 5xx (seeded, reproducible). */
  fail5xxRate: number;
  /** "before": nothing happens; "after": the request takes effect, then the client sees the 5xx. */
  fail5xxMode: 'before' | 'after';
  /** Added to every request, in milliseconds. */
  latencyMs: number;
  /** The next N API requests get a 429 (decremented as they are served). */
  force429Storm: number;
  /** Apply 5xx / storms to token endpoints too (default false). */
  faultAuthEndpoints: boolean;
}

export const COMMON_DEFAULTS: CommonKnobs = {
  fail5xxRate: 0,
  fail5xxMode: 'before',
  latencyMs: 0,
  force429Storm: 0,
  faultAuthEndpoints: false,
};

/** Apply a partial knob object, checking names and types against the current values. Returns problems. */
export function applyKnobs<K extends object>(
  knobs: K,
  patch: Record<string, unknown>,
  ignore: readonly string[] = [],
): string[] {
  const problems: string[] = [];
  const target = knobs as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch)) {
    if (ignore.includes(k)) continue;
    if (!(k in target)) {
      problems.push(`unknown knob "${k}"`);
      continue;
    }
    const cur = target[k];
    if (typeof cur === 'number') {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
        problems.push(`knob "${k}" must be a non-negative number`);
    } else if (typeof cur === 'boolean') {
      if (typeof v !== 'boolean') problems.push(`knob "${k}" must be a boolean`);
    } else if (typeof cur === 'string') {
      if (typeof v !== 'string') problems.push(`knob "${k}" must be a string`);
    }
  }
  if (problems.length === 0) {
    for (const [k, v] of Object.entries(patch)) if (!ignore.includes(k)) target[k] = v;
  }
  return problems;
}

/** Sliding-window limiter: at most `max` accepted events per `windowMs`. */
export class RollingWindow {
  private times: number[] = [];
  constructor(
    public windowMs: number,
    public max: number,
  ) {}

  /** Change the limit; a changed limit starts a fresh window (so a test can lower it and see it at once). */
  setMax(max: number): void {
    if (max !== this.max) this.times = [];
    this.max = max;
  }

  private prune(now: number): void {
    let i = 0;
    while (i < this.times.length && this.times[i] <= now - this.windowMs) i++;
    if (i > 0) this.times.splice(0, i);
  }

  tryTake(now: number): boolean {
    this.prune(now);
    if (this.times.length >= this.max) return false;
    this.times.push(now);
    return true;
  }

  remaining(now: number): number {
    this.prune(now);
    return Math.max(0, this.max - this.times.length);
  }

  /** Milliseconds until one more event would be accepted. */
  waitMs(now: number): number {
    this.prune(now);
    if (this.times.length < this.max) return 0;
    return this.times[0] + this.windowMs - now;
  }
}

/** A per-UTC-day counter (Constant Contact and HubSpot daily limits reset at 00:00 UTC). */
export class DailyCounter {
  private day = '';
  count = 0;

  private roll(now: number): void {
    const d = new Date(now).toISOString().slice(0, 10);
    if (d !== this.day) {
      this.day = d;
      this.count = 0;
    }
  }

  used(now: number): number {
    this.roll(now);
    return this.count;
  }

  add(now: number, n = 1): number {
    this.roll(now);
    this.count += n;
    return this.count;
  }

  set(now: number, n: number): void {
    this.roll(now);
    this.count = n;
  }

  /** Next 00:00 UTC after `now`. */
  static resetAt(now: number): string {
    const d = new Date(now);
    return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)).toISOString();
  }
}

export interface EndpointCount {
  total: number;
  byStatus: Record<string, number>;
}

export interface ServerOptions {
  port?: number;
  host?: string;
  /** Seed for the fault PRNG (5xx sampling). */
  seed?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Shared core. Vendors add routes, their error shapes, their gate (auth/limits) and headers. */
export abstract class EmulatorServer<K extends CommonKnobs> {
  readonly router = new Router();
  readonly admin = new Router();
  readonly counts = new Map<string, EndpointCount>();
  protected readonly faultRng: Rng;
  private server: http.Server | null = null;
  private _origin = '';

  constructor(
    readonly vendor: Vendor,
    readonly world: World,
    readonly knobs: K,
    protected readonly options: ServerOptions = {},
  ) {
    this.faultRng = createRng(deriveSeed(options.seed ?? world.data.seed, `faults:${vendor}`));
    this.admin.add('GET', '/__emulator/state', (req) => json(200, this.state(req.query)));
    this.admin.add('GET', '/__emulator/connection', () => json(200, this.connection()));
    this.admin.add('GET', '/__emulator/truth', () => json(200, this.world.truth()));
    this.admin.add('GET', '/__emulator/verify', () => json(200, this.world.verify()));
    this.admin.add('POST', '/__emulator/faults', (req) => {
      let patch: unknown;
      try {
        patch = parseJson(req);
      } catch (e) {
        return json(400, { error: (e as Error).message });
      }
      if (!patch || typeof patch !== 'object' || Array.isArray(patch))
        return json(400, { error: 'body must be a JSON object of knobs' });
      const problems = this.setKnobs(patch as Record<string, unknown>);
      return problems.length ? json(400, { error: 'invalid knobs', problems }) : json(200, { knobs: this.knobs });
    });
    this.admin.add('POST', '/__emulator/reset-counts', () => {
      this.counts.clear();
      this.onResetCounts();
      return empty(204);
    });
  }

  /** Vendors that keep counters of their own beside `counts` reset them here. */
  protected onResetCounts(): void {}

  get origin(): string {
    return this._origin;
  }

  /** Apply knobs (and actions such as expireTokens). Returns problems; nothing is applied when there are any. */
  setKnobs(patch: Record<string, unknown>): string[] {
    const actions = this.actionNames();
    const problems = applyKnobs(this.knobs, patch, actions);
    if (problems.length) return problems;
    for (const a of actions) if (patch[a] !== undefined && patch[a] !== false) this.runAction(a, patch[a]);
    return [];
  }

  /** Knob-like actions accepted by setKnobs (e.g. expireTokens). */
  protected actionNames(): string[] {
    return ['expireTokens', 'dailyUsed'];
  }

  protected runAction(name: string, value: unknown): void {
    if (name === 'expireTokens') this.expireTokens();
    else if (name === 'dailyUsed') this.setDailyUsed(Number(value));
  }

  /** Invalidate every current access token. */
  abstract expireTokens(): void;

  /** Set how many requests the vendor's daily allocation has used (to test daily limits). */
  abstract setDailyUsed(n: number): void;

  /** Connection details (URLs, client ids, secrets) a client needs. */
  abstract connection(): object;

  /** Vendor-shaped error bodies. */
  protected abstract errorResponse(
    kind: 'not-found' | 'method' | 'bad-request' | 'server' | 'storm',
    status: number,
    message: string,
  ): EmuResponse;

  /** Auth, rate limits, quotas. Return a response to reject the request. */
  protected abstract gate(req: EmuRequest, route: Route): EmuResponse | undefined | Promise<EmuResponse | undefined>;

  /** Headers added to every vendor response (rate-limit headers, Sforce-Limit-Info). */
  protected decorate(_req: EmuRequest, _res: EmuResponse, _route: Route | null): void {}

  /** Early rejection before the body is read or the route matched (Salesforce URL/header size limits). */
  protected precheck(_req: http.IncomingMessage): EmuResponse | undefined {
    return undefined;
  }

  /** Vendor state for /__emulator/state (CRM records etc.). `query.summary=1` asks for counts only. */
  protected abstract vendorState(summary: boolean): Record<string, unknown>;

  state(query: URLSearchParams): Record<string, unknown> {
    const summary = query.get('summary') === '1' || query.get('summary') === 'true';
    const truth = this.world.truth();
    return {
      vendor: this.vendor,
      origin: this.origin,
      knobs: this.knobs,
      requests: Object.fromEntries(this.counts),
      totalRequests: [...this.counts.values()].reduce((a, c) => a + c.total, 0),
      truth: summary ? { counts: truth.counts, addedOptOuts: truth.addedOptOuts } : truth,
      verification: summary ? undefined : this.world.verify(truth),
      ...this.vendorState(summary),
    };
  }

  private count(name: string, status: number): void {
    let c = this.counts.get(name);
    if (!c) {
      c = { total: 0, byStatus: {} };
      this.counts.set(name, c);
    }
    c.total++;
    c.byStatus[String(status)] = (c.byStatus[String(status)] ?? 0) + 1;
  }

  /** Total requests of an endpoint label (e.g. "GET /v3/contacts"), or of all endpoints. */
  requestCount(name?: string): number {
    if (name) return this.counts.get(name)?.total ?? 0;
    let n = 0;
    for (const c of this.counts.values()) n += c.total;
    return n;
  }

  protected shouldFault(route: Route): boolean {
    return route.kind === 'api' || this.knobs.faultAuthEndpoints;
  }

  private serverError(): EmuResponse {
    const status = this.faultRng.pick([500, 502, 503]);
    return this.errorResponse(
      'server',
      status,
      status === 503 ? 'Service temporarily unavailable (emulated fault)' : 'Internal server error (emulated fault)',
    );
  }

  private async handle(
    raw: http.IncomingMessage,
    body: Buffer,
  ): Promise<{ res: EmuResponse; req: EmuRequest; route: Route | null; counted: string | null }> {
    const url = new URL(raw.url ?? '/', 'http://emulator.local');
    const req: EmuRequest = {
      method: (raw.method ?? 'GET').toUpperCase(),
      path: url.pathname,
      rawUrl: raw.url ?? '/',
      query: url.searchParams,
      headers: raw.headers,
      body,
      params: {},
      route: null,
    };
    if (req.path.startsWith('/__emulator/')) {
      const m = this.admin.match(req.method, req.path);
      if (m && 'route' in m) {
        req.params = m.params;
        try {
          return { res: await m.route.handler(req), req, route: null, counted: null };
        } catch (e) {
          return { res: json(400, { error: (e as Error).message }), req, route: null, counted: null };
        }
      }
      return {
        res: json(404, { error: `no emulator admin endpoint ${req.method} ${req.path}` }),
        req,
        route: null,
        counted: null,
      };
    }
    const m = this.router.match(req.method, req.path);
    if (!m)
      return {
        res: this.errorResponse('not-found', 404, `No route for ${req.method} ${req.path}`),
        req,
        route: null,
        counted: `${req.method} (unmatched)`,
      };
    if (!('route' in m))
      return {
        res: this.errorResponse('method', 405, `Method ${req.method} not allowed; use ${m.allowed.join(', ')}`),
        req,
        route: null,
        counted: `${req.method} (unmatched)`,
      };
    const route = m.route;
    req.params = m.params;
    req.route = route;
    if (this.knobs.latencyMs > 0) await sleep(this.knobs.latencyMs);
    const faultable = this.shouldFault(route);
    if (faultable && this.knobs.force429Storm > 0) {
      this.knobs.force429Storm--;
      return {
        res: this.errorResponse('storm', 429, 'Too many requests (emulated 429 storm)'),
        req,
        route,
        counted: route.name,
      };
    }
    let failAfter = false;
    if (faultable && this.knobs.fail5xxRate > 0 && this.faultRng.next() < this.knobs.fail5xxRate) {
      if (this.knobs.fail5xxMode === 'before') return { res: this.serverError(), req, route, counted: route.name };
      failAfter = true;
    }
    let res: EmuResponse;
    try {
      const rejected = await this.gate(req, route);
      res = rejected ?? (await route.handler(req));
      if (failAfter && !rejected) res = this.serverError();
    } catch (e) {
      if (e instanceof BadRequestBody) res = this.errorResponse('bad-request', 400, e.message);
      else res = this.errorResponse('server', 500, `Emulator error: ${(e as Error).message}`);
    }
    return { res, req, route, counted: route.name };
  }

  private onRequest(raw: http.IncomingMessage, out: http.ServerResponse): void {
    const early = this.precheck(raw);
    if (early) {
      raw.resume();
      raw.on('end', () => this.send(out, early));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    raw.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= 150 * 1024 * 1024) chunks.push(c);
    });
    raw.on('end', () => {
      this.handle(raw, Buffer.concat(chunks))
        .then(({ res, req, route, counted }) => {
          if (counted) this.count(counted, res.status);
          if (counted) this.decorate(req, res, route);
          this.send(out, res);
        })
        .catch((e: unknown) => {
          this.send(out, json(500, { error: String(e) }));
        });
    });
  }

  private send(out: http.ServerResponse, res: EmuResponse): void {
    const headers: Record<string, string> = { ...(res.headers ?? {}) };
    let payload: string | Buffer | undefined;
    if (res.raw !== undefined) payload = res.raw;
    else if (res.body !== undefined) {
      payload = JSON.stringify(res.body);
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type'))
        headers['content-type'] = 'application/json;charset=UTF-8';
    }
    if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
    else headers['content-length'] = '0';
    out.writeHead(res.status, headers);
    out.end(payload);
  }

  async start(): Promise<this> {
    const server = http.createServer({ maxHeaderSize: 256 * 1024 }, (req, res) => this.onRequest(req, res));
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    this._origin = `http://${this.options.host ?? '127.0.0.1'}:${addr.port}`;
    this.server = server;
    return this;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
