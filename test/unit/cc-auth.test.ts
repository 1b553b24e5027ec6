/**
 * Constant Contact tokens: refresh on 401 with rotation (new refresh token durable before the replay,
 * the old one never sent again), a single refresh for concurrent callers, invalid_grant, seeding from
 * the config, proactive refresh, public (PKCE) clients, and secrets kept out of error messages.
 */
import assert from 'assert';
import nock from 'nock';
import { createConstantContactSource } from '../../src/source/constant-contact';
import { TokenManager } from '../../src/source/constant-contact/auth';
import { ReauthorizationRequired, SourceError } from '../../src/source/types';
import {
  API,
  AUTH_ORIGIN,
  AUTH_PATH,
  CLIENT_ID,
  CLIENT_SECRET,
  form,
  makeConfig,
  makeDeps,
  memKv,
} from '../fixtures/cc/helpers';

const TOKEN_PATH = `${AUTH_PATH}/token`;
const BASIC = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
const R1 = 'refresh-token-R1-seed';
const R2 = 'refresh-token-R2-rotated';
const R3 = 'refresh-token-R3-rotated';
const A0 = 'access-token-A0-stale';
const A1 = 'access-token-A1-fresh';
const A2 = 'access-token-A2-fresh';
const SECRETS = [R1, R2, R3, A0, A1, A2, CLIENT_SECRET];

function validKv(access = A0, refresh = R1): ReturnType<typeof memKv> {
  return memKv({ refresh_token: refresh, access_token: access, access_expires_at: '2099-01-01T00:00:00.000Z' });
}

function assertNoSecret(message: string): void {
  for (const s of SECRETS) assert.ok(!message.includes(s), `message leaks a secret: ${message}`);
}

