/**
 * HubSpot delivery through the real @hubspot/api-client over HTTP (nock): each suppression mode,
 * batch fallback, 207 partial results, case-insensitive matching, no-write paths, dry run, call counts.
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import {
  BASE,
  TOKEN,
  FakeHubSpot,
  P,
  byEmail,
  deliver,
  isPath,
  kinds,
  open,
  optOut,
  privateApp,
  makeCaps,
} from './fixtures/harness';
import { BATCH_KV_PREFIX } from '../target';
import { deliverEither } from '../../../test/contract';

describe('hubspot connector: deliver', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  describe('lookup', () => {
    it('matches emails differing in case and whitespace (normalised both sides)', async () => {
      const hs = new FakeHubSpot().install();
      const id = hs.addContact('Mixed.Case@Example.COM');
      const { target } = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(target, [optOut('mixed.case@example.com')]);
      assert.deepStrictEqual(report.outcomes, [
        { email: 'mixed.case@example.com', kind: 'applied', recordIds: [id], matchedBy: 'primary' },
      ]);
      const read = hs.requests.find(isPath(P.read))!;
      assert.deepStrictEqual(read.body, {
        inputs: [{ id: 'mixed.case@example.com' }],
        idProperty: 'email',
        properties: ['email', 'hs_email_optout'],
        propertiesWithHistory: [],
      });
      assert.strictEqual(read.authorization, `Bearer ${TOKEN}`);
    });

    it('already-suppressed contacts cost no write; missing ones are not-found (strict nock: any write would fail)', async () => {
      const scope = nock(BASE)
        .post(P.read)
        .query({ archived: 'false' })
        .reply(207, {
          status: 'COMPLETE',
          results: [
            {
              id: '51',
              properties: { email: 'gone@example.com', hs_email_optout: 'true' },
              createdAt: '2026-01-01T00:00:00Z',
              updatedAt: '2026-01-01T00:00:00Z',
              archived: false,
            },
          ],
          numErrors: 1,
          errors: [
            {
              status: 'error',
              category: 'OBJECT_NOT_FOUND',
              message: 'Could not get some CONTACT objects',
              context: { ids: ['NOBODY@example.com'] },
              errors: [],
              links: {},
            },
          ],
          startedAt: '2026-01-01T00:00:00Z',
          completedAt: '2026-01-01T00:00:00Z',
        })
        // the address no contact has as primary is searched for among secondary addresses: none
        .post(
          P.search,
          (b: { filterGroups: Array<{ filters: Array<{ values?: string[] }> }> }) =>
            JSON.stringify(b.filterGroups[0]!.filters[0]!.values) === '["nobody@example.com"]',
        )
        .reply(200, { total: 0, results: [] });
      const h = open(privateApp());
      const report = await deliver(h.target, [optOut('gone@example.com'), optOut('nobody@example.com')]);
      assert.deepStrictEqual(kinds(report), {
        'gone@example.com': 'already-suppressed',
        'nobody@example.com': 'not-found',
      });
      assert.deepStrictEqual(byEmail(report).get('gone@example.com')!.recordIds, ['51']);
      assert.ok(scope.isDone());
      assert.deepStrictEqual(nock.pendingMocks(), []);
      assert.strictEqual(h.count(), 2, 'one lookup, one search, no write');
    });

    it('onlyExistingContacts=false writes the status of a non-contact by email and reports applied', async () => {
      const hs = new FakeHubSpot().install();
      const { target } = open(
        privateApp({ onlyExistingContacts: false, suppression: { type: 'unsubscribe-all', batch: 'never' } }),
      );
      const report = await deliver(target, [optOut('stranger@example.com')]);
      assert.deepStrictEqual(report.outcomes, [{ email: 'stranger@example.com', kind: 'applied', recordIds: [] }]);
      assert.strictEqual(hs.count(isPath(P.singleAll)), 1);
      assert.ok(hs.unsubscribed.get('stranger@example.com')!.has('ALL'));
    });

    it('keeps one outcome per input entry even with duplicate emails', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('dup@example.com');
      const { target } = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(target, [optOut('dup@example.com'), optOut('dup@example.com')]);
      assert.deepStrictEqual(
        report.outcomes.map((o) => o.kind),
        ['applied', 'applied'],
      );
      assert.strictEqual(hs.count(isPath(P.singleAll)), 1, 'written once');
    });
  });

  describe('unsubscribe-all', () => {
    it('per-email: POST v4 /statuses/{email}/unsubscribe-all?channel=EMAIL&businessUnitId, one per unsuppressed contact', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      hs.addContact('b+tag@example.com');
      const { target } = open(
        privateApp({ businessUnitId: 7, suppression: { type: 'unsubscribe-all', batch: 'never' } }),
      );
      const report = await deliver(target, [optOut('a@example.com'), optOut('b+tag@example.com')]);
      assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied', 'b+tag@example.com': 'applied' });
      const writes = hs.writes();
      assert.deepStrictEqual(writes.map((w) => w.path).sort(), [
        P.single('a@example.com'),
        P.single('b+tag@example.com'),
      ]);
      for (const w of writes) {
        assert.strictEqual(w.query.get('channel'), 'EMAIL');
        assert.strictEqual(w.query.get('businessUnitId'), '7');
      }
      assert.strictEqual(hs.count(isPath(P.batchAll)), 0);
    });

    it('batch: POST v4 /statuses/batch/unsubscribe-all with {inputs:[emails]}', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      hs.addContact('b@example.com');
      hs.addContact('c@example.com', true);
      const h = open(privateApp());
      const report = await deliver(h.target, [
        optOut('a@example.com'),
        optOut('b@example.com'),
        optOut('c@example.com'),
      ]);
      assert.deepStrictEqual(kinds(report), {
        'a@example.com': 'applied',
        'b@example.com': 'applied',
        'c@example.com': 'already-suppressed',
      });
      const batch = hs.requests.filter(isPath(P.batchAll));
      assert.strictEqual(batch.length, 1);
      assert.deepStrictEqual(batch[0]!.body, { inputs: ['a@example.com', 'b@example.com'] });
      assert.strictEqual(batch[0]!.query.get('channel'), 'EMAIL');
      assert.strictEqual(batch[0]!.query.get('businessUnitId'), '0');
      assert.strictEqual(hs.count(isPath(P.singleAll)), 0);
      assert.strictEqual(h.count(), 2);
      assert.deepStrictEqual(JSON.parse(h.store.get(`${BATCH_KV_PREFIX}unsubscribe-all`)!).decision, 'available');
    });

    it('batch 403 falls back to per-email, remembers it for the run and in kv: the second batch makes no batch attempt', async () => {
      const hs = new FakeHubSpot().install();
      hs.batchRefused = true;
      for (const e of ['a', 'b', 'c', 'd']) hs.addContact(`${e}@example.com`);
      const h = open(privateApp());
      const first = await deliver(h.target, [optOut('a@example.com'), optOut('b@example.com')]);
      assert.deepStrictEqual(kinds(first), { 'a@example.com': 'applied', 'b@example.com': 'applied' });
      assert.strictEqual(hs.count(isPath(P.batchAll)), 1);
      assert.strictEqual(hs.count(isPath(P.singleAll)), 2);
      const stored = JSON.parse(h.store.get(`${BATCH_KV_PREFIX}unsubscribe-all`)!);
      assert.strictEqual(stored.decision, 'refused');

      const second = await deliver(h.target, [optOut('c@example.com'), optOut('d@example.com')]);
      assert.deepStrictEqual(kinds(second), { 'c@example.com': 'applied', 'd@example.com': 'applied' });
      assert.strictEqual(hs.count(isPath(P.batchAll)), 1, 'no second batch attempt');
      assert.strictEqual(hs.count(isPath(P.singleAll)), 4);

      // A new target over the same kv (next run) also skips the batch endpoint.
      const next = open(privateApp(), { ...makeCaps(), store: h.store, caps: { ...h.caps } });
      hs.addContact('e@example.com');
      await deliver(next.target, [optOut('e@example.com')]);
      assert.strictEqual(hs.count(isPath(P.batchAll)), 1);
    });

    it('batch "always" + 403 halts the target with a config error naming suppression.batch', async () => {
      const hs = new FakeHubSpot().install();
      hs.batchRefused = true;
      hs.addContact('a@example.com');
      const { target } = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'always' } }));
      const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
      assert.strictEqual(r._tag, 'Left');
      if (r._tag === 'Left') {
        assert.strictEqual(r.left.kind, 'config');
        assert.match(r.left.message, /suppression\.batch/);
      }
      assert.strictEqual(hs.count(isPath(P.singleAll)), 0);
    });

    it('maps a 207 batch result to per-email outcomes', async () => {
      const hs = new FakeHubSpot().install();
      for (const e of ['ok', 'bad', 'busy']) hs.addContact(`${e}@example.com`);
      hs.script({
        match: isPath(P.batchAll),
        status: 207,
        body: {
          status: 'COMPLETE',
          results: [{ subscriberIdString: 'ok@example.com', statuses: [] }],
          numErrors: 2,
          errors: [
            {
              status: '400',
              category: 'VALIDATION_ERROR',
              message: 'Invalid email address',
              context: { subscriberIdString: ['BAD@example.com'] },
              errors: [],
              links: {},
            },
            {
              status: '500',
              category: 'INTERNAL_ERROR',
              message: 'Temporary failure for busy@example.com',
              context: {},
              errors: [],
              links: {},
            },
          ],
          startedAt: '2026-01-01T00:00:00Z',
          completedAt: '2026-01-01T00:00:00Z',
        },
      });
      const { target } = open(privateApp());
      const report = await deliver(target, [
        optOut('ok@example.com'),
        optOut('bad@example.com'),
        optOut('busy@example.com'),
      ]);
      assert.deepStrictEqual(kinds(report), {
        'ok@example.com': 'applied',
        'bad@example.com': 'failed-permanent',
        'busy@example.com': 'failed-retryable',
      });
      assert.match(byEmail(report).get('bad@example.com')!.message!, /Invalid email address/);
      assert.strictEqual(report.halt, undefined);
    });

    it('a 400 on a batch isolates the bad email with per-email writes', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('good@example.com');
      hs.addContact('evil@example.com');
      hs.script({
        match: isPath(P.batchAll),
        status: 400,
        body: { status: 'error', message: 'Invalid input', category: 'VALIDATION_ERROR', correlationId: 'x' },
      });
      hs.script({
        match: isPath(/evil@example\.com/),
        status: 400,
        body: {
          status: 'error',
          message: 'evil@example.com is not a valid email',
          category: 'VALIDATION_ERROR',
          correlationId: 'x',
        },
      });
      const { target } = open(privateApp());
      const report = await deliver(target, [optOut('good@example.com'), optOut('evil@example.com')]);
      assert.deepStrictEqual(kinds(report), { 'good@example.com': 'applied', 'evil@example.com': 'failed-permanent' });
    });
  });

  describe('subscriptions', () => {
    it('batch: v4 /statuses/batch/write with subscriberIdString, channel, statusState UNSUBSCRIBED, integer subscriptionId, legal basis', async () => {
      const hs = new FakeHubSpot().install();
      const id = hs.addContact('a@example.com');
      const h = open(
        privateApp({
          suppression: { type: 'subscriptions', subscriptionIds: ['111', '222'] },
          legalBasis: 'LEGITIMATE_INTEREST_CLIENT',
          legalBasisExplanation: 'Opted out in Constant Contact',
        }),
      );
      const report = await deliver(h.target, [optOut('a@example.com')]);
      assert.deepStrictEqual(report.outcomes, [
        { email: 'a@example.com', kind: 'applied', recordIds: [id], matchedBy: 'primary' },
      ]);
      const w = hs.requests.filter(isPath(P.batchWrite));
      assert.strictEqual(w.length, 1);
      assert.deepStrictEqual(w[0]!.body, {
        inputs: [
          {
            subscriberIdString: 'a@example.com',
            channel: 'EMAIL',
            statusState: 'UNSUBSCRIBED',
            subscriptionId: 111,
            legalBasis: 'LEGITIMATE_INTEREST_CLIENT',
            legalBasisExplanation: 'Opted out in Constant Contact',
          },
          {
            subscriberIdString: 'a@example.com',
            channel: 'EMAIL',
            statusState: 'UNSUBSCRIBED',
            subscriptionId: 222,
            legalBasis: 'LEGITIMATE_INTEREST_CLIENT',
            legalBasisExplanation: 'Opted out in Constant Contact',
          },
        ],
      });
      assert.deepStrictEqual([...hs.unsubscribed.get('a@example.com')!].sort(), ['111', '222']);
      assert.strictEqual(h.count(), 2);
    });

    it('batch refused (403): v3 /unsubscribe per email and subscription, subscriptionId as a string', async () => {
      const hs = new FakeHubSpot().install();
      hs.batchRefused = true;
      hs.addContact('a@example.com');
      hs.addContact('b@example.com');
      const h = open(privateApp({ suppression: { type: 'subscriptions', subscriptionIds: ['111'] } }));
      const report = await deliver(h.target, [optOut('a@example.com'), optOut('b@example.com')]);
      assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied', 'b@example.com': 'applied' });
      const v3 = hs.requests.filter(isPath(P.v3));
      assert.deepStrictEqual(
        v3.map((r) => r.body).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))),
        [
          { emailAddress: 'a@example.com', subscriptionId: '111' },
          { emailAddress: 'b@example.com', subscriptionId: '111' },
        ],
      );
      assert.strictEqual(JSON.parse(h.store.get(`${BATCH_KV_PREFIX}subscriptions`)!).decision, 'refused');
    });

    it('v3: "already unsubscribed" counts as done (already-suppressed when every subscription was)', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      hs.addContact('b@example.com');
      const already = (email: string, sub: string) => ({
        match: (r: { path: string; body: unknown }) =>
          r.path === P.v3 && JSON.stringify(r.body).includes(email) && JSON.stringify(r.body).includes(`"${sub}"`),
        status: 400,
        body: {
          status: 'error',
          message: `${email} is already unsubscribed from subscription ${sub}`,
          category: 'VALIDATION_ERROR',
          correlationId: 'x',
        },
      });
      hs.script(already('a@example.com', '111'))
        .script(already('a@example.com', '222'))
        .script(already('b@example.com', '111'));
      const { target } = open(
        privateApp({ suppression: { type: 'subscriptions', subscriptionIds: ['111', '222'], batch: 'never' } }),
      );
      const report = await deliver(target, [optOut('a@example.com'), optOut('b@example.com')]);
      assert.deepStrictEqual(kinds(report), { 'a@example.com': 'already-suppressed', 'b@example.com': 'applied' });
      assert.match(byEmail(report).get('b@example.com')!.message!, /already unsubscribed from subscription 111/);
    });

    it('v4 batch/write NO_STATUS_CHANGE for every subscription: already-suppressed', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      hs.script({
        match: isPath(P.batchWrite),
        status: 200,
        body: {
          status: 'COMPLETE',
          results: [
            {
              subscriberIdString: 'a@example.com',
              subscriptionId: 111,
              channel: 'EMAIL',
              status: 'UNSUBSCRIBED',
              source: 'PUBLIC_API',
              timestamp: '2026-01-01T00:00:00Z',
              setStatusSuccessReason: 'NO_STATUS_CHANGE',
            },
          ],
          startedAt: '2026-01-01T00:00:00Z',
          completedAt: '2026-01-01T00:00:00Z',
        },
      });
      const { target } = open(privateApp({ suppression: { type: 'subscriptions', subscriptionIds: ['111'] } }));
      const report = await deliver(target, [optOut('a@example.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'already-suppressed');
    });

    it('legal basis demanded and not configured: failed-permanent naming legalBasis and legalBasisExplanation (batch and v3)', async () => {
      for (const batch of ['auto', 'never'] as const) {
        nock.cleanAll();
        const hs = new FakeHubSpot().install();
        hs.legalBasisRequired = true;
        hs.addContact('a@example.com');
        const { target } = open(
          privateApp({ suppression: { type: 'subscriptions', subscriptionIds: ['111'], batch } }),
        );
        const report = await deliver(target, [optOut('a@example.com')]);
        const o = report.outcomes[0]!;
        assert.strictEqual(o.kind, 'failed-permanent', batch);
        assert.match(o.message!, /"legalBasis"/);
        assert.match(o.message!, /"legalBasisExplanation"/);
        assert.strictEqual(report.halt, undefined);
        assert.strictEqual(
          hs.count(isPath(P.v3)),
          batch === 'never' ? 1 : 0,
          'a legal-basis 400 on a batch is not retried per email',
        );
      }
    });

    it('legal basis demanded and configured: accepted', async () => {
      const hs = new FakeHubSpot().install();
      hs.legalBasisRequired = true;
      hs.addContact('a@example.com');
      const { target } = open(
        privateApp({
          suppression: { type: 'subscriptions', subscriptionIds: ['111'], batch: 'never' },
          legalBasis: 'NON_GDPR',
          legalBasisExplanation: 'n/a',
        }),
      );
      const report = await deliver(target, [optOut('a@example.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'applied');
      assert.deepStrictEqual(hs.requests.find(isPath(P.v3))!.body, {
        emailAddress: 'a@example.com',
        subscriptionId: '111',
        legalBasis: 'NON_GDPR',
        legalBasisExplanation: 'n/a',
      });
    });
  });

  describe('audit properties', () => {
    it('batch-updates matched, newly suppressed contacts by record id with mapped values', async () => {
      const hs = new FakeHubSpot().install();
      const a = hs.addContact('a@example.com');
      hs.addContact('s@example.com', true);
      const h = open(
        privateApp({
          onlyExistingContacts: false,
          properties: {
            cc_opted_out_at: 'optOutDate',
            cc_reason: 'reason',
            cc_origin: { constant: 'constant-contact' },
            cc_flag: { constant: true },
          },
        }),
      );
      const report = await deliver(h.target, [
        optOut('a@example.com'),
        optOut('s@example.com'),
        optOut('new@example.com', { reason: null }),
      ]);
      assert.deepStrictEqual(kinds(report), {
        'a@example.com': 'applied',
        's@example.com': 'already-suppressed',
        'new@example.com': 'applied',
      });
      const read = hs.requests.find(isPath(P.read))!;
      assert.deepStrictEqual((read.body as { properties: string[] }).properties, [
        'email',
        'hs_email_optout',
        'cc_opted_out_at',
        'cc_reason',
        'cc_origin',
        'cc_flag',
      ]);
      const upd = hs.requests.filter(isPath(P.update));
      assert.strictEqual(upd.length, 1);
      assert.deepStrictEqual(upd[0]!.body, {
        inputs: [
          {
            id: a,
            properties: {
              cc_opted_out_at: '2026-03-09T08:30:00.000Z',
              cc_reason: 'too many emails',
              cc_origin: 'constant-contact',
              cc_flag: 'true',
            },
          },
        ],
      });
      assert.strictEqual(h.count(), 4, '1 lookup + 1 search (new@) + 1 batch write + 1 audit batch');
    });

    it('an audit failure leaves the suppression applied and says so', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      hs.script({
        match: isPath(P.update),
        status: 400,
        body: {
          status: 'error',
          message: 'Property values were not valid',
          category: 'VALIDATION_ERROR',
          correlationId: 'x',
        },
      });
      const { target } = open(privateApp({ properties: { cc_opted_out_at: 'optOutDate' } }));
      const report = await deliver(target, [optOut('a@example.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'applied');
      assert.match(report.outcomes[0]!.message!, /audit properties not written/);
    });
  });

  describe('dry run', () => {
    it('looks up, sends no POST to any write endpoint, and plans each email (strict nock)', async () => {
      const scope = nock(BASE)
        .post(P.read)
        .query(true)
        .reply(207, {
          status: 'COMPLETE',
          results: [
            {
              id: '123',
              properties: { email: 'a@example.com', hs_email_optout: 'false' },
              createdAt: '2026-01-01T00:00:00Z',
              updatedAt: '2026-01-01T00:00:00Z',
              archived: false,
            },
            {
              id: '124',
              properties: { email: 'b@example.com', hs_email_optout: 'true' },
              createdAt: '2026-01-01T00:00:00Z',
              updatedAt: '2026-01-01T00:00:00Z',
              archived: false,
            },
          ],
          numErrors: 1,
          errors: [
            {
              status: 'error',
              category: 'OBJECT_NOT_FOUND',
              message: 'not found',
              context: { ids: ['c@example.com'] },
              errors: [],
              links: {},
            },
          ],
          startedAt: '2026-01-01T00:00:00Z',
          completedAt: '2026-01-01T00:00:00Z',
        })
        .post(P.search)
        .reply(200, { total: 0, results: [] });
      const h = open(privateApp({ properties: { cc_opted_out_at: 'optOutDate' } }));
      const report = await deliver(
        h.target,
        [optOut('a@example.com'), optOut('b@example.com'), optOut('c@example.com')],
        'plan',
      );
      assert.deepStrictEqual(kinds(report), {
        'a@example.com': 'planned',
        'b@example.com': 'already-suppressed',
        'c@example.com': 'not-found',
      });
      const a = byEmail(report).get('a@example.com')!;
      assert.deepStrictEqual(a.recordIds, ['123']);
      assert.match(a.action!, /^unsubscribe-all EMAIL for contact 123/);
      assert.match(a.action!, /cc_opted_out_at=2026-03-09T08:30:00.000Z/);
      assert.ok(scope.isDone());
      assert.deepStrictEqual(nock.pendingMocks(), []);
      assert.strictEqual(h.count(), 2, 'one lookup, one search');
    });

    it('plans subscriptions writes too, with no write request', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('a@example.com');
      const { target } = open(
        privateApp({ suppression: { type: 'subscriptions', subscriptionIds: ['111', '222'] }, legalBasis: 'NON_GDPR' }),
      );
      const report = await deliver(target, [optOut('a@example.com')], 'plan');
      assert.strictEqual(report.outcomes[0]!.kind, 'planned');
      assert.match(report.outcomes[0]!.action!, /subscriptions 111, 222/);
      assert.deepStrictEqual(hs.writes(), []);
    });
  });

  describe('call counts (ceil(M/100) lookups + ceil(F/100) searches + K per-email writes, or ceil(K/100) batch writes)', () => {
    const M = 250;
    const emails = Array.from({ length: M }, (_, i) => `person${i}@example.com`);
    function seed(hs: FakeHubSpot): number {
      // every 5th missing, every 7th of the rest already suppressed
      let k = 0;
      emails.forEach((e, i) => {
        if (i % 5 === 0) return;
        const suppressed = i % 7 === 0;
        hs.addContact(e.toUpperCase(), suppressed);
        if (!suppressed) k++;
      });
      return k;
    }

    it('batch mode', async () => {
      const hs = new FakeHubSpot().install();
      const K = seed(hs);
      const h = open(privateApp());
      const report = await deliver(
        h.target,
        emails.map((e) => optOut(e)),
      );
      const applied = report.outcomes.filter((o) => o.kind === 'applied').length;
      assert.strictEqual(applied, K);
      const lookups = hs.count(isPath(P.read));
      const writes = hs.count(isPath(P.batchAll));
      const F = M / 5; // not anyone's primary address
      assert.strictEqual(lookups, Math.ceil(M / 100));
      assert.strictEqual(hs.count(isPath(P.search)), Math.ceil(F / 100));
      assert.strictEqual(writes, Math.ceil(K / 100));
      assert.strictEqual(h.count(), Math.ceil(M / 100) + Math.ceil(F / 100) + Math.ceil(K / 100));

      console.log(
        `      measured (batch): M=${M} F=${F} K=${K} -> lookups=${lookups} searches=${hs.count(isPath(P.search))} writes=${writes} calls.record=${h.count()}`,
      );
    });

    it('per-email mode', async () => {
      const hs = new FakeHubSpot().install();
      const K = seed(hs);
      const h = open(privateApp({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(
        h.target,
        emails.map((e) => optOut(e)),
      );
      assert.strictEqual(report.outcomes.filter((o) => o.kind === 'applied').length, K);
      assert.strictEqual(hs.count(isPath(P.singleAll)), K);
      assert.strictEqual(h.count(), Math.ceil(M / 100) + Math.ceil(M / 5 / 100) + K);

      console.log(
        `      measured (per-email): M=${M} K=${K} -> lookups=${hs.count(isPath(P.read))} writes=${hs.count(isPath(P.singleAll))} calls.record=${h.count()}`,
      );
    });

    it('a rerun costs only lookups (everything is already suppressed)', async () => {
      const hs = new FakeHubSpot().install();
      seed(hs);
      const h = open(privateApp());
      await deliver(
        h.target,
        emails.map((e) => optOut(e)),
      );
      const before = h.count();
      const again = await deliver(
        h.target,
        emails.map((e) => optOut(e)),
      );
      assert.strictEqual(h.count() - before, Math.ceil(M / 100) + Math.ceil(M / 5 / 100), 'lookups and searches only');
      assert.ok(again.outcomes.every((o) => o.kind === 'already-suppressed' || o.kind === 'not-found'));
    });
  });
});
