/**
 * Salesforce deliver() through the REAL jsforce 3.10.16 to a nock-backed fake org.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import * as E from 'fp-ts/Either';
import { connector, openSalesforce } from '..';
import { DeliveryMode, HaltInfo, OptOut } from '../../../src/sdk';
import { DeliveryResult as DeliveryReport, deliverEither } from '../../../test/contract';
import { clearSecrets } from '../../../src/log';
import {
  FakeOrg,
  INSTANCE,
  API,
  contact,
  lead,
  personAccount,
  testCaps,
  optOut,
  parseLookupSoql,
} from './fixtures/fake-org';

const FAST = { retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 100 } };

function setup(org: FakeOrg, overrides: Record<string, unknown> = {}) {
  const raw = {
    instanceUrl: INSTANCE,
    auth: { type: 'access-token', accessToken: 'initial-access-token-abc' },
    ...overrides,
  };
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

function byEmail(r: DeliveryReport) {
  return new Map(r.outcomes.map((o) => [o.email, o]));
}

describe('salesforce deliver (jsforce + nock)', () => {
  let org: FakeOrg;
  beforeEach(() => {
    clearSecrets();
    org = new FakeOrg().install();
  });
  afterEach(() => {
    nock.cleanAll();
  });

  it('chunks 1,000 emails into ceil(M/200) queries per object, five to a Composite call, every query URL within 16,384 bytes', async () => {
    const emails = Array.from({ length: 1000 }, (_, i) => `first.last.number${i}@subdomain.example-company.com`);
    emails.slice(0, 30).forEach((e, i) => org.add(contact(`003C${i}`, e)));
    const { report, counts } = setup(org);
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const queries = org.queries();
    const perObject = (o: string) => queries.filter((q) => parseLookupSoql(q.soql).object === o);
    assert.equal(perObject('Contact').length, 5);
    assert.equal(perObject('Lead').length, 5);
    for (const q of [...org.requests, ...org.queries()])
      assert.ok(q.url.length <= 16_384, `URL of ${q.url.length} bytes`);
    // every email looked up exactly once per object
    const seen = perObject('Contact').flatMap((q) => parseLookupSoql(q.soql).emails);
    assert.equal(new Set(seen).size, 1000);
    assert.equal(seen.length, 1000);
    assert.equal(r.outcomes.length, 1000);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 30);
    assert.equal(r.outcomes.filter((o) => o.kind === 'not-found').length, 970);
    // 10 queries in 2 composite calls + 1 collection call (30 records); access-token auth needs no token request
    assert.equal(org.compositeCalls().length, 2);
    assert.equal(org.collectionCalls().length, 1);
    assert.equal(counts.get('salesforce'), 3);
  });

  it('cuts chunks further when long addresses would push a URL past the limit', async () => {
    const local = 'x'.repeat(60);
    const emails = Array.from(
      { length: 1000 },
      (_, i) => `${local}.${i}@a-rather-long-subdomain.of-a-very-long-example-domain-name.example.com`,
    );
    const { report } = setup(org, { objects: { Lead: { enabled: false } } });
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const queries = org.queries();
    assert.ok(queries.length > 10, `${queries.length} queries`);
    for (const q of org.requests) assert.ok(q.url.length <= 16_384, `URL of ${q.url.length} bytes`);
    assert.equal(new Set(queries.flatMap((q) => parseLookupSoql(q.soql).emails)).size, 1000);
    assert.ok(r.outcomes.every((o) => o.kind === 'not-found'));
  });

  it("escapes ' and \\ in SOQL literals and still matches", async () => {
    org.add(
      contact('003Q1', "o'brien@example.com"),
      contact('003B1', 'back\\slash@example.com'),
      lead('00QQ1', "O'Brien@Example.com"),
    );
    const { report } = setup(org);
    const r = await report([optOut("o'brien@example.com"), optOut('back\\slash@example.com')]);
    const soql = org.queries()[0]!.soql;
    assert.ok(soql.includes("'o\\'brien@example.com'"), soql);
    assert.ok(soql.includes("'back\\\\slash@example.com'"), soql);
    const out = byEmail(r);
    assert.equal(out.get("o'brien@example.com")!.kind, 'applied');
    assert.deepEqual([...out.get("o'brien@example.com")!.recordIds].sort(), ['003Q1', '00QQ1']);
    assert.equal(out.get('back\\slash@example.com')!.kind, 'applied');
    assert.equal(org.get('003B1')!['HasOptedOutOfEmail'], true);
  });

  it('never sends a query with an empty list (empty batch: no request at all)', async () => {
    const { report, counts } = setup(org);
    const r = await report([]);
    assert.deepEqual(r.outcomes, []);
    assert.equal(org.requests.length, 0);
    assert.equal(counts.get('salesforce') ?? 0, 0);
  });

  it('with every object disabled: a config error and no request', async () => {
    const { deliver } = setup(org, { objects: { Contact: { enabled: false }, Lead: { enabled: false } } });
    const r = await deliver([optOut('a@example.com')]);
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'config');
    assert.equal(org.requests.length, 0);
  });

  it('suppresses every record of an email: a Contact and a Lead both written', async () => {
    org.add(
      contact('003D1', 'dup@example.com'),
      lead('00QD1', 'DUP@example.com'),
      contact('003D2', 'dup@example.com', true),
    );
    const { report } = setup(org);
    const r = await report([optOut('dup@example.com')]);
    const o = r.outcomes[0]!;
    assert.equal(o.kind, 'applied');
    assert.deepEqual([...o.recordIds].sort(), ['003D1', '00QD1']);
    assert.match(o.message ?? '', /already opted out: Contact 003D2/);
    assert.equal(org.collectionCalls().length, 1);
    const body = JSON.parse(org.collectionCalls()[0]!.body) as {
      allOrNone: boolean;
      records: Array<{ attributes: { type: string }; id: string; HasOptedOutOfEmail: boolean }>;
    };
    assert.equal(body.allOrNone, false);
    assert.deepEqual(
      body.records.map((x) => [x.attributes.type, x.id, x.HasOptedOutOfEmail]),
      [
        ['Contact', '003D1', true],
        ['Lead', '00QD1', true],
      ],
    );
    assert.equal(org.get('00QD1')!['HasOptedOutOfEmail'], true);
  });

  it('excludes converted Leads in the query; CANNOT_UPDATE_CONVERTED_LEAD is failed-permanent naming the record, the rest is written', async () => {
    org.add(
      lead('00QC1', 'conv@example.com', false, true),
      contact('003V1', 'conv@example.com'),
      lead('00QR1', 'race@example.com'),
      contact('003R1', 'race@example.com'),
    );
    // 00QR1 is converted between the lookup and the write
    org.writeFaults.set('00QR1', ['CANNOT_UPDATE_CONVERTED_LEAD']);
    const { report } = setup(org);
    const r = await report([optOut('conv@example.com'), optOut('race@example.com')]);
    const leadQuery = org
      .queries()
      .map((q) => q.soql)
      .find((s) => s.includes('FROM Lead'))!;
    assert.match(leadQuery, / AND IsConverted = false$/);
    const out = byEmail(r);
    assert.equal(out.get('conv@example.com')!.kind, 'applied');
    assert.deepEqual(out.get('conv@example.com')!.recordIds, ['003V1']);
    assert.equal(org.get('00QC1')!['HasOptedOutOfEmail'], false);
    const race = out.get('race@example.com')!;
    assert.equal(race.kind, 'failed-permanent');
    assert.match(race.message ?? '', /Lead 00QR1: CANNOT_UPDATE_CONVERTED_LEAD: cannot reference converted lead/);
    assert.match(race.message ?? '', /written: Contact 003R1/);
    assert.equal(org.get('003R1')!['HasOptedOutOfEmail'], true);
  });

  it('writes 450 records in 3 sObject Collections updates of at most 200 (allOrNone false), in one Composite call', async () => {
    const emails = Array.from({ length: 450 }, (_, i) => `p${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003P${i}`, e)));
    const { report, counts } = setup(org);
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const calls = org.collectionUpdates().map((c) => JSON.parse(c.body) as { allOrNone: boolean; records: unknown[] });
    assert.deepEqual(
      calls.map((c) => c.records.length),
      [200, 200, 50],
    );
    assert.ok(calls.every((c) => c.allOrNone === false));
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 450);
    assert.equal(org.queries().length, 6); // ceil(450/200) per object, 2 objects
    assert.equal(org.compositeCalls().length, 3); // 5 + 1 queries, then the 3 updates
    assert.equal(counts.get('salesforce'), 3);
  });

  it('uses one Bulk API 2.0 job above bulkThreshold and parses successful, failed and unprocessed results', async () => {
    const emails = Array.from({ length: 150 }, (_, i) => `b${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003K${i}`, e)));
    org.writeFaults.set('003K5', ['ENTITY_IS_DELETED']);
    org.writeFaults.set('003K6', ['INVALID_FIELD_FOR_INSERT_UPDATE']);
    org.writeFaults.set('003K7', ['UNABLE_TO_LOCK_ROW']);
    org.unprocessedIds.add('003K9');
    const { report, clock } = setup(org, {
      bulkThreshold: 100,
      objects: { Contact: { extraFields: { CC_Opted_Out_At__c: 'optOutDate', CC_Reason__c: 'reason' } } },
    });
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.equal(org.jobs.size, 1);
    const job = [...org.jobs.values()][0]!;
    assert.equal(job.object, 'Contact');
    assert.equal(job.operation, 'update');
    assert.equal(job.state, 'JobComplete');
    assert.equal(job.csv.split('\n')[0], '"Id","HasOptedOutOfEmail","CC_Opted_Out_At__c","CC_Reason__c"');
    assert.ok(job.csv.includes('"003K1","true","2024-05-01T10:00:00.000Z","too many emails"'), job.csv.slice(0, 300));
    // the lock failure is retried once through sObject Collections, with just that record
    const calls = org.collectionCalls();
    assert.equal(calls.length, 1);
    assert.deepEqual(
      (JSON.parse(calls[0]!.body) as { records: Array<{ id: string }> }).records.map((x) => x.id),
      ['003K7'],
    );
    const out = byEmail(r);
    assert.equal(out.get('b5@example.com')!.kind, 'failed-permanent');
    assert.match(out.get('b5@example.com')!.message ?? '', /Contact 003K5: ENTITY_IS_DELETED: entity is deleted/);
    assert.equal(out.get('b6@example.com')!.kind, 'failed-permanent');
    assert.equal(out.get('b7@example.com')!.kind, 'applied');
    assert.equal(out.get('b9@example.com')!.kind, 'failed-retryable');
    assert.match(out.get('b9@example.com')!.message ?? '', /UNPROCESSED/);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 147);
    assert.equal(org.get('003K100')!['HasOptedOutOfEmail'], true);
    assert.equal(org.get('003K100')!['CC_Opted_Out_At__c'], '2024-05-01T10:00:00.000Z');
    // polling waited on the injected clock
    assert.ok((clock.slept as number[]).length >= 2);
    // create, upload, close, 2 polls, 3 result sets
    const bulkCalls = org.requests.filter((q) => q.path.includes('/jobs/ingest'));
    assert.deepEqual(
      bulkCalls.map((q) => `${q.method} ${q.path.replace(/750\w+/, '{id}').replace(API, '')}`),
      [
        'POST /jobs/ingest',
        'PUT /jobs/ingest/{id}/batches',
        'PATCH /jobs/ingest/{id}',
        'GET /jobs/ingest/{id}',
        'GET /jobs/ingest/{id}',
        'GET /jobs/ingest/{id}/successfulResults',
        'GET /jobs/ingest/{id}/failedResults',
        'GET /jobs/ingest/{id}/unprocessedrecords',
      ],
    );
  });

  it('retries UNABLE_TO_LOCK_ROW records, and leaves them failed-retryable when the lock persists', async () => {
    org.add(
      contact('003L1', 'lock1@example.com'),
      contact('003L2', 'lock2@example.com'),
      contact('003L3', 'ok@example.com'),
    );
    org.writeFaults.set('003L1', ['UNABLE_TO_LOCK_ROW', 'UNABLE_TO_LOCK_ROW']);
    org.writeFaults.set('003L2', Array(10).fill('UNABLE_TO_LOCK_ROW'));
    const { report, clock } = setup(org);
    const r = await report([optOut('lock1@example.com'), optOut('lock2@example.com'), optOut('ok@example.com')]);
    const calls = org
      .collectionCalls()
      .map((c) => (JSON.parse(c.body) as { records: Array<{ id: string }> }).records.map((x) => x.id));
    assert.deepEqual(calls, [
      ['003L1', '003L2', '003L3'],
      ['003L1', '003L2'],
      ['003L1', '003L2'],
    ]);
    const out = byEmail(r);
    assert.equal(out.get('lock1@example.com')!.kind, 'applied');
    assert.equal(out.get('ok@example.com')!.kind, 'applied');
    assert.equal(out.get('lock2@example.com')!.kind, 'failed-retryable');
    assert.match(out.get('lock2@example.com')!.message ?? '', /Contact 003L2: UNABLE_TO_LOCK_ROW/);
    assert.equal((clock.slept as number[]).length, 2);
  });

  it('REQUEST_LIMIT_EXCEEDED stops the target: what was written stays applied, the rest failed-retryable with a quota halt', async () => {
    // 1,200 records: 6 Collections updates, in two Composite calls (5 + 1); the second is refused
    const emails = Array.from({ length: 1200 }, (_, i) => `q${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003Q${i}`, e)));
    let patches = 0;
    org.limitExceeded = (req) => req.method === 'POST' && req.body.includes('"method":"PATCH"') && ++patches === 2;
    const { report } = setup(org);
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.ok(r.halt);
    assert.equal(r.halt.kind, 'quota');
    assert.match(r.halt.message, /REQUEST_LIMIT_EXCEEDED/);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 1000);
    assert.equal(r.outcomes.filter((o) => o.kind === 'failed-retryable').length, 200);
    // nothing was sent after the 403
    assert.ok(org.requests[org.requests.length - 1]!.body.includes('"method":"PATCH"'));
    assert.equal(org.collectionUpdates().length, 5);
  });

  it('REQUEST_LIMIT_EXCEEDED before anything is decided: a quota HaltInfo', async () => {
    org.limitExceeded = () => true;
    const { deliver } = setup(org);
    const r = await deliver([optOut('a@example.com')]);
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'quota');
    assert.equal(org.requests.length, 1);
  });

  it('dry run: lookups only, no PATCH/POST/PUT; the plan lists record ids and field values', async () => {
    org.add(
      contact('003Y1', 'plan@example.com'),
      lead('00QY1', 'plan@example.com'),
      contact('003Y2', 'done@example.com', true),
    );
    const { report } = setup(org, {
      objects: {
        Contact: {
          extraFields: { CC_Opted_Out_At__c: 'optOutDate', Opt_Out_Origin__c: { constant: 'Constant Contact' } },
        },
      },
    });
    const r = await report(
      [optOut('plan@example.com'), optOut('done@example.com'), optOut('none@example.com')],
      'plan',
    );
    // the two lookups travel in one composite POST; no write of any kind
    assert.deepEqual(
      org.requests.filter((q) => q.method !== 'GET').map((q) => q.path),
      [`${API}/composite`],
    );
    assert.deepEqual(
      org.subrequests.map((q) => q.method),
      ['GET', 'GET'],
    );
    assert.equal(org.collectionUpdates().length, 0);
    assert.equal(org.jobs.size, 0);
    const out = byEmail(r);
    const p = out.get('plan@example.com')!;
    assert.equal(p.kind, 'planned');
    assert.deepEqual([...p.recordIds].sort(), ['003Y1', '00QY1']);
    assert.equal(
      p.action,
      'Contact 003Y1: HasOptedOutOfEmail=true, CC_Opted_Out_At__c=2024-05-01T10:00:00.000Z, Opt_Out_Origin__c=Constant Contact; Lead 00QY1: HasOptedOutOfEmail=true',
    );
    assert.equal(out.get('done@example.com')!.kind, 'already-suppressed');
    assert.equal(out.get('none@example.com')!.kind, 'not-found');
    assert.equal(org.get('003Y1')!['HasOptedOutOfEmail'], false);
  });

  it('already-suppressed costs no write', async () => {
    org.add(contact('003S1', 'sup@example.com', true), lead('00QS1', 'sup@example.com', true));
    const { report } = setup(org);
    const r = await report([optOut('sup@example.com')]);
    assert.equal(r.outcomes[0]!.kind, 'already-suppressed');
    assert.deepEqual([...r.outcomes[0]!.recordIds].sort(), ['003S1', '00QS1']);
    assert.equal(org.collectionUpdates().length, 0);
    assert.equal(org.requests.length, 1); // both lookups in one composite call
  });

  it('follows nextRecordsUrl when a lookup has more than one page', async () => {
    org.pageSize = 3;
    const emails = Array.from({ length: 8 }, (_, i) => `page${i}@example.com`);
    emails.forEach((e, i) => org.add(contact(`003G${i}`, e)));
    const { report } = setup(org, { objects: { Lead: { enabled: false } } });
    const r = await report(emails.map((e) => optOut(e)));
    assert.equal(org.requests.filter((q) => q.path.startsWith(`${API}/query/`)).length, 2);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 8);
  });

  it('Person Accounts: Account by PersonEmail where IsPersonAccount = true, person contacts left to that mapping', async () => {
    org.add(
      personAccount('001A1', 'person@example.com'),
      contact('003N1', 'plain@example.com', false, { IsPersonAccount: false }),
    );
    const { report } = setup(org, { objects: { PersonAccount: { enabled: true } } });
    const r = await report([optOut('person@example.com'), optOut('plain@example.com')]);
    const soqls = org.queries().map((q) => q.soql);
    assert.ok(
      soqls.includes(
        "SELECT Id, PersonEmail, PersonHasOptedOutOfEmail FROM Account WHERE PersonEmail IN ('person@example.com','plain@example.com') AND IsPersonAccount = true",
      ),
      soqls.join('\n'),
    );
    assert.ok(
      soqls.some(
        (s) =>
          s.startsWith('SELECT Id, Email, HasOptedOutOfEmail FROM Contact WHERE') &&
          s.endsWith('AND IsPersonAccount = false'),
      ),
    );
    const out = byEmail(r);
    assert.equal(out.get('person@example.com')!.kind, 'applied');
    assert.equal(org.get('001A1')!['PersonHasOptedOutOfEmail'], true);
    assert.equal(out.get('plain@example.com')!.kind, 'applied');
  });

  it('field errors are failed-permanent with the record id and Salesforce status code', async () => {
    org.add(contact('003F1', 'field@example.com'));
    const { report } = setup(org, { objects: { Contact: { extraFields: { No_Such_Field__c: 'reason' } } } });
    const r = await report([optOut('field@example.com', 1)]);
    assert.equal(r.outcomes[0]!.kind, 'failed-permanent');
    assert.match(r.outcomes[0]!.message ?? '', /Contact 003F1: INVALID_FIELD: No such column 'No_Such_Field__c'/);
  });

  it('retries a 503 on a lookup and a connection reset, on the injected clock', async () => {
    org.add(contact('003T1', 't@example.com'));
    let n = 0;
    org.fault = () => (++n === 1 ? [503, 'Service Unavailable', { 'Content-Type': 'text/plain' }] : undefined);
    // the very first request meets a reset socket (registered ahead of the fake org's interceptors)
    nock.cleanAll();
    nock(INSTANCE)
      .post(() => true)
      .replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    org.install();
    const { report, clock, counts } = setup(org);
    const r = await report([optOut('t@example.com')]);
    assert.equal(r.outcomes[0]!.kind, 'applied');
    assert.equal((clock.slept as number[]).length, 2);
    assert.equal(counts.get('salesforce'), 4); // reset + 503 + 1 composite (2 queries) + 1 PATCH
    assert.equal(org.get('003T1')!['HasOptedOutOfEmail'], true);
  });

  it('a lookup the org refuses (INVALID_FIELD) is a config HaltInfo, not a per-email failure', async () => {
    org.fault = (req) =>
      req.path === `${API}/query`
        ? [
            400,
            JSON.stringify([{ errorCode: 'INVALID_FIELD', message: "No such column 'Custom__c' on entity 'Contact'" }]),
            { 'Content-Type': 'application/json' },
          ]
        : undefined;
    const { deliver } = setup(org, { objects: { Contact: { field: 'Custom__c' } } });
    const r = await deliver([optOut('x@example.com')]);
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'config');
    assert.match(r.left.message, /INVALID_FIELD/);
    assert.match(r.left.message, /objects\.Contact/);
  });

  it('keeps the last Sforce-Limit-Info in kv api_usage and logs it', async () => {
    org.add(contact('003U1', 'u@example.com'));
    org.apiUsed = 4200;
    const { report, kvMap, logger, clock } = setup(org);
    await report([optOut('u@example.com')]);
    const usage = JSON.parse(kvMap.get('api_usage')!) as { used: number; max: number; at: string };
    assert.deepEqual(usage, { used: 4202, max: 15000, at: clock.now().toISOString() }); // 1 composite (2 queries) + 1 PATCH
    assert.ok(logger.lines.some((l) => l.includes('salesforce api usage') && l.includes('4202')));
  });

  it('uses ceil(M/200) queries per object and ceil(K/200) Collections updates, five to a Composite call (M=500, R=600, K=550)', async () => {
    const emails = Array.from({ length: 500 }, (_, i) => `m${i}@example.com`);
    // 300 Contacts (50 already opted out) and 300 Leads; emails 0..99 have both a Contact and a Lead
    emails.slice(0, 300).forEach((e, i) => org.add(contact(`003M${i}`, e, i >= 250)));
    emails.slice(0, 100).forEach((e, i) => org.add(lead(`00QM${i}`, e)));
    emails.slice(300, 500).forEach((e, i) => org.add(lead(`00QN${i}`, e)));
    const { report, counts, logger } = setup(org);
    const r = await report(emails.map((e, i) => optOut(e, i)));
    const K = 250 + 300;
    assert.equal(org.queries().length, 2 * Math.ceil(500 / 200));
    assert.equal(org.collectionUpdates().length, Math.ceil(K / 200));
    // ceil(6/5) composite calls of queries + ceil(3/5) of updates
    assert.equal(counts.get('salesforce'), 2 + 1);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 450);
    assert.equal(r.outcomes.filter((o) => o.kind === 'already-suppressed').length, 50);
    assert.ok(
      logger.lines.some(
        (l) => l.includes('"queries":6') && l.includes('"compositeLookupCalls":2') && l.includes('"writeCalls":1'),
      ),
    );
  });

  it('backfill: 5,000 opt-outs, 2,500 Contact writes above the threshold go through one Bulk job', async () => {
    const emails = Array.from({ length: 5000 }, (_, i) => `bf${i}@example.com`);
    emails.slice(0, 2500).forEach((e, i) => org.add(contact(`003F${i}`, e)));
    const { report, counts } = setup(org);
    const r = await report(emails.map((e, i) => optOut(e, i)));
    assert.equal(org.queries().length, 2 * 25);
    assert.equal(org.compositeCalls().length, 10);
    assert.equal(org.jobs.size, 1);
    assert.equal(org.collectionUpdates().length, 0);
    assert.equal(r.outcomes.filter((o) => o.kind === 'applied').length, 2500);
    assert.equal(r.outcomes.filter((o) => o.kind === 'not-found').length, 2500);
    assert.equal(counts.get('salesforce'), 10 + 6); // 50 queries in 10 composite calls; create, upload, close, 2 polls, successful results (nothing failed: 2 result sets skipped)
  });

  it('one outcome per distinct email, whatever the case in the batch', async () => {
    org.add(contact('003E1', 'Case@Example.com'));
    const { report } = setup(org);
    const r = await report([optOut('case@example.com'), optOut('CASE@example.com ')]);
    assert.equal(r.outcomes.length, 1);
    assert.equal(r.outcomes[0]!.kind, 'applied');
    assert.equal(org.collectionCalls().length, 1);
  });
});
