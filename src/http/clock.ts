/** Time as a capability: production uses the system clock, tests inject a fake one. */
export interface Clock {
  now(): Date;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => new Date(),
  sleep: (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};

/** A clock whose sleeps return at once but advance its time: for fast, deterministic tests. */
export function fakeClock(
  start: Date = new Date('2026-01-01T00:00:00Z'),
): Clock & { advance(ms: number): void; slept: number[] } {
  let t = start.getTime();
  const slept: number[] = [];
  return {
    now: () => new Date(t),
    sleep: async (ms: number) => {
      slept.push(ms);
      t += Math.max(0, ms);
    },
    advance: (ms: number) => {
      t += ms;
    },
    slept,
  };
}

/** Next 00:00 UTC after `d`: when Constant Contact's daily quota resets. */
export function nextUtcMidnight(d: Date): Date {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1));
}
