/**
 * Issue 8 #9: one address that makes the CRM refuse a lookup (Salesforce 400 MALFORMED_QUERY, HubSpot 400 on
 * batch read) must not hold back its whole batch. The engine splits a batch the connector reports as
 * `bad-request` down to single addresses; only the address(es) refused on their own are parked, with the
 * vendor's message; the rest is delivered.
 *
 * Salesforce runs against the Salesforce emulator (127.0.0.1) through jsforce; HubSpot through the SDK to nock.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import * as t from 'io-ts';
import { FakeSource, contact } from '../helpers';
import { createRegistry, Registry } from '../../src/registry';
import { Connector, TargetHalt } from '../../src/sdk';
import { deliverEither } from '../contract';
import { decodeConfig } from '../../src/config';
import { Engine } from '../../src/engine';
import { SqliteStateStore } from '../../src/store/sqlite';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { Outcome } from '../../src/domain';
import { startSalesforce } from '../../src/emulators';
import type { SalesforceEmulator } from '../../src/emulators';
import * as E from 'fp-ts/Either';
import { connector as sfConnector, openSalesforce } from '../../connectors/salesforce';
import { FakeOrg, INSTANCE, testCaps, optOut as sfOptOut } from '../../connectors/salesforce/test/fixtures/fake-org';

const T0 = new Date('2026-06-01T12:00:00Z');
const ODD = 'odd\u0001name@example.com';

function engineFor(
  registry: Registry,
  targets: Array<{ name: string; connector: string; config: unknown }>,
  emails: string[],
  batchSize = 50,
) {
  const config = decodeConfig(
    {
      source: { type: 'constant-contact', clientId: 'client-1' },
      targets,
      store: { path: ':memory:' },
      delivery: { batchSize, maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 },
    },
    {},
    registry,
  );
  const source = new FakeSource();
  source.pageSize = 100;
  // opted out in list order, so the outbox (oldest first) delivers them in that order
  source.contacts = emails.map((e, i) =>
    contact(e, 'unsubscribed', new Date(T0.getTime() - (emails.length - i) * 60_000).toISOString()),
  );
  const store = new SqliteStateStore(':memory:');
  const logger = memoryLogger();
  const engine = new Engine({
    config,
    store,
    registry,
    source: () => source,
    clock: fakeClock(T0),
    logger,
    random: () => 0.5,
  });
  return { engine, store, logger };
}

/** Outcome and message per email as `audit` reports them. */
function lastOutcomes(store: SqliteStateStore, target: string): Map<string, { kind: string; message: string | null }> {
  return new Map(
    store
      .audit(null)
      .filter((r) => r.target === target)
      .map((r) => [r.email, { kind: r.outcome, message: r.message }]),
  );
}

/** 'queued' for rows still in the outbox, else 'parked' (failed-permanent) or 'done'. */
function outboxStates(store: SqliteStateStore, target: string): Map<string, string> {
  const queued = new Set(store.queuedOutbox(target, 10_000, 0).map((r) => r.optOut.email));
  return new Map(
    store
      .audit(null)
      .filter((r) => r.target === target)
      .map((r) => [r.email, queued.has(r.email) ? 'queued' : r.outcome === 'failed-permanent' ? 'parked' : 'done']),
  );
}