describe('cc auth', () => {
  afterEach(() => nock.cleanAll());

  it('on 401 refreshes once, stores the ROTATED refresh token before the replay, and never sends the old one again', async () => {
    const deps = makeDeps(validKv());
    const source = createConstantContactSource(makeConfig(), deps);
    const sentRefreshTokens: string[] = [];
    const atReplay: Array<string | null> = [];

    const auth = nock(AUTH_ORIGIN, { reqheaders: { authorization: BASIC } })
      .post(TOKEN_PATH, (body) => {
        const f = form(body);
        sentRefreshTokens.push(f['refresh_token'] ?? '');
        return f['grant_type'] === 'refresh_token' && f['refresh_token'] === R1;
      })
      .reply(200, {
        access_token: A1,
        refresh_token: R2,
        token_type: 'Bearer',
        expires_in: 86400,
        scope: 'contact_data offline_access',
      })
      // a later refresh must send R2: an interceptor for R1 would answer invalid_grant (R1 is dead after rotation)
      .post(TOKEN_PATH, (body) => {
        const f = form(body);
        sentRefreshTokens.push(f['refresh_token'] ?? '');
        return f['refresh_token'] === R2;
      })
      .reply(200, { access_token: A2, refresh_token: R3, expires_in: 86400 });
    const deadR1 = nock(AUTH_ORIGIN)
      .post(TOKEN_PATH, (body) => form(body)['refresh_token'] === R1)
      .reply(400, { error: 'invalid_grant', error_description: 'The refresh token is invalid or expired.' });

    const api = nock(API)
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A0}`)
      .reply(401, { error_key: 'unauthorized', error_message: 'Unauthorized' })
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A1}`)
      .reply(200, () => {
        atReplay.push(deps.kv.get('refresh_token'), deps.kv.get('access_token'));
        return { total: 5, unsubscribed: 2 };
      });

    assert.strictEqual(await source.unsubscribedCount(), 2);
    assert.ok(api.isDone());
    assert.deepStrictEqual(
      atReplay,
      [R2, A1],
      'rotated refresh token and new access token are stored before the replay',
    );
    const writes = deps.kv.writes.map(([k]) => k);
    assert.ok(writes.indexOf('refresh_token') < writes.indexOf('access_token'), `write order ${writes.join(',')}`);

    // a later refresh (say, the next day) uses R2 from the store, never R1
    await source.tokens.refresh();
    assert.ok(auth.isDone(), `pending: ${auth.pendingMocks().join(', ')}`);
    assert.ok(!deadR1.isDone(), 'the old refresh token was sent after rotation');
    assert.deepStrictEqual(
      sentRefreshTokens.filter((t, i, all) => all.indexOf(t) === i),
      [R1, R2],
    );
    assert.strictEqual(deps.kv.get('refresh_token'), R3);
    assert.strictEqual(deps.kv.get('access_token'), A2);

    // and a new process that reads the same store still ignores the configured (dead) R1
    const again = new TokenManager(makeConfig({ refreshToken: R1 }), deps);
    assert.strictEqual(again.refreshToken(), R3);
  });

  it('concurrent callers that need a token share exactly one refresh', async () => {
    const deps = makeDeps(memKv({ refresh_token: R1 }));
    const source = createConstantContactSource(makeConfig(), deps);
    let refreshes = 0;
    nock(AUTH_ORIGIN)
      .post(TOKEN_PATH)
      .delay(30)
      .reply(200, () => {
        refreshes += 1;
        return { access_token: A1, refresh_token: R2, expires_in: 86400 };
      });
    nock(API)
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A1}`)
      .times(5)
      .reply(200, { unsubscribed: 7 });
    const results = await Promise.all([1, 2, 3, 4, 5].map(() => source.unsubscribedCount()));
    assert.deepStrictEqual(results, [7, 7, 7, 7, 7]);
    assert.strictEqual(refreshes, 1);
    assert.strictEqual(deps.callCounts.get('constant-contact-auth'), 1);
  });

  it('concurrent 401s on the same token trigger exactly one refresh', async () => {
    const deps = makeDeps(validKv());
    const source = createConstantContactSource(makeConfig({ rateLimit: { perSecond: 10, dailyBudget: 100 } }), deps);
    let refreshes = 0;
    nock(AUTH_ORIGIN)
      .post(TOKEN_PATH)
      .delay(20)
      .reply(200, () => {
        refreshes += 1;
        return { access_token: A1, refresh_token: R2, expires_in: 86400 };
      });
    nock(API)
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A0}`)
      .times(3)
      .reply(401, { error_key: 'unauthorized', error_message: 'Unauthorized' });
    nock(API)
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A1}`)
      .times(3)
      .reply(200, { unsubscribed: 1 });
    const results = await Promise.all([1, 2, 3].map(() => source.unsubscribedCount()));
    assert.deepStrictEqual(results, [1, 1, 1]);
    assert.strictEqual(refreshes, 1);
  });

  it('invalid_grant from the token endpoint is ReauthorizationRequired naming the command, without the token', async () => {
    const deps = makeDeps(memKv({ refresh_token: R1 }));
    const source = createConstantContactSource(makeConfig(), deps);
    nock(AUTH_ORIGIN)
      .post(TOKEN_PATH)
      .reply(400, { error: 'invalid_grant', error_description: `The refresh token ${R1} is invalid or expired.` });
    await assert.rejects(
      source.scanUnsubscribed(() => undefined),
      (err: unknown) => {
        assert.ok(err instanceof ReauthorizationRequired, String(err));
        assert.match(err.message, /cc-optout auth constant-contact/);
        assert.match(err.message, /invalid_grant/);
        assertNoSecret(err.message);
        return true;
      },
    );
    assert.strictEqual(deps.callCounts.get('constant-contact'), undefined, 'no API request is sent after the refusal');
    assert.strictEqual(deps.callCounts.get('constant-contact-auth'), 1, 'invalid_grant is not retried');
  });

  it('a second 401 after a refresh is a SourceError; the single-object 401 body is parsed; no token in the message', async () => {
    const deps = makeDeps(validKv());
    const source = createConstantContactSource(makeConfig(), deps);
    nock(AUTH_ORIGIN).post(TOKEN_PATH).reply(200, { access_token: A1, refresh_token: R2, expires_in: 86400 });
    nock(API)
      .get('/v3/contacts')
      .query(true)
      .times(2)
      .reply(401, { error_key: 'unauthorized', error_message: 'Unauthorized' });
    await assert.rejects(
      source.scanUnsubscribed(() => undefined),
      (err: unknown) => {
        assert.ok(err instanceof SourceError, String(err));
        assert.strictEqual(err.status, 401);
        assert.strictEqual(err.errorKey, 'unauthorized');
        assert.match(err.message, /HTTP 401 unauthorized: Unauthorized/);
        assertNoSecret(err.message);
        return true;
      },
    );
    assert.strictEqual(deps.callCounts.get('constant-contact'), 2);
    assert.strictEqual(deps.callCounts.get('constant-contact-auth'), 1);
    for (const line of deps.logger.lines) assertNoSecret(line);
  });

  it('the configured refresh token seeds the store only when it holds none', async () => {
    // empty store: seeded from the config
    const empty = makeDeps(memKv());
    nock(AUTH_ORIGIN)
      .post(TOKEN_PATH, (body) => form(body)['refresh_token'] === R1)
      .reply(200, { access_token: A1, expires_in: 3600 });
    const tm = new TokenManager(makeConfig({ refreshToken: R1 }), empty);
    assert.strictEqual(await tm.accessToken(), A1);
    assert.strictEqual(empty.kv.get('refresh_token'), R1, 'no rotation: the seeded token stays');

    // the store already holds a rotated token: the config's is ignored
    const rotated = makeDeps(memKv({ refresh_token: R2 }));
    const scope = nock(AUTH_ORIGIN)
      .post(TOKEN_PATH, (body) => form(body)['refresh_token'] === R2)
      .reply(200, { access_token: A2, expires_in: 3600 });
    assert.strictEqual(await new TokenManager(makeConfig({ refreshToken: R1 }), rotated).accessToken(), A2);
    assert.ok(scope.isDone());
    assert.strictEqual(rotated.kv.get('refresh_token'), R2);
  });

  it('without any refresh token it asks for re-authorisation and sends nothing', async () => {
    const deps = makeDeps(memKv());
    const tm = new TokenManager(makeConfig({ refreshToken: null }), deps);
    await assert.rejects(
      tm.accessToken(),
      (err: unknown) => err instanceof ReauthorizationRequired && /cc-optout auth constant-contact/.test(err.message),
    );
    assert.strictEqual(deps.callCounts.get('constant-contact-auth'), undefined);
  });

  it('refreshes proactively when the access token expires within 60 s', async () => {
    const deps = makeDeps(
      memKv({ refresh_token: R1, access_token: A0, access_expires_at: '2026-01-01T10:00:45.000Z' }),
    );
    const source = createConstantContactSource(makeConfig(), deps);
    nock(AUTH_ORIGIN).post(TOKEN_PATH).reply(200, { access_token: A1, refresh_token: R2, expires_in: 86400 });
    const api = nock(API)
      .get('/v3/contacts/counts')
      .matchHeader('authorization', `Bearer ${A1}`)
      .reply(200, { unsubscribed: 3 });
    assert.strictEqual(await source.unsubscribedCount(), 3);
    assert.ok(api.isDone());
    assert.strictEqual(deps.kv.get('access_expires_at'), '2026-01-02T10:00:00.000Z');
  });

  it('a public (PKCE) client sends client_id in the body and no Basic header', async () => {
    const deps = makeDeps(memKv({ refresh_token: R1 }));
    const scope = nock(AUTH_ORIGIN, { badheaders: ['authorization'] })
      .post(TOKEN_PATH, (body) => {
        const f = form(body);
        return (
          f['client_id'] === CLIENT_ID &&
          f['grant_type'] === 'refresh_token' &&
          f['refresh_token'] === R1 &&
          !('client_secret' in f)
        );
      })
      .reply(200, { access_token: A1, refresh_token: R2, expires_in: 86400 });
    const tm = new TokenManager(makeConfig({ clientSecret: null }), deps);
    assert.strictEqual(await tm.refresh(), A1);
    assert.ok(scope.isDone());
  });

  it('spaces token requests ~1 s apart and retries a token endpoint 503', async () => {
    const deps = makeDeps(memKv({ refresh_token: R1 }));
    const tm = new TokenManager(makeConfig(), deps);
    nock(AUTH_ORIGIN)
      .post(TOKEN_PATH)
      .reply(503, 'unavailable')
      .post(TOKEN_PATH)
      .reply(200, { access_token: A1, refresh_token: R2, expires_in: 86400 })
      .post(TOKEN_PATH, (body) => form(body)['refresh_token'] === R2)
      .reply(200, { access_token: A2, refresh_token: R3, expires_in: 86400 });
    const t0 = deps.clock.now().getTime();
    assert.strictEqual(await tm.refresh(), A1);
    assert.strictEqual(await tm.refresh(), A2);
    assert.strictEqual(deps.callCounts.get('constant-contact-auth'), 3);
    assert.ok(
      deps.clock.now().getTime() - t0 >= 2000,
      `3 token requests at 1/s take at least 2 s (slept ${JSON.stringify(deps.clock.slept)})`,
    );
  });
});
