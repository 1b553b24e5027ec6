/**
 * Failure handling shared by the API client (client.ts) and the OAuth calls (auth.ts, authorize.ts):
 * turning axios network failures into SourceErrors, deciding what the shared retry policy
 * (src/http/retry.ts) should retry, and keeping secrets out of every message.
 *
 * Every error this folder throws is one of the contract's classes (SourceError, QuotaExceeded,
 * ReauthorizationRequired), and its message has been passed through `redact`. Raw axios errors are never
 * rethrown: they carry the request config, headers included.
 */
import { isTransientNetworkError, RetryDecision } from '../../http/retry';
import { redact } from '../../log';
import { QuotaExceeded, ReauthorizationRequired, SourceError } from '../types';

/** `errorKey` used on SourceErrors for failures where no HTTP response arrived. */
export const NETWORK_ERROR_KEY = 'network';

/** A SourceError whose message went through `redact` (belt and braces: messages never hold tokens). */
export function sourceError(message: string, status?: number, errorKey?: string): SourceError {
  return new SourceError(redact(message), status, errorKey);
}

/** `errorKey` for a network failure that retrying will not fix (unknown host, TLS error, ...). */
export const NETWORK_FATAL_ERROR_KEY = 'network-fatal';

/**
 * Describe an axios/network failure (no HTTP response) without its request config. Transient failures
 * (as the shared policy defines them: resets, timeouts, ...) are marked retryable; others are final.
 */
export function networkError(what: string, err: unknown): SourceError {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : null;
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  const key = isTransientNetworkError(err) ? NETWORK_ERROR_KEY : NETWORK_FATAL_ERROR_KEY;
  return sourceError(`${what}: no response (${code ?? 'network error'}: ${msg})`, undefined, key);
}

/** Whether a SourceError was a network failure worth retrying. */
function isRetryableNetwork(err: SourceError): boolean {
  return err.status === undefined && err.errorKey === NETWORK_ERROR_KEY;
}

/**
 * The retry classification used with `withRetry`: 5xx, 429 other than `quota_exceeded`, and network
 * failures are retried; everything else (4xx, quota, re-authorisation) is final.
 * `throttleDelayMs` is how long to wait after a 429 `throttled` (the vendor sends no Retry-After).
 */
export function classifyFailure(err: unknown, throttleDelayMs?: number): RetryDecision {
  if (err instanceof QuotaExceeded || err instanceof ReauthorizationRequired) return { retry: false };
  if (err instanceof SourceError) {
    if (err.status === 429 && err.errorKey !== 'quota_exceeded') {
      return { retry: true, delayMs: throttleDelayMs, reason: `HTTP 429 ${err.errorKey ?? 'throttled'}` };
    }
    if (err.status !== undefined && err.status >= 500) return { retry: true, reason: `HTTP ${err.status}` };
    if (isRetryableNetwork(err)) return { retry: true, reason: err.message };
    return { retry: false };
  }
  if (isTransientNetworkError(err)) return { retry: true, reason: 'network error' };
  return { retry: false };
}
