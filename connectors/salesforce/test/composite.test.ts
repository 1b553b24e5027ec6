/**
 * Salesforce Composite delivery: lookups (200 addresses per query, bounded by URL bytes) and Collections
 * updates go five to a `POST /composite` call, one API call each; per-subrequest results map back to the
 * right emails. Unit tests through the REAL jsforce to the nock fake org; end-to-end against the emulator.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import * as E from 'fp-ts/Either';
import axios from 'axios';
import { connector, openSalesforce } from '..';
import { DeliveryMode, HaltInfo, OptOut } from '../../../src/sdk';
import { DeliveryResult as DeliveryReport, deliverEither } from '../../../test/contract';
import { clearSecrets } from '../../../src/log';
import { startSalesforce } from '../../../src/emulators';
import type { SalesforceEmulator } from '../../../src/emulators';
import { FakeOrg, INSTANCE, API, contact, lead, testCaps, optOut, parseLookupSoql } from './fixtures/fake-org';

const FAST = { retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 100 } };

function setup(raw: Record<string, unknown>) {
  const decoded = connector.config.decode(raw);
  if (E.isLeft(decoded)) throw new Error('bad test config');
  const t = testCaps();
  const target = openSalesforce(decoded.right, t.caps, FAST);
  const deliver = async (batch: OptOut[], mode: DeliveryMode = 'apply'): Promise<E.Either<HaltInfo, DeliveryReport>> =>
    deliverEither(target, batch, mode);
  const report = async (batch: OptOut[], mode: DeliveryMode = 'apply'): Promise<DeliveryReport> => {
    const r = await deliver(batch, mode);
    if (E.isLeft(r)) throw new Error(`unexpected Left: ${r.left.kind}: ${r.left.message}`);
    return r.right;
  };
  return { target, deliver, report, ...t };
}

const orgConfig = (overrides: Record<string, unknown> = {}) => ({
  instanceUrl: INSTANCE,
  auth: { type: 'access-token', accessToken: 'initial-access-token-abc' },
  ...overrides,
});
const kinds = (r: DeliveryReport) => new Map(r.outcomes.map((o) => [o.email, o]));
const subBody = (r: { body: string }) =>
  JSON.parse(r.body) as {
    compositeRequest: Array<{
      method: string;
      url: string;
      referenceId: string;
      body?: { records: Array<{ id: string }> };
    }>;
  };

describe('salesforce composite delivery (jsforce + nock)', () => {
  let org: FakeOrg;
  beforeEach(() => {
    clearSecrets();
    org = new FakeOrg().install();
  });
  afterEach(() => nock.cleanAll());

  it('2,500 emails: 13 queries per object of at most 200 addresses, never more than 5 subrequests per composite call, ceil(26/5) = 6 calls', async () => {
    const emails = Array.from({ length: 2500 }, (_, i) => `c${i}@example.com`);
    const { report, counts } = setup(orgConfig());
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.equal(r.outcomes.filter((o) => o.kind === 'not-found').length, 2500);
    const calls = org.compositeCalls();
    assert.equal(calls.length, 6);
    for (const c of calls) assert.ok(subBody(c).compositeRequest.length <= 5);
    const sizes = org.queries().map((q) => parseLookupSoql(q.soql).emails.length);
    assert.equal(sizes.length, 26);
    assert.ok(sizes.every((n) => n <= 200));
    assert.equal(sizes.filter((n) => n === 200).length, 24); // full chunks: 12 per object, then 100
    assert.equal(counts.get('salesforce'), 6);
  });

  it('long addresses: chunks cut by URL bytes (each subrequest query URL within 14,336 bytes), fewer than 200 per query', async () => {
    const emails = Array.from(
      { length: 400 },
      (_, i) => `${'x'.repeat(60)}.${i}@a-rather-long-subdomain.example-company.com`,
    );
    const { report } = setup(orgConfig({ objects: { Lead: { enabled: false } } }));
    await report(emails.map((e, i) => optOut(e, i)));
    const qs = org.queries();
    assert.ok(qs.length > 2, `${qs.length} queries`);
    for (const q of qs) assert.ok(q.url.length <= 14_336, `query URL of ${q.url.length} bytes`);
    const seen = qs.flatMap((q) => parseLookupSoql(q.soql).emails);
    assert.equal(new Set(seen).size, 400);
    assert.equal(seen.length, 400);
  });

  it('a lookup subrequest answered 503 is sent again in a later call; every email is decided, none twice', async () => {
    const emails = Array.from({ length: 600 }, (_, i) => `m${i}@example.com`);
    emails.forEach((e, i) => org.add(lead(`00QM${i}`, e)));
    let failed = 0;
    org.subFault = (sub) =>
      sub.path === `${API}/query` && sub.url.includes('FROM%20Lead') && failed++ === 0
        ? [503, [{ errorCode: 'SERVER_UNAVAILABLE', message: 'busy' }]]
        : undefined;
    const { report } = setup(orgConfig());
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 600);
    assert.equal(org.queries().length, 7); // 3 Contact + 3 Lead + the failed Lead chunk again
    assert.equal(org.compositeCalls().length, 4); // 6 lookups (5 + 1), the failed one again, then the 3 updates
    assert.equal(org.collectionUpdates().length, 3);
  });

  it('a lookup subrequest failing every time leaves exactly its emails failed-retryable, with its error; the rest is delivered', async () => {
    const emails = Array.from({ length: 400 }, (_, i) => `n${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003N${i}`, e)));
    // the Contact chunk holding n250.. (the second of 200) always fails
    org.subFault = (sub) =>
      sub.url.includes('FROM%20Contact') && sub.url.includes('n250%40')
        ? [500, [{ errorCode: 'UNKNOWN_EXCEPTION', message: 'boom' }]]
        : undefined;
    const { deliver } = setup(orgConfig());
    const r = await deliver(emails.map((e, i) => optOut(e, i)));
    assert.ok(E.isRight(r), 'no halt: the failure belongs to one subrequest');
    const out = kinds(r.right);
    for (let i = 0; i < 400; i++) {
      const o = out.get(`n${i}@example.com`)!;
      if (i < 200) assert.equal(o.kind, 'applied', `n${i}`);
      else {
        assert.equal(o.kind, 'failed-retryable', `n${i}`);
        assert.match(o.message ?? '', /Contact lookup subrequest failed 2 times \(HTTP 500 UNKNOWN_EXCEPTION: boom\)/);
      }
    }
    assert.equal(org.records.filter((x) => x['HasOptedOutOfEmail'] === true).length, 200);
  });

  it('MALFORMED_QUERY in one subrequest: bad-request (the engine isolates the address), nothing written', async () => {
    const emails = Array.from({ length: 300 }, (_, i) => `b${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003B${i}`, e)));
    org.subFault = (sub) =>
      sub.url.includes('b0%40') && sub.url.includes('FROM%20Lead')
        ? [400, [{ errorCode: 'MALFORMED_QUERY', message: 'unexpected token' }]]
        : undefined;
    const { deliver } = setup(orgConfig());
    const r = await deliver(emails.map((e, i) => optOut(e, i)));
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'bad-request');
    assert.match(r.left.message, /MALFORMED_QUERY/);
    assert.equal(org.collectionUpdates().length, 0);
  });

  it('a Collections subrequest refused as a whole fails only its own 200 records, with its code; the other subrequests apply', async () => {
    const emails = Array.from({ length: 600 }, (_, i) => `w${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003W${String(i).padStart(4, '0')}`, e)));
    let seen = 0;
    org.subFault = (sub) =>
      sub.method === 'PATCH' && ++seen === 2
        ? [400, [{ errorCode: 'INVALID_FIELD', message: 'No such column' }]]
        : undefined;
    const { report } = setup(orgConfig());
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const updates = org.collectionUpdates();
    assert.equal(updates.length, 3);
    const refused = new Set(
      (JSON.parse(updates[1]!.body) as { records: Array<{ id: string }> }).records.map((x) => x.id),
    );
    assert.equal(refused.size, 200);
    for (const o of r.outcomes) {
      const id = o.recordIds[0]!;
      if (refused.has(id)) {
        assert.equal(o.kind, 'failed-permanent', o.email);
        assert.match(o.message ?? '', new RegExp(`Contact ${id}: INVALID_FIELD: No such column`));
      } else assert.equal(o.kind, 'applied', o.email);
    }
    assert.equal(org.records.filter((x) => x['HasOptedOutOfEmail'] === true).length, 400);
  });

  it('a Collections subrequest answered 503: its records failed-retryable, the others applied', async () => {
    const emails = Array.from({ length: 400 }, (_, i) => `s${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003S${String(i).padStart(4, '0')}`, e)));
    let seen = 0;
    org.subFault = (sub) =>
      sub.method === 'PATCH' && ++seen === 1
        ? [503, [{ errorCode: 'SERVER_UNAVAILABLE', message: 'try later' }]]
        : undefined;
    const { report } = setup(orgConfig());
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.equal(r.outcomes.filter((o) => o.kind === 'failed-retryable').length, 200);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 200);
    assert.ok(
      r.outcomes.filter((o) => o.kind === 'failed-retryable').every((o) => /SERVER_UNAVAILABLE/.test(o.message ?? '')),
    );
  });
});

describe('salesforce composite delivery against the emulator', () => {
  let sf: SalesforceEmulator;
  before(async () => {
    sf = await startSalesforce({ seed: 23, contacts: 8000 });
  });
  after(() => sf.stop());

  const V = '/services/data/v59.0';
  const post = (body: unknown) =>
    axios.post(`${sf.origin}${V}/composite`, body, {
      headers: { authorization: `Bearer ${sf.connection().accessToken}` },
      validateStatus: () => true,
    });
  const usage = (h: Record<string, unknown>) => Number(/api-usage=(\d+)/.exec(String(h['sforce-limit-info']))![1]);

  it('the emulator: per-subrequest results by referenceId, ONE API unit per call, more than 5 queries refused', async () => {
    const q = (soql: string) => `${V}/query?q=${encodeURIComponent(soql)}`;
    const before = await post({
      allOrNone: false,
      compositeRequest: [{ method: 'GET', url: q('SELECT Id FROM Contact LIMIT 1'), referenceId: 'a' }],
    });
    assert.equal(before.status, 200);
    const r = await post({
      allOrNone: false,
      compositeRequest: [
        { method: 'GET', url: q('SELECT Id, Email FROM Contact LIMIT 2'), referenceId: 'good' },
        { method: 'GET', url: q("SELECT Id FROM Contact WHERE Email IN ('x"), referenceId: 'bad' },
        {
          method: 'PATCH',
          url: `${V}/composite/sobjects`,
          referenceId: 'upd',
          body: {
            allOrNone: false,
            records: [{ attributes: { type: 'Contact' }, id: '003000000000000AAA', HasOptedOutOfEmail: true }],
          },
        },
      ],
    });
    assert.equal(r.status, 200);
    assert.equal(usage(r.headers) - usage(before.headers), 1, 'one API unit for three subrequests');
    const by = new Map(
      (r.data.compositeResponse as Array<{ referenceId: string; httpStatusCode: number; body: unknown }>).map((x) => [
        x.referenceId,
        x,
      ]),
    );
    assert.equal(by.get('good')!.httpStatusCode, 200);
    assert.equal((by.get('good')!.body as { records: unknown[] }).records.length, 2);
    assert.equal(by.get('bad')!.httpStatusCode, 400);
    assert.equal((by.get('bad')!.body as Array<{ errorCode: string }>)[0]!.errorCode, 'MALFORMED_QUERY');
    assert.equal(by.get('upd')!.httpStatusCode, 200);
    assert.equal((by.get('upd')!.body as Array<{ success: boolean }>)[0]!.success, false);
    const six = await post({
      allOrNone: false,
      compositeRequest: Array.from({ length: 6 }, (_, i) => ({
        method: 'GET',
        url: q('SELECT Id FROM Lead LIMIT 1'),
        referenceId: `q${i}`,
      })),
    });
    assert.equal(six.status, 400);
    assert.match(JSON.stringify(six.data), /at most 5 query or sObject Collections subrequests/);
  });

  it('a backfill of every opt-out of 8,000 contacts (about 1,000 opt-outs, one engine batch) costs ceil(2 x ceil(M/200) / 5) + ceil(ceil(K/200) / 5) API calls', async () => {
    const truth = sf.world.truth();
    const emails = [...new Set(truth.optOuts.map((o) => o.email.trim().toLowerCase()))];
    const c = sf.connection();
    const { report, counts } = setup({
      instanceUrl: c.instanceUrl,
      apiVersion: c.apiVersion,
      auth: { type: 'access-token', accessToken: c.accessToken },
    });
    const before = sf.usage.used(sf.world.now());
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const k = truth.salesforce.toSuppress.length;
    assert.ok(emails.length > 200 && k > 200, `M=${emails.length}, K=${k}`);
    const expected = Math.ceil((2 * Math.ceil(emails.length / 200)) / 5) + Math.ceil(Math.ceil(k / 200) / 5);
    assert.equal(counts.get('salesforce'), expected);
    assert.equal(sf.usage.used(sf.world.now()) - before, expected, 'the org counted the same');
    const naive = 2 * Math.ceil(emails.length / 200) + Math.ceil(k / 200);
    assert.ok(expected <= 0.3 * naive, `${expected} <= 0.3 x ${naive}`);
    assert.equal(r.outcomes.filter((o) => o.kind === 'failed-retryable' || o.kind === 'failed-permanent').length, 0);
    const v = sf.world.verify().salesforce;
    assert.ok(v.ok, JSON.stringify(v).slice(0, 300));
  });
});
