/**
 * The fair schedule of Constant Contact polls under one application's daily budget: pure functions.
 *
 * nextPollDelayMs: an account's share of what is left today is `priority x activityWeight(idleStreak)`
 * divided by the sum of those over the application's accounts (`weightSum`; without it, the priority share
 * `priority / prioritySum` times the weight). Spending that share evenly over the rest of the UTC day means
 * one poll every
 *
 *     callsPerPoll x timeLeftInDay / (remaining x share)
 *
 * (with every priority 1 and no activity: accounts x callsPerPoll / remaining x timeLeftInDay, i.e. at
 * 1,000 accounts, 10,000 calls and 1 call per poll every 2.4 h), clamped to [minIntervalMs, maxIntervalMs].
 * It is recomputed at every poll from the budget actually left, so what idle accounts do not spend is
 * spread over everyone later in the day. With nothing left today the next poll is after 00:00 UTC.
 *
 * activityWeight: a poll that found opt-outs (idleStreak 0) doubles the account's share (poll sooner: they
 * come in bursts after a campaign); after IDLE_GRACE idle polls the weight halves with every further idle
 * poll, down to MIN_WEIGHT (back off while idle).
 *
 * jitter (optional): +-15% so that accounts that polled together drift apart.
 *
 * reconcileSlot: full reconciles are spread over the day by a hash of the account id (the same time of day
 * for an account every day, so they stay 24 h apart and never pile up at midnight).
 */
import { createHash } from 'crypto';
import type { SchedulerInput } from './types';

export const DAY_MS = 86_400_000;
export const ACTIVE_WEIGHT = 2;
export const IDLE_GRACE = 3;
export const MIN_WEIGHT = 0.25;
/** The spread of `jitter`: the interval is multiplied by 1 + JITTER x (jitter - 0.5), i.e. 0.85 .. 1.15. */
export const JITTER = 0.3;
export const DEFAULT_MIN_INTERVAL_MS = 60_000;
export const DEFAULT_MAX_INTERVAL_MS = DAY_MS;

/** Milliseconds from `now` to the next 00:00 UTC (never 0: at midnight exactly, a whole day). */
export function msUntilUtcMidnight(now: Date): number {
  const t = now.getTime();
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - t;
}

/** The share multiplier of recent activity (see the file comment). */
export function activityWeight(idleStreak: number): number {
  if (!Number.isFinite(idleStreak) || idleStreak <= 0) return ACTIVE_WEIGHT;
  if (idleStreak <= IDLE_GRACE) return 1;
  return Math.max(MIN_WEIGHT, 2 ** -(idleStreak - IDLE_GRACE));
}

/** Every account polled equally often, spending `dailyBudget` in a whole day: the budget-optimal interval. */
export function budgetOptimalIntervalMs(accounts: number, callsPerPoll: number, dailyBudget: number): number {
  if (dailyBudget <= 0) return Infinity;
  return (accounts * callsPerPoll * DAY_MS) / dailyBudget;
}

function need(name: string, v: number, ok: (v: number) => boolean, what: string): void {
  if (typeof v !== 'number' || Number.isNaN(v) || !ok(v))
    throw new Error(`scheduler: ${name} must be ${what} (got ${v})`);
}

/** How long until this account's next poll (ms), see the file comment. */
export function nextPollDelayMs(i: SchedulerInput): number {
  need('now', i.now instanceof Date ? i.now.getTime() : NaN, Number.isFinite, 'a valid Date');
  need('minIntervalMs', i.minIntervalMs, (v) => Number.isFinite(v) && v >= 0, 'a number >= 0');
  need('maxIntervalMs', i.maxIntervalMs, (v) => v >= i.minIntervalMs, 'a number >= minIntervalMs');
  need('remaining', i.remaining, Number.isFinite, 'a number');
  need('accounts', i.accounts, (v) => Number.isFinite(v) && v >= 0, 'a number >= 0');
  need('callsPerPoll', i.callsPerPoll, (v) => Number.isFinite(v) && v > 0, 'a number > 0');
  need('priority', i.priority, Number.isFinite, 'a number');
  need('prioritySum', i.prioritySum, Number.isFinite, 'a number');
  need('idleStreak', i.idleStreak, (v) => v >= 0, 'a number >= 0');
  const clamp = (ms: number): number => Math.min(i.maxIntervalMs, Math.max(i.minIntervalMs, ms));
  if (i.priority <= 0) return i.maxIntervalMs; // paused
  const timeLeft = msUntilUtcMidnight(i.now);
  if (i.remaining <= 0) return Math.max(i.minIntervalMs, timeLeft); // nothing left today: after the reset
  const weight = activityWeight(i.idleStreak);
  let share: number;
  if (i.weightSum !== undefined) {
    need('weightSum', i.weightSum, (v) => Number.isFinite(v) && v > 0, 'a number > 0');
    share = (i.priority * weight) / i.weightSum;
  } else {
    const prioritySum = i.prioritySum > 0 ? i.prioritySum : Math.max(1, i.accounts) * i.priority;
    share = (i.priority / prioritySum) * weight;
  }
  let jitter = 1;
  if (i.jitter !== undefined) {
    need('jitter', i.jitter, (v) => v >= 0 && v <= 1, 'a number from 0 to 1');
    jitter = 1 + JITTER * (i.jitter - 0.5);
  }
  return Math.round(clamp(((i.callsPerPoll * timeLeft) / (i.remaining * share)) * jitter));
}

/** A stable 32-bit hash of a string (the first 4 bytes of its SHA-256: the same in every process and version). */
export function hash32(s: string): number {
  return createHash('sha256').update(s, 'utf8').digest().readUInt32BE(0);
}

/** When on `day` (YYYY-MM-DD, UTC) the account's full reconcile is due. */
export function reconcileSlot(accountId: string, day: string): Date {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`)))
    throw new Error(`reconcileSlot: day must be YYYY-MM-DD (got ${JSON.stringify(day)})`);
  const start = Date.parse(`${day}T00:00:00Z`);
  return new Date(start + Math.floor((hash32(accountId) / 2 ** 32) * DAY_MS));
}

/** Whether the account's full reconcile is due now: today's slot has passed and none ran since it. */
export function reconcileDue(accountId: string, lastFullAt: string | null, now: Date): boolean {
  const slot = reconcileSlot(accountId, now.toISOString().slice(0, 10));
  if (now.getTime() < slot.getTime()) {
    // before today's slot: due only if yesterday's slot was missed
    const yesterday = new Date(slot.getTime() - DAY_MS);
    return lastFullAt === null || Date.parse(lastFullAt) < yesterday.getTime();
  }
  return lastFullAt === null || Date.parse(lastFullAt) < slot.getTime();
}
