/**
 * Constant Contact OAuth tokens: the token endpoint and the TokenManager that keeps a valid access token.
 *
 * Rules this file exists to keep (API-NOTES, "Constant Contact"):
 * - Tokens live in the durable key/value store (`refresh_token`, `access_token`, `access_expires_at`).
 *   The config's `refreshToken` seeds the store only while the store holds none: after a rotation the
 *   store's value is the only valid one, and the config's is dead.
 * - A rotated refresh token is written durably BEFORE the new access token is returned to anyone, and the
 *   refresh token is always read from the store at refresh time, so an old one is never sent again.
 * - Only one refresh is ever in flight: concurrent callers share its promise (two racing refreshes with
 *   a rotating token brick the connection with `invalid_grant`).
 * - `invalid_grant` means a person must re-authorise: ReauthorizationRequired, naming the command.
 * - The token endpoint allows about 1 request/s: it has its own small RateLimiter, and transient
 *   failures go through the shared retry policy.
 * Every token is registered with `registerSecret` as soon as it is known, so no log line or error shows it.
 */
import axios, { AxiosInstance } from 'axios';
import { ResolvedSource } from '../../config';
import { Clock } from '../../http/clock';
import { RateLimiter } from '../../http/limiter';
import { backoffDelay, RetryPolicy, withRetry } from '../../http/retry';
import { singleFlight } from '../../http/single-flight';
import { Logger, redact, registerSecret } from '../../log';
import { formatErrors } from '../../codec';
import { isLeft } from 'fp-ts/Either';
import { CallCounter, KeyValue } from '../../plugin';
import { ReauthorizationRequired, SourceError } from '../types';
import { OAuthError, TokenResponse } from './codecs';
import { classifyFailure, networkError, sourceError } from './errors';

/** Key/value store keys. */
export const KV_REFRESH_TOKEN = 'refresh_token';
export const KV_ACCESS_TOKEN = 'access_token';
/** ISO-8601 instant the access token expires. */
export const KV_ACCESS_EXPIRES_AT = 'access_expires_at';

/** Vendor name the OAuth server's requests are counted under (they do not spend the API's daily quota). */
export const AUTH_CALLS_VENDOR = 'constant-contact-auth';

/** Refresh when the access token expires within this margin. */
export const EXPIRY_MARGIN_MS = 60_000;
/** Assumed lifetime when the token response has no `expires_in` (CC documents 24 h; be conservative). */
const DEFAULT_EXPIRES_IN_S = 3600;

/**
 * Longest access-token lifetime believed (CC documents 24 h). A larger `expires_in` (`1e300`) is clamped to
 * it: the cost of believing too little is one early refresh; believing too much is an access token kept
 * long after it died (every request a 401) or an expiry date that cannot be written (`Invalid time value`).
 */
export const MAX_EXPIRES_IN_S = 86_400;

/** The lifetime to store for a token response's `expires_in` (seconds): defaulted, clamped to (0, MAX]. */
export function boundedExpiresIn(expiresIn: number | null | undefined, logger?: Logger): number {
  if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0) return DEFAULT_EXPIRES_IN_S;
  if (expiresIn > MAX_EXPIRES_IN_S) {
    logger?.warn(
      `constant-contact: the token response's expires_in (${expiresIn} s) is longer than ${MAX_EXPIRES_IN_S} s; using ${MAX_EXPIRES_IN_S} s`,
    );
    return MAX_EXPIRES_IN_S;
  }
  return expiresIn;
}

export const REAUTH_COMMAND = 'cc-optout auth constant-contact';

/** The command that re-authorises `account` (the config file's own account when absent or `default`). */
export function reauthCommand(account?: string): string {
  return account && account !== 'default' ? `cc-optout --account ${account} auth constant-contact` : REAUTH_COMMAND;
}

/** The effects the OAuth code needs (a subset of SourceDeps, so the CLI's `auth` command can pass its own). */
export interface AuthDeps {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly kv: KeyValue;
  readonly calls?: CallCounter;
  readonly random?: () => number;
}

export interface TokenEndpointOptions {
  /** axios instance to use (tests may inject one); defaults to a fresh instance on the Node http adapter. */
  readonly http?: AxiosInstance;
  readonly retry?: RetryPolicy;
  /**
   * Many workers under one application (src/fleet): the token endpoint's SHARED 1/s slot, taken before
   * every request (retries included) and slept on (`waitMs`, on the deps' clock) before the local limiter.
   */
  readonly tokenSlot?: () => Promise<{ readonly waitMs: number }>;
}

