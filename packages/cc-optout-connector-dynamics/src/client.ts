/**
 * The Dataverse Web API client: axios, one environment origin, OData headers, the bearer token sent only to
 * that origin (redirects refused, `@odata.nextLink` to any other origin refused), and the service-protection
 * rules: 429 waits the Retry-After seconds (capped: a longer wait stops the target until then), 401 gets one
 * fresh token then halts as auth, 403 halts as auth (missing privileges), 5xx / network errors retry with
 * backoff then halt as unavailable. Requests are paced by the limiter handed in by the core.
 */
import axios, { AxiosInstance, AxiosResponse } from 'axios';
import { AuthFailure, TokenSource } from './auth';

export type HaltKind = 'auth' | 'rate-limit' | 'unavailable' | 'config' | 'fatal';

/** The target must stop for this run (mapped to the SDK's halt by the connector). */
export class DataverseHalt extends Error {
  constructor(
    readonly kind: HaltKind,
    message: string,
    readonly retryAt?: string,
  ) {
    super(message);
    this.name = 'DataverseHalt';
  }
}

/** Dataverse refused this one request (400, 404, 412, 414 ...): the caller decides. */
export class DataverseRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DataverseRequestError';
  }
}

export interface Pacer {
  acquire(): Promise<void>;
  pause?(ms: number): void;
}

export interface ClientDeps {
  tokens: TokenSource;
  pacer: Pacer;
  sleep(ms: number): Promise<void>;
  now(): Date;
  /** Count one API request (for the run summary). */
  record(n?: number): void;
  redact(s: string): string;
  warn?(msg: string, fields?: Record<string, unknown>): void;
  http?: AxiosInstance;
}

