/**
 * Every HTTP request the HubSpot target makes goes through `HubSpotApi.run`: one per-target rate limiter,
 * one retry policy (the engine's `caps.http.retry`), one call counter, one error type.
 *
 * - `client.apiRequest` carries every request the target makes (`call`): the SDK's generated methods wrap only
 *   the numeric versions, and apiRequest never throws on a status, 429 and 5xx included, so `call` checks
 *   every status itself. (`sdk` remains for SDK methods: they throw on >= 400 but drop `policyName` when they
 *   parse an error body, so a call-time response middleware reads the raw body and throws HubSpotHttpError.)
 * - CRM search has its own limit (5/s per token) and is exempt from the ten-secondly one: it goes through
 *   a separate limiter (`CallRequest.search`).
 * - The SDK's own retry decorator is off (`numberOfApiCallRetries: 0`) and its Bottleneck limiter is not
 *   configured: retries and pacing are ours. (Both are process-wide in the SDK; see README.)
 */
import { createHash } from 'crypto';
import { createRequire } from 'module';
import { Client } from '@hubspot/api-client';
import { Request as SdkRequest } from '@hubspot/api-client/lib/src/services/http/Request';
import type nodeFetch from 'node-fetch';
import {
  Capabilities,
  DEFAULT_RETRY,
  KeyValue,
  Limiter,
  Logger,
  RetryDecision,
  RetryPolicy,
  Secrets,
  TargetHalt,
  isBudgetExhausted,
  isTargetHalt,
  isTransientNetworkError,
  nextUtcMidnight,
  redact,
} from '../../src/sdk';
import { ResolvedHubSpotConfig } from './config';
import { Paths, pathsFor } from './paths';

/** The contact property holding a contact's secondary addresses (";"-separated). */
export const ADDITIONAL_EMAILS = 'hs_additional_emails';

/** A HubSpot response with status >= 400 (after our retries, when it reaches a caller). */
export class HubSpotHttpError extends Error {
  constructor(
    public label: string,
    readonly status: number,
    readonly body: unknown,
    readonly headers: Readonly<Record<string, string>>,
  ) {
    super('');
    this.name = 'HubSpotHttpError';
    this.refreshMessage();
  }

  refreshMessage(): void {
    const detail = this.hubspotMessage();
    const category = this.category();
    this.message = redact(
      `${this.label}: HTTP ${this.status}${category ? ` ${category}` : ''}${detail ? `: ${detail}` : ''}`,
    );
  }

  private obj(): Record<string, unknown> {
    return this.body && typeof this.body === 'object' && !Array.isArray(this.body)
      ? (this.body as Record<string, unknown>)
      : {};
  }

  policyName(): string | undefined {
    const p = this.obj().policyName;
    return typeof p === 'string' ? p : undefined;
  }

  category(): string | undefined {
    const b = this.obj();
    const c = b.category ?? b.errorType ?? b.status;
    return typeof c === 'string' && c !== 'error' ? c : undefined;
  }

  /** HubSpot's human message plus any detail messages, shortened. */
  hubspotMessage(): string {
    const b = this.obj();
    const parts: string[] = [];
    if (typeof b.message === 'string') parts.push(b.message);
    if (Array.isArray(b.errors)) {
      for (const e of b.errors as unknown[]) {
        const m = (e as { message?: unknown } | null)?.message;
        if (typeof m === 'string' && !parts.includes(m)) parts.push(m);
      }
    }
    if (parts.length === 0 && typeof this.body === 'string') parts.push(this.body);
    if (parts.length === 0 && typeof b.error === 'string')
      parts.push(String(b.error) + (typeof b.error_description === 'string' ? `: ${b.error_description}` : ''));
    // Redact before cutting: a secret split by the cut could no longer be recognised.
    const text = redact(parts.join('; '));
    return text.length > 300 ? text.slice(0, 297) + '...' : text;
  }

  /** Every text in the body, for pattern tests (legal basis, "already unsubscribed"). */
  bodyText(): string {
    return typeof this.body === 'string' ? this.body : JSON.stringify(this.body ?? '');
  }
}

/** Internal: retry at once (after a token refresh). Carries the 401 that caused it. */
class RetryNow extends Error {
  constructor(readonly original: HubSpotHttpError) {
    super(original.message);
  }
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
}

