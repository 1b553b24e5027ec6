/**
 * The Constant Contact V3 HTTP client: GET with a bearer token, one rate limiter, one retry policy.
 *
 * - Every request (retries and the replay after a 401 included) takes a slot from ONE RateLimiter:
 *   `rateLimit.perSecond` per 1000 ms plus the daily budget `rateLimit.dailyBudget`. The budget is per
 *   APPLICATION, so the day's count is persisted in the key/value store (`daily_usage` = {day, used}) and
 *   restored on start: it survives across runs. Each request is also counted with `calls.record`.
 *   The count is written in batches, not per request (each write is a committed, fsync'd SQLite transaction):
 *   every USAGE_FLUSH_EVERY requests or USAGE_FLUSH_MS of time, before a QuotaExceeded is thrown, and by
 *   `flushUsage()`, which the source calls when each of its operations ends (so before a run ends). A crash
 *   loses at most the requests of one batch (USAGE_FLUSH_EVERY - 1) from the count.
 * - Retries (src/http/retry.ts): 5xx, network failures and 429 `throttled` (at least 1 s apart: the limit
 *   is per second and no Retry-After is documented). 429 `quota_exceeded` is final: QuotaExceeded with
 *   `resetAt` = next 00:00 UTC, and so is our own budget running out (BudgetExhausted).
 * - 401: refresh the access token once and replay once; a second 401 is a SourceError.
 * - Error bodies come as `[{error_key, error_message}]` or, for 401, `{error_key, error_message}`; messages
 *   carry status, key and vendor message, never a token.
 * - Pagination: `_links.next.href` is host-relative and already starts with `/v3`; see `resolveNextHref`.
 * - Many accounts under one application (src/fleet): with `sharedBudget`, every request first reserves a call
 *   from the application's SHARED budget (daily ledger + per-second slot, across all workers) and sleeps until
 *   its slot, then takes the local limiter's slot as before. A spent shared budget (SharedBudgetExhausted) ends
 *   detection like our own budget does (QuotaExceeded: the run is incomplete, nothing is lost, the next run
 *   after 00:00 UTC resumes), and a `quota_exceeded` answer marks the day spent for every worker.
 */
import { AxiosInstance } from 'axios';
import { isLeft } from 'fp-ts/Either';
import { ResolvedSource } from '../../config';
import { nextUtcMidnight } from '../../http/clock';
import { BudgetExhausted, RateLimiter } from '../../http/limiter';
import { backoffDelay, DEFAULT_RETRY, RetryPolicy, withRetry } from '../../http/retry';
import { Clock } from '../../http/clock';
import { Logger } from '../../log';
import { SharedBudget, SharedBudgetExhausted } from '../../fleet/budget';
import { QuotaExceeded, SourceDeps, SourceError } from '../types';
import { createHttp, TokenManager } from './auth';
import { DailyUsage, parseApiError } from './codecs';
import { classifyFailure, networkError, sourceError } from './errors';

export const CALLS_VENDOR = 'constant-contact';
export const KV_DAILY_USAGE = 'daily_usage';
/** The daily count is persisted after this many requests at the latest ... */
export const USAGE_FLUSH_EVERY = 25;
/** ... or once this much time passed since the last write (whichever comes first). */
export const USAGE_FLUSH_MS = 5_000;

export interface ClientOptions {
  /** axios instance (tests may inject one); defaults to a fresh instance on the Node http adapter. */
  readonly http?: AxiosInstance;
  readonly retry?: RetryPolicy;
  /** Persist the daily count after this many requests (default USAGE_FLUSH_EVERY; 1 = every request). */
  readonly usageFlushEvery?: number;
  /**
   * The application's budget shared by every account and worker (src/fleet): `app` is the application
   * (client id) it is kept under; `clock` (default the source's) is what the client sleeps on until a grant.
   */
  readonly sharedBudget?: SharedBudgetHook;
}

