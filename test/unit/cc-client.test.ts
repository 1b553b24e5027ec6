/**
 * Constant Contact HTTP client: pagination (host-relative /v3 links, proxy prefixes), throttling, daily
 * quota, 5xx retries, the persisted daily budget, error bodies, and secrets kept out of messages.
 * nock throws on any request it was not told about, so a wrong URL (/v3/v3/...) fails the test.
 */
import assert from 'assert';
import nock from 'nock';
import { createConstantContactSource, resolveNextHref } from '../../src/source/constant-contact';
import { QuotaExceeded, SourceError, SourcePage } from '../../src/source/types';
import { API, kvWithAccessToken, makeConfig, makeDeps, unsubscribed } from '../fixtures/cc/helpers';

const TOKEN = 'access-token-A0-valid';

function page(contacts: unknown[], next?: string): Record<string, unknown> {
  return next ? { contacts, _links: { next: { href: next } } } : { contacts };
}

describe('cc client', () => {
  afterEach(() => nock.cleanAll());

  describe('resolveNextHref', () => {
    it('joins a /v3 host-relative link to the origin, not to the base URL', () => {
      assert.strictEqual(
        resolveNextHref('https://api.cc.email/v3', '/v3/contacts?cursor=bGltaXQ9MSZuZXh0PTI='),
        'https://api.cc.email/v3/contacts?cursor=bGltaXQ9MSZuZXh0PTI=',
      );
    });
    it('replaces the /v3 prefix with the path of a proxy base URL', () => {
      assert.strictEqual(
        resolveNextHref('http://proxy.local:8080/cc/v3', '/v3/contacts?cursor=abc'),
        'http://proxy.local:8080/cc/v3/contacts?cursor=abc',
      );
    });
    it('keeps an absolute link to the configured origin on it (the token never leaves it)', () => {
      assert.strictEqual(
        resolveNextHref('http://proxy.local/cc/v3', 'http://proxy.local/v3/contacts?cursor=abc'),
        'http://proxy.local/cc/v3/contacts?cursor=abc',
      );
      // another origin is refused, not reduced to its path (test/unit/cc-hardening.test.ts)
      assert.throws(
        () => resolveNextHref('http://proxy.local/cc/v3', 'https://api.cc.email/v3/contacts?cursor=abc'),
        SourceError,
      );
    });
    it('leaves a proxy path that does not end in /v3 alone', () => {
      assert.strictEqual(
        resolveNextHref('http://proxy.local/mirror', '/v3/contacts?cursor=abc'),
        'http://proxy.local/v3/contacts?cursor=abc',
      );
    });
  });

  it('follows 3 pages of host-relative /v3 next links without ever requesting /v3/v3', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const paths: string[] = [];
    const scope = nock(API, { reqheaders: { authorization: `Bearer ${TOKEN}` } })
      .get('/v3/contacts')
      .query({ status: 'unsubscribed,deleted', limit: '500', include_count: 'true' })
      .reply(
        200,
        (uri) => (
          paths.push(uri),
          page([unsubscribed('a@example.com')], '/v3/contacts?cursor=Y3Vyc29yMg%3D%3D&limit=500')
        ),
      )
      .get('/v3/contacts')
      .query({ cursor: 'Y3Vyc29yMg==', limit: '500' })
      .reply(
        200,
        (uri) => (
          paths.push(uri),
          page([unsubscribed('b@example.com')], '/v3/contacts?cursor=Y3Vyc29yMw%3D%3D&limit=500')
        ),
      )
      .get('/v3/contacts')
      .query({ cursor: 'Y3Vyc29yMw==', limit: '500' })
      .reply(200, (uri) => (paths.push(uri), page([unsubscribed('c@example.com')])));

    const seen: string[] = [];
    const stats = await source.scanUnsubscribed((p) => {
      seen.push(...p.contacts.map((c) => c.email));
    });

    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`);
    assert.deepStrictEqual(seen, ['a@example.com', 'b@example.com', 'c@example.com']);
    assert.deepStrictEqual(stats, { pages: 3, contacts: 3, skippedNoEmail: 0, quarantined: 0 });
    assert.ok(
      paths.every((p) => !p.includes('/v3/v3')),
      paths.join(' '),
    );
    // the cursor is passed on byte for byte
    assert.strictEqual(paths[1], '/v3/contacts?cursor=Y3Vyc29yMg%3D%3D&limit=500');
    assert.strictEqual(deps.callCounts.get('constant-contact'), 3);
  });

  it('follows next links through a proxy with a path prefix', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig({ apiBaseUrl: 'http://proxy.example/cc/v3' }), deps);
    const scope = nock('http://proxy.example')
      .get('/cc/v3/contacts')
      .query(true)
      .reply(200, page([unsubscribed('a@example.com')], '/v3/contacts?cursor=p2'))
      .get('/cc/v3/contacts')
      .query({ cursor: 'p2' })
      .reply(200, page([unsubscribed('b@example.com')]));
    const stats = await source.scanUnsubscribed(() => undefined);
    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`);
    assert.strictEqual(stats.pages, 2);
  });

  it('awaits onPage before requesting the next page', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const events: string[] = [];
    nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(200, () => (events.push('GET 1'), page([unsubscribed('a@example.com')], '/v3/contacts?cursor=2')))
      .get('/v3/contacts')
      .query({ cursor: '2' })
      .reply(200, () => (events.push('GET 2'), page([])));
    await source.scanUnsubscribed(async (p: SourcePage) => {
      events.push(`onPage start ${p.contacts.length}`);
      await new Promise((r) => setTimeout(r, 20));
      events.push('onPage end');
    });
    assert.deepStrictEqual(events, ['GET 1', 'onPage start 1', 'onPage end', 'GET 2', 'onPage start 0', 'onPage end']);
  });

  it('retries a 429 throttled after waiting at least a second (fake clock), then succeeds', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const scope = nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(429, { error_key: 'throttled', error_message: 'Too many requests per second' })
      .get('/v3/contacts')
      .query(true)
      .reply(200, page([unsubscribed('a@example.com')]));
    const started = Date.now();
    const stats = await source.scanUnsubscribed(() => undefined);
    assert.ok(scope.isDone());
    assert.strictEqual(stats.contacts, 1);
    assert.strictEqual(deps.callCounts.get('constant-contact'), 2);
    assert.ok(
      deps.clock.slept.some((ms) => ms >= 1000),
      `slept ${JSON.stringify(deps.clock.slept)}`,
    );
    assert.ok(Date.now() - started < 1000, 'the fake clock keeps the test fast');
    assert.ok(deps.logger.lines.some((l) => l.includes('retrying request') && l.includes('throttled')));
  });

  it('stops on 429 quota_exceeded with QuotaExceeded (reset at next 00:00 UTC) and does not retry', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN), new Date('2026-03-14T21:30:00Z'));
    const source = createConstantContactSource(makeConfig(), deps);
    const scope = nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(429, [{ error_key: 'quota_exceeded', error_message: 'Daily quota exceeded' }]);
    await assert.rejects(
      source.scanWindow(new Date('2026-03-14T00:00:00Z'), new Date('2026-03-14T21:00:00Z'), () => undefined),
      (err: unknown) => {
        assert.ok(err instanceof QuotaExceeded, String(err));
        assert.strictEqual(err.resetAt.toISOString(), '2026-03-15T00:00:00.000Z');
        assert.match(err.message, /resets at 2026-03-15T00:00:00\.000Z/);
        return true;
      },
    );
    assert.ok(scope.isDone());
    assert.strictEqual(deps.callCounts.get('constant-contact'), 1, 'no retry after quota_exceeded');
    assert.deepStrictEqual(deps.clock.slept, []);
    // remembered across runs: a new source on the same store does not even try today
    assert.deepStrictEqual(JSON.parse(deps.kv.get('daily_usage')!), { day: '2026-03-14', used: 10_000 });
    const again = createConstantContactSource(makeConfig(), deps);
    await assert.rejects(
      again.scanUnsubscribed(() => undefined),
      QuotaExceeded,
    );
    assert.strictEqual(deps.callCounts.get('constant-contact'), 1);
  });

  it('retries a 5xx with backoff, then succeeds', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const scope = nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(503, [{ error_key: 'service_unavailable', error_message: 'Try later' }])
      .get('/v3/contacts')
      .query(true)
      .reply(500, 'Internal error')
      .get('/v3/contacts')
      .query(true)
      .reply(200, page([unsubscribed('a@example.com')]));
    const stats = await source.scanUnsubscribed(() => undefined);
    assert.ok(scope.isDone());
    assert.strictEqual(stats.contacts, 1);
    assert.strictEqual(deps.clock.slept.length, 2);
    assert.ok(deps.clock.slept[1]! > deps.clock.slept[0]!, `backoff grows: ${JSON.stringify(deps.clock.slept)}`);
  });

  it('retries a network reset, then succeeds', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    nock(API).get('/v3/contacts').query(true).replyWithError(reset);
    nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(200, page([unsubscribed('a@example.com')]));
    const stats = await source.scanUnsubscribed(() => undefined);
    assert.strictEqual(stats.contacts, 1);
  });

  it('gives up with a SourceError when retries are exhausted; the message has status, key and message but no secret', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const scope = nock(API)
      .get('/v3/contacts')
      .query(true)
      .times(6)
      .reply(502, [{ error_key: 'bad_gateway', error_message: 'Upstream failed' }]);
    await assert.rejects(
      source.scanUnsubscribed(() => undefined),
      (err: unknown) => {
        assert.ok(err instanceof SourceError, String(err));
        assert.strictEqual(err.status, 502);
        assert.strictEqual(err.errorKey, 'bad_gateway');
        assert.match(err.message, /HTTP 502 bad_gateway: Upstream failed/);
        assert.match(err.message, /gave up after 6 attempts/);
        assert.ok(!err.message.includes(TOKEN));
        return true;
      },
    );
    assert.ok(scope.isDone());
    assert.strictEqual(deps.callCounts.get('constant-contact'), 6);
  });

  it('does not retry a 400 and reports the array error body', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(400, [{ error_key: 'contacts.api.validation.error', error_message: 'optout_after is not a valid date' }]);
    await assert.rejects(
      source.scanUnsubscribed(() => undefined),
      /HTTP 400 contacts\.api\.validation\.error: optout_after is not a valid date/,
    );
    assert.strictEqual(deps.callCounts.get('constant-contact'), 1);
  });

  it('fails the scan when the page envelope is not a contacts page', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    nock(API).get('/v3/contacts').query(true).reply(200, { items: [] });
    await assert.rejects(
      source.scanUnsubscribed(() => undefined),
      (err: unknown) => err instanceof SourceError && /contacts:/.test(err.message),
    );
  });

  it('persists the daily request count and restores it on start (the budget is per application)', async () => {
    const kv = kvWithAccessToken(TOKEN, { daily_usage: JSON.stringify({ day: '2026-01-01', used: 9_998 }) });
    const deps = makeDeps(kv);
    const source = createConstantContactSource(makeConfig(), deps);
    nock(API).get('/v3/contacts/counts').times(2).reply(200, { total: 10, unsubscribed: 3 });
    assert.strictEqual(await source.unsubscribedCount(), 3);
    assert.deepStrictEqual(JSON.parse(kv.get('daily_usage')!), { day: '2026-01-01', used: 9_999 });

    // a later run on the same store: one request left, then the budget stops it without a request
    const later = createConstantContactSource(makeConfig(), deps);
    assert.strictEqual(await later.unsubscribedCount(), 3);
    await assert.rejects(later.unsubscribedCount(), (err: unknown) => {
      assert.ok(err instanceof QuotaExceeded, String(err));
      assert.strictEqual(err.resetAt.toISOString(), '2026-01-02T00:00:00.000Z');
      return true;
    });
    assert.strictEqual(deps.callCounts.get('constant-contact'), 2);

    // yesterday's count does not carry into a new UTC day
    const nextDay = makeDeps(memKvFrom(kv), new Date('2026-01-02T00:00:01Z'));
    nextDay.kv.set('access_expires_at', '2026-01-03T00:00:00.000Z');
    const fresh = createConstantContactSource(makeConfig(), nextDay);
    nock(API).get('/v3/contacts/counts').reply(200, { unsubscribed: 4 });
    assert.strictEqual(await fresh.unsubscribedCount(), 4);
    assert.deepStrictEqual(JSON.parse(nextDay.kv.get('daily_usage')!), { day: '2026-01-02', used: 1 });
  });

  it('holds requests to rateLimit.perSecond through one shared limiter', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig({ rateLimit: { perSecond: 2, dailyBudget: 100 } }), deps);
    nock(API).get('/v3/contacts/counts').times(5).reply(200, { unsubscribed: 1 });
    await Promise.all([1, 2, 3, 4, 5].map(() => source.unsubscribedCount()));
    assert.strictEqual(deps.callCounts.get('constant-contact'), 5);
    // 5 requests at 2/s on a fake clock: at least two waits of the window
    assert.ok(
      deps.clock.now().getTime() - new Date('2026-01-01T10:00:00Z').getTime() >= 2000,
      `slept ${JSON.stringify(deps.clock.slept)}`,
    );
  });
});

function memKvFrom(kv: { map: Map<string, string> }): ReturnType<typeof kvWithAccessToken> {
  const copy = kvWithAccessToken(TOKEN);
  for (const [k, v] of kv.map) copy.map.set(k, v);
  return copy;
}