export interface ClientSettings {
  /** Environment origin, e.g. https://contoso.crm.dynamics.com */
  url: string;
  apiVersion: string;
  timeoutMs: number;
  /** Longest Retry-After honoured in-run (s); longer stops the target with retryAt. */
  maxRetryAfterSeconds: number;
  /** Retries of one request after 429 / 5xx / network errors. */
  maxRetries: number;
  backoffBaseMs: number;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The OData error of a Dataverse answer: { error: { code, message } }. */
export function odataErrorOf(body: string): { code: string; message: string } {
  try {
    const e = (JSON.parse(body) as { error?: { code?: unknown; message?: unknown } }).error;
    return {
      code: typeof e?.code === 'string' ? e.code : '',
      message: typeof e?.message === 'string' ? e.message : '',
    };
  } catch {
    return { code: '', message: body.slice(0, 200) };
  }
}

/** A Retry-After beyond a day is read as a day (the target stops until then; nothing is lost). */
export const RETRY_AFTER_CAP_SECONDS = 86_400;

/** Retry-After as seconds (delta-seconds or an HTTP date, at most RETRY_AFTER_CAP_SECONDS), or null. */
export function retryAfterSeconds(v: string | undefined, now: Date): number | null {
  if (!v) return null;
  if (/^\s*\d+(\.\d+)?\s*$/.test(v)) return Math.min(RETRY_AFTER_CAP_SECONDS, Math.ceil(Number(v)));
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.min(RETRY_AFTER_CAP_SECONDS, Math.max(0, Math.ceil((t - now.getTime()) / 1000)));
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

export class DataverseClient {
  readonly origin: string;
  readonly apiBase: string;
  private readonly http: AxiosInstance;

  constructor(
    private readonly s: ClientSettings,
    private readonly d: ClientDeps,
  ) {
    this.origin = new URL(s.url).origin;
    this.apiBase = `${this.origin}/api/data/v${s.apiVersion}`;
    this.http = d.http ?? axios.create();
  }

  /** A path under the API root ("contacts?$filter=...") or a full URL on the environment's origin. */
  resolve(pathOrUrl: string): string {
    const url = /^https?:\/\//i.test(pathOrUrl) ? pathOrUrl : `${this.apiBase}/${pathOrUrl.replace(/^\/+/, '')}`;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new DataverseHalt('fatal', `refusing a malformed Dataverse URL`);
    }
    if (parsed.origin !== this.origin || !parsed.pathname.startsWith(`/api/data/`)) {
      throw new DataverseHalt(
        'fatal',
        `refusing to send the token to ${parsed.origin}${parsed.pathname.slice(0, 40)}: not the Dataverse environment ${this.origin}/api/data/`,
      );
    }
    return url;
  }

  async getJson<T>(pathOrUrl: string, prefer?: string): Promise<T> {
    const res = await this.send('GET', pathOrUrl, { ...(prefer ? { Prefer: prefer } : {}) });
    try {
      return JSON.parse(res.body) as T;
    } catch {
      throw new DataverseHalt(
        'unavailable',
        `Dataverse answered a GET with a body that is not JSON (HTTP ${res.status})`,
      );
    }
  }

  /** POST $batch; the raw multipart answer. */
  async batch(boundary: string, body: string, continueOnError: boolean): Promise<RawResponse> {
    return this.send(
      'POST',
      '$batch',
      {
        'Content-Type': `multipart/mixed; boundary=${boundary}`,
        ...(continueOnError ? { Prefer: 'odata.continue-on-error' } : {}),
      },
      body,
    );
  }

  /** One request with the service-protection / auth / outage rules; 2xx answers and request errors return or throw. */
  async send(
    method: 'GET' | 'POST' | 'PATCH',
    pathOrUrl: string,
    headers: Record<string, string> = {},
    body?: string,
  ): Promise<RawResponse> {
    const url = this.resolve(pathOrUrl);
    let fresh = false;
    let refreshed = false;
    let retries = 0;
    for (;;) {
      await this.d.pacer.acquire();
      let token: string;
      try {
        token = await this.d.tokens.get(fresh);
      } catch (e) {
        if (e instanceof AuthFailure) {
          if (e.kind === 'unavailable' && retries < this.s.maxRetries) {
            retries++;
            await this.d.sleep(this.backoff(retries));
            continue;
          }
          throw new DataverseHalt(e.kind, e.message);
        }
        throw e;
      }
      fresh = false;
      let res: AxiosResponse<string>;
      try {
        res = await this.http.request<string>({
          method,
          url,
          data: body,
          headers: {
            Accept: 'application/json',
            'OData-MaxVersion': '4.0',
            'OData-Version': '4.0',
            ...(method === 'PATCH' ? { 'Content-Type': 'application/json', 'If-Match': '*' } : {}),
            ...headers,
            Authorization: `Bearer ${token}`,
          },
          timeout: this.s.timeoutMs,
          maxRedirects: 0,
          responseType: 'text',
          transformResponse: (x: unknown) => x,
          validateStatus: () => true,
        });
      } catch (e) {
        this.d.record();
        const code = (e as { code?: string }).code ?? '';
        if ((TRANSIENT_CODES.has(code) || axios.isAxiosError(e)) && retries < this.s.maxRetries) {
          retries++;
          await this.d.sleep(this.backoff(retries));
          continue;
        }
        throw new DataverseHalt('unavailable', `Dataverse unreachable: ${this.d.redact(code || (e as Error).message)}`);
      }
      this.d.record();
      const out: RawResponse = {
        status: res.status,
        headers: lowerHeaders(res.headers),
        body: typeof res.data === 'string' ? res.data : '',
      };
      const st = res.status;
      if (st >= 200 && st < 300) return out;
      const err = odataErrorOf(out.body);
      const what = `${method} ${new URL(url).pathname.replace(/^\/api\/data\/v[\d.]+\//, '')}`;
      const msg = this.d.redact(`${err.code ? `${err.code} ` : ''}${err.message}`.trim()).slice(0, 300);
      if (st === 401) {
        if (!refreshed) {
          refreshed = true;
          fresh = true;
          continue;
        }
        throw new DataverseHalt(
          'auth',
          `Dataverse refused the access token (HTTP 401 on ${what}) even after a new one: is the application user set up in the environment?`,
        );
      }
      if (st === 403)
        throw new DataverseHalt(
          'auth',
          `Dataverse refused ${what} (HTTP 403): the application user lacks a privilege${msg ? `: ${msg}` : ''}`,
        );
      if (st === 429) {
        const ra = retryAfterSeconds(out.headers['retry-after'], this.d.now()) ?? 5;
        if (ra > this.s.maxRetryAfterSeconds || retries >= this.s.maxRetries) {
          const at = new Date(this.d.now().getTime() + ra * 1000).toISOString();
          throw new DataverseHalt(
            'rate-limit',
            `Dataverse service protection limit (HTTP 429 on ${what}${err.code ? `, ${err.code}` : ''}): retry after ${ra} s`,
            at,
          );
        }
        retries++;
        this.d.pacer.pause?.(ra * 1000);
        this.d.warn?.('Dataverse service protection limit: waiting Retry-After', { seconds: ra });
        await this.d.sleep(ra * 1000);
        continue;
      }
      if (st >= 500) {
        if (retries < this.s.maxRetries) {
          retries++;
          await this.d.sleep(this.backoff(retries));
          continue;
        }
        throw new DataverseHalt('unavailable', `Dataverse unavailable (HTTP ${st} on ${what})${msg ? `: ${msg}` : ''}`);
      }
      if (st >= 300 && st < 400)
        throw new DataverseHalt(
          'fatal',
          `Dataverse answered ${what} with a redirect (HTTP ${st}); redirects are not followed (the token stays on ${this.origin})`,
        );
      throw new DataverseRequestError(st, err.code, `HTTP ${st} on ${what}${msg ? `: ${msg}` : ''}`);
    }
  }

  private backoff(n: number): number {
    const exp = this.s.backoffBaseMs * 2 ** (n - 1);
    return Math.round(exp / 2 + Math.random() * (exp / 2));
  }
}

function lowerHeaders(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (h && typeof h === 'object')
    for (const [k, v] of Object.entries(h as Record<string, unknown>))
      if (v !== undefined && v !== null) out[k.toLowerCase()] = String(v);
  return out;
}