/** What the OAuth server answered: a JSON body on 2xx, or an RFC 6749 error (`invalid_grant`, ...). */
export type TokenEndpointResult =
  | { readonly ok: true; readonly status: number; readonly data: unknown }
  | { readonly ok: false; readonly status: number; readonly error: string; readonly description: string | null };

/** `Authorization: Basic base64(client_id:client_secret)`, or `client_id` in the body for a public (PKCE) client. */
export function clientAuthentication(config: Pick<ResolvedSource, 'clientId' | 'clientSecret'>): {
  headers: Record<string, string>;
  body: Record<string, string>;
} {
  if (config.clientSecret) {
    const basic = Buffer.from(`${config.clientId}:${config.clientSecret}`, 'utf8').toString('base64');
    registerSecret(basic);
    return { headers: { Authorization: `Basic ${basic}` }, body: {} };
  }
  return { headers: {}, body: { client_id: config.clientId } };
}

export function createHttp(timeoutMs = 60_000): AxiosInstance {
  return axios.create({ adapter: 'http', timeout: timeoutMs, validateStatus: () => true, maxRedirects: 0 });
}

/**
 * POSTs form-encoded requests to the OAuth server (`${authBaseUrl}/token`, `/device/authorize`), at most
 * one per second, retrying 5xx / 429 / network failures with the shared policy. OAuth errors (4xx with
 * `{error}`) are returned, not thrown, so callers can act on `authorization_pending`, `invalid_grant`, ...
 */
export class TokenEndpoint {
  private readonly http: AxiosInstance;
  private readonly limiter: RateLimiter;
  private readonly retry: RetryPolicy;
  private readonly tokenSlot: (() => Promise<{ readonly waitMs: number }>) | null;

  constructor(
    private readonly config: Pick<ResolvedSource, 'authBaseUrl' | 'clientId' | 'clientSecret'>,
    private readonly deps: AuthDeps,
    options: TokenEndpointOptions = {},
  ) {
    this.http = options.http ?? createHttp();
    this.retry = options.retry ?? { maxAttempts: 4, baseDelayMs: 1000, maxDelayMs: 15_000 };
    this.limiter = new RateLimiter({ perWindow: 1, windowMs: 1000, clock: deps.clock });
    this.tokenSlot = options.tokenSlot ?? null;
  }