export interface CallRequest {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly qs?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  /** Send as application/x-www-form-urlencoded instead of JSON. */
  readonly form?: Readonly<Record<string, string>>;
  /** Send the bearer token (default true). */
  readonly auth?: boolean;
  /** A CRM search request: paced by the search limiter (5/s) instead of the ten-secondly one. */
  readonly search?: boolean;
}

/** An absurd Retry-After (beyond a day) is read as a day: the target halts until then, its rows kept. */
const RETRY_AFTER_CAP_SECONDS = 86_400;

/** Longest wait for a rate limit (Retry-After, or an interval with none remaining); longer: the target halts with retryAt. */
export const MAX_RATE_WAIT_MS = 300_000;

/**
 * The SDK's own node-fetch. `client.apiRequest` passes no fetch options, and node-fetch follows redirects by
 * default (sending the bearer token on to the same host at another port), so `call` sends the SDK's Request
 * through this with `redirect: 'manual'` and refuses every 3xx.
 */
const sdkFetch = createRequire(require.resolve('@hubspot/api-client'))('node-fetch') as typeof nodeFetch;

function parseBody(text: string): unknown {
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    text = redact(text);
    return text.length > 500 ? text.slice(0, 497) + '...' : text;
  }
}

function isFetchSystemError(err: unknown): boolean {
  const e = err as { name?: unknown; type?: unknown } | null;
  return (
    !!e && e.name === 'FetchError' && (e.type === 'system' || e.type === 'request-timeout' || e.type === 'body-timeout')
  );
}

const hash = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 16);

// ---------------------------------------------------------------------------------------------
// Tokens

interface Tokens {
  readonly refreshable: boolean;
  /** A usable access token (refreshed first when it is about to expire). */
  current(): Promise<string>;
  /** Force a refresh (after a 401). */
  refresh(): Promise<string>;
}

/** A static bearer token: a private-app token or a Service Key. */
class PrivateAppTokens implements Tokens {
  readonly refreshable = false;
  constructor(private readonly token: string) {}
  current(): Promise<string> {
    return Promise.resolve(this.token);
  }
  refresh(): Promise<string> {
    return Promise.resolve(this.token);
  }
}

export const OAUTH_KV_KEY = 'hubspot.oauth';

interface StoredTokens {
  accessToken: string | null;
  /** epoch ms */
  expiresAt: number;
  refreshToken: string;
  /** Fingerprint of the config's clientId + refreshToken this chain started from. */
  seed: string;
}

/**
 * OAuth refresh-token grant (`POST /oauth/{version}/token`, `/oauth/v1/token` for legacy), with the tokens kept in the target's kv store.
 * A rotated refresh token is written to the store before the new access token is used; refreshes are
 * single-flight. When the config's refresh token changes (re-authorised), the chain restarts from it.
 */
class OAuthTokens implements Tokens {
  readonly refreshable = true;
  private state: StoredTokens;
  private readonly refresher: { run(): Promise<string> };

  constructor(
    private readonly auth: { clientId: string; clientSecret: string; refreshToken: string },
    private readonly kv: KeyValue,
    private readonly now: () => number,
    private readonly post: (form: Record<string, string>) => Promise<RawResponse>,
    private readonly logger: Logger,
    private readonly secrets: Secrets,
    singleFlight: Capabilities['http']['singleFlight'],
  ) {
    this.refresher = singleFlight(() => this.doRefresh());
    this.secrets.register(auth.clientSecret);
    this.secrets.register(auth.refreshToken);
    const seed = hash(`${auth.clientId}\n${auth.refreshToken}`);
    let stored: StoredTokens | null = null;
    try {
      const raw = kv.get(OAUTH_KV_KEY);
      stored = raw ? (JSON.parse(raw) as StoredTokens) : null;
    } catch {
      stored = null;
    }
    if (stored && stored.seed === seed && typeof stored.refreshToken === 'string') {
      this.state = stored;
      this.secrets.register(stored.refreshToken);
      this.secrets.register(stored.accessToken);
    } else {
      this.state = { accessToken: null, expiresAt: 0, refreshToken: auth.refreshToken, seed };
    }
  }

  current(): Promise<string> {
    const s = this.state;
    if (s.accessToken && this.now() < s.expiresAt) return Promise.resolve(s.accessToken);
    return this.refresh();
  }

  refresh(): Promise<string> {
    return this.refresher.run();
  }

