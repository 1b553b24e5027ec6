/**
 * Issue 12 items 3-5 at the HTTP level (nock): the narrower reconcile's exact queries, the export's requests and
 * its quota stop, and the batched daily-usage record (what a crash may lose; durable at the end and before a
 * quota stop). nock throws on any request it was not told about.
 */
import assert from 'assert';
import nock from 'nock';
import { createConstantContactSource } from '../../src/source/constant-contact';
import { KV_DAILY_USAGE, USAGE_FLUSH_EVERY } from '../../src/source/constant-contact/client';
import { parseExportCsv } from '../../src/source/constant-contact/export';
import { RECHECK_MAX } from '../../src/source/constant-contact/reconcile';
import { QuotaExceeded, ReconcilePlan } from '../../src/source/types';
import { testConfig, testRegistry } from '../helpers';
import { API, kvWithAccessToken, makeConfig, makeDeps, unsubscribed } from '../fixtures/cc/helpers';

const TOKEN = 'access-token-A0-valid';
const page = (contacts: unknown[], next?: string): Record<string, unknown> =>
  next ? { contacts, _links: { next: { href: next } } } : { contacts };
const plan = (known: string[], deletedSince: Date | null, knownDeleted: string[] = []): ReconcilePlan => ({
  knownActive: new Set(known),
  deletedSince,
  knownDeleted: (emails) => new Set(emails.filter((e) => knownDeleted.includes(e))),
});
const usage = (kv: { get(k: string): string | null }): number =>
  (JSON.parse(kv.get(KV_DAILY_USAGE) ?? '{"used":0}') as { used: number }).used;

