/**
 * One jsforce Connection per target, wrapped so that every HTTP request
 *  - goes through the engine's rate limiter and retry (caps.http), with the injected clock;
 *  - is counted (`caps.calls.record('salesforce')`) and its `Sforce-Limit-Info` read;
 *  - fails as a value the connector can act on: `Transient` (retried here), `TargetHalt` (stop this target:
 *    auth, quota, outage, config) or `SfApiError` (this call failed; the caller decides).
 *
 * jsforce behaviours handled here (see ../../../shared/API-NOTES.md, jsforce traps):
 *  - jsforce's own fetch-level retry (GET/PUT only, real timers, uncounted) is switched off per request;
 *    retries happen in `withRetry` with the injected clock instead.
 *  - jsforce refreshes the session on every 401 and re-sends, forever, when the new token is also refused.
 *    Our refresh function allows one refresh until some request succeeds again, then refuses: the call
 *    fails with kind 'auth' after exactly one retry.
 */
import { Connection, HttpRequest, QueryResult, Record as SfRecord } from 'jsforce';
import Transport from 'jsforce/lib/transport';
import type { HttpRequestOptions, HttpResponse } from 'jsforce/lib/types';
import type { StreamPromise } from 'jsforce/lib/util/promise';
import {
  Capabilities,
  HaltInfo,
  Limiter,
  RetryPolicy,
  TargetHalt,
  isTargetHalt,
  isTransientNetworkError,
  redact,
} from '../../src/sdk';
import { Authenticator, AuthConfigError } from './auth';
import { ResolvedConfig } from './config';

export const VENDOR = 'salesforce';
export const KV_API_USAGE = 'api_usage';
/** Transport-level retries (429, 5xx, connection resets): attempts including the first. */
export const DEFAULT_API_RETRY: RetryPolicy = { maxAttempts: 4, baseDelayMs: 1_000, maxDelayMs: 30_000 };
/** Salesforce has no per-second REST limit; stay polite anyway (and well under concurrent-request limits). */
export const REQUESTS_PER_SECOND = 20;
/** Refreshes allowed while no request has succeeded since the last refresh. */
const MAX_REFRESHES_WITHOUT_SUCCESS = 1;

/** The last `Sforce-Limit-Info: api-usage=N/M` seen, as stored under kv `api_usage`. */
export interface ApiUsage {
  readonly used: number;
  readonly max: number;
  readonly at: string;
}

/** This one call failed for a reason specific to it (400 INVALID_FIELD, 404 NOT_FOUND, ...). */
export class SfApiError extends Error {
  constructor(
    readonly status: number | undefined,
    readonly errorCode: string,
    message: string,
  ) {
    super(message);
    this.name = 'SfApiError';
  }
}

/** Worth retrying (429, 5xx, connection reset). */
class Transient extends Error {
  constructor(
    message: string,
    readonly delayMs?: number,
  ) {
    super(message);
    this.name = 'Transient';
  }
}

function clip(s: string, n = 400): string {
  return s.length > n ? s.slice(0, n - 3) + '...' : s;
}

/** A message safe for logs and outcomes: secrets masked, long bodies cut. */
export function safeMessage(s: string): string {
  return clip(redact(s.replace(/\s+/g, ' ').trim()));
}

interface TransportHooks {
  onRequest(req: HttpRequest): void;
  onResponse(req: HttpRequest, res: HttpResponse): void;
}

/** jsforce's node-fetch transport, counted and observed, with jsforce's internal retry turned off. */
class ObservedTransport extends Transport {
  constructor(private readonly hooks: TransportHooks) {
    super();
  }

  override httpRequest(req: HttpRequest, options: HttpRequestOptions = {}): StreamPromise<HttpResponse> {
    this.hooks.onRequest(req);
    const p = super.httpRequest(req, { ...options, retry: { ...(options.retry ?? {}), methods: [] } });
    p.then(
      (res) => this.hooks.onResponse(req, res),
      () => undefined,
    );
    return p;
  }
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url.split('?')[0] ?? url;
  }
}

export interface ClientOptions {
  retry?: RetryPolicy;
}

export class SalesforceClient {
  readonly auth: Authenticator;
  private readonly transport: ObservedTransport;
  private readonly limiter: Limiter;
  private readonly retry: RetryPolicy;
  private conn: Connection | null = null;
  private lastStatus: number | undefined;
  private lastRetryAfter: string | undefined;
  private refreshesSinceSuccess = 0;
  private refreshFailure: HaltInfo | null = null;
  private usage: ApiUsage | null = null;
  private usageDirty = false;