export interface SharedBudgetHook {
  readonly app: string;
  readonly budget: SharedBudget;
  readonly clock?: Clock;
}

export type QueryParams = Record<string, string | number | boolean>;

/**
 * Resolve a pagination link. The vendor's href is host-relative and already holds the API version
 * (`/v3/contacts?cursor=...`), so it is joined to the ORIGIN of `apiBaseUrl`, not to `apiBaseUrl` itself
 * (that would request `/v3/v3/...`). When `apiBaseUrl` points at a proxy with a path prefix
 * (`http://proxy/cc/v3`), the href's leading `/v3` is replaced with that path (`/cc/v3/contacts?...`).
 *
 * The href is resolved with the WHATWG URL parser (the one axios and browsers use), so `//host/...`,
 * `/\host/...`, `http:host/...` and absolute URLs are read the way an HTTP client would read them. A link
 * whose origin (scheme, host, port) is not `apiBaseUrl`'s is REFUSED with a SourceError: the bearer token
 * only ever goes to `apiBaseUrl`'s origin, and a page that points elsewhere is not trusted (the caller
 * rejects the whole page). An absolute link to `apiBaseUrl`'s own origin is accepted. The query (cursor)
 * is opaque and kept as sent, apart from the URL parser's own normalisation.
 */
export function resolveNextHref(apiBaseUrl: string, href: string): string {
  const base = new URL(apiBaseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const rel = href.trim();
  const shown = JSON.stringify(rel.length > 120 ? `${rel.slice(0, 117)}...` : rel);
  let resolved: URL;
  try {
    // Host-relative (`/v3/...`) is joined to the origin; anything else to the base URL as a directory.
    resolved = new URL(rel, rel.startsWith('/') ? `${base.origin}/` : `${base.origin}${basePath}/`);
  } catch {
    throw sourceError(`Constant Contact pagination: _links.next.href ${shown} is not a URL; the page is rejected`);
  }
  if (resolved.origin !== base.origin || resolved.username !== '' || resolved.password !== '') {
    throw sourceError(
      `Constant Contact pagination: _links.next.href ${shown} points to ${resolved.origin === 'null' ? resolved.protocol : resolved.origin}, ` +
        `not to the configured API origin ${base.origin} (source.apiBaseUrl); refusing to send the access token there. ` +
        `The page carrying this link is rejected and nothing from it is committed.`,
    );
  }
  let pathname = resolved.pathname;
  const versioned = /^\/v3(?=\/|$)/;
  if (basePath.endsWith('/v3') && basePath !== '/v3' && versioned.test(pathname)) {
    pathname = basePath + pathname.slice(3);
  }
  // the same origin is not enough behind a proxy: stay under the API's own path (`/v3`, or `/prefix/v3`)
  // (a base path that does not end in /v3 is a proxy that passes the host-relative /v3 links through as they are)
  const roots = basePath.endsWith('/v3') ? [basePath] : ['/v3', ...(basePath ? [basePath] : [])];
  if (!roots.some((root) => pathname === root || pathname.startsWith(`${root}/`))) {
    throw sourceError(
      `Constant Contact pagination: _links.next.href ${shown} leads outside the API path ${roots.join(' or ')} of source.apiBaseUrl; ` +
        `refusing to send the access token there. The page carrying this link is rejected and nothing from it is committed.`,
    );
  }
  return `${base.origin}${pathname}${resolved.search}`;
}

/** Today's usage as the store last saw it, or undefined when missing or unreadable. */
function readDailyUsage(deps: SourceDeps, logger: Logger): DailyUsage | undefined {
  const raw = deps.kv.get(KV_DAILY_USAGE);
  if (!raw) return undefined;
  try {
    const r = DailyUsage.decode(JSON.parse(raw));
    if (!isLeft(r)) return r.right;
  } catch {
    // fall through
  }
  logger.warn('constant-contact: ignoring an unreadable daily_usage entry in the store', { value: raw.slice(0, 80) });
  return undefined;
}

function describeRequest(method: string, url: string): string {
  const u = new URL(url);
  return `${method} ${u.pathname}${u.search}`;
}

interface Req {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly params?: QueryParams;
  readonly body?: unknown;
  readonly accept: 'json' | 'text';
}

export interface BudgetState {
  readonly used: number;
  readonly budget: number;
  readonly remaining: number;
  readonly resetsAt: Date;
}

export class ConstantContactClient {
  private readonly http: AxiosInstance;
  private readonly retry: RetryPolicy;
  private readonly limiter: RateLimiter;
  private readonly logger: Logger;
  private readonly flushEvery: number;
  private readonly shared: SharedBudgetHook | null;
  /** The count as last written to the store, and when. */
  private persisted: { day: string; used: number; at: number } | null = null;

  constructor(
    private readonly config: ResolvedSource,
    private readonly deps: SourceDeps,
    readonly tokens: TokenManager,
    options: ClientOptions = {},
  ) {
    this.http = options.http ?? createHttp();
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.logger = deps.logger.child({ source: 'constant-contact' });
    this.flushEvery = Math.max(1, Math.floor(options.usageFlushEvery ?? USAGE_FLUSH_EVERY));
    this.shared = options.sharedBudget ?? null;
    const stored = readDailyUsage(deps, this.logger);
    if (stored) this.persisted = { ...stored, at: deps.clock.now().getTime() };
    this.limiter = new RateLimiter({
      perWindow: config.rateLimit.perSecond,
      // 1 s plus a safety margin: the server times arrivals, we time departures, and latency jitter between
      // the two turned a 4th-per-second request into a `throttled` 429 against the emulator.
      windowMs: 1100,
      dailyBudget: config.rateLimit.dailyBudget,
      usedToday: stored,
      onUse: (day, used) => this.noteUsage(day, used),
      clock: deps.clock,
    });
  }

  /** Batch the daily-count writes: persist every `flushEvery` requests or USAGE_FLUSH_MS, whichever first. */
  private noteUsage(day: string, used: number): void {
    const p = this.persisted;
    const now = this.deps.clock.now().getTime();
    if (p === null || p.day !== day || used - p.used >= this.flushEvery || now - p.at >= USAGE_FLUSH_MS)
      this.writeUsage(day, used);
  }

  private writeUsage(day: string, used: number): void {
    this.deps.kv.set(KV_DAILY_USAGE, JSON.stringify({ day, used }));
    this.persisted = { day, used, at: this.deps.clock.now().getTime() };
  }

  /** Write the day's count now if the store is behind (at the end of every source operation). */
  flushUsage(): void {
    const used = this.limiter.usedToday();
    const day = this.deps.clock.now().toISOString().slice(0, 10);
    if (this.persisted === null ? used > 0 : this.persisted.day !== day || this.persisted.used !== used)
      this.writeUsage(day, used);
  }

  /** The absolute URL of an API path (`/contacts`) under `apiBaseUrl`. */
  url(path: string): string {
    return `${this.config.apiBaseUrl}${path.startsWith('/') ? path : `/${path}`}`;
  }

  /** See `resolveNextHref`. */
  nextUrl(href: string): string {
    return resolveNextHref(this.config.apiBaseUrl, href);
  }

  /** Requests left in today's budget (UTC day). */
  budget(): BudgetState {
    const used = this.limiter.usedToday();
    const budget = this.config.rateLimit.dailyBudget;
    return { used, budget, remaining: Math.max(0, budget - used), resetsAt: nextUtcMidnight(this.deps.clock.now()) };
  }

  /**
   * GET `url` (absolute; use `url()` / `nextUrl()`) with optional query params and return the parsed JSON
   * body. Throws QuotaExceeded, ReauthorizationRequired or SourceError.
   */
  getJson(url: string, params?: QueryParams): Promise<unknown> {
    return this.request({ method: 'GET', url, params, accept: 'json' });
  }

  /** POST a JSON body (bulk activities), same limiter, retries and errors as `getJson`. */
  postJson(url: string, body: unknown): Promise<unknown> {
    return this.request({ method: 'POST', url, body, accept: 'json' });
  }

  /** GET a text body (the CSV of a contact export), same limiter, retries and errors as `getJson`. */
  async getText(url: string): Promise<string> {
    const data = await this.request({ method: 'GET', url, accept: 'text' });
    return typeof data === 'string' ? data : Buffer.isBuffer(data) ? data.toString('utf8') : String(data ?? '');
  }

  private async request(req: Req): Promise<unknown> {
    const what = describeRequest(req.method, req.url);
    let attemptNo = 0;
    const state = { refreshed: false };
    try {
      return await withRetry(
        async (attempt) => {
          attemptNo = attempt;
          return this.attempt(req, what, state);
        },
        (err) => {
          const decision = classifyFailure(err, Math.max(1000, backoffDelay(attemptNo, this.retry, this.deps.random)));
          // Hold every caller of the shared limiter, not just this one, after a per-second throttle.
          if (decision.retry && err instanceof SourceError && err.status === 429 && decision.delayMs !== undefined) {
            this.limiter.pause(decision.delayMs);
          }
          return decision;
        },
        this.retry,
        this.deps.clock,
        {
          random: this.deps.random,
          onRetry: (i) =>
            this.logger.warn('constant-contact: retrying request', {
              request: what,
              attempt: i.attempt,
              delayMs: i.delayMs,
              reason: i.reason,
            }),
        },
      );
    } catch (err) {
      if (err instanceof SourceError && attemptNo > 1 && classifyFailure(err).retry) {
        throw sourceError(`${err.message} (gave up after ${attemptNo} attempts)`, err.status, err.errorKey);
      }
      throw err;
    }
  }

  /** One attempt: a request, and on 401 (once per logical request) a token refresh and one replay. */
  private async attempt(req: Req, what: string, state: { refreshed: boolean }): Promise<unknown> {
    let res = await this.send(req, what, () => this.tokens.accessToken());
    if (res.status === 401 && !state.refreshed) {
      state.refreshed = true;
      this.logger.info('constant-contact: access token rejected (401); refreshing once');
      const rejected = res.token;
      res = await this.send(req, what, () => this.tokens.refreshAfterUnauthorized(rejected));
    }
    if (res.status >= 200 && res.status < 300) return res.data;
    const failure = this.failure(res.status, res.data, what, state.refreshed);
    if (failure instanceof QuotaExceeded) await this.markSharedSpent();
    throw failure;
  }

  /** The vendor said quota_exceeded: today is spent for every worker of the application (best effort). */
  private async markSharedSpent(): Promise<void> {
    if (!this.shared) return;
    const clock = this.shared.clock ?? this.deps.clock;
    try {
      await this.shared.budget.markSpent(this.shared.app, clock.now());
    } catch (err) {
      this.logger.warn('constant-contact: could not mark the shared budget spent', { error: (err as Error).message });
    }
  }

  /** A call from the application's shared budget, and the wait for its slot (throws QuotaExceeded when spent). */
  private async reserveShared(what: string): Promise<void> {
    if (!this.shared) return;
    const clock = this.shared.clock ?? this.deps.clock;
    let grant;
    try {
      grant = await this.shared.budget.reserve(this.shared.app, clock.now());
    } catch (err) {
      if (err instanceof SharedBudgetExhausted) {
        this.flushUsage();
        const resetAt = nextUtcMidnight(clock.now());
        throw new QuotaExceeded(
          resetAt,
          `The shared daily Constant Contact request budget of application ${err.app} (every account and worker it ` +
            `serves) is spent for ${err.day}; it resets at ${resetAt.toISOString()} (00:00 UTC). Detection stopped before ${what}.`,
        );
      }
      throw err;
    }
    if (grant.waitMs > 0) await clock.sleep(grant.waitMs);
  }

  /**
   * One HTTP request: a slot from the shared limiter first (so a spent budget costs no token refresh),
   * then the token, then the request, counted.
   */
  private async send(
    req: Req,
    what: string,
    token: () => Promise<string>,
  ): Promise<{ status: number; data: unknown; token: string }> {
    await this.reserveShared(what);
    try {
      await this.limiter.acquire();
    } catch (err) {
      if (err instanceof BudgetExhausted) {
        this.flushUsage();
        throw new QuotaExceeded(
          err.resetAt,
          `The daily Constant Contact request budget (${err.budget} requests, shared by every account this application ` +
            `serves) is spent; it resets at ${err.resetAt.toISOString()} (00:00 UTC). Detection stopped before ${what}.`,
        );
      }
      throw err;
    }
    const bearer = await token();
    this.deps.calls.record(CALLS_VENDOR);
    try {
      const res = await this.http.request({
        method: req.method,
        url: req.url,
        params: req.params,
        data: req.body,
        headers: {
          Authorization: `Bearer ${bearer}`,
          Accept: req.accept === 'text' ? 'text/csv, text/plain, */*' : 'application/json',
          ...(req.body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        // a CSV stays text (axios would otherwise try JSON.parse on it); error bodies are parsed below
        ...(req.accept === 'text' ? { responseType: 'text' as const, transformResponse: [(d: unknown) => d] } : {}),
        validateStatus: () => true,
      });
      let data = res.data as unknown;
      if (req.accept === 'text' && (res.status < 200 || res.status >= 300) && typeof data === 'string') {
        try {
          data = JSON.parse(data);
        } catch {
          // not JSON: parseApiError reads text
        }
      }
      return { status: res.status, data, token: bearer };
    } catch (err) {
      throw networkError(`Constant Contact ${what}`, err);
    }
  }

  /** Turn a non-2xx response into the right error. */
  private failure(status: number, body: unknown, what: string, refreshed: boolean): Error {
    const { errorKey, errorMessage } = parseApiError(body);
    const detail = `HTTP ${status}${errorKey ? ` ${errorKey}` : ''}${errorMessage ? `: ${errorMessage}` : ''}`;
    if (status === 429 && errorKey === 'quota_exceeded') {
      const resetAt = nextUtcMidnight(this.deps.clock.now());
      this.markBudgetSpent();
      return new QuotaExceeded(
        resetAt,
        `Constant Contact's daily API quota for this application is spent (${detail}); it resets at ` +
          `${resetAt.toISOString()} (00:00 UTC). Detection stopped before ${what}; the next run after the reset resumes.`,
      );
    }
    if (status === 401 && refreshed) {
      return sourceError(
        `Constant Contact ${what}: ${detail} even with a freshly refreshed access token. The authorisation may lack the ` +
          `contact_data scope or the account may be disabled; try \`cc-optout auth constant-contact\`.`,
        status,
        errorKey ?? 'unauthorized',
      );
    }
    if (status === 403) {
      return sourceError(
        `Constant Contact ${what}: ${detail} (missing scope or user privilege, or the application is deactivated).`,
        status,
        errorKey ?? undefined,
      );
    }
    return sourceError(
      `Constant Contact ${what}: ${detail}`,
      status,
      errorKey ?? (status === 429 ? 'throttled' : undefined),
    );
  }

  /** The vendor says today's quota is gone: stop our own limiter too, and remember it across runs. */
  private markBudgetSpent(): void {
    this.limiter.exhaust();
    const day = this.deps.clock.now().toISOString().slice(0, 10);
    const used = Math.max(this.limiter.usedToday(), this.config.rateLimit.dailyBudget);
    this.writeUsage(day, used);
  }
}
