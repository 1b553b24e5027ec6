import { strict as assert } from 'assert';
import { coreHttp } from '../../src/capabilities';
import { withRetry } from '../../src/http/retry';

const clock = {
  now: () => new Date(),
  sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, Math.min(ms, 5))),
};

describe('withRetry and the run stop signal', () => {
  it('makes no further attempt once the signal is aborted (a lost fleet lease sends nothing more)', async () => {
    const ctl = new AbortController();
    let attempts = 0;
    await assert.rejects(
      withRetry(
        async () => {
          attempts++;
          ctl.abort(new Error('lease lost'));
          throw new Error('HTTP 503');
        },
        () => ({ retry: true, reason: '503' }),
        { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 1 },
        clock,
        { signal: ctl.signal },
      ),
      /HTTP 503/,
    );
    assert.equal(attempts, 1);
  });

  it('without a signal it retries as before', async () => {
    let attempts = 0;
    const out = await withRetry(
      async () => {
        if (++attempts < 3) throw new Error('HTTP 503');
        return 'ok';
      },
      () => ({ retry: true, reason: '503' }),
      { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 1 },
      clock,
    );
    assert.equal(out, 'ok');
    assert.equal(attempts, 3);
  });
});

describe("the core's caps.http.retry and the run stop signal", () => {
  it('stops retrying once the run is stopped (Salesforce and plugins retry through caps.http.retry)', async () => {
    const ctl = new AbortController();
    const http = coreHttp(clock, () => ctl.signal);
    let attempts = 0;
    await assert.rejects(
      http.retry(
        async () => {
          attempts++;
          if (attempts === 2) ctl.abort();
          throw new Error('HTTP 503');
        },
        () => ({ retry: true, reason: '503' }),
        { maxAttempts: 6, baseDelayMs: 1, maxDelayMs: 1 },
      ),
      /HTTP 503/,
    );
    assert.equal(attempts, 2);
  });
});
