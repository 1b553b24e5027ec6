import { Clock, nextUtcMidnight } from './clock';

/** Thrown by `RateLimiter.acquire` when the daily budget is spent. Nothing is retried until `resetAt`. */
export class BudgetExhausted extends Error {
  constructor(readonly resetAt: Date, readonly budget: number) {
    super(`daily API budget of ${budget} requests is spent; it resets at ${resetAt.toISOString()}`);
    this.name = 'BudgetExhausted';
  }
}

export interface RateLimiterOptions {
  /** Requests allowed per rolling window. */
  perWindow: number;
  windowMs: number;
  /** Optional daily budget (resets 00:00 UTC). */
  dailyBudget?: number;
  /** Requests already used today (e.g. read from the state store). */
  usedToday?: { day: string; used: number };
  /** Called after each acquisition with the running daily count (to persist it). */
  onUse?: (day: string, used: number) => void;
  clock: Clock;
}

function utcDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/**
 * One limiter shared by every request to one vendor (and, for Constant Contact, one application):
 * a rolling window (e.g. 4 per 1000 ms, 100 per 10 000 ms) plus an optional daily budget.
 * Callers are served in order.
 */
export class RateLimiter {
  private readonly stamps: number[] = [];
  private queue: Promise<void> = Promise.resolve();
  private pausedUntil = 0;
  private day: string;
  private used: number;

  constructor(private readonly opts: RateLimiterOptions) {
    if (!(opts.perWindow >= 1)) throw new Error('RateLimiter: perWindow must be >= 1');
    const today = utcDay(opts.clock.now());
    this.day = today;
    this.used = opts.usedToday && opts.usedToday.day === today ? opts.usedToday.used : 0;
  }

  /** Wait for a slot. Throws BudgetExhausted when the daily budget is spent. */
  acquire(): Promise<void> {
    const next = this.queue.then(() => this.take());
    // keep the chain alive even when one acquisition fails
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** After a vendor 429, hold every caller for `ms`. */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.opts.clock.now().getTime() + ms);
  }

  /** Mark the daily budget as spent (the vendor said so before we counted it). */
  exhaust(): void {
    this.used = Math.max(this.used, this.opts.dailyBudget ?? this.used);
    if (this.opts.dailyBudget === undefined) this.used = Number.MAX_SAFE_INTEGER;
  }

  usedToday(): number {
    this.rollDay();
    return this.used;
  }

  private rollDay(): void {
    const today = utcDay(this.opts.clock.now());
    if (today !== this.day) {
      this.day = today;
      this.used = 0;
    }
  }

  private async take(): Promise<void> {
    const { clock, perWindow, windowMs, dailyBudget } = this.opts;
    this.rollDay();
    if ((dailyBudget !== undefined && this.used >= dailyBudget) || this.used === Number.MAX_SAFE_INTEGER) {
      throw new BudgetExhausted(nextUtcMidnight(clock.now()), dailyBudget ?? 0);
    }
    for (;;) {
      const now = clock.now().getTime();
      if (now < this.pausedUntil) {
        await clock.sleep(this.pausedUntil - now);
        continue;
      }
      while (this.stamps.length > 0 && this.stamps[0]! <= now - windowMs) this.stamps.shift();
      if (this.stamps.length < perWindow) {
        this.stamps.push(now);
        this.used += 1;
        this.opts.onUse?.(this.day, this.used);
        return;
      }
      await clock.sleep(this.stamps[0]! + windowMs - now);
    }
  }
}