  constructor(
    readonly cfg: ResolvedConfig,
    private readonly caps: Capabilities,
    opts: ClientOptions = {},
  ) {
    this.retry = opts.retry ?? DEFAULT_API_RETRY;
    this.limiter = caps.http.limiter({ perWindow: REQUESTS_PER_SECOND, windowMs: 1_000 });
    this.transport = new ObservedTransport({
      onRequest: (req) => {
        this.lastStatus = undefined;
        this.lastRetryAfter = undefined;
        this.caps.calls.record(VENDOR);
        this.caps.logger.debug('salesforce request', {
          target: caps.targetName,
          method: req.method,
          path: pathOf(req.url),
        });
      },
      onResponse: (req, res) => this.observe(req, res),
    });
    this.auth = new Authenticator(cfg, caps, this.transport);
  }

  /** The last API usage seen in this process (null before the first response carrying it). */
  apiUsage(): ApiUsage | null {
    return this.usage;
  }

  /** Persist (kv `api_usage`) and log the last API usage, if it changed. */
  flushUsage(): void {
    if (!this.usage || !this.usageDirty) return;
    this.usageDirty = false;
    this.caps.kv.set(KV_API_USAGE, JSON.stringify(this.usage));
    this.caps.logger.info('salesforce api usage', {
      target: this.caps.targetName,
      used: this.usage.used,
      max: this.usage.max,
    });
  }

  private observe(req: HttpRequest, res: HttpResponse): void {
    this.lastStatus = res.statusCode;
    this.lastRetryAfter = res.headers?.['retry-after'];
    const info = res.headers?.['sforce-limit-info'];
    const m = info ? /api-usage=(\d+)\/(\d+)/.exec(info) : null;
    if (m) {
      this.usage = { used: Number(m[1]), max: Number(m[2]), at: this.caps.clock.now().toISOString() };
      this.usageDirty = true;
    }
    const isToken = /\/services\/oauth2\/token$/.test(pathOf(req.url));
    if (!isToken && res.statusCode !== 401) this.refreshesSinceSuccess = 0;
  }

  /** The connection, with a token (obtained on first use). */
  async connection(): Promise<Connection> {
    if (this.conn) return this.conn;
    const session = await this.call('token', () => this.auth.obtain());
    const conn = new Connection({
      loginUrl: this.cfg.loginUrl,
      instanceUrl: session.instanceUrl,
      accessToken: session.accessToken,
      version: this.cfg.apiVersion,
      ...(this.auth.canRefresh
        ? {
            refreshFn: (c: Connection, cb: (err: Error | null | undefined, token?: string) => void) =>
              this.refresh(c, cb),
          }
        : {}),
    });
    conn._transport = this.transport;
    this.conn = conn;
    return conn;
  }

