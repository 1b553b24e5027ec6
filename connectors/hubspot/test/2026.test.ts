/**
 * HubSpot's 2026 platform (issue 9), checked against the vendor contracts (hubspot-*-2026-09.json) through
 * nock: date-versioned paths only, Service Keys, `check` by a real read, every address a contact has
 * (CRM search on hs_additional_emails within the filter limits, paged, verified exactly, paced at 5/s),
 * and call counts near the minimum.
 */
import * as assert from 'assert';
import nock from 'nock';
import { isLeft } from 'fp-ts/Either';
import { clearSecrets, redact } from '../../../src/log';
import { formatErrors, isSecretKey } from '../../../src/codec';
import { connector } from '..';
import { CheckReport, Target } from '../../../src/sdk';
import { SqliteStateStore } from '../../../src/store/sqlite';
import {
  BASE,
  FakeHubSpot,
  NUMERIC_VERSION,
  P,
  SERVICE_KEY,
  TOKEN,
  byEmail,
  deliver,
  isPath,
  kinds,
  makeCaps,
  open,
  optOut,
  privateApp,
  rateLimit429,
  serviceKey,
  vpaths,
} from './fixtures/harness';
import { deliverEither, checkEither } from '../../../test/contract';

async function check(target: Target): Promise<CheckReport> {
  const r = await checkEither(target);
  if (isLeft(r)) throw new Error(`check returned Left: ${r.left.message}`);
  return r.right;
}
const item = (report: CheckReport, name: string) => {
  const i = report.items.find((x) => x.name === name);
  assert.ok(i, `no check item ${name}: ${report.items.map((x) => x.name).join(', ')}`);
  return i;
};
const writePaths = (hs: FakeHubSpot) => hs.writes().map((r) => r.path);
const searchBodies = (hs: FakeHubSpot) =>
  hs.requests.filter(isPath(P.search)).map(
    (r) =>
      r.body as {
        filterGroups: Array<{ filters: Array<{ propertyName: string; operator: string; values?: string[] }> }>;
        limit: number;
        after?: string;
      },
  );