describe('cc perf: narrower reconcile, export, batched usage (nock)', () => {
  afterEach(() => nock.cleanAll());

  describe('item 3: the reconcile reads the live set and only recent deleted contacts', () => {
    it('asks status=unsubscribed, then status=deleted&optout_after=<last reconcile>; never status=unsubscribed,deleted', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(makeConfig(), deps);
      const since = new Date('2025-12-31T09:50:00Z');
      const scope = nock(API)
        .get('/v3/contacts/counts')
        .reply(200, { unsubscribed: 2 })
        .get('/v3/contacts')
        .query({ status: 'unsubscribed', limit: '500', include_count: 'true' })
        .reply(200, { ...page([unsubscribed('a@example.com'), unsubscribed('b@example.com')]), contacts_count: 2 })
        .get('/v3/contacts')
        .query({ status: 'deleted', optout_after: since.toISOString(), limit: '500', include_count: 'true' })
        .reply(200, page([unsubscribed('gone@example.com', { deleted_at: '2026-01-01' })]));
      const seen: string[] = [];
      await source.unsubscribedCount();
      const stats = await source.scanUnsubscribed(
        (p) => void seen.push(...p.contacts.map((c) => c.email)),
        plan(['a@example.com', 'old-deleted@example.com'], since, ['old-deleted@example.com']),
      );
      assert.ok(scope.isDone(), scope.pendingMocks().join(', '));
      assert.deepStrictEqual(seen, ['a@example.com', 'b@example.com', 'gone@example.com']);
      assert.strictEqual(stats.pages, 2);
      assert.strictEqual(deps.callCounts.get('constant-contact'), 3, 'counts read once (by the engine), two pages');
    });

    it('with no earlier reconcile: status=deleted&optout_before=<now>; unaccounted known opt-outs are looked up by email', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(makeConfig(), deps);
      const scope = nock(API)
        .get('/v3/contacts/counts')
        .reply(200, { unsubscribed: 1 })
        .get('/v3/contacts')
        .query({ status: 'unsubscribed', limit: '500', include_count: 'true' })
        .reply(200, page([unsubscribed('a@example.com')]))
        .get('/v3/contacts')
        .query({
          status: 'deleted',
          optout_before: deps.clock.now().toISOString(),
          limit: '500',
          include_count: 'true',
        })
        .reply(200, page([]))
        .get('/v3/contacts')
        .query({ email: 'x@example.com', status: 'all', limit: '500', include_count: 'true' })
        .reply(200, page([unsubscribed('x@example.com', { deleted_at: '2026-01-01' })]));
      const seen: string[] = [];
      await source.scanUnsubscribed(
        (p) => void seen.push(...p.contacts.map((c) => c.email)),
        plan(['a@example.com', 'x@example.com'], null),
      );
      assert.ok(scope.isDone(), scope.pendingMocks().join(', '));
      assert.deepStrictEqual(seen, ['a@example.com', 'x@example.com']);
    });

    it(`more than ${RECHECK_MAX} unaccounted known opt-outs: every deleted contact is read once instead of one look-up each`, async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(makeConfig(), deps);
      const known = Array.from({ length: RECHECK_MAX + 1 }, (_, i) => `k${i}@example.com`);
      const scope = nock(API)
        .get('/v3/contacts/counts')
        .reply(200, { unsubscribed: 0 })
        .get('/v3/contacts')
        .query({ status: 'unsubscribed', limit: '500', include_count: 'true' })
        .reply(200, page([]))
        .get('/v3/contacts')
        .query((q) => q['status'] === 'deleted' && typeof q['optout_after'] === 'string')
        .reply(200, page([]))
        .get('/v3/contacts')
        .query({ status: 'deleted', limit: '500', include_count: 'true' })
        .reply(200, page(known.map((e) => unsubscribed(e, { deleted_at: '2026-01-01' }))));
      await source.scanUnsubscribed(() => undefined, plan(known, new Date('2025-12-31T00:00:00Z')));
      assert.ok(scope.isDone(), scope.pendingMocks().join(', '));
      assert.strictEqual(deps.callCounts.get('constant-contact'), 4);
    });
  });

  describe('item 4: the export', () => {
    const exportConfig = () => makeConfig({ detection: { ...makeConfig().detection, reconcileVia: 'export' } });
    const CSV =
      'email_address,email_optout_date,email_optout_source,email_optout_reason\r\nA@Example.com,2024-06-08T01:31:05Z,Contact,Too many\r\nb@example.com,2024-06-09T01:31:05Z,Account,\r\n';

    it('POSTs the contract body, polls the activity, downloads results.href, and hands rows on as pages', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(exportConfig(), deps, { exportTiming: { pollMs: 1000 } });
      let body: unknown;
      const scope = nock(API)
        .get('/v3/contacts/counts')
        .reply(200, { unsubscribed: 2 })
        .post('/v3/activities/contact_exports', (b) => ((body = b), true))
        .reply(201, { activity_id: 'act-1', state: 'initialized' })
        .get('/v3/activities/act-1')
        .reply(200, { activity_id: 'act-1', state: 'processing' })
        .get('/v3/activities/act-1')
        .reply(200, {
          activity_id: 'act-1',
          state: 'completed',
          status: { items_total_count: 2 },
          _links: { results: { href: '/v3/contact_exports/file-1' } },
        })
        .get('/v3/contact_exports/file-1')
        .reply(200, CSV, { 'content-type': 'text/csv' })
        .get('/v3/contacts')
        .query((q) => q['status'] === 'deleted')
        .reply(200, page([]));
      const seen: string[] = [];
      const stats = await source.scanUnsubscribed(
        (p) => void seen.push(...p.contacts.map((c) => `${c.email}|${c.optedOutAt}|${c.source}`)),
        plan([], null),
      );
      assert.ok(scope.isDone(), scope.pendingMocks().join(', '));
      assert.deepStrictEqual(body, {
        status: 'unsubscribed',
        fields: ['email_address', 'email_optout_date', 'email_optout_source', 'email_optout_reason'],
      });
      assert.deepStrictEqual(seen, [
        'a@example.com|2024-06-08T01:31:05Z|Contact',
        'b@example.com|2024-06-09T01:31:05Z|Account',
      ]);
      assert.strictEqual(stats.contacts, 2);
      assert.ok(
        deps.clock.slept.includes(1000) && deps.clock.slept.includes(2000),
        `polls back off: ${JSON.stringify(deps.clock.slept)}`,
      );
    });

    it('quota_exceeded while polling: QuotaExceeded stops the reconcile, nothing is handed on, the usage is on disk', async () => {
      const kv = kvWithAccessToken(TOKEN);
      const deps = makeDeps(kv);
      const source = createConstantContactSource(exportConfig(), deps, { exportTiming: { pollMs: 10 } });
      nock(API)
        .get('/v3/contacts/counts')
        .reply(200, { unsubscribed: 2 })
        .post('/v3/activities/contact_exports')
        .reply(201, { activity_id: 'act-2', state: 'processing' })
        .get('/v3/activities/act-2')
        .reply(429, [{ error_key: 'quota_exceeded', error_message: 'daily quota' }]);
      let pages = 0;
      await assert.rejects(
        source.scanUnsubscribed(() => void pages++, plan(['a@example.com'], null)),
        (e: unknown) => e instanceof QuotaExceeded,
      );
      assert.strictEqual(pages, 0);
      assert.strictEqual(usage(kv), 10_000, 'the spent quota is remembered');
    });

    it('a download that is not CSV, or has no email column, is doubt: pages are read instead', async () => {
      assert.throws(() => parseExportCsv('"unterminated,quote\n', new Date()), /not CSV/);
      assert.throws(() => parseExportCsv('first_name,last_name\r\nA,B\r\n', new Date()), /no email address column/);
      const r = parseExportCsv(
        'Email Address,Email Opt-Out Date\r\nok@example.com,2024-01-01T00:00:00Z\r\nbad@example.com,9999-12-31T00:00:00Z\r\nshort\r\n',
        new Date('2026-01-01T00:00:00Z'),
      );
      assert.deepStrictEqual(
        r.contacts.map((c) => c.email),
        ['ok@example.com'],
      );
      assert.deepStrictEqual(
        r.quarantine.map((q) => q.reason.replace(/: .*/, '')),
        ['export line 3', 'export line 4'],
      );
      assert.match(r.quarantine[0]!.reason, /a date in the future/);
      assert.match(r.quarantine[1]!.reason, /1 columns, the header has 2/);
    });
  });

  describe('item 4: source.detection.reconcileVia in the config', () => {
    it('defaults to auto; another value is a config error naming the field', () => {
      const targets = [{ name: 'crm', crm: 'cc-perf-config' }];
      assert.strictEqual(testConfig(testRegistry(), targets).source.detection.reconcileVia, 'auto');
      assert.strictEqual(
        testConfig(testRegistry(), targets, { source: { detection: { reconcileVia: 'export' } } }).source.detection
          .reconcileVia,
        'export',
      );
      assert.throws(
        () => testConfig(testRegistry(), targets, { source: { detection: { reconcileVia: 'csv' } } }),
        /source\.detection\.reconcileVia/,
      );
    });
  });

  describe('item 5: the daily-usage record is written in batches', () => {
    const PAGES = 60;
    function pages(n: number): nock.Scope {
      const s = nock(API);
      for (let i = 1; i <= n; i++) {
        s.get('/v3/contacts')
          .query(true)
          .reply(200, page([unsubscribed(`p${i}@example.com`)], i < n ? `/v3/contacts?cursor=c${i + 1}` : undefined));
      }
      return s;
    }

    it(`a crash loses at most ${USAGE_FLUSH_EVERY - 1} requests of the count; the count is exact when the scan ends`, async () => {
      const kv = kvWithAccessToken(TOKEN);
      const deps = makeDeps(kv);
      const source = createConstantContactSource(makeConfig(), deps);
      pages(PAGES);
      let requests = 0;
      let worstLag = 0;
      await source.scanWindow(new Date('2025-12-31T00:00:00Z'), new Date('2026-01-01T09:00:00Z'), () => {
        requests += 1;
        // what a crash right now would leave on disk
        worstLag = Math.max(worstLag, requests - usage(kv));
      });
      assert.ok(worstLag <= USAGE_FLUSH_EVERY - 1, `lag ${worstLag}`);
      assert.strictEqual(usage(kv), PAGES, 'durable when the operation ends');
      const writes = kv.writes.filter(([k]) => k === KV_DAILY_USAGE).length;
      assert.ok(
        writes <= Math.ceil(PAGES / USAGE_FLUSH_EVERY) + 1,
        `${writes} writes for ${PAGES} requests (one per request before)`,
      );
    });

    it('written before our own budget stops detection (QuotaExceeded)', async () => {
      const kv = kvWithAccessToken(TOKEN);
      const deps = makeDeps(kv);
      const source = createConstantContactSource(makeConfig({ rateLimit: { perSecond: 4, dailyBudget: 30 } }), deps);
      pages(31); // the 31st is never requested
      let seenAtStop = -1;
      await assert.rejects(
        source
          .scanWindow(new Date('2025-12-31T00:00:00Z'), new Date('2026-01-01T09:00:00Z'), () => undefined)
          .catch((e: unknown) => {
            seenAtStop = usage(kv);
            throw e;
          }),
        QuotaExceeded,
      );
      assert.strictEqual(seenAtStop, 30);
    });

    it('also written after USAGE_FLUSH_MS even when few requests are made', async () => {
      const kv = kvWithAccessToken(TOKEN);
      const deps = makeDeps(kv);
      const source = createConstantContactSource(makeConfig(), deps);
      pages(3);
      const onDisk: number[] = [];
      await source.scanWindow(new Date('2025-12-31T00:00:00Z'), new Date('2026-01-01T09:00:00Z'), () => {
        onDisk.push(usage(kv));
        deps.clock.advance(6_000);
      });
      assert.deepStrictEqual(onDisk, [1, 2, 3]);
    });
  });
});
