/**
 * The Constant Contact client spending the application's SHARED budget (src/fleet): every request reserves
 * a call and waits for its slot; a spent shared budget stops detection as QuotaExceeded before any request;
 * a `quota_exceeded` answer marks the day spent for every worker; the token endpoint takes the shared 1/s slot.
 */
import { strict as assert } from 'assert';
import Database from 'better-sqlite3';
import nock from 'nock';
import { createSqliteBudget, SharedBudget } from '../../src/fleet';
import { createConstantContactSource } from '../../src/source/constant-contact';
import { QuotaExceeded } from '../../src/source/types';
import { API, AUTH_ORIGIN, AUTH_PATH, kvWithAccessToken, makeConfig, makeDeps, memKv } from '../fixtures/cc/helpers';

const APP = 'client-id-123';
const COUNTS = '/v3/contacts/counts';

describe('cc client: the shared budget of many accounts', () => {
  let db: Database.Database;
  let budget: SharedBudget;
  beforeEach(() => {
    db = new Database(':memory:');
    budget = createSqliteBudget(db);
  });
  afterEach(() => {
    nock.cleanAll();
    db.close();
  });

  it('reserves every request from the shared budget and sleeps until its slot', async () => {
    await budget.configure(APP, { dailyLimit: 100, perSecond: 2, reserve: 0 });
    const deps = makeDeps(kvWithAccessToken());
    // another worker took the slot at this instant: our first request must wait 500 ms
    await budget.reserve(APP, deps.clock.now());
    const source = createConstantContactSource(makeConfig(), deps, { sharedBudget: { app: APP, budget } });
    const sentAt: number[] = [];
    nock(API)
      .get(COUNTS)
      .times(3)
      .reply(200, () => (sentAt.push(deps.clock.now().getTime()), { unsubscribed: 1 }));
    const start = deps.clock.now().getTime();
    for (let i = 0; i < 3; i++) await source.client.getJson(source.client.url('/contacts/counts'));
    assert.deepEqual(
      sentAt.map((t) => t - start),
      [500, 1000, 1500],
    );
    assert.equal((await budget.state(APP, deps.clock.now())).used, 4);
  });

  it('a spent shared budget ends detection as QuotaExceeded before any request (nothing sent, nothing lost)', async () => {
    await budget.configure(APP, { dailyLimit: 2, perSecond: 100, reserve: 0 });
    const deps = makeDeps(kvWithAccessToken());
    await budget.reserve(APP, deps.clock.now());
    await budget.reserve(APP, deps.clock.now());
    const source = createConstantContactSource(makeConfig(), deps, { sharedBudget: { app: APP, budget } });
    // no interceptor: a request would fail with nock's NetConnectNotAllowedError, not QuotaExceeded
    await assert.rejects(source.client.getJson(source.client.url('/contacts/counts')), (err: unknown) => {
      assert.ok(err instanceof QuotaExceeded, String(err));
      assert.equal(err.resetAt.toISOString(), '2026-01-02T00:00:00.000Z');
      assert.match(err.message, /shared daily Constant Contact request budget of application client-id-123/);
      return true;
    });
    assert.equal(deps.callCounts.get('constant-contact') ?? 0, 0);
  });

  it('quota_exceeded from Constant Contact marks the day spent for every worker', async () => {
    await budget.configure(APP, { dailyLimit: 100, perSecond: 100, reserve: 0 });
    const deps = makeDeps(kvWithAccessToken());
    const source = createConstantContactSource(makeConfig(), deps, { sharedBudget: { app: APP, budget } });
    nock(API)
      .get(COUNTS)
      .reply(429, [{ error_key: 'quota_exceeded', error_message: 'Daily quota exceeded' }]);
    await assert.rejects(source.client.getJson(source.client.url('/contacts/counts')), QuotaExceeded);
    const s = await budget.state(APP, deps.clock.now());
    assert.equal(s.spent, true);
    assert.equal(s.used, 1);
    // a second worker (its own source, same application) does not even try
    const other = createConstantContactSource(makeConfig(), makeDeps(kvWithAccessToken()), {
      sharedBudget: { app: APP, budget },
    });
    await assert.rejects(other.client.getJson(other.client.url('/contacts/counts')), QuotaExceeded);
  });

  it('a throttled 429 is retried with a new reservation (each attempt is a call)', async () => {
    await budget.configure(APP, { dailyLimit: 100, perSecond: 100, reserve: 0 });
    const deps = makeDeps(kvWithAccessToken());
    const source = createConstantContactSource(makeConfig(), deps, { sharedBudget: { app: APP, budget } });
    nock(API)
      .get(COUNTS)
      .reply(429, [{ error_key: 'throttled', error_message: 'Too many requests' }])
      .get(COUNTS)
      .reply(200, { unsubscribed: 3 });
    await source.client.getJson(source.client.url('/contacts/counts'));
    assert.equal((await budget.state(APP, deps.clock.now())).used, 2);
  });

  it('the token refresh takes the application-wide 1/s token slot', async () => {
    const deps = makeDeps(memKv({ refresh_token: 'refresh-token-R1-seed' }));
    await budget.tokenSlot(APP, deps.clock.now()); // another worker refreshed just now
    const source = createConstantContactSource(makeConfig(), deps, { sharedBudget: { app: APP, budget } });
    let tokenAt = 0;
    nock(AUTH_ORIGIN)
      .post(`${AUTH_PATH}/token`)
      .reply(
        200,
        () => (
          (tokenAt = deps.clock.now().getTime()),
          { access_token: 'access-token-A1-fresh', refresh_token: 'refresh-token-R2', expires_in: 86400 }
        ),
      );
    nock(API).get(COUNTS).reply(200, { unsubscribed: 0 });
    const start = deps.clock.now().getTime();
    await source.client.getJson(source.client.url('/contacts/counts'));
    assert.equal(tokenAt - start, 1000, 'waited for the shared token slot');
    assert.equal((await budget.state(APP, deps.clock.now())).used, 1, 'the token call spends no API budget');
  });
});