describe('hubspot connector: 2026 platform', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  describe('date-versioned paths', () => {
    it('default settings: every call of deliver (all modes, audit, OAuth refresh) and check is date-versioned, none numeric', async () => {
      const auth = {
        type: 'oauth',
        clientId: 'cid',
        clientSecret: 'client-secret-xyz',
        refreshToken: 'refresh-token-xyz',
      };
      const configs = [
        { auth, properties: { cc_opted_out_at: 'optOutDate' } },
        { auth, suppression: { type: 'unsubscribe-all', batch: 'never' } },
        { auth, suppression: { type: 'subscriptions', subscriptionIds: ['111'], batch: 'always' } },
        { auth, suppression: { type: 'subscriptions', subscriptionIds: ['111'], batch: 'never' } },
      ];
      const requests: FakeHubSpot['requests'][number][] = [];
      for (const c of configs) {
        nock.cleanAll();
        const fake = new FakeHubSpot().install();
        fake.oauth = {
          clientId: 'cid',
          clientSecret: 'client-secret-xyz',
          refreshToken: 'refresh-token-xyz',
          rotate: true,
          expiresIn: 1800,
        };
        fake.scopes = ['crm.objects.contacts.read'];
        fake.definitions = [{ id: '111', name: 'Newsletter', isActive: true, businessUnitId: 0 }];
        fake.propertyDefs.set('cc_opted_out_at', { type: 'datetime', fieldType: 'date' });
        fake.addContact('a@example.com');
        fake.addContact('b@example.com', false, {}, 'b2@example.com');
        const { target } = open(c);
        const report = await deliver(target, [
          optOut('a@example.com'),
          optOut('b2@example.com'),
          optOut('nobody@example.com'),
        ]);
        assert.deepStrictEqual(
          kinds(report),
          { 'a@example.com': 'applied', 'b2@example.com': 'applied', 'nobody@example.com': 'not-found' },
          JSON.stringify(report),
        );
        assert.ok((await check(target)).items.length > 0);
        requests.push(...fake.requests);
      }
      const hs = { requests };
      const numeric = hs.requests.filter((r) => NUMERIC_VERSION.test(r.path)).map((r) => `${r.method} ${r.path}`);
      assert.deepStrictEqual(numeric, []);
      const used = new Set(hs.requests.map((r) => r.path.replace(/statuses\/[^/]+@[^/]+\//, 'statuses/{email}/')));
      for (const p of [
        P.read,
        P.search,
        P.update,
        P.batchAll,
        P.batchWrite,
        P.v3,
        P.definitions,
        P.token,
        P.introspect,
        '/communication-preferences/2026-09/statuses/{email}/unsubscribe-all',
      ]) {
        assert.ok(used.has(p), `${p} used (${[...used].join(', ')})`);
      }
      assert.ok(
        hs.requests.every((r) => r.path.startsWith('/oauth/2026-09/') || r.path.includes('/2026-09/')),
        'every path is 2026-09',
      );
    });

    it('apiVersion "2026-03" puts that version in every path; "legacy" keeps the numeric paths', async () => {
      for (const version of ['2026-03', 'legacy']) {
        const hs = new FakeHubSpot(BASE, version).install();
        hs.addContact('a@example.com', false, { cc_reason: '' }, 'alias@example.com');
        for (const batch of ['always', 'never']) {
          const { target } = open(
            privateApp({
              apiVersion: version,
              suppression: { type: 'unsubscribe-all', batch },
              properties: { cc_reason: 'reason' },
            }),
          );
          const report = await deliver(target, [optOut('a@example.com'), optOut('alias@example.com')]);
          assert.deepStrictEqual(
            kinds(report),
            { 'a@example.com': batch === 'always' ? 'applied' : 'already-suppressed', 'alias@example.com': 'applied' },
            `${version} ${batch}`,
          );
        }
        const p = vpaths(version);
        assert.ok(hs.requests.some(isPath(p.search)), `${version}: search`);
        assert.ok(hs.requests.some(isPath(p.update)), `${version}: audit update`);
        assert.ok(hs.requests.every((r) => !/ no route /.test(r.path)));
        const wrong = hs.requests.filter((r) =>
          version === 'legacy' ? !NUMERIC_VERSION.test(r.path) : !r.path.includes(`/${version}/`),
        );
        assert.deepStrictEqual(
          wrong.map((r) => r.path),
          [],
          `${version}: every path of that version`,
        );
        nock.cleanAll();
      }
    });
  });

  describe('Service Keys', () => {
    it('sends the key as a bearer token; check passes by a real read with no write and no token-info call', async () => {
      const hs = new FakeHubSpot().install();
      hs.validTokens.add(SERVICE_KEY);
      hs.scopes = ['crm.objects.contacts.read'];
      const { target } = open(serviceKey());
      const report = await check(target);
      assert.ok(report.ok, JSON.stringify(report.items, null, 2));
      assert.match(
        item(report, 'token').detail,
        /Service Key is valid \(a contact read succeeded; API version 2026-09\)/,
      );
      assert.strictEqual(item(report, 'contact-search').ok, true);
      assert.match(item(report, 'scopes').detail, /not verifiable without a write/);
      assert.deepStrictEqual(writePaths(hs), [], 'no write');
      assert.strictEqual(
        hs.count((r) => r.path.startsWith('/oauth/')),
        0,
        'no token-info endpoint',
      );
      const read = hs.requests.find(isPath(P.read))!;
      assert.strictEqual(read.authorization, `Bearer ${SERVICE_KEY}`);
      const search = searchBodies(hs)[0]!;
      assert.strictEqual(search.limit, 1);
      assert.ok(!JSON.stringify(report).includes(SERVICE_KEY));
    });

    it('a rejected key fails check and halts deliver, naming auth.serviceKey, never printing the key', async () => {
      const hs = new FakeHubSpot().install();
      hs.validTokens.add('some-other-key');
      const h = open(serviceKey());
      const report = await check(h.target);
      assert.strictEqual(report.ok, false);
      assert.match(item(report, 'token').detail, /rejected the Service Key \(401.*auth\.serviceKey/);
      const r = await deliverEither(h.target, [optOut('a@example.com')], 'apply');
      assert.ok(isLeft(r) && r.left.kind === 'auth' && /auth\.serviceKey/.test(r.left.message));
      assert.ok(!JSON.stringify(report).includes(SERVICE_KEY));
      assert.ok(!h.logger.lines.some((l) => l.includes(SERVICE_KEY)), 'key not in the log');
    });

    it('names the missing scopes from a 403 body (context.missingScopes)', async () => {
      const hs = new FakeHubSpot().install();
      hs.lacking.add('crm.objects.contacts.read');
      hs.lacking.add('communication_preferences.read');
      const { target } = open(serviceKey({ suppression: { type: 'subscriptions', subscriptionIds: ['111'] } }));
      const report = await check(target);
      assert.strictEqual(report.ok, false);
      assert.strictEqual(item(report, 'token').ok, true, '403 means the key itself is valid');
      assert.match(item(report, 'contact-lookup').detail, /403\): grant scope crm\.objects\.contacts\.read/);
      assert.match(item(report, 'subscriptions').detail, /grant scope communication_preferences\.read/);
      assert.match(
        item(report, 'scopes').detail,
        /missing scopes \(HubSpot 403 context\.missingScopes\): crm\.objects\.contacts\.read, communication_preferences\.read/,
      );
    });

    it('a private-app token whose token-info fails (400) still passes check on the real read', async () => {
      const hs = new FakeHubSpot().install();
      hs.scopes = ['crm.objects.contacts.read'];
      hs.notPrivateApp.add(TOKEN);
      const { target } = open(privateApp());
      const report = await check(target);
      assert.ok(report.ok, JSON.stringify(report.items, null, 2));
      assert.match(item(report, 'token').detail, /token info unavailable/);
    });
  });

  describe('every address a contact has', () => {
    it('a secondary address is found by search and suppressed as an address (per-email unsubscribe-all), matchedBy additional-email', async () => {
      const hs = new FakeHubSpot().install();
      const id = hs.addContact('primary@example.com', false, {}, 'Other@Example.com ; Second.Addr@Example.COM');
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(target, [optOut('second.addr@example.com')]);
      const o = report.outcomes[0]!;
      assert.strictEqual(o.kind, 'applied');
      assert.deepStrictEqual(o.recordIds, [id]);
      assert.strictEqual(o.matchedBy, 'additional-email');
      assert.match(o.message!, new RegExp(`secondary address \\(hs_additional_emails\\) of contact ${id}`));
      assert.deepStrictEqual(
        writePaths(hs),
        [P.single('second.addr@example.com')],
        'the address itself, not the primary',
      );
      assert.ok(hs.unsubscribed.get('second.addr@example.com')!.has('ALL'));
      assert.ok(!hs.unsubscribed.has('primary@example.com'), 'the primary address is untouched');
      const s = searchBodies(hs)[0]!;
      assert.deepStrictEqual(s.filterGroups, [
        { filters: [{ propertyName: 'hs_additional_emails', operator: 'IN', values: ['second.addr@example.com'] }] },
      ]);
    });

    it('batch unsubscribe-all and subscriptions (batch/write and per-subscription) write the secondary address', async () => {
      for (const suppression of [
        { type: 'unsubscribe-all', batch: 'always' },
        { type: 'subscriptions', subscriptionIds: ['111', '222'], batch: 'always' },
        { type: 'subscriptions', subscriptionIds: ['111'], batch: 'never' },
      ]) {
        const hs = new FakeHubSpot().install();
        hs.addContact('p@example.com', false, {}, 's@example.com');
        const { target } = open(serviceKey({ suppression }));
        const report = await deliver(target, [optOut('s@example.com')]);
        assert.strictEqual(report.outcomes[0]!.kind, 'applied', JSON.stringify(suppression));
        const w = hs.writes()[0]!;
        const body = JSON.stringify(w.body);
        assert.ok(
          body.includes('"s@example.com"') && !body.includes('p@example.com'),
          `${JSON.stringify(suppression)}: ${body}`,
        );
        nock.cleanAll();
      }
    });

    it('verifies the match exactly: a partial (contains/token) match is not a match', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('x@example.com', false, {}, 'joann@example.com;ann@example.com.au');
      const { target } = open(serviceKey());
      const report = await deliver(target, [optOut('ann@example.com')]);
      assert.strictEqual(hs.count(isPath(P.search)), 1);
      assert.strictEqual(
        report.outcomes[0]!.kind,
        'not-found',
        'the fake returned the contact; the connector rejected it',
      );
      assert.deepStrictEqual(writePaths(hs), []);
    });

    it('an address held by several contacts: one write, every contact id recorded; pages through results by `after`', async () => {
      const hs = new FakeHubSpot().install();
      const ids: string[] = [];
      for (let i = 0; i < 230; i++)
        ids.push(hs.addContact(`p${i}@example.com`, false, {}, `shared@example.com;own${i}@example.com`));
      const { target } = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      const report = await deliver(target, [optOut('shared@example.com')]);
      const o = report.outcomes[0]!;
      assert.strictEqual(o.kind, 'applied');
      assert.deepStrictEqual([...o.recordIds].sort(), [...ids].sort());
      const bodies = searchBodies(hs);
      assert.deepStrictEqual(
        bodies.map((b) => [b.limit, b.after]),
        [
          [200, '0'],
          [200, '200'],
        ],
      );
      assert.strictEqual(hs.writes().length, 1);
    });

    it('batches searches within the filter limits (one IN filter of <= 100 values) and paces them at 5/s on their own limiter', async () => {
      const hs = new FakeHubSpot().install();
      const h = makeCaps();
      hs.now = () => h.clock.now().getTime();
      const F = 1100;
      const emails = Array.from({ length: F }, (_, i) => `missing${i}@example.com`);
      // 10-second limit tiny: if searches used it, they would wait ~10 s each
      const { target } = open(serviceKey({ rateLimit: { per10Seconds: 20 } }), h);
      const report = await deliver(
        target,
        emails.map((e) => optOut(e)),
      );
      assert.ok(report.outcomes.every((o) => o.kind === 'not-found'));
      const bodies = searchBodies(hs);
      assert.strictEqual(bodies.length, Math.ceil(F / 100));
      for (const b of bodies) {
        assert.strictEqual(b.filterGroups.length, 1);
        assert.strictEqual(b.filterGroups[0]!.filters.length, 1);
        assert.ok(b.filterGroups[0]!.filters[0]!.values!.length <= 100);
      }
      assert.deepStrictEqual(
        bodies.flatMap((b) => b.filterGroups[0]!.filters[0]!.values!).sort(),
        [...emails].sort(),
        'each address searched once',
      );
      // 5/s: in any 1-second window at most 5 searches
      const t = hs.searchTimes;
      for (let i = 5; i < t.length; i++) assert.ok(t[i]! - t[i - 5]! >= 1000, `search ${i} at ${t[i]! - t[0]!} ms`);
      const span = t[t.length - 1]! - t[0]!;
      assert.ok(
        span >= 2000 && span < 5000,
        `11 searches took ${span} ms of (fake) time: paced at 5/s, not by the 10-second limit`,
      );
    });

    it('search 429 SECONDLY is waited out and retried; a 400 leaves the addresses queued (failed-retryable), never not-found', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('p@example.com', false, {}, 's@example.com');
      hs.script({ match: isPath(P.search), status: 429, body: rateLimit429('SECONDLY') });
      const h = open(serviceKey());
      const report = await deliver(h.target, [optOut('s@example.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'applied');
      assert.strictEqual(hs.count(isPath(P.search)), 2);
      assert.ok(
        h.clock.slept.some((ms) => ms >= 1000),
        'waited about a second',
      );

      nock.cleanAll();
      const hs2 = new FakeHubSpot().install();
      hs2.script({
        match: isPath(P.search),
        status: 400,
        body: { status: 'error', message: 'bad filter', category: 'VALIDATION_ERROR', correlationId: 'x' },
      });
      const { target } = open(serviceKey());
      const r2 = await deliver(target, [optOut('s@example.com')]);
      assert.strictEqual(r2.outcomes[0]!.kind, 'failed-retryable');
      assert.match(r2.outcomes[0]!.message!, /search on hs_additional_emails refused/);
    });

    it('a search 403 halts the target naming the missing scope', async () => {
      const hs = new FakeHubSpot().install();
      hs.script({
        match: isPath(P.search),
        status: 403,
        body: {
          status: 'error',
          message: 'missing scopes',
          category: 'MISSING_SCOPES',
          correlationId: 'x',
          context: { missingScopes: ['crm.objects.contacts.read'] },
        },
      });
      const { target } = open(serviceKey());
      const r = await deliverEither(target, [optOut('s@example.com')], 'apply');
      assert.ok(isLeft(r));
      if (isLeft(r))
        assert.match(r.left.message, /contact search \(403\): the token needs scope crm\.objects\.contacts\.read/);
    });

    it('matchAdditionalEmails: false makes no search: the address is not-found', async () => {
      const hs = new FakeHubSpot().install();
      hs.addContact('p@example.com', false, {}, 's@example.com');
      const { target } = open(serviceKey({ matchAdditionalEmails: false }));
      const report = await deliver(target, [optOut('s@example.com')]);
      assert.strictEqual(report.outcomes[0]!.kind, 'not-found');
      assert.match(report.outcomes[0]!.message!, /matchAdditionalEmails is false/);
      assert.strictEqual(hs.count(isPath(P.search)), 0);
    });

    it('dry run plans the secondary address write, naming the contact, with no write', async () => {
      const hs = new FakeHubSpot().install();
      const id = hs.addContact('p@example.com', false, {}, 's@example.com');
      const { target } = open(serviceKey());
      const report = await deliver(target, [optOut('s@example.com')], 'plan');
      const o = report.outcomes[0]!;
      assert.strictEqual(o.kind, 'planned');
      assert.strictEqual(o.matchedBy, 'additional-email');
      assert.match(
        o.action!,
        new RegExp(
          `unsubscribe-all EMAIL for s@example.com \\(secondary address \\(hs_additional_emails\\) of contact ${id}\\) via 2026-09 batch unsubscribe-all`,
        ),
      );
      assert.deepStrictEqual(writePaths(hs), []);
    });

    it('the not-found recheck (a later delivery of the same opt-out) finds an address added as secondary since', async () => {
      const hs = new FakeHubSpot().install();
      const h = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch: 'never' } }));
      assert.strictEqual((await deliver(h.target, [optOut('late@example.com')])).outcomes[0]!.kind, 'not-found');
      const id = hs.addContact('p@example.com', false, {}, 'late@example.com');
      const again = await deliver(h.target, [optOut('late@example.com')]);
      assert.deepStrictEqual(byEmail(again).get('late@example.com'), {
        email: 'late@example.com',
        kind: 'applied',
        recordIds: [id],
        matchedBy: 'additional-email',
        message: `secondary address (hs_additional_emails) of contact ${id}`,
      });
    });

    it('the audit shows how a closed row was matched', () => {
      const s = new SqliteStateStore(':memory:');
      const now = '2026-06-01T00:00:00.000Z';
      const o = (email: string) => ({
        email,
        contactId: `c-${email}`,
        optedOutAt: '2026-05-01T00:00:00.000Z',
        source: 'Contact',
        reason: null,
        deleted: false,
      });
      s.commitDetection({
        runId: 1,
        added: [o('a@x.com'), o('b@x.com'), o('c@x.com')],
        resubscribed: [],
        targets: ['hs'],
        now,
      });
      s.recordOutcomes({
        runId: 1,
        target: 'hs',
        now: new Date(now),
        policy: { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 },
        outcomes: [
          { email: 'a@x.com', kind: 'applied', recordIds: ['1'], matchedBy: 'primary' },
          { email: 'b@x.com', kind: 'applied', recordIds: ['2', '3'], matchedBy: 'additional-email' },
          { email: 'c@x.com', kind: 'applied', recordIds: ['4'] },
        ],
      });
      const rows = new Map(s.audit(null).map((r) => [r.email, r]));
      assert.strictEqual(rows.get('a@x.com')!.message, 'matched by primary');
      assert.strictEqual(rows.get('b@x.com')!.message, 'matched by additional-email');
      assert.deepStrictEqual(rows.get('b@x.com')!.recordIds, ['2', '3']);
      assert.strictEqual(rows.get('c@x.com')!.message, null);
      s.close();
    });
  });

  describe('calls near the minimum: ceil(E/100) reads + ceil(F/100) searches + K writes (per address) or ceil(S/100) status reads + ceil(K/100) (batch)', () => {
    const E = 450;
    const emails = Array.from({ length: E }, (_, i) => `person${i}@example.com`);
    /** every 3rd is nobody's primary (F); of those every 2nd is someone's secondary; every 7th primary already suppressed. */
    function seed(hs: FakeHubSpot): { F: number; K: number; secondary: number } {
      let F = 0;
      let K = 0;
      let secondary = 0;
      emails.forEach((e, i) => {
        if (i % 3 === 0) {
          F++;
          if (i % 2 === 0) {
            hs.addContact(`holder${i}@example.com`, false, {}, `x${i}@example.com; ${e.toUpperCase()}`);
            secondary++;
            K++;
          }
          return;
        }
        const suppressed = i % 7 === 0;
        hs.addContact(e, suppressed);
        if (!suppressed) K++;
      });
      return { F, K, secondary };
    }

    for (const batch of ['always', 'never'] as const) {
      it(`${batch === 'always' ? 'batch' : 'per-address'} writes`, async () => {
        const hs = new FakeHubSpot().install();
        const { F, K, secondary } = seed(hs);
        const h = open(serviceKey({ suppression: { type: 'unsubscribe-all', batch } }));
        const report = await deliver(
          h.target,
          emails.map((e) => optOut(e)),
        );
        const applied = report.outcomes.filter((o) => o.kind === 'applied');
        assert.strictEqual(applied.length, K);
        assert.strictEqual(applied.filter((o) => o.matchedBy === 'additional-email').length, secondary);
        const reads = hs.count(isPath(P.read));
        const searches = hs.count(isPath(P.search));
        const writes = hs.count(isPath(batch === 'always' ? P.batchAll : P.singleAll));
        // batch: + ceil(S/100) address status reads for the S secondary matches (none without batch)
        const statusReads = hs.count(isPath(P.batchAllRead));
        const minimum =
          Math.ceil(E / 100) +
          Math.ceil(F / 100) +
          (batch === 'always' ? Math.ceil(secondary / 100) + Math.ceil(K / 100) : K);
        assert.strictEqual(reads, Math.ceil(E / 100));
        assert.strictEqual(searches, Math.ceil(F / 100));
        assert.strictEqual(statusReads, batch === 'always' ? Math.ceil(secondary / 100) : 0);
        assert.strictEqual(writes, batch === 'always' ? Math.ceil(K / 100) : K);
        assert.strictEqual(h.count(), minimum, 'calls counted = the minimum');

        console.log(
          `      measured (${batch}): E=${E} F=${F} K=${K} -> reads=${reads} searches=${searches} status reads=${statusReads} writes=${writes}; used/minimum ${h.count()}/${minimum}`,
        );
      });
    }
  });
});

describe('hubspot connector: Service Key is a secret', () => {
  afterEach(() => clearSecrets());

  it('the config layer treats serviceKey as a secret: masked in codec errors, redacted once loaded', () => {
    assert.ok(isSecretKey('serviceKey'));
    const r = connector.config.decode({ auth: { type: 'service-key', serviceKey: 12345678 } });
    assert.ok(isLeft(r));
    const text = isLeft(r) ? formatErrors(r.left).join('\n') : '';
    assert.match(text, /auth\.serviceKey/);
    assert.ok(!text.includes('12345678'), text);
    open(serviceKey());
    assert.ok(!redact(`key ${SERVICE_KEY}`).includes(SERVICE_KEY));
  });
});
