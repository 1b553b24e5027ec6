/**
 * Secondary addresses (hs_additional_emails) have their own subscription status, which no lookup returns: the
 * connector reads it in batch (Communication Preferences `statuses/batch/unsubscribe-all/read`, or
 * `statuses/batch/read` in subscriptions mode; 100 addresses per call) and writes only the addresses not yet
 * suppressed. A 403 on the reads (portal without the batch endpoints) is remembered and the addresses are
 * written without a read; a failing read never fails the delivery. Shapes per
 * hubspot-communication-preferences-2026-09.json (BatchResponsePublicWideStatusBulkResponse,
 * BatchResponsePublicStatusBulkResponse), through nock.
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import { FakeHubSpot, P, byEmail, deliver, isPath, kinds, open, optOut, serviceKey, vpaths } from './fixtures/harness';

const readsOf = (hs: FakeHubSpot, path: string = P.batchAllRead) => hs.requests.filter(isPath(path));

describe('hubspot connector: secondary addresses, status read before the write', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  it('unsubscribe-all: an address already unsubscribed is already-suppressed, not written; a subscribed one is written (applied)', async () => {
    const hs = new FakeHubSpot().install();
    const h1 = hs.addContact('holder1@example.com', false, {}, 'old@example.com');
    const h2 = hs.addContact('holder2@example.com', false, {}, 'x@example.com; OLD@example.com');
    const h3 = hs.addContact('holder3@example.com', false, {}, 'fresh@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    const h = open(serviceKey());
    const report = await deliver(h.target, [optOut('old@example.com'), optOut('fresh@example.com')]);
    const o = byEmail(report);
    assert.deepStrictEqual(kinds(report), { 'old@example.com': 'already-suppressed', 'fresh@example.com': 'applied' });
    assert.deepStrictEqual(
      [...o.get('old@example.com')!.recordIds].sort(),
      [h1, h2].sort(),
      'record ids = the holding contacts',
    );
    assert.strictEqual(o.get('old@example.com')!.matchedBy, 'additional-email');
    assert.match(o.get('old@example.com')!.message ?? '', /already unsubscribed from all email/);
    assert.deepStrictEqual(o.get('fresh@example.com')!.recordIds, [h3]);
    assert.strictEqual(o.get('fresh@example.com')!.matchedBy, 'additional-email');
    // the read: contract shape, channel and business unit in the query, both addresses in one call
    const reads = readsOf(hs);
    assert.strictEqual(reads.length, 1);
    assert.strictEqual(reads[0]!.query.get('channel'), 'EMAIL');
    assert.strictEqual(reads[0]!.query.get('businessUnitId'), '0');
    assert.deepStrictEqual((reads[0]!.body as { inputs: string[] }).inputs.sort(), [
      'fresh@example.com',
      'old@example.com',
    ]);
    // only the subscribed address is written
    const writes = hs.writes();
    assert.strictEqual(writes.length, 1);
    assert.strictEqual(writes[0]!.path, P.batchAll);
    assert.deepStrictEqual((writes[0]!.body as { inputs: string[] }).inputs, ['fresh@example.com']);
    // calls: 1 batch read + 1 search + 1 status read + 1 batch write
    assert.strictEqual(h.count(), 4);
  });

  it('a redelivery of an address it just suppressed writes nothing (already-suppressed)', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'sec@example.com');
    const h = open(serviceKey());
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('sec@example.com')])), {
      'sec@example.com': 'applied',
    });
    const w0 = hs.writes().length;
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('sec@example.com')])), {
      'sec@example.com': 'already-suppressed',
    });
    assert.strictEqual(hs.writes().length, w0, 'no second write');
  });

  it('only secondary matches are read: primary matches keep hs_email_optout, non-contacts are not read', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('prim@example.com');
    hs.addContact('holder@example.com', false, {}, 'sec@example.com');
    const h = open(serviceKey({ onlyExistingContacts: false }));
    const report = await deliver(h.target, [
      optOut('prim@example.com'),
      optOut('sec@example.com'),
      optOut('nobody@example.com'),
    ]);
    assert.deepStrictEqual(kinds(report), {
      'prim@example.com': 'applied',
      'sec@example.com': 'applied',
      'nobody@example.com': 'applied',
    });
    assert.deepStrictEqual(
      readsOf(hs).map((r) => (r.body as { inputs: string[] }).inputs),
      [['sec@example.com']],
    );
  });

  it('ceil(F/100) status reads for F secondary matches; only the unsubscribed are skipped', async () => {
    const hs = new FakeHubSpot().install();
    const F = 230;
    for (let i = 0; i < F; i++) {
      hs.addContact(`holder${i}@example.com`, false, {}, `sec${i}@example.com`);
      if (i % 5 === 0) hs.unsubscribed.set(`sec${i}@example.com`, new Set(['ALL']));
    }
    const h = open(serviceKey());
    const report = await deliver(
      h.target,
      Array.from({ length: F }, (_, i) => optOut(`sec${i}@example.com`)),
    );
    const already = report.outcomes.filter((o) => o.kind === 'already-suppressed').length;
    const applied = report.outcomes.filter((o) => o.kind === 'applied').length;
    assert.strictEqual(already, F / 5);
    assert.strictEqual(applied, F - F / 5);
    const reads = readsOf(hs);
    assert.strictEqual(reads.length, Math.ceil(F / 100));
    assert.ok(reads.every((r) => (r.body as { inputs: string[] }).inputs.length <= 100));
    const K = applied;
    const searches = hs.count(isPath(P.search));
    // ceil(F/100) lookups + searches + ceil(F/100) status reads + ceil(K/100) batch writes
    assert.strictEqual(h.count(), Math.ceil(F / 100) + searches + Math.ceil(F / 100) + Math.ceil(K / 100));
    assert.strictEqual(hs.count(isPath(P.batchAll)), Math.ceil(K / 100));
  });

  it('403 on the status read: writes without a read (applied), remembers it, and the next delivery does not try the read', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com; fresh@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    hs.script({
      match: isPath(P.batchAllRead),
      status: 403,
      body: {
        status: 'error',
        message: 'missing scopes',
        category: 'MISSING_SCOPES',
        correlationId: 'x',
        context: { missingScopes: ['communication_preferences.statuses.batch.read'] },
      },
    });
    const h = open(serviceKey());
    const report = await deliver(h.target, [optOut('old@example.com'), optOut('fresh@example.com')]);
    // without a read the status is unknown: both written, HubSpot's answer does not say "unchanged" here
    assert.deepStrictEqual(kinds(report), { 'old@example.com': 'applied', 'fresh@example.com': 'applied' });
    assert.strictEqual(readsOf(hs).length, 1);
    assert.strictEqual(hs.count(isPath(P.batchAll)), 1, 'the batch write still works (its own scope)');
    assert.strictEqual(JSON.parse(h.store.get('hubspot.batch.unsubscribe-all.read')!).decision, 'refused');
    // next delivery (same target) and a new target on the same store: no read attempted
    await deliver(h.target, [optOut('old@example.com')]);
    const h2 = open(serviceKey(), h);
    assert.deepStrictEqual(kinds(await deliver(h2.target, [optOut('fresh@example.com')])), {
      'fresh@example.com': 'applied',
    });
    assert.strictEqual(readsOf(hs).length, 1, 'the 403 is remembered');
  });

  it('a portal without the batch endpoints: once refused for writes, no status read is tried; per-email writes', async () => {
    const hs = new FakeHubSpot().install();
    hs.batchRefused = true;
    hs.addContact('holder@example.com', false, {}, 'old@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    const h = open(serviceKey());
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('old@example.com')])), {
      'old@example.com': 'applied',
    });
    assert.strictEqual(readsOf(hs).length, 1, 'first delivery: the read is tried once (403)');
    assert.strictEqual(hs.count(isPath(P.singleAll)), 1);
    // a fresh target that only knows the WRITE refusal (kv) does not try the read either
    h.store.delete('hubspot.batch.unsubscribe-all.read');
    const h2 = open(serviceKey(), h);
    assert.deepStrictEqual(kinds(await deliver(h2.target, [optOut('old@example.com')])), {
      'old@example.com': 'applied',
    });
    assert.strictEqual(readsOf(hs).length, 1, 'batch known refused: no read');
    assert.strictEqual(hs.count(isPath(P.singleAll)), 2);
  });

  it('batch "never": no status read; the address is written', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    const h = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('old@example.com')])), {
      'old@example.com': 'applied',
    });
    assert.strictEqual(readsOf(hs).length, 0);
    assert.strictEqual(h.count(), 3, 'lookup + search + one write');
  });

  it('a 5xx on the status read (after the retries) never fails the delivery: the addresses are written', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    hs.script({
      match: isPath(P.batchAllRead),
      status: 503,
      body: { status: 'error', message: 'Service unavailable' },
      times: 100,
    });
    const h = open(serviceKey());
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('old@example.com')])), {
      'old@example.com': 'applied',
    });
    assert.ok(readsOf(hs).length > 1, 'retried per the retry policy');
    assert.strictEqual(hs.count(isPath(P.batchAll)), 1);
    assert.strictEqual(
      h.store.get('hubspot.batch.unsubscribe-all.read'),
      undefined,
      'a 5xx is not remembered as a refusal',
    );
  });

  it('a read that recovers after a 503 is used', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    hs.script({
      match: isPath(P.batchAllRead),
      status: 503,
      body: { status: 'error', message: 'Service unavailable' },
    });
    const h = open(serviceKey());
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('old@example.com')])), {
      'old@example.com': 'already-suppressed',
    });
    assert.strictEqual(readsOf(hs).length, 2);
    assert.strictEqual(hs.writes().length, 0);
  });

  it('subscriptions mode: batch/read; no write only when every configured subscription is UNSUBSCRIBED', async () => {
    const hs = new FakeHubSpot().install();
    hs.definitions = [
      { id: '111', name: 'Newsletter', isActive: true, businessUnitId: 0 },
      { id: '222', name: 'Offers', isActive: true, businessUnitId: 0 },
    ];
    const holder = hs.addContact('holder@example.com', false, {}, 'both@example.com;one@example.com;all@example.com');
    hs.unsubscribed.set('both@example.com', new Set(['111', '222']));
    hs.unsubscribed.set('one@example.com', new Set(['111']));
    hs.unsubscribed.set('all@example.com', new Set(['ALL']));
    const h = open(
      serviceKey({ suppression: { type: 'subscriptions', subscriptionIds: ['111', '222'], batch: 'auto' } }),
    );
    const report = await deliver(h.target, [
      optOut('both@example.com'),
      optOut('one@example.com'),
      optOut('all@example.com'),
    ]);
    const o = byEmail(report);
    assert.deepStrictEqual(kinds(report), {
      'both@example.com': 'already-suppressed',
      'one@example.com': 'applied',
      'all@example.com': 'already-suppressed',
    });
    assert.deepStrictEqual(o.get('both@example.com')!.recordIds, [holder]);
    assert.strictEqual(o.get('both@example.com')!.matchedBy, 'additional-email');
    assert.match(o.get('both@example.com')!.message ?? '', /already unsubscribed from subscriptions 111, 222/);
    const reads = readsOf(hs, P.batchStatusRead);
    assert.strictEqual(reads.length, 1);
    assert.strictEqual(readsOf(hs).length, 0, 'not the wide-status read');
    assert.strictEqual(reads[0]!.query.get('channel'), 'EMAIL');
    const writes = hs.writes();
    assert.strictEqual(writes.length, 1);
    assert.strictEqual(writes[0]!.path, P.batchWrite);
    assert.deepStrictEqual(
      (writes[0]!.body as { inputs: Array<{ subscriberIdString: string }> }).inputs.map((i) => i.subscriberIdString),
      ['one@example.com', 'one@example.com'],
    );
    assert.strictEqual(h.count(), 4, 'lookup + search + status read + batch write');
  });

  it('dry run: the status read is made and already-suppressed reported; nothing written', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com; fresh@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    const h = open(serviceKey());
    const report = await deliver(h.target, [optOut('old@example.com'), optOut('fresh@example.com')], 'plan');
    assert.deepStrictEqual(kinds(report), { 'old@example.com': 'already-suppressed', 'fresh@example.com': 'planned' });
    assert.strictEqual(readsOf(hs).length, 1);
    assert.strictEqual(hs.writes().length, 0);
  });

  it('apiVersion legacy: the v4 status read', async () => {
    const L = vpaths('legacy');
    const hs = new FakeHubSpot(undefined, 'legacy').install();
    hs.addContact('holder@example.com', false, {}, 'old@example.com');
    hs.unsubscribed.set('old@example.com', new Set(['ALL']));
    const h = open(serviceKey({ apiVersion: 'legacy' }));
    assert.deepStrictEqual(kinds(await deliver(h.target, [optOut('old@example.com')])), {
      'old@example.com': 'already-suppressed',
    });
    assert.strictEqual(hs.count(isPath(L.batchAllRead)), 1);
    assert.strictEqual(L.batchAllRead, '/communication-preferences/v4/statuses/batch/unsubscribe-all/read');
    assert.strictEqual(hs.writes().length, 0);
  });

  it('statuses for another business unit do not count; BUSINESS_UNIT_WIDE for ours does', async () => {
    const hs = new FakeHubSpot().install();
    hs.addContact('holder@example.com', false, {}, 'a@example.com; b@example.com');
    const wide = (e: string, bu: number) => ({
      subscriberIdString: e,
      wideStatuses: [
        {
          subscriberIdString: e,
          wideStatusType: 'BUSINESS_UNIT_WIDE',
          status: 'UNSUBSCRIBED',
          channel: 'EMAIL',
          businessUnitId: bu,
          timestamp: '2026-03-01T00:00:00Z',
        },
      ],
    });
    hs.script({
      match: isPath(P.batchAllRead),
      status: 200,
      body: {
        status: 'COMPLETE',
        results: [wide('a@example.com', 7), wide('b@example.com', 0)],
        startedAt: '2026-03-10T12:00:00Z',
        completedAt: '2026-03-10T12:00:00Z',
      },
    });
    const h = open(serviceKey({ businessUnitId: 7 }));
    const report = await deliver(h.target, [optOut('a@example.com'), optOut('b@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'already-suppressed', 'b@example.com': 'applied' });
    assert.strictEqual(readsOf(hs)[0]!.query.get('businessUnitId'), '7');
  });
});
