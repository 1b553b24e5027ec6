/**
 * How long `cc-optout run` pauses after failed runs: `baseSeconds` after the first, doubling with each
 * consecutive failure, never more than `maxSeconds`; and never before a time a vendor named (a daily quota's
 * reset, a target's retryAt) when every path forward waits for it. A successful run resets it.
 */

export interface BackoffPolicy {
  readonly baseSeconds: number;
  readonly maxSeconds: number;
}

/** Seconds to wait after `failures` consecutive failed runs (0 when none). */
export function backoffSeconds(failures: number, p: BackoffPolicy): number {
  if (failures <= 0) return 0;
  // 2^(n-1) overflows to Infinity for absurd n: the cap applies either way
  return Math.min(p.maxSeconds, p.baseSeconds * 2 ** Math.min(failures - 1, 60));
}

/**
 * The earliest time the next run may start: `now + backoff`, or the vendor's `retryAt` when that is later
 * (a retryAt in the past, or unreadable, is ignored).
 */
export function nextAttemptAt(now: Date, failures: number, p: BackoffPolicy, retryAt?: string | null): Date {
  const backoff = now.getTime() + backoffSeconds(failures, p) * 1000;
  const vendor = retryAt ? Date.parse(retryAt) : NaN;
  return new Date(Number.isNaN(vendor) ? backoff : Math.max(backoff, vendor));
}
