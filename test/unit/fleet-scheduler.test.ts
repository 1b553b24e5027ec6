/** The fair schedule (src/fleet/scheduler.ts): exact intervals from the budget, priority and activity. */
import { strict as assert } from 'assert';
import {
  activityWeight,
  budgetOptimalIntervalMs,
  DAY_MS,
  hash32,
  nextPollDelayMs,
  reconcileDue,
  reconcileSlot,
  SchedulerInput,
} from '../../src/fleet';

const H = 3_600_000;
const MIDNIGHT = new Date('2026-12-01T00:00:00Z');

/** 1,000 equal accounts, 10,000 calls left at 00:00 UTC, 1 call per poll, in the idle grace (weight 1). */
function input(o: Partial<SchedulerInput> = {}): SchedulerInput {
  return {
    now: MIDNIGHT,
    remaining: 10_000,
    accounts: 1000,
    callsPerPoll: 1,
    priority: 1,
    prioritySum: 1000,
    idleStreak: 1,
    minIntervalMs: 60_000,
    maxIntervalMs: 24 * H,
    ...o,
  };
}

describe('fleet scheduler', () => {
  it('spreads the day: 1,000 accounts x 10,000/day is a poll every 2.4 h at 1 call, 4.8 h at 2 calls', () => {
    assert.equal(nextPollDelayMs(input()), 2.4 * H);
    assert.equal(nextPollDelayMs(input({ callsPerPoll: 2 })), 4.8 * H);
    assert.equal(budgetOptimalIntervalMs(1000, 1, 10_000), 2.4 * H);
    // half the day and half the budget left: the same interval
    assert.equal(nextPollDelayMs(input({ now: new Date('2026-12-01T12:00:00Z'), remaining: 5000 })), 2.4 * H);
    // budget spent faster than planned: what is left stretches over the rest of the day
    assert.equal(nextPollDelayMs(input({ now: new Date('2026-12-01T12:00:00Z'), remaining: 2500 })), 4.8 * H);
    // a partner key (250,000/day): about every 6 minutes
    assert.equal(nextPollDelayMs(input({ remaining: 250_000 })), 345_600);
  });

  it('weights by priority: priority 2 among 999 others at 1 polls twice as often as its peers', () => {
    const p2 = nextPollDelayMs(input({ priority: 2, prioritySum: 1001 }));
    const p1 = nextPollDelayMs(input({ priority: 1, prioritySum: 1001 }));
    assert.equal(p2, Math.round((DAY_MS * 1001) / (10_000 * 2))); // 4,324,320 ms
    assert.equal(p1, 2 * p2);
    assert.equal(nextPollDelayMs(input({ priority: 0 })), 24 * H, 'paused: the longest interval');
  });

  it('polls sooner after opt-outs and backs off while idle, exponentially to a floor, clamped', () => {
    assert.equal(activityWeight(0), 2);
    assert.deepEqual([1, 2, 3].map(activityWeight), [1, 1, 1]);
    assert.deepEqual([4, 5, 6, 20].map(activityWeight), [0.5, 0.25, 0.25, 0.25]);
    assert.equal(nextPollDelayMs(input({ idleStreak: 0 })), 1.2 * H);
    assert.equal(nextPollDelayMs(input({ idleStreak: 4 })), 4.8 * H);
    assert.equal(nextPollDelayMs(input({ idleStreak: 9 })), 9.6 * H);
    assert.equal(nextPollDelayMs(input({ idleStreak: 9, maxIntervalMs: 6 * H })), 6 * H, 'clamped to the max');
    assert.equal(nextPollDelayMs(input({ remaining: 10_000_000 })), 60_000, 'clamped to the min');
  });

  it('with weightSum the whole budget goes round: idle accounts give their share to active ones', () => {
    // 970 long-idle accounts (weight 0.25) and 30 that just found opt-outs (weight 2): sum 302.5
    const weightSum = 970 * 0.25 + 30 * 2;
    const idle = nextPollDelayMs(input({ idleStreak: 10, weightSum }));
    const active = nextPollDelayMs(input({ idleStreak: 0, weightSum }));
    assert.equal(idle, Math.round((DAY_MS * weightSum) / (10_000 * 0.25))); // 10,454,400 ms = 2.9 h
    assert.equal(active, Math.round((DAY_MS * weightSum) / (10_000 * 2))); // 1,306,800 ms = 22 min
    // the polls these intervals ask for over the day add up to the budget
    const calls = 970 * (DAY_MS / idle) + 30 * (DAY_MS / active);
    assert.ok(Math.abs(calls - 10_000) < 1, String(calls));
  });

  it('jitter spreads the interval by +-15% (0.5: none), inside the clamp', () => {
    assert.equal(nextPollDelayMs(input({ jitter: 0.5 })), 2.4 * H);
    assert.equal(nextPollDelayMs(input({ jitter: 0 })), 0.85 * 2.4 * H);
    assert.equal(nextPollDelayMs(input({ jitter: 1 })), 1.15 * 2.4 * H);
    assert.equal(nextPollDelayMs(input({ jitter: 1, maxIntervalMs: 2.5 * H })), 2.5 * H);
    assert.throws(() => nextPollDelayMs(input({ jitter: 2 })), /jitter must be a number from 0 to 1/);
  });

  it('nothing left today: the next poll is after 00:00 UTC', () => {
    assert.equal(nextPollDelayMs(input({ now: new Date('2026-12-01T18:00:00Z'), remaining: 0 })), 6 * H);
    assert.equal(nextPollDelayMs(input({ now: new Date('2026-12-01T23:59:30Z'), remaining: 0 })), 60_000);
  });

  it('names the bad input', () => {
    assert.throws(() => nextPollDelayMs(input({ callsPerPoll: 0 })), /callsPerPoll must be a number > 0/);
    assert.throws(
      () => nextPollDelayMs(input({ maxIntervalMs: 1 })),
      /maxIntervalMs must be a number >= minIntervalMs/,
    );
    assert.throws(() => nextPollDelayMs(input({ remaining: NaN })), /remaining must be a number/);
    assert.throws(() => reconcileSlot('a', '1 Dec'), /day must be YYYY-MM-DD/);
  });

  it('spreads full reconciles over the day by account, at the same time every day', () => {
    const a1 = reconcileSlot('acme', '2026-12-01');
    const a2 = reconcileSlot('acme', '2026-12-02');
    assert.equal(a2.getTime() - a1.getTime(), DAY_MS);
    assert.equal(a1.getTime() - MIDNIGHT.getTime(), Math.floor((hash32('acme') / 2 ** 32) * DAY_MS));
    // sha256('abc') starts ba7816bf
    assert.equal(hash32('abc'), 0xba7816bf);
    const perHour = new Array<number>(24).fill(0);
    for (let i = 0; i < 1000; i++) {
      const s = reconcileSlot(`account-${i}`, '2026-12-01');
      perHour[Math.floor((s.getTime() - MIDNIGHT.getTime()) / H)]! += 1;
    }
    // 1000 / 24 = 41.7 per hour on average (binomial: sd 6.3); none below half, none above 1.7x that
    assert.ok(Math.min(...perHour) >= 20 && Math.max(...perHour) <= 70, perHour.join(','));
  });

  it('a reconcile is due once its slot passed and none ran since', () => {
    const slot = reconcileSlot('acme', '2026-12-01');
    const before = new Date(slot.getTime() - 1);
    const after = new Date(slot.getTime() + 1);
    const yesterdayAfterSlot = new Date(slot.getTime() - DAY_MS + 5).toISOString();
    assert.equal(reconcileDue('acme', yesterdayAfterSlot, before), false);
    assert.equal(reconcileDue('acme', yesterdayAfterSlot, after), true);
    assert.equal(reconcileDue('acme', after.toISOString(), new Date(slot.getTime() + 1000)), false);
    assert.equal(reconcileDue('acme', null, before), true);
    assert.equal(reconcileDue('acme', new Date(slot.getTime() - 2 * DAY_MS).toISOString(), before), true, 'missed');
  });
});
