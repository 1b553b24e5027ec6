/**
 * When `cc-optout run` starts a sync: every N seconds/minutes/hours (`--every 5m`) or on a cron pattern
 * (`--cron "*\/5 * * * *"`). The timing is croner's (a maintained scheduler); this module only parses and checks
 * the two spellings, so the config codec and the CLI report a bad value the same way.
 */
import { Cron } from 'croner';

/** Shortest and longest `every` interval. */
export const EVERY_MIN_SECONDS = 1;
export const EVERY_MAX_SECONDS = 24 * 3600;

const EVERY_RE = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/** "2s", "5m", "1h", "1h30m" -> seconds; a reason string when it is not one. */
export function parseEvery(v: string): number | string {
  const m = EVERY_RE.exec(v.trim());
  if (!m || v.trim() === '' || (m[1] === undefined && m[2] === undefined && m[3] === undefined)) {
    return `expected a duration such as 30s, 5m, 1h or 1h30m, got ${JSON.stringify(v)}`;
  }
  const s = Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
  if (s < EVERY_MIN_SECONDS || s > EVERY_MAX_SECONDS)
    return `expected a duration from 1s to 24h, got ${JSON.stringify(v)}`;
  return s;
}

/** null when croner accepts the pattern (5 fields, or 6 with seconds), else croner's reason. */
export function cronProblem(expr: string): string | null {
  try {
    const job = new Cron(expr, { paused: true });
    const next = job.nextRun();
    job.stop();
    return next ? null : `the cron pattern ${JSON.stringify(expr)} never fires`;
  } catch (err) {
    return `not a cron pattern (${(err as Error).message})`;
  }
}

export type Schedule =
  { kind: 'every'; seconds: number; text: string } | { kind: 'cron'; pattern: string; text: string };

/** The default when neither `--every`/`--cron` nor `service.every`/`service.cron` is given. */
export const DEFAULT_EVERY = '5m';

export interface Scheduler {
  /** When the next tick is due (null when stopped). */
  next(): Date | null;
  stop(): void;
}

/**
 * Call `tick` on the schedule. Overlap is the caller's business (a tick during a run is skipped and logged there),
 * so a slow run never makes croner queue ticks up.
 */
export function startScheduler(s: Schedule, tick: () => void): Scheduler {
  // every N seconds: croner's minimum-interval option on a once-a-second pattern
  const job = s.kind === 'every' ? new Cron('* * * * * *', { interval: s.seconds }, tick) : new Cron(s.pattern, tick);
  return { next: () => job.nextRun(), stop: () => job.stop() };
}
