import { Clock, nextUtcMidnight } from './clock';

/** Thrown by `RateLimiter.acquire` when the daily budget is spent. Nothing is retried until `resetAt`. */
export class BudgetExhausted extends Error {
  constructor(
    readonly resetAt: Date,
    readonly budget: number,
  ) {
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
    return this.enqueue().then(() => undefined);
  }

  /** Wait for a slot; resolves with the slot's stamp. */
  private enqueue(): Promise<number> {
    const next = this.queue.then(() => this.take());
    // keep the chain alive even when one acquisition fails
    this.queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }

  /**
   * Like `acquire`, but the slot is held until `done()` is called and its window starts then: a request
   * counts from its start until its response plus the window, so however long it travelled, the vendor
   * (which counts it on arrival) never sees more than `perWindow` in any window. Keeps a saturated rolling
   * window saturated without the bursts-and-idling of pausing a whole window.
   */
  async acquireHeld(): Promise<{ done(): void }> {
    const stamp = await this.enqueue();
    let released = false;
    return {
      done: () => {
        if (released) return;
        released = true;
        const i = this.stamps.indexOf(stamp);
        if (i >= 0) this.stamps.splice(i, 1);
        const now = this.opts.clock.now().getTime();
        // keep the stamps sorted: every other stamp was taken at or before now
        let j = this.stamps.length;
        while (j > 0 && this.stamps[j - 1]! > now) j--;
        this.stamps.splice(j, 0, now);
      },
    };
  }

  /** Slots of the current window in use (held or within the window), at most `perWindow`. */
  inWindow(): number {
    const now = this.opts.clock.now().getTime();
    return this.stamps.filter((t) => t > now - this.opts.windowMs).length;
  }

  /** Count `n` slots as used now (the vendor says its window is fuller than ours). */
  occupy(n: number): void {
    const now = this.opts.clock.now().getTime();
    for (let i = 0; i < n; i++) this.stamps.push(now);
  }

  get windowMs(): number {
    return this.opts.windowMs;
  }

  /** Requests allowed per window (as configured). */
  get perWindow(): number {
    return this.opts.perWindow;
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

  private async take(): Promise<number> {
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
        return now;
      }
      await clock.sleep(this.stamps[0]! + windowMs - now);
    }
  }
}
