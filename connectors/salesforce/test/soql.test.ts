import { strict as assert } from 'assert';
import * as E from 'fp-ts/Either';
import { soqlLiteral, lookupSoql, planLookupChunks, queryUrl, MAX_QUERY_URL_BYTES } from '../soql';
import { toCsv, parseCsv } from '../csv';
import { resolveConfig, SalesforceConfig } from '../config';
import { parseLookupSoql } from './fixtures/fake-org';

function objects(raw: Record<string, unknown> = {}) {
  const d = SalesforceConfig.decode({ auth: { type: 'refresh-token', clientId: 'c', refreshToken: 'r' }, ...raw });
  if (E.isLeft(d)) throw new Error('bad config');
  return resolveConfig(d.right).objects;
}

describe('salesforce SOQL and CSV', () => {
  it('escapes backslash before quote, and control characters', () => {
    assert.equal(soqlLiteral("o'brien@x.com"), "'o\\'brien@x.com'");
    assert.equal(soqlLiteral('a\\b@x.com'), "'a\\\\b@x.com'");
    assert.equal(soqlLiteral("\\'"), "'\\\\\\''");
    assert.equal(soqlLiteral('a\nb'), "'a\\nb'");
    // the fake org's independent parser reads back exactly what was meant
    const [contact] = objects();
    const tricky = ["o'brien@x.com", 'a\\b@x.com', "\\'", "'; DELETE", "x' OR Email != '"];
    assert.deepEqual(parseLookupSoql(lookupSoql(contact!, tricky)).emails, tricky);
  });

  it('builds the lookup per object', () => {
    const [contact, lead] = objects();
    assert.equal(
      lookupSoql(contact!, ['a@x.com', 'b@x.com']),
      "SELECT Id, Email, HasOptedOutOfEmail FROM Contact WHERE Email IN ('a@x.com','b@x.com')",
    );
    assert.equal(
      lookupSoql(lead!, ['a@x.com']),
      "SELECT Id, Email, HasOptedOutOfEmail FROM Lead WHERE Email IN ('a@x.com') AND IsConverted = false",
    );
    const pa = objects({ objects: { PersonAccount: { enabled: true, field: 'Custom_Out__pc' } } }).find(
      (o) => o.key === 'PersonAccount',
    )!;
    assert.equal(
      lookupSoql(pa, ['a@x.com']),
      "SELECT Id, PersonEmail, Custom_Out__pc FROM Account WHERE PersonEmail IN ('a@x.com') AND IsPersonAccount = true",
    );
  });

  it('refuses to build a query with an empty list', () => {
    const [contact] = objects();
    assert.throws(() => lookupSoql(contact!, []), /empty email list/);
    assert.deepEqual(
      planLookupChunks(contact!, [], {
        instanceUrl: 'https://x.my.salesforce.com',
        apiVersion: '62.0',
        maxPerChunk: 100,
      }).chunks,
      [],
    );
  });

  it('plans chunks by count and by URL bytes, with exact URL lengths', () => {
    const [contact] = objects();
    const opts = { instanceUrl: 'https://acme.my.salesforce.com', apiVersion: '62.0', maxPerChunk: 100 };
    const short = Array.from({ length: 1000 }, (_, i) => `u${i}@x.com`);
    const p1 = planLookupChunks(contact!, short, opts);
    assert.equal(p1.chunks.length, 10);
    assert.ok(p1.chunks.every((c) => c.emails.length === 100));
    const long = Array.from({ length: 300 }, (_, i) => `${"o'".repeat(40)}${i}@${'d'.repeat(100)}.com`);
    const p2 = planLookupChunks(contact!, long, opts);
    assert.ok(p2.chunks.length > 3);
    for (const c of p2.chunks) {
      assert.ok(c.urlBytes <= MAX_QUERY_URL_BYTES);
      assert.equal(c.urlBytes, queryUrl(opts.instanceUrl, opts.apiVersion, c.soql).length);
    }
    assert.deepEqual(
      p2.chunks.flatMap((c) => c.emails),
      long,
    );
    // an address that cannot fit any URL is set aside, not looped on
    const p3 = planLookupChunks(contact!, ['x'.repeat(20_000), 'ok@x.com'], opts);
    assert.deepEqual(
      p3.tooLong.map((e) => e.length),
      [20_000],
    );
    assert.deepEqual(
      p3.chunks.map((c) => c.emails),
      [['ok@x.com']],
    );
  });

  it('writes quoted CSV and reads it back, commas, quotes, newlines and semicolons included', () => {
    const csv = toCsv(
      ['Id', 'Reason__c'],
      [
        ['003A', 'a, "b"; c|d\nnext line'],
        ['003B', ''],
      ],
    );
    assert.equal(csv, '"Id","Reason__c"\n"003A","a, ""b""; c|d\nnext line"\n"003B",""\n');
    assert.deepEqual(parseCsv(csv), [
      { Id: '003A', Reason__c: 'a, "b"; c|d\nnext line' },
      { Id: '003B', Reason__c: '' },
    ]);
  });

  it('reads Bulk 2.0 result sets: quoted sf__ columns, unquoted values, CRLF, empty bodies', () => {
    const failed =
      '"sf__Id","sf__Error",Id,HasOptedOutOfEmail\r\n"","ENTITY_IS_DELETED:entity is deleted; gone",003X,true\r\n';
    assert.deepEqual(parseCsv(failed), [
      { sf__Id: '', sf__Error: 'ENTITY_IS_DELETED:entity is deleted; gone', Id: '003X', HasOptedOutOfEmail: 'true' },
    ]);
    assert.deepEqual(parseCsv(''), []);
    assert.deepEqual(parseCsv('"sf__Id","sf__Created",Id\n'), []);
  });
});