  private async doRefresh(): Promise<string> {
    let res: RawResponse;
    try {
      res = await this.post({
        grant_type: 'refresh_token',
        client_id: this.auth.clientId,
        client_secret: this.auth.clientSecret,
        refresh_token: this.state.refreshToken,
      });
    } catch (e) {
      if (isTargetHalt(e)) throw e;
      if (e instanceof HubSpotHttpError && e.status >= 400 && e.status < 500) {
        throw new TargetHalt({
          kind: 'auth',
          message: redact(
            `HubSpot refused the OAuth refresh token (HTTP ${e.status}${e.hubspotMessage() ? `: ${e.hubspotMessage()}` : ''}); ` +
              're-authorise the app and put the new refresh token in auth.refreshToken',
          ),
        });
      }
      throw new TargetHalt({
        kind: 'unavailable',
        message: redact(`could not refresh the HubSpot OAuth token: ${(e as Error).message}`),
      });
    }
    const b = (res.body ?? {}) as { access_token?: unknown; refresh_token?: unknown; expires_in?: unknown };
    if (typeof b.access_token !== 'string' || b.access_token === '') {
      throw new TargetHalt({ kind: 'auth', message: 'HubSpot token endpoint answered without an access_token' });
    }
    const accessToken = b.access_token;
    const refreshToken =
      typeof b.refresh_token === 'string' && b.refresh_token !== '' ? b.refresh_token : this.state.refreshToken;
    this.secrets.register(accessToken);
    this.secrets.register(refreshToken);
    const lifetimeMs = (typeof b.expires_in === 'number' && b.expires_in > 0 ? b.expires_in : 1800) * 1000;
    // Refresh before expiry: 5 minutes early, or half the lifetime for short-lived tokens.
    const margin = Math.min(5 * 60_000, lifetimeMs / 2);
    const next: StoredTokens = {
      accessToken,
      expiresAt: this.now() + lifetimeMs - margin,
      refreshToken,
      seed: this.state.seed,
    };
    // Persist (durably) before use: a rotated refresh token must never be lost.
    // a credential: written even under a stale fleet lease (the rotation killed the old token)
    if (this.kv.setCredential) this.kv.setCredential(OAUTH_KV_KEY, JSON.stringify(next));
    else this.kv.set(OAUTH_KV_KEY, JSON.stringify(next));
    // a server-backed store queues set(): durable before the new token is used
    await this.kv.flush?.();
    this.state = next;
    this.logger.debug('hubspot oauth token refreshed', {
      rotated: refreshToken !== this.auth.refreshToken,
      expiresInSeconds: lifetimeMs / 1000,
    });
    return accessToken;
  }
}

// ---------------------------------------------------------------------------------------------
// The API

