/**
 * The Constant Contact source as the engine sees it: the opt-out window query (the seed forum case),
 * per-page quarantine and SMS-only counts, the unsubscribed count, and check().
 */
import assert from 'assert';
import nock from 'nock';
import { isOptedOut, ObservedContact } from '../../src/domain';
import { createConstantContactSource } from '../../src/source/constant-contact';
import { QuotaExceeded, SourcePage } from '../../src/source/types';
import {
  API,
  AUTH_ORIGIN,
  AUTH_PATH,
  kvWithAccessToken,
  makeConfig,
  makeDeps,
  memKv,
  unsubscribed,
} from '../fixtures/cc/helpers';

const TOKEN = 'access-token-A0-valid';

describe('cc source', () => {
  afterEach(() => nock.cleanAll());

  it('seed forum case: an opt-out whose top-level updated_at is older is found by the optout window query', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(
      makeConfig({ detection: { ...makeConfig().detection, pageSize: 200 } }),
      deps,
    );
    // The contact from the forum thread: personal details last changed 2023-01-30, unsubscribed 2024-06-08.
    const abc = {
      contact_id: '1618ae62-4752-11e9-9c8a-fa163e6b01c1',
      email_address: {
        address: 'ABC@example.com',
        permission_to_send: 'unsubscribed',
        created_at: '2021-05-01T10:00:00Z',
        updated_at: '2024-06-08T01:31:05Z',
        opt_out_source: 'Contact',
        opt_out_date: '2024-06-08T01:31:05Z',
        opt_out_reason: 'No longer interested',
        confirm_status: 'off',
      },
      first_name: 'A',
      create_source: 'Account',
      created_at: '2021-05-01T10:00:00Z',
      updated_at: '2023-01-30T18:04:55Z',
    };
    const requested: string[] = [];
    const scope = nock(API)
      .get('/v3/contacts')
      .query({
        status: 'all',
        optout_after: '2024-06-01T01:31:05.000Z',
        optout_before: '2024-06-09T00:00:00.000Z',
        limit: '200',
        include_count: 'true',
      })
      .reply(200, (uri) => {
        requested.push(uri);
        return { contacts: [abc] };
      });

    const got: ObservedContact[] = [];
    const stats = await source.scanWindow(new Date('2024-06-01T01:31:05Z'), new Date('2024-06-09T00:00:00Z'), (p) => {
      got.push(...p.contacts);
    });

    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`);
    assert.ok(!requested[0]!.includes('updated_after'), requested[0]);
    assert.match(requested[0]!, /optout_after=2024-06-01T01:31:05.000Z/);
    assert.strictEqual(stats.contacts, 1);
    assert.deepStrictEqual(got[0], {
      email: 'abc@example.com',
      contactId: '1618ae62-4752-11e9-9c8a-fa163e6b01c1',
      permission: 'unsubscribed',
      optedOutAt: '2024-06-08T01:31:05Z',
      source: 'Contact',
      reason: 'No longer interested',
      deleted: false,
    });
    assert.strictEqual(isOptedOut(got[0]!), true);
  });

  it('quarantines malformed contacts and counts SMS-only contacts while the rest of the page goes on', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    const broken = unsubscribed('broken@example.com', { contact_id: 'c-broken' });
    delete (broken['email_address'] as Record<string, unknown>)['permission_to_send'];
    const sms = {
      contact_id: 'c-sms',
      sms_channel: { sms_address: '+15555550100' },
      updated_at: '2024-01-01T00:00:00Z',
    };
    nock(API)
      .get('/v3/contacts')
      .query(true)
      .reply(200, {
        contacts: [unsubscribed('one@example.com'), broken, sms, unsubscribed('two@example.com')],
        _links: { next: { href: '/v3/contacts?cursor=2' } },
      })
      .get('/v3/contacts')
      .query({ cursor: '2' })
      .reply(200, {
        contacts: [
          { email_address: { address: 'noid@example.com', permission_to_send: 'unsubscribed' } },
          unsubscribed('three@example.com'),
        ],
      });

    const pages: SourcePage[] = [];
    const stats = await source.scanWindow(new Date('2026-01-01T00:00:00Z'), new Date('2026-01-01T09:58:00Z'), (p) => {
      pages.push(p);
    });

    assert.deepStrictEqual(
      pages.map((p) => ({ emails: p.contacts.map((c) => c.email), sms: p.skippedNoEmail, q: p.quarantined })),
      [
        { emails: ['one@example.com', 'two@example.com'], sms: 1, q: 1 },
        { emails: ['three@example.com'], sms: 0, q: 1 },
      ],
    );
    assert.deepStrictEqual(stats, { pages: 2, contacts: 3, skippedNoEmail: 1, quarantined: 2 });
    assert.strictEqual(deps.quarantined.length, 2);
    assert.strictEqual(deps.quarantined[0]!.recordId, 'c-broken');
    assert.deepStrictEqual(deps.quarantined[0]!.raw, broken);
    assert.match(deps.quarantined[0]!.reason, /email_address\.permission_to_send/);
    assert.strictEqual(deps.quarantined[1]!.recordId, null);
    assert.match(deps.quarantined[1]!.reason, /^contact_id:/);
  });

  it('unsubscribedCount reads /contacts/counts, and is null when the API cannot say', async () => {
    const deps = makeDeps(kvWithAccessToken(TOKEN));
    const source = createConstantContactSource(makeConfig(), deps);
    nock(API)
      .get('/v3/contacts/counts')
      .reply(200, { total: 100, explicit: 50, implicit: 30, pending: 2, unsubscribed: 18 });
    assert.strictEqual(await source.unsubscribedCount(), 18);
    nock(API).get('/v3/contacts/counts').reply(200, { total: 100 });
    assert.strictEqual(await source.unsubscribedCount(), null);
    nock(API)
      .get('/v3/contacts/counts')
      .reply(404, [{ error_key: 'not_found', error_message: 'no such path' }]);
    assert.strictEqual(await source.unsubscribedCount(), null);
    // a spent quota is not "unavailable": it stops the run
    nock(API)
      .get('/v3/contacts/counts')
      .reply(429, [{ error_key: 'quota_exceeded', error_message: 'Daily quota exceeded' }]);
    await assert.rejects(source.unsubscribedCount(), QuotaExceeded);
  });

  it('check() reports token refresh, API reachability and the remaining daily budget', async () => {
    const deps = makeDeps(
      memKv({ refresh_token: 'refresh-token-R1-seed', daily_usage: JSON.stringify({ day: '2026-01-01', used: 40 }) }),
    );
    const source = createConstantContactSource(makeConfig(), deps);
    nock(AUTH_ORIGIN).post(`${AUTH_PATH}/token`).reply(200, {
      access_token: 'access-token-A1-fresh',
      refresh_token: 'refresh-token-R2-rotated',
      expires_in: 86400,
    });
    nock(API).get('/v3/contacts/counts').reply(200, { total: 100, unsubscribed: 18 });
    const report = await source.check();
    assert.strictEqual(report.ok, true, JSON.stringify(report));
    assert.deepStrictEqual(
      report.items.map((i) => i.ok),
      [true, true, true],
    );
    assert.match(report.items[1]!.detail, /18 unsubscribed of 100/);
    assert.match(report.items[2]!.detail, /^9959 of 10000 requests left today/);
  });

  it('check() says to re-authorise when the refresh token is refused, and skips the API', async () => {
    const deps = makeDeps(memKv({ refresh_token: 'refresh-token-R1-dead' }));
    const source = createConstantContactSource(makeConfig(), deps);
    nock(AUTH_ORIGIN).post(`${AUTH_PATH}/token`).reply(400, { error: 'invalid_grant', error_description: 'expired' });
    const report = await source.check();
    assert.strictEqual(report.ok, false);
    assert.strictEqual(report.items[0]!.ok, false);
    assert.match(report.items[0]!.detail, /cc-optout auth constant-contact/);
    assert.strictEqual(report.items[1]!.ok, false);
    assert.match(report.items[1]!.detail, /skipped/);
    assert.ok(!report.items.some((i) => i.detail.includes('refresh-token-R1-dead')));
  });

  it('check() without any refresh token names the auth command', async () => {
    const deps = makeDeps(memKv());
    const source = createConstantContactSource(makeConfig({ refreshToken: null }), deps);
    const report = await source.check();
    assert.strictEqual(report.ok, false);
    assert.match(report.items[0]!.detail, /cc-optout auth constant-contact/);
  });
});
