/**
 * A hostile or odd HubSpot (nock, through the real SDK): a search refused for one address, search outages,
 * unreadable search answers, write answers that do not show the write, redirects, huge rate-limit waits,
 * secrets at the truncation cut, addresses that are not emails.
 */
import * as assert from 'assert';
import nock from 'nock';
import { isLeft } from 'fp-ts/Either';
import { clearSecrets, registerSecret } from '../../../src/log';
import { parseApiError } from '../../../src/source/constant-contact/codecs';
import { additionalEmails } from '../target';
import {
  BASE,
  SERVICE_KEY,
  P,
  byEmail,
  deliver,
  kinds,
  open,
  optOut,
  rateLimit429,
  serviceKey,
} from './fixtures/harness';
import { deliverEither } from '../../../test/contract';

type Body = {
  inputs?: Array<{ id: string } | string>;
  filterGroups?: Array<{ filters: Array<{ values?: string[] }> }>;
  after?: string;
};

/** Batch read: `primaries` are contacts (not opted out), every other input is not found. */
function read(primaries: Record<string, string> = {}) {
  return nock(BASE)
    .persist()
    .post(P.read)
    .query(true)
    .reply(200, (_uri: string, b: Body) => ({
      status: 'COMPLETE',
      results: (b.inputs ?? [])
        .map((i) => (typeof i === 'string' ? i : i.id))
        .filter((e) => primaries[e] !== undefined)
        .map((e) => ({ id: primaries[e], properties: { email: e, hs_email_optout: 'false' } })),
    }));
}

/** Batch unsubscribe-all answering as the contract does: one result per input. */
function batchAllOk() {
  return nock(BASE)
    .persist()
    .post(P.batchAll)
    .query(true)
    .reply(200, (_uri: string, b: Body) => ({
      status: 'COMPLETE',
      results: (b.inputs as string[]).map((e) => ({ subscriberIdString: e, statuses: [] })),
      startedAt: '2026-03-10T12:00:00Z',
      completedAt: '2026-03-10T12:00:00Z',
    }));
}

const values = (b: Body): string[] => b.filterGroups![0]!.filters[0]!.values!;