  /** POST `fields` (+ client authentication) to `${authBaseUrl}${path}`. */
  async post(
    path: string,
    fields: Record<string, string>,
    opts: { clientIdInBody?: boolean } = {},
  ): Promise<TokenEndpointResult> {
    const url = `${this.config.authBaseUrl}${path}`;
    const auth = clientAuthentication(this.config);
    const body = new URLSearchParams({
      ...fields,
      ...auth.body,
      ...(opts.clientIdInBody ? { client_id: this.config.clientId } : {}),
    });
    let attemptNo = 0;
    try {
      return await withRetry(
        async (attempt) => {
          attemptNo = attempt;
          if (this.tokenSlot) {
            const slot = await this.tokenSlot();
            if (slot.waitMs > 0) await this.deps.clock.sleep(slot.waitMs);
          }
          await this.limiter.acquire();
          this.deps.calls?.record(AUTH_CALLS_VENDOR);
          let res;
          try {
            res = await this.http.post(url, body.toString(), {
              headers: {
                ...auth.headers,
                'Content-Type': 'application/x-www-form-urlencoded',
                Accept: 'application/json',
              },
              validateStatus: () => true,
            });
          } catch (err) {
            throw networkError(`Constant Contact OAuth POST ${path}`, err);
          }
          if (res.status >= 200 && res.status < 300)
            return { ok: true as const, status: res.status, data: res.data as unknown };
          if (res.status >= 500 || res.status === 429) {
            throw sourceError(
              `Constant Contact OAuth POST ${path}: HTTP ${res.status}`,
              res.status,
              res.status === 429 ? 'throttled' : undefined,
            );
          }
          const oauth = OAuthError.decode(res.data);
          if (isLeft(oauth)) {
            return { ok: false as const, status: res.status, error: `http_${res.status}`, description: null };
          }
          return {
            ok: false as const,
            status: res.status,
            error: oauth.right.error,
            description: oauth.right.error_description ?? null,
          };
        },
        (err) => classifyFailure(err, Math.max(1000, backoffDelay(attemptNo, this.retry, this.deps.random))),
        this.retry,
        this.deps.clock,
        {
          random: this.deps.random,
          onRetry: (i) =>
            this.deps.logger.warn('constant-contact: retrying OAuth request', {
              path,
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
}

/** Describe an OAuth error without any token in it. */
export function describeOAuthError(r: { status: number; error: string; description: string | null }): string {
  return `HTTP ${r.status} ${r.error}${r.description ? `: ${r.description}` : ''}`;
}

/** A credential the OAuth server just issued: written even when a fleet lease moved on (KeyValue.setCredential). */
function setCredential(kv: KeyValue, key: string, value: string): void {
  if (kv.setCredential) kv.setCredential(key, value);
  else kv.set(key, value);
}

/**
 * The first thing done with a 2xx token response: if it carries a new refresh token, store it, before
 * anything else in the body is looked at. With rotation the old refresh token died when this response was
 * issued, so a body that then fails to decode (an odd `expires_in`, `scope: null`, ...) must not take the new
 * one with it. Returns true when one was stored.
 */
export function persistRefreshTokenFirst(kv: KeyValue, data: unknown): boolean {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return false;
  const at = (data as Record<string, unknown>)['access_token'];
  if (typeof at === 'string') registerSecret(at);
  const rt = (data as Record<string, unknown>)['refresh_token'];
  if (typeof rt !== 'string' || rt.trim() === '') return false;
  registerSecret(rt);
  if (kv.get(KV_REFRESH_TOKEN) !== rt) setCredential(kv, KV_REFRESH_TOKEN, rt);
  return true;
}

/**
 * Decode a token response or throw a SourceError naming what is wrong (values masked). Call
 * `persistRefreshTokenFirst` before this (the `accept...` helpers below do both).
 */
export function decodeTokenResponse(data: unknown, what: string): TokenResponse {
  const r = TokenResponse.decode(data);
  if (isLeft(r)) {
    throw sourceError(`${what}: the OAuth server returned an unexpected body (${formatErrors(r.left).join('; ')})`);
  }
  return r.right;
}

/**
 * Persist a token response: the refresh token first (when one was returned; with rotation it is a new
 * one and the old one is already dead), then the access token and its expiry. Returns the expiry.
 */
export function storeTokens(kv: KeyValue, tokens: TokenResponse, clock: Clock, logger?: Logger): Date {
  registerSecret(tokens.access_token);
  if (typeof tokens.refresh_token === 'string' && tokens.refresh_token !== '') {
    registerSecret(tokens.refresh_token);
    if (kv.get(KV_REFRESH_TOKEN) !== tokens.refresh_token) setCredential(kv, KV_REFRESH_TOKEN, tokens.refresh_token);
  }
  const expiresIn = boundedExpiresIn(tokens.expires_in, logger);
  const expiresAt = new Date(clock.now().getTime() + expiresIn * 1000);
  setCredential(kv, KV_ACCESS_TOKEN, tokens.access_token);
  setCredential(kv, KV_ACCESS_EXPIRES_AT, expiresAt.toISOString());
  return expiresAt;
}

/**
 * Hands out a valid access token, refreshing it when needed. One per source (one per process).
 */
export class TokenManager {
  private readonly endpoint: TokenEndpoint;
  private readonly refresher = singleFlight(() => this.doRefresh());
  private seeded = false;
  /** The command a person runs when the refresh token is refused (names the account when not `default`). */
  readonly reauth: string;

  constructor(
    private readonly config: ResolvedSource,
    private readonly deps: AuthDeps,
    options: TokenEndpointOptions & { endpoint?: TokenEndpoint; account?: string } = {},
  ) {
    this.reauth = reauthCommand(options.account);
    registerSecret(config.clientSecret);
    registerSecret(config.refreshToken);
    this.endpoint = options.endpoint ?? new TokenEndpoint(config, deps, options);
  }

  /** The stored refresh token, after seeding it from the config if the store has none yet. */
  refreshToken(): string | null {
    this.seed();
    const stored = this.deps.kv.get(KV_REFRESH_TOKEN);
    registerSecret(stored);
    return stored && stored !== '' ? stored : null;
  }

  /** When the stored access token expires (null when there is none). */
  accessExpiresAt(): Date | null {
    const raw = this.deps.kv.get(KV_ACCESS_EXPIRES_AT);
    if (!raw) return null;
    const t = Date.parse(raw);
    return Number.isNaN(t) ? null : new Date(t);
  }

  /** A token valid for at least EXPIRY_MARGIN_MS: the stored one, or a fresh one. */
  async accessToken(): Promise<string> {
    const running = this.refresher.running();
    if (running) return running;
    const stored = this.storedAccessToken();
    if (stored) return stored;
    return this.refresh();
  }

  /**
   * The API answered 401 to `rejected`. If another caller already replaced that token (or is replacing it),
   * use the replacement; otherwise refresh. Either way at most one refresh happens.
   */
  async refreshAfterUnauthorized(rejected: string): Promise<string> {
    const running = this.refresher.running();
    if (running) return running;
    const current = this.deps.kv.get(KV_ACCESS_TOKEN);
    if (current && current !== rejected && this.storedAccessToken() === current) return current;
    return this.refresh();
  }

  /** Refresh now (or join the refresh already in flight). Resolves once the new tokens are stored. */
  refresh(): Promise<string> {
    return this.refresher.run();
  }

  private seed(): void {
    if (this.seeded) return;
    this.seeded = true;
    const stored = this.deps.kv.get(KV_REFRESH_TOKEN);
    if ((!stored || stored === '') && this.config.refreshToken) {
      this.deps.kv.set(KV_REFRESH_TOKEN, this.config.refreshToken);
      this.deps.logger.info('constant-contact: seeded the token store from the configured refresh token');
    }
    registerSecret(this.deps.kv.get(KV_ACCESS_TOKEN));
  }

  private storedAccessToken(): string | null {
    this.seed();
    const token = this.deps.kv.get(KV_ACCESS_TOKEN);
    const expiresAt = this.accessExpiresAt();
    if (!token || !expiresAt) return null;
    if (expiresAt.getTime() - EXPIRY_MARGIN_MS <= this.deps.clock.now().getTime()) return null;
    registerSecret(token);
    return token;
  }

  private async doRefresh(): Promise<string> {
    // Read at refresh time, never cached: after a rotation only the stored value is valid.
    const refreshToken = this.refreshToken();
    if (!refreshToken) {
      throw new ReauthorizationRequired(
        `No Constant Contact refresh token is stored and none is configured: run \`${this.reauth}\` to authorise this connector.`,
      );
    }
    const res = await this.endpoint.post('/token', { grant_type: 'refresh_token', refresh_token: refreshToken });
    if (!res.ok) {
      if (res.error === 'invalid_grant') {
        throw new ReauthorizationRequired(
          redact(
            `Constant Contact refused the stored refresh token (${describeOAuthError(res)}). It expired, was revoked, or was ` +
              `already used after a rotation. Re-authorise with \`${this.reauth}\`.`,
          ),
        );
      }
      if (res.error === 'invalid_client' || res.error === 'unauthorized_client') {
        throw sourceError(
          `Constant Contact token refresh failed (${describeOAuthError(res)}): check source.clientId and source.clientSecret.`,
          res.status,
          res.error,
        );
      }
      throw sourceError(`Constant Contact token refresh failed (${describeOAuthError(res)}).`, res.status, res.error);
    }
    // Durable first: the rotated refresh token, even if the rest of the body turns out to be unusable.
    const rotatedStored = persistRefreshTokenFirst(this.deps.kv, res.data);
    // a server-backed store queues set(): the rotated refresh token is durable before anything else happens
    if (rotatedStored) await this.deps.kv.flush?.();
    let tokens: TokenResponse;
    try {
      tokens = decodeTokenResponse(res.data, 'Constant Contact token refresh');
    } catch (err) {
      if (rotatedStored) {
        throw sourceError(
          `${(err as Error).message}; the new refresh token it carried is stored, so the next run can refresh again`,
        );
      }
      throw err;
    }
    // Then the access token and its expiry.
    const expiresAt = storeTokens(this.deps.kv, tokens, this.deps.clock, this.deps.logger);
    await this.deps.kv.flush?.();
    this.deps.logger.debug('constant-contact: access token refreshed', {
      expiresAt: expiresAt.toISOString(),
      rotated: typeof tokens.refresh_token === 'string' && tokens.refresh_token !== refreshToken,
    });
    return tokens.access_token;
  }
}
