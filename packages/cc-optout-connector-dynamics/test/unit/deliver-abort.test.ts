/**
 * Stopping: once `caps.signal` is aborted (SIGINT/SIGTERM), deliver() finishes the `$batch` in hand and sends
 * no further one; the addresses of the change sets not sent come back failed-retryable (kept in the outbox).
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import { openDynamics, DynamicsConfig } from '../../src';
import { optOut, testCaps } from '../helpers';

const ORG = 'https://contoso.crm.dynamics.com';
const API = '/api/data/v9.2';
const id = (n: number): string => `00000000-0000-0000-0000-${String(n).padStart(12, '0')}`;
const tokens = { get: async () => 'tok-123456' };

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
const answer = (parts: string[]): string =>
  parts.map((p) => `--batchresponse_1\r\n${p}\r\n`).join('') + '--batchresponse_1--\r\n';

describe('dynamics deliver: caps.signal between $batch calls', () => {
  afterEach(() => nock.cleanAll());

  it('an abort during the first $batch lets it finish, sends no second one, and leaves the rest retryable', async () => {
    const value = Array.from({ length: 4 }, (_, i) => ({
      contactid: id(i + 1),
      emailaddress1: `p${i}@example.com`,
      donotbulkemail: false,
    }));
    const stop = new AbortController();
    let batches = 0;
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, { value })
      .post(`${API}/$batch`)
      .times(2)
      .reply(() => {
        batches++;
        stop.abort(); // the signal arrives while the first $batch is in flight
        return [
          200,
          answer([okChangeSet([1]), okChangeSet([2])]),
          { 'Content-Type': 'multipart/mixed; boundary=batchresponse_1' },
        ];
      });
    const caps = { ...testCaps(), signal: stop.signal };
    const cfg = {
      url: ORG,
      auth: { type: 'client-credentials', tenantId: 't', clientId: 'c', clientSecret: 'secret-xyz' },
      emailFields: ['emailaddress1'],
      entities: { lead: false },
      requestsPerBatch: 2,
    } as unknown as DynamicsConfig;
    const r = await openDynamics(cfg, caps, { tokens, backoffBaseMs: 1 }).deliver(
      value.map((v) => optOut(v.emailaddress1)),
      'apply',
    );
    assert.equal(batches, 1, 'no $batch after the abort');
    assert.deepEqual(r.outcomes.map((o) => [o.email, o.kind]).sort(), [
      ['p0@example.com', 'applied'],
      ['p1@example.com', 'applied'],
      ['p2@example.com', 'failed-retryable'],
      ['p3@example.com', 'failed-retryable'],
    ]);
    assert.match(r.outcomes.find((o) => o.email === 'p3@example.com')!.message ?? '', /asked to stop/);
  });
});