  /** jsforce SessionRefreshFunc: one refresh, then refuse until a request succeeds again. */
  private refresh(conn: Connection, cb: (err: Error | null | undefined, token?: string) => void): void {
    if (this.refreshesSinceSuccess >= MAX_REFRESHES_WITHOUT_SUCCESS) {
      this.refreshFailure = {
        kind: 'auth',
        message:
          'Salesforce refused a freshly refreshed access token (401 again after a successful refresh); ' +
          'check the connected app policies, the integration user, IP restrictions and the API version',
      };
      cb(new Error(this.refreshFailure.message));
      return;
    }
    this.refreshesSinceSuccess += 1;
    this.caps.logger.info('salesforce session expired: refreshing the access token', { target: this.caps.targetName });
    this.auth.obtain().then(
      (s) => {
        conn.instanceUrl = s.instanceUrl;
        cb(null, s.accessToken);
      },
      (err: unknown) => {
        const e = this.classify(err, 'token refresh');
        this.refreshFailure = isTargetHalt(e)
          ? e
          : { kind: e instanceof Transient ? 'unavailable' : 'auth', message: e.message };
        cb(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  /**
   * Run one API operation (one HTTP request, or jsforce's request + one refresh + re-send) under the limiter
   * and retry policy. Throws TargetHalt or SfApiError.
   */
  async call<T>(label: string, fn: () => Promise<T>, policy: RetryPolicy = this.retry): Promise<T> {
    try {
      return await this.caps.http.retry(
        async () => {
          await this.limiter.acquire();
          this.refreshFailure = null;
          try {
            return await fn();
          } catch (err) {
            throw this.classify(err, label);
          }
        },
        (err) =>
          err instanceof Transient ? { retry: true, delayMs: err.delayMs, reason: err.message } : { retry: false },
        policy,
        this.caps.clock,
        {
          onRetry: ({ attempt, delayMs, reason }) =>
            this.caps.logger.warn('salesforce request failed; retrying', {
              target: this.caps.targetName,
              call: label,
              attempt,
              delayMs,
              reason,
            }),
        },
      );
    } catch (err) {
      if (err instanceof Transient) {
        throw new TargetHalt({
          kind: 'unavailable',
          message: `Salesforce ${label} kept failing after ${policy.maxAttempts} attempts: ${err.message}`,
        });
      }
      throw err;
    }
  }

  /** Map a jsforce / fetch / OAuth error to Transient, TargetHalt or SfApiError. */
  private classify(err: unknown, label: string): Error {
    if (isTargetHalt(err) || err instanceof SfApiError || err instanceof Transient) return err as Error;
    if (err instanceof AuthConfigError) return new TargetHalt({ kind: 'config', message: safeMessage(err.message) });
    if (this.refreshFailure) return new TargetHalt(this.refreshFailure);
    const e = (err ?? {}) as { errorCode?: unknown; name?: unknown; message?: unknown; code?: unknown; type?: unknown };
    const status = this.lastStatus;
    const errorCode = typeof e.errorCode === 'string' ? e.errorCode : typeof e.name === 'string' ? e.name : 'ERROR';
    const message = safeMessage(typeof e.message === 'string' ? e.message : String(err));
    const what = `${label}: ${status !== undefined ? `HTTP ${status} ` : ''}${errorCode}: ${message}`;

    if (errorCode === 'REQUEST_LIMIT_EXCEEDED') {
      const u = this.usage;
      return new TargetHalt({
        kind: 'quota',
        message: `Salesforce API request limit exceeded (${what})${u ? `; last api-usage ${u.used}/${u.max}` : ''}`,
      });
    }
    if (status === undefined) {
      // No response: network failure (FetchError) or a client-side error.
      if (isTransientNetworkError(err) || e.type === 'request-timeout') return new Transient(what);
      if (e.name === 'FetchError')
        return new TargetHalt({ kind: 'unavailable', message: `cannot reach Salesforce (${what})` });
      return new TargetHalt({ kind: 'fatal', message: `Salesforce ${what}` });
    }
    if (status === 401) {
      return new TargetHalt({ kind: 'auth', message: `Salesforce refused the credentials (${what})` });
    }
    if (label === 'token' || label === 'token refresh') {
      if (status === 429 || status >= 500) return new Transient(what, this.retryAfterMs());
      return new TargetHalt({ kind: 'auth', message: `Salesforce token request failed (${what})` });
    }
    if (status === 429 || status === 420 || status >= 500) return new Transient(what, this.retryAfterMs());
    return new SfApiError(status, errorCode, message);
  }

  private retryAfterMs(): number | undefined {
    const s = Number(this.lastRetryAfter);
    return this.lastRetryAfter !== undefined && Number.isFinite(s) && s >= 0 ? Math.min(s, 300) * 1000 : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Operations

  /** A SOQL query, following `nextRecordsUrl` page by page (each page retried on its own). */
  async queryAll<T extends SfRecord>(soql: string): Promise<T[]> {
    const conn = await this.connection();
    const first: QueryResult<T> = await this.call('query', async () => await conn.query<T>(soql, { autoFetch: false }));
    const records: T[] = [...first.records];
    let next = first.done === false ? first.nextRecordsUrl : undefined;
    while (next) {
      const locator = next;
      const page: QueryResult<T> = await this.call('queryMore', async () => await conn.queryMore<T>(locator));
      records.push(...page.records);
      next = page.done === false ? page.nextRecordsUrl : undefined;
    }
    return records;
  }

  /** Any REST request through jsforce (`url` relative to /services/data/vXX.X, or absolute). */
  async request<T>(
    label: string,
    req: { method: HttpRequest['method']; url: string; body?: string; headers?: Record<string, string> },
    options?: { responseType?: string },
  ): Promise<T> {
    const conn = await this.connection();
    return this.call(
      label,
      async () =>
        (await conn.request<T>(
          {
            method: req.method,
            url: req.url,
            ...(req.body !== undefined ? { body: req.body } : {}),
            headers: { ...(req.headers ?? {}) },
          },
          options ?? {},
        )) as T,
    );
  }
}
