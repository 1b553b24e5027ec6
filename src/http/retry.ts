import { Clock } from './clock';

export interface RetryPolicy {
  /** Total attempts including the first. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, baseDelayMs: 500, maxDelayMs: 30_000 };

/** What to do with a failure: retry (optionally after a vendor-given delay) or give up. */
export type RetryDecision = { retry: true; delayMs?: number; reason: string } | { retry: false };

/** Exponential backoff with full jitter: a random delay in [base*2^(n-1)/2, base*2^(n-1)], capped. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

export interface RetryHooks {
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
  random?: () => number;
  /**
   * The run's stop signal (SIGTERM, or a fleet lease that was lost or ran out): once aborted no further attempt is
   * made, so a worker that lost its lease (a successor may be writing the same records) sends nothing more.
   */
  signal?: AbortSignal;
}

/**
 * Run `fn` until it succeeds, `classify` says not to retry, or attempts run out (the last error is thrown).
 * The one retry policy used by every vendor client.
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  classify: (err: unknown) => RetryDecision,
  policy: RetryPolicy,
  clock: Clock,
  hooks: RetryHooks = {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const decision = classify(err);
      if (!decision.retry || attempt >= policy.maxAttempts) throw err;
      if (hooks.signal?.aborted) throw err;
      const delayMs = decision.delayMs ?? backoffDelay(attempt, policy, hooks.random);
      hooks.onRetry?.({ attempt, delayMs, reason: decision.reason });
      await clock.sleep(delayMs);
      if (hooks.signal?.aborted) throw err;
    }
  }
}

/** Network-level failures worth retrying (connection reset, refused, timeouts). */
export function isTransientNetworkError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (
    typeof code === 'string' &&
    ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ECONNABORTED', 'UND_ERR_SOCKET'].includes(code)
  );
}
