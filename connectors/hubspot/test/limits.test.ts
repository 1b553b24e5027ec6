/**
 * HubSpot limits and failures through the real SDK over HTTP (nock): every 429 policy, 5xx backoff,
 * network errors, 401, and secrets kept out of messages and logs.
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import {
  TOKEN,
  FakeHubSpot,
  P,
  byEmail,
  deliver,
  deliverLeft,
  isPath,
  kinds,
  open,
  optOut,
  privateApp,
  rateLimit429,
} from './fixtures/harness';

describe('hubspot connector: limits and failures', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  it('TEN_SECONDLY_ROLLING 429 on an SDK call (lookup): waits (limiter pause) and retries', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.script({ match: isPath(P.read), status: 429, body: rateLimit429('TEN_SECONDLY_ROLLING') });
    const h = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    const report = await deliver(h.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });
    assert.strictEqual(hs.count(isPath(P.read)), 2);
    assert.ok(
      h.clock.slept.some((ms) => ms >= 9_000 && ms <= 10_000),
      `waited ~10 s: ${h.clock.slept.join(',')}`,
    );
    assert.strictEqual(h.count(), hs.requests.length, 'every request counted, none retried by the SDK itself');
  });

  it('SECONDLY 429 on a v4 apiRequest write: waits ~1 s and retries', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.script({ match: isPath(P.singleAll), status: 429, body: rateLimit429('SECONDLY') });
    const h = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    const report = await deliver(h.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });
    assert.strictEqual(hs.count(isPath(P.singleAll)), 2);
    assert.ok(
      h.clock.slept.some((ms) => ms > 0 && ms <= 1_000),
      `waited ~1 s: ${h.clock.slept.join(',')}`,
    );
    assert.strictEqual(h.count(), 3);
  });

  it('a 429 honours X-HubSpot-RateLimit-Interval-Milliseconds, and Remaining: 0 holds the next request', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.script({
      match: isPath(P.batchAll),
      status: 429,
      body: rateLimit429('TEN_SECONDLY_ROLLING'),
      headers: {
        'X-HubSpot-RateLimit-Interval-Milliseconds': '4000',
        'X-HubSpot-RateLimit-Max': '100',
        'X-HubSpot-RateLimit-Remaining': '0',
      },
    });
    const h = open(privateApp());
    const report = await deliver(h.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });
    assert.ok(h.clock.slept.includes(4000), `paused 4000 ms: ${h.clock.slept.join(',')}`);
    assert.ok(!h.clock.slept.includes(10_000));
  });

  it('the per-target limiter paces requests to rateLimit.per10Seconds', async () => {
    const hs = new FakeHubSpot().install();
    for (let i = 0; i < 5; i++) hs.addContact(`p${i}@example.com`);
    const h = open(
      privateApp({ rateLimit: { per10Seconds: 2 }, suppression: { type: 'unsubscribe-all', batch: 'never' } }),
    );
    const start = h.clock.now().getTime();
    const report = await deliver(
      h.target,
      Array.from({ length: 5 }, (_, i) => optOut(`p${i}@example.com`)),
    );
    assert.ok(report.outcomes.every((o) => o.kind === 'applied'));
    // 6 requests at 2 per 10 s: the last one cannot start before 20 s have passed.
    assert.ok(h.clock.now().getTime() - start >= 20_000, `elapsed ${h.clock.now().getTime() - start} ms`);
  });

  it('DAILY 429 stops the target: unhandled emails failed-retryable, halt quota with retryAt next midnight; no more requests', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.addContact('b@example.com');
    hs.addContact('s@example.com', true);
    hs.script({ match: isPath(P.batchAll), status: 429, body: rateLimit429('DAILY') });
    const h = open(privateApp());
    const report = await deliver(h.target, [
      optOut('a@example.com'),
      optOut('b@example.com'),
      optOut('s@example.com'),
      optOut('x@example.com'),
    ]);
    assert.deepStrictEqual(kinds(report), {
      'a@example.com': 'failed-retryable',
      'b@example.com': 'failed-retryable',
      's@example.com': 'already-suppressed',
      'x@example.com': 'not-found',
    });
    assert.ok(report.halt);
    assert.strictEqual(report.halt.kind, 'quota');
    assert.strictEqual(report.halt.retryAt, '2026-03-11T00:00:00.000Z');
    assert.match(byEmail(report).get('a@example.com')!.message!, /daily/i);
    assert.strictEqual(hs.count(isPath(P.batchAll)), 1, 'a DAILY 429 is not retried');
    assert.strictEqual(hs.count(isPath(P.singleAll)), 0, 'and is not a reason to fall back to per-email');

    const before = hs.requests.length;
    const again = await deliver(h.target, [optOut('a@example.com')]);
    assert.strictEqual(again.halt?.kind, 'quota');
    assert.strictEqual(again.outcomes[0]!.kind, 'failed-retryable');
    assert.strictEqual(hs.requests.length, before, 'the rest of the day costs no request');
  });

  it('DAILY 429 on the lookup still returns a report (outbox kept: every email failed-retryable)', async () => {
    const hs = new FakeHubSpot().install();
    hs.script({ match: isPath(P.read), status: 429, body: rateLimit429('DAILY') });
    const { target } = open(privateApp());
    const report = await deliver(target, [optOut('a@example.com'), optOut('b@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'failed-retryable', 'b@example.com': 'failed-retryable' });
    assert.strictEqual(report.halt?.kind, 'quota');
  });

  it('DAILY 429 part-way through per-email writes keeps what was applied', async () => {
    const hs = new FakeHubSpot().install();
    const emails = Array.from({ length: 12 }, (_, i) => `w${i}@example.com`);
    for (const e of emails) hs.addContact(e);
    hs.script({ match: isPath(/w5@example\.com/), status: 429, body: rateLimit429('DAILY') });
    const { target } = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    const report = await deliver(
      target,
      emails.map((e) => optOut(e)),
    );
    assert.strictEqual(report.halt?.kind, 'quota');
    const k = kinds(report);
    assert.strictEqual(k['w5@example.com'], 'failed-retryable');
    const applied = emails.filter((e) => k[e] === 'applied');
    assert.ok(applied.length >= 5, `applied before the stop: ${applied.length}`);
    for (const e of applied) assert.ok(hs.unsubscribed.get(e)?.has('ALL'), `${e} applied means written`);
    assert.ok(emails.every((e) => k[e] === 'applied' || k[e] === 'failed-retryable'));
    assert.ok(hs.count(isPath(P.singleAll)) < emails.length, 'stopped before the end');
  });

  it('5xx: retried with backoff, then succeeds', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.script({ match: isPath(P.read), status: 502, body: { status: 'error', message: 'Bad gateway' }, times: 2 });
    hs.script({ match: isPath(P.batchAll), status: 500, body: { status: 'error', message: 'internal error' } });
    const h = open(privateApp());
    const report = await deliver(h.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });
    assert.strictEqual(hs.count(isPath(P.read)), 3);
    assert.strictEqual(hs.count(isPath(P.batchAll)), 2);
    assert.strictEqual(h.clock.slept.filter((ms) => ms > 0).length, 3, 'one backoff sleep per retry');
    assert.strictEqual(h.count(), 5);
  });

  it('5xx on a write after retries are exhausted: that email is failed-retryable, the others go on', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.addContact('down@example.com');
    hs.script({
      match: isPath(/down@example\.com/),
      status: 503,
      body: { status: 'error', message: 'Service unavailable' },
      times: 100,
    });
    const h = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    const report = await deliver(h.target, [optOut('a@example.com'), optOut('down@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied', 'down@example.com': 'failed-retryable' });
    assert.match(byEmail(report).get('down@example.com')!.message!, /503/);
    assert.strictEqual(hs.count(isPath(/down@example\.com/)), 6, 'DEFAULT_RETRY: 6 attempts');
    assert.strictEqual(report.halt, undefined);
  });

  it('5xx on the lookup after retries: the target is unavailable (Left, nothing delivered)', async () => {
    const hs = new FakeHubSpot().install();
    hs.script({ match: isPath(P.read), status: 500, body: { status: 'error', message: 'internal' }, times: 100 });
    const { target } = open(privateApp());
    const err = await deliverLeft(target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'unavailable');
  });

  it('network errors (connection refused) are retried, then the target is unavailable', async () => {
    // A closed loopback port: a real ECONNREFUSED through node-fetch (nock's replyWithError hangs node-fetch 2 here).
    const h = open(privateApp({ baseUrl: 'http://127.0.0.1:9' }));
    const err = await deliverLeft(h.target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'unavailable');
    assert.match(err.message, /ECONNREFUSED/);
    assert.strictEqual(h.count(), 6, 'DEFAULT_RETRY: 6 attempts');
    assert.strictEqual(h.clock.slept.filter((ms) => ms > 0).length, 5, 'backoff between attempts');
  });

  it('401 with a private app token: TargetHalt auth, token absent from the message and the logs', async () => {
    const hs = new FakeHubSpot().install();
    hs.validTokens.add('some-other-token');
    const h = open(privateApp());
    const err = await deliverLeft(h.target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'auth');
    assert.match(err.message, /auth\.accessToken/);
    assert.ok(!err.message.includes(TOKEN));
    assert.strictEqual(hs.requests.length, 1, 'a 401 is not retried with the same token');
    assert.ok(h.logger.lines.length > 0);
    assert.ok(!h.logger.lines.some((l) => l.includes(TOKEN)), 'no log line holds the token');
  });

  it('a 403 on the lookup halts with the missing scope named', async () => {
    const hs = new FakeHubSpot().install();
    hs.script({
      match: isPath(P.read),
      status: 403,
      body: {
        status: 'error',
        message: "This app hasn't been granted all required scopes",
        category: 'MISSING_SCOPES',
        correlationId: 'x',
        context: { requiredScopes: ['crm.objects.contacts.read'] },
      },
    });
    const { target } = open(privateApp());
    const err = await deliverLeft(target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'auth');
    assert.match(err.message, /crm\.objects\.contacts\.read/);
  });

  it('secrets echoed by HubSpot never reach outcome messages or logs', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('a@example.com');
    hs.script({
      match: isPath(P.singleAll),
      status: 400,
      body: {
        status: 'error',
        message: `Bad request with Authorization: Bearer ${TOKEN} for a@example.com`,
        category: 'VALIDATION_ERROR',
        correlationId: 'x',
      },
    });
    const h = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    const report = await deliver(h.target, [optOut('a@example.com')]);
    const o = report.outcomes[0]!;
    assert.strictEqual(o.kind, 'failed-permanent');
    assert.ok(o.message!.includes('[redacted]'), o.message);
    assert.ok(!JSON.stringify(report).includes(TOKEN));
    assert.ok(!h.logger.lines.some((l) => l.includes(TOKEN)));
  });
});