/** Call-time options for SDK methods (`PromiseConfigurationOptions`, structurally). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type SdkCallOptions = any;

export interface RateObservation {
  max?: number;
  remaining?: number;
  intervalMs?: number;
  dailyRemaining?: number;
}

export class HubSpotApi {
  readonly client: Client;
  readonly tokens: Tokens;
  private readonly limiter: Limiter;
  private readonly searchLimiter: Limiter;
  /** Every path, for the configured API version. */
  readonly paths: Paths;
  private readonly logger: Logger;
  private token = '';
  private readonly sdkOptions: SdkCallOptions;
  lastRate: RateObservation = {};
  /** Epoch ms until which HubSpot asked for a wait longer than MAX_RATE_WAIT_MS: requests halt instead of sleeping. */
  private holdUntil = 0;
  private holdWhy = '';

  constructor(
    readonly cfg: ResolvedHubSpotConfig,
    private readonly caps: Capabilities,
    private readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {
    this.logger = caps.logger.child({ target: caps.targetName, connector: 'hubspot' });
    this.limiter = caps.http.limiter({ perWindow: cfg.per10Seconds, windowMs: 10_000 });
    this.searchLimiter = caps.http.limiter({ perWindow: cfg.searchPerSecond, windowMs: 1_000 });
    this.paths = pathsFor(cfg.apiVersion);
    this.client = new Client({ basePath: cfg.baseUrl, numberOfApiCallRetries: 0 });
    // SDK 13.5 applies only call-time middleware to generated API methods (`config.middleware` is ignored
    // there), so every SDK call gets these options: bearer token in, raw error bodies out.
    this.sdkOptions = {
      middlewareMergeStrategy: 'replace',
      middleware: [
        {
          pre: (ctx: unknown) => {
            (ctx as { setHeaderParam(k: string, v: string): void }).setHeaderParam(
              'Authorization',
              `Bearer ${this.token}`,
            );
            return Promise.resolve(ctx);
          },
          post: async (ctx: unknown) => {
            const r = ctx as {
              httpStatusCode: number;
              headers: Record<string, string>;
              body: { text(): Promise<string> };
            };
            this.observe(r.headers);
            if (r.httpStatusCode >= 400) {
              const text = await r.body.text();
              throw new HubSpotHttpError('', r.httpStatusCode, parseBody(text), r.headers);
            }
            return ctx;
          },
        },
      ],
    };
    // Bind the SDK API objects now, while the (process-wide) decorator list is ours: no retry, no limiter.
    void this.client.crm.contacts.batchApi;
    if (cfg.auth.type === 'private-app') {
      caps.secrets.register(cfg.auth.accessToken);
      this.tokens = new PrivateAppTokens(cfg.auth.accessToken);
    } else if (cfg.auth.type === 'service-key') {
      caps.secrets.register(cfg.auth.serviceKey);
      this.tokens = new PrivateAppTokens(cfg.auth.serviceKey);
    } else {
      const tokenPath = this.paths.oauthToken;
      this.tokens = new OAuthTokens(
        cfg.auth,
        caps.kv,
        () => caps.clock.now().getTime(),
        (form) => this.call(`POST ${tokenPath}`, { method: 'POST', path: tokenPath, form, auth: false }),
        this.logger,
        caps.secrets,
        caps.http.singleFlight,
      );
    }
  }

  /** A request through `client.apiRequest`. Throws HubSpotHttpError on >= 400 (every status is checked here). */
  call(label: string, req: CallRequest): Promise<RawResponse> {
    const auth = req.auth !== false;
    return this.run(label, auth, req.search === true, async () => {
      const headers: Record<string, string> = {};
      if (auth) headers.Authorization = `Bearer ${this.token}`;
      let body: unknown = req.body;
      let defaultJson = true;
      if (req.form) {
        body = new URLSearchParams(req.form as Record<string, string>).toString();
        headers['Content-Type'] = 'application/x-www-form-urlencoded';
        defaultJson = false;
      }
      const request = new SdkRequest(this.client.config, {
        method: req.method,
        path: req.path,
        qs: req.qs as Record<string, string> | undefined,
        body,
        headers,
        defaultJson,
      });
      const res = await sdkFetch(request.getUrl().toString(), { ...request.getSendData(), redirect: 'manual' });
      if (res.status >= 300 && res.status < 400) {
        // Never followed: a redirect would carry the bearer token elsewhere.
        const location = res.headers.get('location');
        let where = '';
        try {
          where = location ? ` to ${new URL(location, request.getUrl()).origin}` : '';
        } catch {
          where = ' (unreadable Location)';
        }
        throw new TargetHalt({
          kind: 'config',
          message: redact(
            `HubSpot answered ${label} with HTTP ${res.status} (redirect${where}); redirects are never followed: check baseUrl`,
          ),
        });
      }
      const h: Record<string, string> = {};
      res.headers.forEach((v, k) => {
        h[k.toLowerCase()] = v;
      });
      this.observe(h, req.search === true);
      const parsed = parseBody(await res.text());
      if (res.status >= 400) throw new HubSpotHttpError(label, res.status, parsed, h);
      return { status: res.status, headers: h, body: parsed };
    });
  }

  /** An SDK method call. Its >= 400 responses arrive as HubSpotHttpError (see the middleware). */
  sdk<T>(label: string, fn: (client: Client, options: SdkCallOptions) => Promise<T>): Promise<T> {
    return this.run(label, true, false, async () => {
      try {
        return await fn(this.client, this.sdkOptions);
      } catch (e) {
        if (e instanceof HubSpotHttpError && e.label === '') {
          e.label = label;
          e.refreshMessage();
        }
        throw e;
      }
    });
  }

  /** The current access token (refreshing first if needed); for endpoints that take the token itself. */
  accessToken(): Promise<string> {
    return this.tokens.current();
  }

  private async run<T>(label: string, auth: boolean, search: boolean, fn: () => Promise<T>): Promise<T> {
    let refreshed = false;
    const limiter = search ? this.searchLimiter : this.limiter;
    try {
      return await this.caps.http.retry(
        async (attempt) => {
          if (this.holdUntil > this.caps.clock.now().getTime()) throw this.holdHalt();
          if (auth) this.token = await this.tokens.current();
          let slot: { done(): void };
          try {
            // the slot is held until the answer is in: the rolling window stays saturated, never above the limit
            if (limiter.acquireHeld) slot = await limiter.acquireHeld();
            else {
              await limiter.acquire();
              slot = { done: () => undefined };
            }
          } catch (e) {
            if (isBudgetExhausted(e)) throw this.dailyHalt();
            throw e;
          }
          this.caps.calls.record('hubspot');
          this.logger.debug('hubspot request', { request: label, attempt });
          try {
            return await fn();
          } catch (e) {
            if (e instanceof HubSpotHttpError) {
              if (e.status === 429) this.on429(e, limiter);
              if (e.status === 401 && auth && this.tokens.refreshable && !refreshed) {
                slot.done();
                refreshed = true;
                this.token = await this.tokens.refresh();
                throw new RetryNow(e);
              }
            }
            throw e;
          } finally {
            slot.done();
          }
        },
        (err) => this.classify(err),
        this.retry,
        this.caps.clock,
        {
          onRetry: ({ attempt, delayMs, reason }) =>
            this.logger.warn('hubspot request retried', { request: label, attempt, delayMs, reason }),
          // a stopped run (or a lost fleet lease) sends no retry
          signal: this.caps.signal,
        },
      );
    } catch (e) {
      const err = e instanceof RetryNow ? e.original : e;
      if (err instanceof HubSpotHttpError && err.status === 401 && auth) {
        const type = this.cfg.auth.type;
        const what =
          type === 'oauth'
            ? 'OAuth access token (after a refresh)'
            : type === 'service-key'
              ? 'Service Key'
              : 'private app access token';
        const field =
          type === 'oauth'
            ? 'refreshToken / clientId / clientSecret'
            : type === 'service-key'
              ? 'serviceKey'
              : 'accessToken';
        throw new TargetHalt({
          kind: 'auth',
          message: redact(`HubSpot rejected the ${what} (401 on ${label}); check auth.${field}`),
        });
      }
      throw err;
    }
  }

  private classify(err: unknown): RetryDecision {
    if (isTargetHalt(err)) return { retry: false };
    if (err instanceof RetryNow) return { retry: true, delayMs: 0, reason: 'OAuth access token refreshed after 401' };
    if (err instanceof HubSpotHttpError) {
      // The limiter was paused in on429; the next acquire waits for it.
      if (err.status === 429) return { retry: true, delayMs: 0, reason: `429 ${err.policyName() ?? 'rate limit'}` };
      if (err.status >= 500) return { retry: true, reason: `HTTP ${err.status}` };
      return { retry: false };
    }
    if (isTransientNetworkError(err) || isFetchSystemError(err)) {
      return { retry: true, reason: redact(`network: ${(err as Error).message}`) };
    }
    return { retry: false };
  }

  private on429(e: HubSpotHttpError, limiter: Limiter): void {
    const policy = e.policyName();
    if (policy === 'DAILY') {
      this.limiter.exhaust();
      this.searchLimiter.exhaust();
      throw this.dailyHalt();
    }
    const retryAfter = Number(e.headers['retry-after']);
    const interval = Number(e.headers['x-hubspot-ratelimit-interval-milliseconds']);
    const ms =
      Number.isFinite(retryAfter) && retryAfter > 0
        ? Math.min(retryAfter, RETRY_AFTER_CAP_SECONDS) * 1000
        : Number.isFinite(interval) && interval > 0
          ? interval
          : policy === 'SECONDLY'
            ? 1_000
            : 10_000;
    if (ms > MAX_RATE_WAIT_MS) {
      this.hold(ms, `HubSpot asked to wait ${Math.round(ms / 1000)} s (429 ${policy ?? 'rate limit'})`);
      throw this.holdHalt();
    }
    this.logger.warn('hubspot rate limited; waiting', { policy: policy ?? 'unknown', waitMs: ms });
    limiter.pause(ms);
  }

  /** Pause `limiter` for `ms`, or, past MAX_RATE_WAIT_MS, hold the target (the next request halts with retryAt). */
  private pauseOrHold(limiter: Limiter, ms: number, why: string): void {
    if (ms > MAX_RATE_WAIT_MS) this.hold(ms, why);
    else limiter.pause(ms);
  }

  private hold(ms: number, why: string): void {
    const until = this.caps.clock.now().getTime() + ms;
    if (until > this.holdUntil) {
      this.holdUntil = until;
      this.holdWhy = why;
    }
    this.logger.warn('hubspot rate limit wait too long; deferring the target', {
      waitMs: ms,
      maxWaitMs: MAX_RATE_WAIT_MS,
    });
  }

  private holdHalt(): TargetHalt {
    const retryAt = new Date(this.holdUntil).toISOString();
    return new TargetHalt({
      kind: 'rate-limit',
      retryAt,
      message: `${this.holdWhy}, more than the ${MAX_RATE_WAIT_MS / 1000} s this connector waits; deliveries to this target are deferred until ${retryAt}`,
    });
  }

  private dailyHalt(): TargetHalt {
    const retryAt = nextUtcMidnight(this.caps.clock.now()).toISOString();
    return new TargetHalt({
      kind: 'quota',
      retryAt,
      message: `HubSpot daily API limit reached (429 DAILY); deliveries to this target stop until the limit resets (retry after ${retryAt})`,
    });
  }

  /** Read X-HubSpot-RateLimit-* headers; when the window is spent, hold requests for its interval. */
  private observe(headers: Readonly<Record<string, string>>, search = false): void {
    const num = (k: string): number | undefined => {
      const v = headers[k];
      const n = v === undefined ? NaN : Number(v);
      return Number.isFinite(n) ? n : undefined;
    };
    const obs: RateObservation = {
      max: num('x-hubspot-ratelimit-max'),
      remaining: num('x-hubspot-ratelimit-remaining'),
      intervalMs: num('x-hubspot-ratelimit-interval-milliseconds'),
      dailyRemaining: num('x-hubspot-ratelimit-daily-remaining'),
    };
    if (obs.max === undefined && obs.remaining === undefined && obs.dailyRemaining === undefined) return;
    this.lastRate = obs;
    if (obs.remaining !== undefined && obs.remaining <= 0) {
      const why = `HubSpot's rate-limit window is spent (X-HubSpot-RateLimit-Remaining: 0, interval ${obs.intervalMs} ms)`;
      const limiter = search ? this.searchLimiter : this.limiter;
      // HubSpot's window is full. When ours is too, HubSpot counts what we count and the next slot opens as
      // our oldest one expires. When ours holds fewer (another client of the same app, a lower limit than
      // configured), the difference is taken as used now: those slots reopen a window later, the others on
      // time. (Pausing a whole interval here idled the limiter for 10 s: 15 % slower at 100k per-address.)
      const interval = obs.intervalMs ?? limiter.windowMs ?? (search ? 1_000 : 10_000);
      const missing =
        limiter.perWindow !== undefined && limiter.inWindow ? limiter.perWindow - limiter.inWindow() : Infinity;
      if (interval !== limiter.windowMs || !limiter.occupy || !Number.isFinite(missing)) {
        // not the window we keep (a changed policy): wait out the interval HubSpot names
        this.pauseOrHold(limiter, interval, why);
      } else if (missing > 0) {
        this.logger.debug('hubspot rate-limit window spent before ours', { why, search, missing });
        limiter.occupy(missing);
      }
    }
    if (obs.dailyRemaining !== undefined && obs.dailyRemaining <= 0) {
      this.logger.warn('hubspot daily API allowance is spent (X-HubSpot-RateLimit-Daily-Remaining: 0)');
    }
  }
}

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (typeof v === 'number') return [String(v)];
  if (Array.isArray(v)) return v.flatMap(strings);
  return [];
}

/** The scopes a 403 names as missing (`context.missingScopes`, top level or per error), or null. */
export function missingScopesOf(e: HubSpotHttpError): string | null {
  const b = (e.body && typeof e.body === 'object' ? e.body : {}) as { context?: unknown; errors?: unknown };
  const out = new Set<string>();
  const take = (ctx: unknown): void => {
    const m = (ctx as { missingScopes?: unknown } | null)?.missingScopes;
    for (const s of strings(m)) if (s.trim() !== '') out.add(s.trim());
  };
  take(b.context);
  if (Array.isArray(b.errors))
    for (const d of b.errors as unknown[]) take((d as { context?: unknown } | null)?.context);
  return out.size > 0 ? [...out].join(', ') : null;
}