describe('hubspot connector: hostile answers', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  describe('search', () => {
    it('a search 400 caused by one address isolates it (failed-permanent with HubSpot message); the others in the chunk and the primary match are written', async () => {
      read({ 'prim@x.com': '1' });
      const searched: string[][] = [];
      nock(BASE)
        .persist()
        .post(P.search)
        .reply((_uri, body) => {
          const v = values(body as Body);
          searched.push(v);
          if (v.some((x) => x.includes(' ')))
            return [400, { status: 'error', category: 'VALIDATION_ERROR', message: 'Invalid filter value' }];
          return [
            200,
            { total: 1, results: [{ id: '7', properties: { hs_additional_emails: 'good1@x.com;good2@x.com' } }] },
          ];
        });
      batchAllOk();
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      const report = await deliver(
        target,
        ['good1@x.com', 'good2@x.com', 'odd name@x.com', 'prim@x.com'].map((e) => optOut(e)),
      );
      assert.deepStrictEqual(kinds(report), {
        'good1@x.com': 'applied',
        'good2@x.com': 'applied',
        'odd name@x.com': 'failed-permanent',
        'prim@x.com': 'applied',
      });
      const odd = byEmail(report).get('odd name@x.com')!;
      assert.match(
        odd.message!,
        /refused the search on hs_additional_emails for this address alone.*Invalid filter value/,
      );
      assert.deepStrictEqual(byEmail(report).get('good1@x.com')!.recordIds, ['7']);
      assert.ok(
        searched.some((v) => v.length === 1 && v[0] === 'odd name@x.com'),
        'bisected down to the refused address',
      );
    });

    it('a search 429 storm defers only the searched addresses; the primary match is written', async () => {
      read({ 'prim@x.com': '1' });
      nock(BASE).persist().post(P.search).reply(429, rateLimit429('SECONDLY'));
      batchAllOk();
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      const report = await deliver(target, [optOut('prim@x.com'), optOut('other@x.com')]);
      assert.deepStrictEqual(kinds(report), { 'prim@x.com': 'applied', 'other@x.com': 'failed-retryable' });
      assert.match(
        byEmail(report).get('other@x.com')!.message!,
        /search on hs_additional_emails failed after retries.*429/,
      );
    });

    it('a search 200 with a non-JSON body is not "no contact": failed-retryable', async () => {
      read();
      nock(BASE).post(P.search).reply(200, 'not json at all', { 'Content-Type': 'text/plain' });
      const { target } = open(serviceKey());
      const report = await deliver(target, [optOut('sec@x.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'failed-retryable');
      assert.match(report.outcomes[0]!.message!, /without a readable JSON body/);
    });

    it('paging.next.after equal to the cursor just sent is an error (failed-retryable), not the end of the results', async () => {
      read();
      nock(BASE)
        .persist()
        .post(P.search)
        .reply(200, (_uri: string, b: Body) =>
          b.after === '0'
            ? { results: [], paging: { next: { after: '0' } } }
            : { results: [{ id: '9', properties: { hs_additional_emails: 'sec@x.com' } }] },
        );
      const { target } = open(serviceKey());
      const report = await deliver(target, [optOut('sec@x.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'failed-retryable');
      assert.match(report.outcomes[0]!.message!, /cursor just sent/);
    });

    it('secondary addresses separated by ";", "," or line breaks, or given as an array, all match (exactly, trimmed, lower-cased)', async () => {
      read();
      nock(BASE)
        .post(P.search)
        .reply(200, {
          results: [
            { id: '1', properties: { hs_additional_emails: 'xa@x.com;a@x.com.au' } },
            { id: '2', properties: { hs_additional_emails: ' B@X.COM ; other@x.com' } },
            { id: '3', properties: { hs_additional_emails: 'c@x.com, d@x.com' } },
            { id: '4', properties: { hs_additional_emails: ['e@x.com'] } },
            { id: '5', properties: { hs_additional_emails: 'f@x.com\nz@x.com' } },
          ],
        });
      batchAllOk();
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      const report = await deliver(
        target,
        ['a@x.com', 'b@x.com', 'c@x.com', 'd@x.com', 'e@x.com', 'f@x.com'].map((e) => optOut(e)),
      );
      assert.deepStrictEqual(kinds(report), {
        'a@x.com': 'not-found',
        'b@x.com': 'applied',
        'c@x.com': 'applied',
        'd@x.com': 'applied',
        'e@x.com': 'applied',
        'f@x.com': 'applied',
      });
      assert.deepStrictEqual(byEmail(report).get('d@x.com')!.recordIds, ['3']);
      assert.deepStrictEqual(additionalEmails('f@x.com\r\nz@x.com'), ['f@x.com', 'z@x.com']);
    });
  });

  describe('write answers', () => {
    const batchCase = async (
      answer: { status: number; body: unknown; headers?: Record<string, string> },
      emails: string[],
    ) => {
      read(Object.fromEntries(emails.map((e, i) => [e, String(i + 1)])));
      nock(BASE)
        .post(P.batchAll)
        .query(true)
        .reply(answer.status, answer.body as nock.Body, answer.headers);
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      return deliver(
        target,
        emails.map((e) => optOut(e)),
      );
    };

    it('batch unsubscribe-all results omitting an address: only the listed one is applied, the other failed-retryable', async () => {
      const report = await batchCase(
        { status: 200, body: { status: 'COMPLETE', results: [{ subscriberIdString: 'A@X.COM', statuses: [] }] } },
        ['a@x.com', 'b@x.com'],
      );
      assert.deepStrictEqual(kinds(report), { 'a@x.com': 'applied', 'b@x.com': 'failed-retryable' });
      assert.match(byEmail(report).get('b@x.com')!.message!, /did not list this address/);
    });

    it('batch unsubscribe-all answered 200 {}: nothing applied (failed-retryable)', async () => {
      const report = await batchCase({ status: 200, body: {} }, ['a@x.com', 'b@x.com']);
      assert.deepStrictEqual(kinds(report), { 'a@x.com': 'failed-retryable', 'b@x.com': 'failed-retryable' });
      assert.match(report.outcomes[0]!.message!, /no results list/);
    });

    it('batch unsubscribe-all answered 200 with an HTML page: failed-retryable', async () => {
      const report = await batchCase(
        { status: 200, body: '<html>Please log in to the proxy</html>', headers: { 'Content-Type': 'text/html' } },
        ['a@x.com'],
      );
      assert.deepStrictEqual(kinds(report), { 'a@x.com': 'failed-retryable' });
      assert.match(report.outcomes[0]!.message!, /non-JSON body/);
    });

    it('batch/write (subscriptions) results omitting a subscription: that email is failed-retryable', async () => {
      read({ 'a@x.com': '1' });
      nock(BASE)
        .post(P.batchWrite)
        .reply(200, {
          status: 'COMPLETE',
          results: [{ subscriberIdString: 'a@x.com', subscriptionId: 111, status: 'UNSUBSCRIBED' }],
        });
      const { target } = open(
        serviceKey({ suppression: { type: 'subscriptions', subscriptionIds: ['111', '222'], batch: 'always' } }),
      );
      const report = await deliver(target, [optOut('a@x.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'failed-retryable');
      assert.match(report.outcomes[0]!.message!, /subscription 222: .*did not list this address/);
    });

    it('per-email unsubscribe-all: 200 {} or HTML is failed-retryable; the documented status envelope is applied', async () => {
      read({ 'a@x.com': '1', 'b@x.com': '2', 'c@x.com': '3' });
      nock(BASE).post(P.single('a@x.com')).query(true).reply(200, {});
      nock(BASE)
        .post(P.single('b@x.com'))
        .query(true)
        .reply(200, '<html>proxy</html>', { 'Content-Type': 'text/html' });
      nock(BASE).post(P.single('c@x.com')).query(true).reply(200, {
        status: 'COMPLETE',
        results: [],
        startedAt: '2026-03-10T12:00:00Z',
        completedAt: '2026-03-10T12:00:00Z',
      });
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(
        target,
        ['a@x.com', 'b@x.com', 'c@x.com'].map((e) => optOut(e)),
      );
      assert.deepStrictEqual(kinds(report), {
        'a@x.com': 'failed-retryable',
        'b@x.com': 'failed-retryable',
        'c@x.com': 'applied',
      });
      assert.match(byEmail(report).get('b@x.com')!.message!, /non-JSON body/);
    });
  });

  describe('transport', () => {
    it('a 307 redirect is never followed (the bearer token stays home): the target halts naming the status', async () => {
      let stolen: string | undefined;
      const evil = nock('http://127.0.0.1:9')
        .persist()
        .post(/.*/)
        .reply(function () {
          stolen = String(this.req.headers.authorization);
          return [200, { results: [] }];
        });
      nock(BASE)
        .persist()
        .post(P.read)
        .query(true)
        .reply(307, '', { Location: `http://127.0.0.1:9${P.read}` });
      const { target } = open(serviceKey());
      const r = await deliverEither(target, [optOut('a@x.com')], 'apply');
      assert.strictEqual(stolen, undefined, 'nothing reached the redirect target');
      assert.ok(!evil.isDone());
      assert.ok(isLeft(r));
      if (isLeft(r)) {
        assert.match(r.left.message, /HTTP 307 \(redirect to http:\/\/127\.0\.0\.1:9\); redirects are never followed/);
        assert.ok(!r.left.message.includes(SERVICE_KEY));
      }
    });

    it('Retry-After: 86400 is not slept through: the target halts with retryAt (rate-limit)', async () => {
      nock(BASE).post(P.read).query(true).reply(429, rateLimit429('TEN_SECONDLY_ROLLING'), { 'Retry-After': '86400' });
      const h = open(serviceKey());
      const r = await deliverEither(h.target, [optOut('a@x.com')], 'apply');
      assert.ok(
        h.clock.slept.every((ms) => ms <= 300_000),
        `slept ${JSON.stringify(h.clock.slept)}`,
      );
      assert.ok(isLeft(r));
      if (isLeft(r)) {
        assert.strictEqual(r.left.kind, 'rate-limit');
        assert.strictEqual(r.left.retryAt, new Date(Date.parse('2026-03-10T12:00:00Z') + 86_400_000).toISOString());
      }
    });

    it('an absurd Retry-After (1e20 s) is read as a day: a rate-limit halt with a real retryAt, not a crash', async () => {
      nock(BASE)
        .post(P.read)
        .query(true)
        .reply(429, rateLimit429('TEN_SECONDLY_ROLLING'), { 'Retry-After': '100000000000000000000' });
      const h = open(serviceKey());
      const r = await deliverEither(h.target, [optOut('a@x.com')], 'apply');
      assert.ok(isLeft(r));
      if (isLeft(r)) {
        assert.strictEqual(r.left.kind, 'rate-limit');
        assert.strictEqual(r.left.retryAt, new Date(Date.parse('2026-03-10T12:00:00Z') + 86_400_000).toISOString());
      }
    });

    it('a huge x-hubspot-ratelimit-interval-milliseconds with remaining 0 defers the target instead of sleeping', async () => {
      nock(BASE)
        .post(P.read)
        .query(true)
        .reply(
          200,
          { status: 'COMPLETE', results: [{ id: '1', properties: { email: 'a@x.com', hs_email_optout: 'false' } }] },
          {
            'x-hubspot-ratelimit-max': '190',
            'x-hubspot-ratelimit-remaining': '0',
            'x-hubspot-ratelimit-interval-milliseconds': '3600000',
          },
        );
      const h = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      const r = await deliverEither(h.target, [optOut('a@x.com')], 'apply');
      assert.ok(
        h.clock.slept.every((ms) => ms <= 300_000),
        `slept ${JSON.stringify(h.clock.slept)}`,
      );
      assert.ok(isLeft(r));
      if (isLeft(r)) {
        assert.strictEqual(r.left.kind, 'rate-limit');
        assert.strictEqual(r.left.retryAt, '2026-03-10T13:00:00.000Z');
      }
    });
  });

  describe('secrets and addresses', () => {
    it('a key echoed at the 300-character cut of an error leaves no prefix in the outcome message', async () => {
      read({ 'a@x.com': '1' });
      const prefix = 'Invalid token context ' + 'x'.repeat(260);
      nock(BASE)
        .post(P.single('a@x.com'))
        .query(true)
        .reply(400, { status: 'error', category: 'VALIDATION_ERROR', message: prefix + SERVICE_KEY });
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(target, [optOut('a@x.com')]);
      const m = report.outcomes[0]!.message!;
      assert.strictEqual(report.outcomes[0]!.kind, 'failed-permanent');
      assert.ok(!m.includes(SERVICE_KEY.slice(0, 10)), m.slice(-60));
      assert.match(m, /\[redacted\]/);
    });

    it('Constant Contact error text: redacted before it is cut to 200 characters', () => {
      const secret = 'cc-client-secret-0123456789abcdef';
      registerSecret(secret);
      const { errorMessage } = parseApiError('y'.repeat(185) + secret);
      assert.ok(!errorMessage!.includes(secret.slice(0, 10)), errorMessage!);
    });

    it('an address without "@" (or "..") is failed-permanent "not an email address", with no request; "/" is encoded in the path', async () => {
      read();
      nock(BASE).post(P.search).reply(200, { results: [] });
      const paths: string[] = [];
      nock(BASE)
        .persist()
        .post(/\/unsubscribe-all$/)
        .query(true)
        .reply(function () {
          paths.push(this.req.path.split('?')[0]!);
          return [200, { status: 'COMPLETE', results: [] }];
        });
      const { target } = open(
        serviceKey({ onlyExistingContacts: false, suppression: { type: 'unsubscribe-all', batch: 'never' } }),
      );
      const report = await deliver(
        target,
        ['..', 'no-at-sign', 'a/../../crm/x@x.com'].map((e) => optOut(e)),
      );
      assert.deepStrictEqual(kinds(report), {
        '..': 'failed-permanent',
        'no-at-sign': 'failed-permanent',
        'a/../../crm/x@x.com': 'applied',
      });
      assert.match(byEmail(report).get('..')!.message!, /not an email address/);
      assert.deepStrictEqual(paths, [
        `/communication-preferences/2026-09/statuses/a%2F..%2F..%2Fcrm%2Fx@x.com/unsubscribe-all`,
      ]);
    });
  });
});
