/**
 * deliver() on the wire (nock): the lookup queries ($filter eq/or over the configured columns, quotes doubled,
 * leads restricted to statecode eq 0, URLs within maxUrlLength), the $batch body (one change set per group of
 * addresses sharing records, PATCH with If-Match: *), the per-change-set answers folded into outcomes, and the
 * OData / batch helpers.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import { isTargetHalt } from 'cc-optout-connector/sdk';
import { openDynamics, DynamicsConfig } from '../../src';
import { buildBatch, parseBatchAnswer } from '../../src/batch';
import { chunkEmails, emailFilter, literal } from '../../src/odata';
import { optOut, testCaps } from '../helpers';

const ORG = 'https://contoso.crm.dynamics.com';
const API = '/api/data/v9.2';
const id = (n: number): string => `00000000-0000-0000-0000-${String(n).padStart(12, '0')}`;
const tokens = { get: async () => 'tok-123456' };

function cfg(extra: Record<string, unknown> = {}): DynamicsConfig {
  return {
    url: ORG,
    auth: { type: 'client-credentials', tenantId: 't', clientId: 'c', clientSecret: 'secret-xyz' },
    emailFields: ['emailaddress1', 'emailaddress2'],
    ...extra,
  } as unknown as DynamicsConfig;
}

function batchAnswer(parts: string[]): { body: string; type: string } {
  const b = 'batchresponse_1';
  return {
    type: `multipart/mixed; boundary=${b}`,
    body: parts.map((p) => `--${b}\r\n${p}\r\n`).join('') + `--${b}--\r\n`,
  };
}
const okChangeSet = (ids: number[]): string => {
  const cs = `changesetresponse_${ids.join('_')}`;
  const inner = ids
    .map(
      (n) =>
        `--${cs}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: ${n}\r\n\r\nHTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n\r\n`,
    )
    .join('');
  return `Content-Type: multipart/mixed; boundary=${cs}\r\n\r\n${inner}--${cs}--`;
};
const failedChangeSet = (contentId: number, status: number, code: string, message: string): string =>
  `Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: ${contentId}\r\n\r\nHTTP/1.1 ${status} Error\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n${JSON.stringify({ error: { code, message } })}`;

describe('dynamics OData and $batch helpers', () => {
  it('quotes string literals the OData way and ORs every address over every column', () => {
    assert.equal(literal("o'brien@example.com"), "'o''brien@example.com'");
    assert.equal(
      emailFilter(['a@x.org', 'b@x.org'], ['emailaddress1', 'emailaddress2'], 'statecode eq 0'),
      "(emailaddress1 eq 'a@x.org' or emailaddress1 eq 'b@x.org' or emailaddress2 eq 'a@x.org' or emailaddress2 eq 'b@x.org') and statecode eq 0",
    );
  });

  it('chunks by count and by URL length; an address too long alone is set apart', () => {
    const emails = Array.from({ length: 30 }, (_, i) => `person${i}@example.com`);
    const urlOf = (c: readonly string[]): string =>
      `${ORG}${API}/contacts?$filter=${encodeURIComponent(emailFilter(c, ['emailaddress1'], null))}`;
    const byCount = chunkEmails(emails, urlOf, 32_768, 7);
    assert.deepEqual(
      byCount.chunks.map((c) => c.length),
      [7, 7, 7, 7, 2],
    );
    const byLength = chunkEmails([...emails, `${'x'.repeat(2000)}@example.com`], urlOf, 1200, 500);
    for (const c of byLength.chunks) assert.ok(urlOf(c).length <= 1200);
    assert.equal(byLength.chunks.flat().length, 30);
    assert.equal(byLength.tooLong.length, 1);
  });

  it('reads answers in request order: applied, failed (one part), and not attempted', () => {
    const built = buildBatch(
      [
        [{ url: `${ORG}${API}/contacts(${id(1)})`, body: { donotbulkemail: true } }],
        [
          { url: `${ORG}${API}/leads(${id(2)})`, body: { donotbulkemail: true } },
          { url: `${ORG}${API}/contacts(${id(3)})`, body: { donotbulkemail: true } },
        ],
        [{ url: `${ORG}${API}/contacts(${id(4)})`, body: { donotbulkemail: true } }],
      ],
      () => 'x',
    );
    assert.deepEqual(built.changeSets, [[1], [2, 3]].concat([[4]]));
    assert.match(
      built.body,
      /^--batch_x\r\nContent-Type: multipart\/mixed; boundary=changeset_x\r\n\r\n--changeset_x\r\nContent-Type: application\/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\nPATCH https:\/\/contoso\.crm\.dynamics\.com\/api\/data\/v9\.2\/contacts\(0{8}-0{4}-0{4}-0{4}-0{11}1\) HTTP\/1\.1\r\nContent-Type: application\/json\r\nIf-Match: \*\r\n\r\n\{"donotbulkemail":true\}/,
    );
    const a = batchAnswer([
      okChangeSet([1]),
      failedChangeSet(3, 404, '0x80040217', 'contact With Id = ... Does Not Exist'),
    ]);
    const r = parseBatchAnswer(built, a.type, a.body);
    assert.equal(r.length, 3);
    assert.equal(r[0].ok, true);
    assert.ok(!r[1].ok && r[1].failure && r[1].failure.status === 404 && r[1].failure.contentId === 3);
    assert.ok(!r[2].ok && r[2].failure === null);
  });
});

describe('dynamics $batch answers matched by Content-ID', () => {
  it('a bare 2xx part without the Content-ID of its one request is not an applied write (retryable)', () => {
    const built = buildBatch(
      [
        [{ url: `${ORG}${API}/contacts(${id(1)})`, body: { donotbulkemail: true } }],
        [{ url: `${ORG}${API}/contacts(${id(2)})`, body: { donotbulkemail: true } }],
      ],
      () => 'y',
    );
    const part = (cid: string | null) =>
      `--batchresponse_y\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n${cid ? `Content-ID: ${cid}\r\n` : ''}\r\nHTTP/1.1 204 No Content\r\n\r\n`;
    const body = `${part(null)}${part('1')}--batchresponse_y--\r\n`;
    const r = parseBatchAnswer(built, 'multipart/mixed; boundary=batchresponse_y', body);
    assert.ok(!r[0].ok && r[0].failure && r[0].failure.status === 500, 'no Content-ID: not applied');
    assert.ok(!r[1].ok, 'a Content-ID naming another request (1, not 2): not applied');
  });
});

describe('dynamics deliver (nock)', () => {
  afterEach(() => nock.cleanAll());

  it('looks up contacts and Open leads with $filter eq/or, then writes one change set per group; one outcome per address', async () => {
    const queries: Array<{ path: string; filter: string; select: string }> = [];
    let batchBody = '';
    let batchHeaders: Record<string, unknown> = {};
    nock(ORG)
      .get(`${API}/contacts`)
      .query((q) => {
        queries.push({ path: 'contacts', filter: String(q.$filter), select: String(q.$select) });
        return true;
      })
      .reply(200, {
        value: [
          // one contact holds two of the addresses: one PATCH for both
          {
            contactid: id(1),
            emailaddress1: 'A@Example.com',
            emailaddress2: "o'brien@example.com",
            donotbulkemail: false,
          },
          { contactid: id(2), emailaddress1: 'done@example.com', emailaddress2: null, donotbulkemail: true },
          { contactid: id(3), emailaddress1: 'c@example.com', emailaddress2: null, donotbulkemail: false },
        ],
      })
      .get(`${API}/leads`)
      .query((q) => {
        queries.push({ path: 'leads', filter: String(q.$filter), select: String(q.$select) });
        return true;
      })
      .reply(200, {
        value: [{ leadid: id(9), emailaddress1: 'c@example.com', emailaddress2: null, donotbulkemail: false }],
      })
      .post(`${API}/$batch`, (b: string) => {
        batchBody = b;
        return true;
      })
      .reply(function () {
        batchHeaders = this.req.headers;
        const a = batchAnswer([okChangeSet([1]), okChangeSet([2, 3])]);
        return [200, a.body, { 'Content-Type': a.type }];
      });
    const caps = testCaps();
    const r = await openDynamics(cfg(), caps, { tokens }).deliver(
      ['a@example.com', "o'brien@example.com", 'done@example.com', 'c@example.com', 'nobody@example.com'].map((e) =>
        optOut(e),
      ),
      'apply',
    );
    const by = Object.fromEntries(r.outcomes.map((o) => [o.email, o]));
    assert.equal(by['a@example.com'].kind, 'applied');
    assert.equal(by["o'brien@example.com"].kind, 'applied');
    assert.equal(by["o'brien@example.com"].matchedBy, 'emailaddress2');
    assert.equal(by['done@example.com'].kind, 'already-suppressed');
    assert.equal(by['c@example.com'].kind, 'applied');
    assert.deepEqual(by['c@example.com'].recordIds, [`contact:${id(3)}`, `lead:${id(9)}`]);
    assert.equal(by['nobody@example.com'].kind, 'not-found');
    assert.equal(r.outcomes.length, 5);
    // lookups
    assert.equal(queries[0].select, 'contactid,emailaddress1,emailaddress2,donotbulkemail');
    assert.match(
      queries[0].filter,
      /^emailaddress1 eq 'a@example\.com' or emailaddress1 eq 'o''brien@example\.com' or .* or emailaddress2 eq 'nobody@example\.com'$/,
    );
    assert.match(queries[1].filter, /\) and statecode eq 0$/);
    // the $batch: continue on error, three PATCHes in two change sets, no upsert
    assert.equal(batchHeaders.prefer, 'odata.continue-on-error');
    assert.match(String(batchHeaders['content-type']), /^multipart\/mixed; boundary=batch_/);
    assert.equal((batchBody.match(/^PATCH /gm) ?? []).length, 3);
    assert.equal((batchBody.match(/^If-Match: \*$/gm) ?? []).length, 3);
    assert.equal((batchBody.match(/boundary=changeset_/g) ?? []).length, 2);
    assert.equal(
      (batchBody.match(/contacts\(0{8}-0{4}-0{4}-0{4}-0{11}1\)/g) ?? []).length,
      1,
      'the shared contact is written once',
    );
  });

  it('a failed change set: 404 (deleted since the lookup) is retryable, 400 is permanent with the Dataverse message', async () => {
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, {
        value: [
          { contactid: id(1), emailaddress1: 'gone@example.com', donotbulkemail: false },
          { contactid: id(2), emailaddress1: 'bad@example.com', donotbulkemail: false },
        ],
      })
      .post(`${API}/$batch`)
      .reply(
        200,
        () =>
          batchAnswer([
            failedChangeSet(1, 404, '0x80040217', 'contact With Id = x Does Not Exist'),
            failedChangeSet(2, 400, '0x80040265', 'A plug-in refused the update'),
          ]).body,
        {
          'Content-Type': 'multipart/mixed; boundary=batchresponse_1',
        },
      );
    const r = await openDynamics(cfg({ entities: { lead: false } }), testCaps(), { tokens }).deliver(
      [optOut('gone@example.com'), optOut('bad@example.com')],
      'apply',
    );
    const by = Object.fromEntries(r.outcomes.map((o) => [o.email, o]));
    assert.equal(by['gone@example.com'].kind, 'failed-retryable');
    assert.match(by['gone@example.com'].message ?? '', /deleted since the lookup/);
    assert.equal(by['bad@example.com'].kind, 'failed-permanent');
    assert.match(
      by['bad@example.com'].message ?? '',
      /HTTP 400 \(contact [0-]+2\) 0x80040265: A plug-in refused the update/,
    );
  });

  it('an environment without a lead table is a config halt naming entities.lead; a refused $batch is a bad-request halt keeping what was settled', async () => {
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, { value: [] })
      .get(`${API}/leads`)
      .query(true)
      .reply(404, { error: { code: '0x80060888', message: "Resource not found for the segment 'leads'." } });
    await assert.rejects(
      openDynamics(cfg(), testCaps(), { tokens }).deliver([optOut('a@example.com')], 'apply'),
      (e: unknown) => isTargetHalt(e) && e.kind === 'config' && /entities\.lead: false/.test(e.message),
    );

    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, { value: [{ contactid: id(1), emailaddress1: 'a@example.com', donotbulkemail: false }] })
      .post(`${API}/$batch`)
      .reply(400, { error: { code: '0x80048d19', message: 'The batch is malformed' } });
    await assert.rejects(
      openDynamics(cfg({ entities: { lead: false } }), testCaps(), { tokens }).deliver(
        [optOut('a@example.com'), optOut('nobody@example.com')],
        'apply',
      ),
      (e: unknown) => {
        assert.ok(isTargetHalt(e));
        assert.equal(e.kind, 'bad-request');
        assert.deepEqual(
          e.outcomes?.map((o) => [o.email, o.kind]),
          [['nobody@example.com', 'not-found']],
        );
        return true;
      },
    );
  });

  it('an outage in the middle: the halt carries the outcomes of the change sets already answered', async () => {
    const value = Array.from({ length: 4 }, (_, i) => ({
      contactid: id(i + 1),
      emailaddress1: `p${i}@example.com`,
      donotbulkemail: false,
    }));
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, { value })
      .post(`${API}/$batch`)
      .reply(200, batchAnswer([okChangeSet([1]), okChangeSet([2])]).body, {
        'Content-Type': 'multipart/mixed; boundary=batchresponse_1',
      })
      .post(`${API}/$batch`)
      .times(3)
      .reply(503, 'down');
    await assert.rejects(
      openDynamics(cfg({ entities: { lead: false }, requestsPerBatch: 2, rateLimit: { maxRetries: 2 } }), testCaps(), {
        tokens,
        backoffBaseMs: 1,
      }).deliver(
        value.map((v) => optOut(v.emailaddress1)),
        'apply',
      ),
      (e: unknown) => {
        assert.ok(isTargetHalt(e));
        assert.equal(e.kind, 'unavailable');
        assert.deepEqual(e.outcomes?.map((o) => [o.email, o.kind]).sort(), [
          ['p0@example.com', 'applied'],
          ['p1@example.com', 'applied'],
        ]);
        return true;
      },
    );
  });
});
