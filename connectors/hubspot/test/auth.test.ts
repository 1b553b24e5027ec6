/**
 * HubSpot OAuth: refresh-token grant, rotation persisted before use, refresh before expiry,
 * one refresh after a 401, refused refresh tokens, secrets out of logs.
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import { OAUTH_KV_KEY } from '../api';
import { FakeHubSpot, P, deliver, deliverLeft, isPath, kinds, makeCaps, open, optOut } from './fixtures/harness';

const CLIENT_SECRET = 'client-secret-value-9876';
const REFRESH = 'initial-refresh-token-value-1234';

const oauthConfig = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  auth: { type: 'oauth', clientId: 'client-id-1', clientSecret: CLIENT_SECRET, refreshToken: REFRESH },
  suppression: { type: 'unsubscribe-all', batch: 'never' },
  ...extra,
});

function oauthFake(rotate = true): FakeHubSpot {
  const hs = new FakeHubSpot().install();
  hs.oauth = { clientId: 'client-id-1', clientSecret: CLIENT_SECRET, refreshToken: REFRESH, rotate, expiresIn: 1800 };
  return hs;
}

const tokenCalls = (hs: FakeHubSpot): number => hs.count(isPath(P.token));

describe('hubspot connector: OAuth', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  it('refreshes with the refresh_token grant (form-encoded), persists the rotated refresh token before using the access token', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    const h = open(oauthConfig());
    const seenAtLookup: Array<string | undefined> = [];
    hs.script({
      match: (r) => {
        if (r.path === P.read) seenAtLookup.push(h.store.get(OAUTH_KV_KEY));
        return false;
      },
      status: 0,
      body: null,
    });
    const report = await deliver(h.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });

    const tokenReq = hs.requests.find(isPath(P.token))!;
    assert.strictEqual(tokenReq.authorization, undefined, 'no bearer on the token endpoint');
    const form = new URLSearchParams(tokenReq.body as string);
    assert.deepStrictEqual(Object.fromEntries(form), {
      grant_type: 'refresh_token',
      client_id: 'client-id-1',
      client_secret: CLIENT_SECRET,
      refresh_token: REFRESH,
    });
    const lookup = hs.requests.find(isPath(P.read))!;
    assert.strictEqual(lookup.authorization, 'Bearer oauth-access-token-1-abcdef');
    assert.ok(seenAtLookup[0], 'tokens stored before the first API call');
    assert.strictEqual(JSON.parse(seenAtLookup[0]!).refreshToken, 'oauth-refresh-token-1-abcdef');
    assert.strictEqual(h.count(), 3, 'token + lookup + write, all counted');
  });

  it('refreshes before expires_in runs out, chaining rotated refresh tokens', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    hs.addContact('b@example.com');
    hs.addContact('c@example.com');
    const h = open(oauthConfig());
    await deliver(h.target, [optOut('a@example.com')]);
    assert.strictEqual(tokenCalls(hs), 1);

    h.clock.advance(20 * 60_000); // 20 of 30 minutes: still fresh
    await deliver(h.target, [optOut('b@example.com')]);
    assert.strictEqual(tokenCalls(hs), 1);

    h.clock.advance(6 * 60_000); // 26 minutes: inside the 5-minute margin
    await deliver(h.target, [optOut('c@example.com')]);
    assert.strictEqual(tokenCalls(hs), 2);
    const second = new URLSearchParams(hs.requests.filter(isPath(P.token))[1]!.body as string);
    assert.strictEqual(
      second.get('refresh_token'),
      'oauth-refresh-token-1-abcdef',
      'the rotated token, not the config one',
    );
  });

  it('a new run reuses the stored tokens; a changed config refresh token restarts the chain', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    const first = open(oauthConfig());
    await deliver(first.target, [optOut('a@example.com')]);
    assert.strictEqual(tokenCalls(hs), 1);

    const caps2 = makeCaps();
    for (const [k, v] of first.store) caps2.store.set(k, v);
    caps2.clock.advance(60_000);
    const second = open(oauthConfig(), caps2);
    await deliver(second.target, [optOut('a@example.com')]);
    assert.strictEqual(tokenCalls(hs), 1, 'stored access token still valid');

    hs.oauth!.refreshToken = 'reauthorised-refresh-token-555';
    const caps3 = makeCaps();
    for (const [k, v] of first.store) caps3.store.set(k, v);
    const third = open(
      oauthConfig({
        auth: {
          type: 'oauth',
          clientId: 'client-id-1',
          clientSecret: CLIENT_SECRET,
          refreshToken: 'reauthorised-refresh-token-555',
        },
      }),
      caps3,
    );
    await deliver(third.target, [optOut('a@example.com')]);
    assert.strictEqual(tokenCalls(hs), 2);
    const last = new URLSearchParams(hs.requests.filter(isPath(P.token))[1]!.body as string);
    assert.strictEqual(last.get('refresh_token'), 'reauthorised-refresh-token-555');
  });

  it('a 401 triggers one refresh and one retry', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    const h = open(oauthConfig());
    await deliver(h.target, [optOut('a@example.com')]);
    // HubSpot revokes the access token early.
    hs.validTokens.clear();
    hs.validTokens.add('placeholder-so-checks-apply');
    hs.addContact('b@example.com');
    const report = await deliver(h.target, [optOut('b@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'b@example.com': 'applied' });
    assert.strictEqual(tokenCalls(hs), 2);
  });

  it('a 401 that persists after a refresh is a TargetHalt auth (no refresh loop)', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    hs.script({
      match: isPath(P.read),
      status: 401,
      body: { status: 'error', message: 'Authentication credentials not found.', category: 'INVALID_AUTHENTICATION' },
      times: 10,
    });
    const h = open(oauthConfig());
    const err = await deliverLeft(h.target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'auth');
    assert.strictEqual(tokenCalls(hs), 2, 'initial + one refresh after the 401');
    assert.strictEqual(hs.count(isPath(P.read)), 2);
  });

  it('a refused refresh token (400 BAD_REFRESH_TOKEN) is a TargetHalt auth asking to re-authorise; no secret leaks', async () => {
    const hs = oauthFake();
    hs.oauth!.refreshToken = 'something-else-entirely';
    const h = open(oauthConfig());
    const err = await deliverLeft(h.target, [optOut('a@example.com')]);
    assert.strictEqual(err.kind, 'auth');
    assert.match(err.message, /re-authorise/);
    assert.match(err.message, /auth\.refreshToken/);
    for (const secret of [CLIENT_SECRET, REFRESH]) {
      assert.ok(!err.message.includes(secret));
      assert.ok(!h.logger.lines.some((l) => l.includes(secret)), `log holds ${secret}`);
    }
    assert.strictEqual(tokenCalls(hs), 1, 'a 400 from the token endpoint is not retried');
  });

  it('access and refresh tokens never appear in logs, even at debug level', async () => {
    const hs = oauthFake();
    hs.addContact('a@example.com');
    hs.script({ match: isPath(P.singleAll), status: 503, body: { status: 'error', message: 'Service unavailable' } });
    const h = open(oauthConfig());
    await deliver(h.target, [optOut('a@example.com')]);
    const stored = JSON.parse(h.store.get(OAUTH_KV_KEY)!);
    assert.ok(h.logger.lines.length >= 3);
    for (const secret of [CLIENT_SECRET, REFRESH, stored.accessToken, stored.refreshToken]) {
      assert.ok(!h.logger.lines.some((l) => l.includes(secret)), `log holds ${secret}`);
    }
  });
});