describe('delivery isolation: a batch refused as a bad request is split, only the culprit is parked (issue 8 #9)', () => {
  describe('Salesforce (emulator, jsforce)', () => {
    let sf: SalesforceEmulator;
    before(async () => {
      sf = await startSalesforce({ seed: 11, contacts: 300 });
    });
    after(async () => {
      await sf.stop();
    });

    function sfTarget() {
      const c = sf.connection();
      return {
        name: 'sf',
        connector: 'salesforce',
        config: {
          instanceUrl: c.instanceUrl,
          apiVersion: c.apiVersion,
          auth: { type: 'access-token', accessToken: c.accessToken },
        },
      };
    }

    function knownEmails(n: number): string[] {
      const emails = new Set<string>();
      for (const r of sf.world.salesforceState().records) {
        if (r.email && !r.deleted && !r.optedOut && !r.isConverted && (r.type === 'Contact' || r.type === 'Lead'))
          emails.add(r.email.toLowerCase());
        if (emails.size >= n) break;
      }
      return [...emails];
    }

    it('the emulator refuses a literal it cannot parse with 400 MALFORMED_QUERY, as Salesforce does', async () => {
      const c = sf.connection();
      const q = `SELECT Id FROM Contact WHERE Email IN ('a@example.com','${ODD}')`;
      const res = await fetch(`${c.instanceUrl}/services/data/v${c.apiVersion}/query?q=${encodeURIComponent(q)}`, {
        headers: { Authorization: `Bearer ${c.accessToken}` },
      });
      assert.equal(res.status, 400);
      const body = (await res.json()) as Array<{ errorCode: string; message: string }>;
      assert.equal(body[0]!.errorCode, 'MALFORMED_QUERY');
    });

    it('22 good addresses are delivered, the one odd address is parked with MALFORMED_QUERY; extra calls stay logarithmic', async () => {
      const known = knownEmails(44);
      assert.equal(known.length, 44);
      const good = known.slice(0, 22);
      const emails = [...good.slice(0, 11), ODD, ...good.slice(11)];
      const registry = createRegistry();
      // reference: 22 other addresses of the same kind, without an odd one
      const ref = engineFor(registry, [sfTarget()], known.slice(22));
      const refRun = await ref.engine.sync();
      await ref.engine.close();
      const refCalls = refRun.apiCalls.salesforce ?? 0;
      assert.equal(refRun.targets.sf!.parked, 0);

      const { engine, store } = engineFor(registry, [sfTarget()], emails);
      const summary = await engine.sync();
      await engine.close();
      const outcomes = lastOutcomes(store, 'sf');
      const states = outboxStates(store, 'sf');
      assert.equal(states.get(ODD), 'parked');
      assert.equal(outcomes.get(ODD)!.kind, 'failed-permanent');
      assert.match(outcomes.get(ODD)!.message ?? '', /MALFORMED_QUERY/);
      for (const e of good) {
        assert.equal(states.get(e), 'done', `${e} delivered`);
        assert.ok(['applied', 'already-suppressed'].includes(outcomes.get(e)!.kind), `${e}: ${outcomes.get(e)!.kind}`);
      }
      assert.equal(summary.targets.sf!.queued, 0);
      assert.equal(summary.targets.sf!.parked, 1);
      assert.equal(summary.targets.sf!.halted, undefined);
      // cost: the refused batch of 23 is split log2(23) ~ 5 levels deep; each refused request is one query, each
      // delivered part 2 lookups (Contact, Lead) + its writes; plus one probe of the query's shape
      const calls = summary.apiCalls.salesforce ?? 0;
      assert.ok(
        calls <= refCalls + 2 * 2 * Math.ceil(Math.log2(23)) + 6,
        `salesforce calls ${calls} (without the odd address: ${refCalls})`,
      );
    });

    it('a dry run isolates the odd address too, and plans the rest', async () => {
      const good = knownEmails(60).slice(50, 58);
      const { engine } = engineFor(createRegistry(), [sfTarget()], [ODD, ...good]);
      const summary = await engine.sync({ dryRun: true });
      await engine.close();
      assert.equal(summary.targets.sf!.halted, undefined);
      const plan = new Map(summary.plan!.map((p) => [p.email, p]));
      assert.equal(plan.get(ODD)!.kind, 'failed-permanent');
      assert.match(plan.get(ODD)!.message ?? '', /MALFORMED_QUERY/);
      for (const e of good) assert.notEqual(plan.get(e)!.kind, 'failed-permanent', e);
      assert.equal(plan.size, 9);
    });
  });

  describe('Salesforce connector: which MALFORMED_QUERY is about the addresses', () => {
    afterEach(() => nock.cleanAll());
    function open(org: FakeOrg) {
      org.install();
      const cfg = sfConnector.config.decode({
        instanceUrl: INSTANCE,
        auth: { type: 'access-token', accessToken: 'initial-access-token-abc' },
      });
      if (E.isLeft(cfg)) throw new Error('bad test config');
      return openSalesforce(cfg.right, testCaps().caps, { retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 } });
    }
    const malformed = (): [number, string, Record<string, string>] => [
      400,
      JSON.stringify([{ errorCode: 'MALFORMED_QUERY', message: "unexpected token: 'x'" }]),
      { 'Content-Type': 'application/json' },
    ];

    it('refused for a literal (a plain address works): bad-request, so the engine isolates it', async () => {
      const org = new FakeOrg();
      org.fault = (req) => (req.method === 'GET' && /odd/.test(decodeURIComponent(req.url)) ? malformed() : undefined);
      const r = await deliverEither(
        open(org),
        [sfOptOut('odd@example.com', 1), sfOptOut('fine@example.com', 2)],
        'apply',
      );
      assert.ok(E.isLeft(r));
      assert.equal(r.left.kind, 'bad-request');
      assert.match(r.left.message, /MALFORMED_QUERY/);
    });

    it('refused whatever the addresses (the probe with a plain address is refused too): a config stop, not a bad request', async () => {
      const org = new FakeOrg();
      org.fault = (req) => (req.method === 'GET' ? malformed() : undefined);
      const r = await deliverEither(open(org), [sfOptOut('a@example.com', 1), sfOptOut('b@example.com', 2)], 'apply');
      assert.ok(E.isLeft(r));
      assert.equal(r.left.kind, 'config');
      // the lookups travel as composite subrequests, the probe on its own
      assert.equal(org.queries().length, 3, 'the two lookups and one probe');
    });
  });

  describe('HubSpot (SDK, nock)', () => {
    const BASE = 'https://api.hubapi.com';
    afterEach(() => nock.cleanAll());

    it('a 400 on batch read parks only the address HubSpot refuses; the others are looked up and settled', async () => {
      const bad = 'bad..dots@example.com';
      const emails = Array.from({ length: 22 }, (_, i) => `person${i}@example.com`);
      emails.splice(7, 0, bad);
      let reads = 0;
      nock(BASE)
        .persist()
        .post(/contacts\/batch\/read/)
        .reply(function (_uri, body) {
          reads += 1;
          const ids = ((body as { inputs: Array<{ id: string }> }).inputs ?? []).map((x) => x.id);
          if (ids.includes(bad))
            return [
              400,
              { status: 'error', message: `Invalid email: ${bad}`, category: 'VALIDATION_ERROR', correlationId: 'c-1' },
            ];
          // every contact exists and is already opted out: no writes are needed (the test is about the lookup)
          const results = ids.map((id, i) => ({
            id: String(1000 + i),
            properties: { email: id, hs_email_optout: 'true' },
            createdAt: '2026-01-01T00:00:00Z',
            updatedAt: '2026-01-01T00:00:00Z',
            archived: false,
          }));
          return [
            200,
            { status: 'COMPLETE', results, startedAt: '2026-06-01T12:00:00Z', completedAt: '2026-06-01T12:00:01Z' },
          ];
        });
      const registry = createRegistry();
      const { engine, store } = engineFor(
        registry,
        [
          {
            name: 'hs',
            connector: 'hubspot',
            config: { auth: { type: 'private-app', accessToken: 'pat-na1-test-token' }, onlyExistingContacts: true },
          },
        ],
        emails,
      );
      const summary = await engine.sync();
      await engine.close();
      const outcomes = lastOutcomes(store, 'hs');
      assert.equal(outcomes.get(bad)!.kind, 'failed-permanent');
      assert.match(outcomes.get(bad)!.message ?? '', /Invalid email/);
      assert.equal(outboxStates(store, 'hs').get(bad), 'parked');
      for (const e of emails.filter((x) => x !== bad)) assert.equal(outcomes.get(e)!.kind, 'already-suppressed', e);
      assert.equal(summary.targets.hs!.queued, 0);
      assert.equal(summary.targets.hs!.halted, undefined);
      // 1 refused read of 23, then halves: at most 2 reads per level of log2(23) ~ 5
      assert.ok(reads <= 1 + 2 * Math.ceil(Math.log2(23)), `${reads} batch reads`);
    });
  });

  describe('engine rules (a scripted connector)', () => {
    /** A connector that refuses (bad-request) any batch holding a "bad" address, or every batch when `all`. */
    function scripted(opts: { bad: Set<string>; all?: boolean; haltAfterCalls?: number }) {
      const calls: string[][] = [];
      const connector: Connector<{ x?: string }> = {
        id: 'scripted',
        config: t.partial({ x: t.string }) as unknown as t.Type<{ x?: string }, unknown, unknown>,
        schema: { type: 'object' },
        capabilities: { dryRun: true, backfill: true, suppressionModes: [] },
        open: () => ({
          check: async () => ({ ok: true, items: [] }),
          deliver: async (batch) => {
            calls.push(batch.map((o) => o.email));
            if (opts.haltAfterCalls !== undefined && calls.length > opts.haltAfterCalls) {
              throw new TargetHalt('quota', 'daily limit reached', { retryAt: '2999-01-01T00:00:00.000Z' });
            }
            if (opts.all || batch.some((o) => opts.bad.has(o.email))) {
              throw new TargetHalt('bad-request', 'HTTP 400 INVALID_INPUT: cannot read that');
            }
            const outcomes: Outcome[] = batch.map((o) => ({
              email: o.email,
              kind: 'applied',
              recordIds: [`id-${o.email}`],
            }));
            return { outcomes };
          },
        }),
      };
      const registry: Registry = createRegistry({ connectorsDir: null, connectors: [connector as Connector<unknown>] });
      return { registry, calls };
    }
    const emails = (n: number) => Array.from({ length: n }, (_, i) => `p${String(i).padStart(2, '0')}@example.com`);

    it('two culprits in a batch of 16: both parked, 14 applied, calls within 2·log2 per culprit', async () => {
      const list = emails(16);
      const bad = new Set([list[3]!, list[12]!]);
      const { registry, calls } = scripted({ bad });
      const { engine, store } = engineFor(registry, [{ name: 's', connector: 'scripted', config: {} }], list);
      const summary = await engine.sync();
      const out = lastOutcomes(store, 's');
      assert.deepEqual(
        [...out]
          .filter(([, o]) => o.kind === 'failed-permanent')
          .map(([e]) => e)
          .sort(),
        [...bad].sort(),
      );
      assert.equal([...out.values()].filter((o) => o.kind === 'applied').length, 14);
      assert.match(out.get(list[3]!)!.message ?? '', /INVALID_INPUT: cannot read that/);
      assert.ok(calls.length <= 1 + 2 * 2 * Math.log2(16), `${calls.length} deliver calls`);
      assert.equal(summary.targets.s!.batches, calls.length);
    });

    it('when every address is refused on its own, nothing is parked: the target stops as misconfigured', async () => {
      const list = emails(5);
      const { registry } = scripted({ bad: new Set(), all: true });
      const { engine, store } = engineFor(registry, [{ name: 's', connector: 'scripted', config: {} }], list);
      const summary = await engine.sync();
      assert.match(summary.targets.s!.halted ?? '', /config: .*every one of 5 addresses/);
      assert.equal(summary.targets.s!.parked, 0);
      assert.equal(summary.targets.s!.queued, 5);
      assert.ok([...outboxStates(store, 's').values()].every((s) => s === 'queued'));
    });

    it('a one-row batch refused with no request of the target gone through is kept queued, not parked (the request may be at fault)', async () => {
      const list = emails(1);
      const { registry } = scripted({ bad: new Set(), all: true });
      const { engine, store } = engineFor(registry, [{ name: 's', connector: 'scripted', config: {} }], list);
      const summary = await engine.sync();
      assert.equal(summary.targets.s!.parked, 0);
      assert.equal(outboxStates(store, 's').get(list[0]!), 'queued');
      assert.match(
        lastOutcomes(store, 's').get(list[0]!)!.message ?? '',
        /INVALID_INPUT: cannot read that.*kept queued/,
      );
    });

    it('a culprit isolated in one-row batches is parked once another batch of the run went through', async () => {
      const list = emails(4);
      const { registry } = scripted({ bad: new Set([list[0]!]) });
      const { engine, store } = engineFor(registry, [{ name: 's', connector: 'scripted', config: {} }], list, 1);
      await engine.sync();
      // the culprit's own batch came first and had no evidence yet: kept queued; a later run (after the others went through) parks it
      assert.equal(outboxStates(store, 's').get(list[0]!), 'queued');
      for (const e of list.slice(1)) assert.equal(outboxStates(store, 's').get(e), 'done', e);
    });

    it('a target-wide stop during the split keeps every undelivered address queued (nothing parked by mistake)', async () => {
      const list = emails(8);
      const { registry, calls } = scripted({ bad: new Set([list[6]!]), haltAfterCalls: 2 });
      const { engine, store } = engineFor(registry, [{ name: 's', connector: 'scripted', config: {} }], list);
      const summary = await engine.sync();
      assert.equal(calls.length, 3);
      const states = outboxStates(store, 's');
      // call 1: all 8 refused; call 2: p00-p03 applied; call 3: the quota stop for p04-p07
      for (const e of list.slice(0, 4)) assert.equal(states.get(e), 'done', e);
      for (const e of list.slice(4)) assert.equal(states.get(e), 'queued', e);
      assert.match(summary.targets.s!.halted ?? '', /quota: daily limit reached/);
      assert.equal(summary.targets.s!.parked, 0);
    });
  });
});
