/**
 * HubSpot per-address writes keep the ten-secondly window saturated and never exceed it: requests take time
 * (the fake HubSpot serves one at a time, 20 ms each, on the injected clock) and HubSpot answers
 * X-HubSpot-RateLimit-Remaining. Pausing a whole interval whenever Remaining reached 0 idled the limiter for
 * the length of each burst (2 s per window here; 15 % at 100k contacts against the emulator).
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import { FakeHubSpot, deliver, open, optOut, privateApp } from './fixtures/harness';

const WINDOW = 10_000;
const LIMIT = 100;

/** The most arrivals in any window of `ms` (a window ending at each arrival). */
function busiest(times: readonly number[], ms: number): number {
  let best = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while (times[j]! <= times[i]! - ms) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

describe('hubspot connector: limiter saturation (per-address writes)', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  for (const foreign of [0, 3]) {
    it(`300 per-address writes at ${LIMIT}/10 s${foreign ? ` with ${foreign} requests of another client in HubSpot's window` : ''}: at most ${LIMIT} per window, ${foreign ? 'every address written' : 'no 429, within 1.05x of the floor'}`, async () => {
      const hs = new FakeHubSpot().install();
      const emails = Array.from({ length: 300 }, (_, i) => `s${i}@example.com`);
      for (const e of emails) hs.addContact(e);
      const h = open(
        privateApp({ rateLimit: { per10Seconds: LIMIT }, suppression: { type: 'unsubscribe-all', batch: 'never' } }),
      );
      hs.window = { max: LIMIT, windowMs: WINDOW, serviceMs: 20, clock: h.clock };
      const start = h.clock.now().getTime();
      for (let i = 0; i < foreign; i++) hs.arrivals.push(start - 1_000);
      const report = await deliver(
        h.target,
        emails.map((e) => optOut(e)),
      );
      assert.ok(
        report.outcomes.every((o) => o.kind === 'applied'),
        JSON.stringify(report.outcomes.find((o) => o.kind !== 'applied')),
      );
      const throttled = hs.requests.length - hs.arrivals.length + foreign;
      assert.ok(busiest(hs.arrivals, WINDOW) <= LIMIT, `busiest window ${busiest(hs.arrivals, WINDOW)}`);
      if (foreign > 0) {
        // HubSpot's window is fuller than ours: the requests already in flight (at most the 4 workers) may meet
        // a 429 before Remaining: 0 arrives; from then on the difference is counted and nothing more is refused
        assert.ok(throttled <= 4, `${throttled} x 429`);
        return;
      }
      assert.strictEqual(throttled, 0, 'no request refused with 429');
      const calls = hs.arrivals.length - foreign;
      const last = hs.arrivals[hs.arrivals.length - 1]! - start;
      // the floor: the last of C calls cannot start before (ceil((C + foreign) / LIMIT) - 1) windows
      const floor = (Math.ceil((calls + foreign) / LIMIT) - 1) * WINDOW;
      assert.ok(last >= floor, `last request at ${last} ms, floor ${floor} ms`);
      assert.ok(last <= 1.05 * floor, `last request at ${last} ms: more than 1.05 x the floor of ${floor} ms`);
    });
  }
});
