import { strict as assert } from 'assert';
import { CHECKPOINT_LAST_FULL, CHECKPOINT_WINDOW, Engine, EngineDeps, latestReconcileSlot } from '../../src/engine';
import { hash32 } from '../../src/fleet/scheduler';
import { openStore } from '../../src/store/sqlite';
import { Config } from '../../src/config';

const HOUR = 3600_000;

function engineAt(now: Date, phase: number | undefined, lastFull: string): Engine {
  const store = openStore(':memory:');
  store.setCheckpoint(CHECKPOINT_WINDOW, now.toISOString(), now.toISOString());
  store.setCheckpoint(CHECKPOINT_LAST_FULL, lastFull, now.toISOString());
  const config = { source: { detection: { mode: 'incremental', reconcileEveryHours: 24 } }, targets: [] };
  const deps = {
    config: config as unknown as Config,
    store,
    registry: {} as EngineDeps['registry'],
    source: () => {
      throw new Error('not used');
    },
    clock: { now: () => now, sleep: async () => undefined },
    logger: {
      child: () => deps.logger,
      debug() {},
      info() {},
      warn() {},
      error() {},
    } as unknown as EngineDeps['logger'],
    ...(phase === undefined ? {} : { reconcilePhase: phase }),
  } as EngineDeps;
  return new Engine(deps);
}

describe('fleet: full reconciles spread over the period by account', () => {
  it('an account reconciles once its own slot of the period passed, not 24 h after the last one', async () => {
    const day = Date.parse('2026-12-01T00:00:00Z');
    // phase 0.75: the slot is 18:00 UTC every day
    const last = new Date(day - 2 * HOUR).toISOString(); // yesterday 22:00, after yesterday's slot
    assert.equal(await engineAt(new Date(day + 17 * HOUR), 0.75, last).fullReconcileDue(false), false);
    assert.equal(await engineAt(new Date(day + 18 * HOUR + 1000), 0.75, last).fullReconcileDue(false), true);
    // without a phase: 24 h after the last one (22:00), the old rule
    assert.equal(await engineAt(new Date(day + 18 * HOUR + 1000), undefined, last).fullReconcileDue(false), false);
    assert.equal(await engineAt(new Date(day + 22 * HOUR + 1000), undefined, last).fullReconcileDue(false), true);
    // done after today's slot: not due again until tomorrow's
    const doneToday = new Date(day + 18 * HOUR + 5000).toISOString();
    assert.equal(await engineAt(new Date(day + 30 * HOUR), 0.75, doneToday).fullReconcileDue(false), false);
    assert.equal(await engineAt(new Date(day + 42 * HOUR + 1000), 0.75, doneToday).fullReconcileDue(false), true);
  });

  it('1,000 accounts started together reconcile spread over the day (no hour holds more than twice its share)', () => {
    const day = Date.parse('2026-12-01T00:00:00Z');
    const perHour = new Array(24).fill(0);
    for (let i = 0; i < 1000; i++) {
      const phase = hash32(`account-${i}`) / 2 ** 32;
      const slot = latestReconcileSlot(day + 24 * HOUR - 1, 24 * HOUR, phase);
      assert.ok(slot >= day && slot < day + 24 * HOUR, `slot of account-${i} in the day`);
      perHour[Math.floor((slot - day) / HOUR)]++;
    }
    assert.ok(Math.max(...perHour) <= 2 * (1000 / 24), `per hour: ${perHour.join(',')}`);
    assert.ok(Math.min(...perHour) >= 0.4 * (1000 / 24), `per hour: ${perHour.join(',')}`);
  });
});
