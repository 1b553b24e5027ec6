/**
 * First-time authorisation (`cc-optout auth constant-contact`): authorization code + PKCE on a loopback
 * redirect (the browser is simulated by an axios GET to the callback), and the device flow.
 */
import assert from 'assert';
import * as crypto from 'crypto';
import axios from 'axios';
import nock from 'nock';
import {
  authorizeWithDeviceFlow,
  authorizeWithPkce,
  buildAuthorizeUrl,
  createPkcePair,
  DEVICE_CODE_GRANT,
} from '../../src/source/constant-contact/authorize';
import { SourceError } from '../../src/source/types';
import {
  AUTH_ORIGIN,
  AUTH_PATH,
  CLIENT_ID,
  CLIENT_SECRET,
  form,
  makeConfig,
  makeDeps,
  memKv,
} from '../fixtures/cc/helpers';

const BASIC = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;

/** Plays the browser: follows the printed authorize URL's redirect_uri with a code (and the given state). */
function browser(
  printed: string[],
  opts: { code?: string; state?: string; query?: string } = {},
): Promise<{ status: number; data: string }> {
  const line = printed.find((l) => l.includes('/authorize?'));
  assert.ok(line, `no authorize URL printed: ${printed.join('\n')}`);
  const url = new URL(
    line
      .trim()
      .split(/\s+/)
      .find((w) => w.startsWith('https://'))!,
  );
  const redirect = url.searchParams.get('redirect_uri')!;
  const state = opts.state ?? url.searchParams.get('state')!;
  const query =
    opts.query ?? `code=${encodeURIComponent(opts.code ?? 'the-auth-code-123')}&state=${encodeURIComponent(state)}`;
  return axios
    .get(`${redirect}?${query}`, { validateStatus: () => true, responseType: 'text', adapter: 'http' })
    .then((r) => ({ status: r.status, data: String(r.data) }));
}

describe('cc authorize', () => {
  afterEach(() => nock.cleanAll());

  it('builds the authorize URL with PKCE S256 and the offline_access scope', () => {
    const { verifier, challenge } = createPkcePair();
    assert.match(verifier, /^[A-Za-z0-9_-]{43}$/);
    assert.strictEqual(challenge, crypto.createHash('sha256').update(verifier).digest('base64url'));
    const url = new URL(
      buildAuthorizeUrl({
        authBaseUrl: `${AUTH_ORIGIN}${AUTH_PATH}`,
        clientId: CLIENT_ID,
        redirectUri: 'http://127.0.0.1:5555/callback',
        state: 'st',
        codeChallenge: challenge,
      }),
    );
    assert.strictEqual(url.origin + url.pathname, `${AUTH_ORIGIN}${AUTH_PATH}/authorize`);
    assert.deepStrictEqual(Object.fromEntries(url.searchParams), {
      client_id: CLIENT_ID,
      redirect_uri: 'http://127.0.0.1:5555/callback',
      response_type: 'code',
      scope: 'contact_data offline_access',
      state: 'st',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
  });

  it('authorization code + PKCE: loopback callback, state checked, code exchanged with the verifier, tokens stored', async () => {
    const deps = makeDeps(memKv());
    const printed: string[] = [];
    let challenge = '';
    let browserVisit: Promise<{ status: number; data: string }> | null = null;
    const token = nock(AUTH_ORIGIN, { reqheaders: { authorization: BASIC } })
      .post(`${AUTH_PATH}/token`, (body) => {
        const f = form(body);
        const verifierMatches =
          crypto
            .createHash('sha256')
            .update(f['code_verifier'] ?? '')
            .digest('base64url') === challenge;
        return (
          f['grant_type'] === 'authorization_code' &&
          f['code'] === 'the-auth-code-123' &&
          /^http:\/\/127\.0\.0\.1:\d+\/callback$/.test(f['redirect_uri'] ?? '') &&
          verifierMatches
        );
      })
      .reply(200, {
        access_token: 'access-token-first',
        refresh_token: 'refresh-token-first',
        expires_in: 86400,
        scope: 'contact_data offline_access',
      });

    const result = await authorizeWithPkce(makeConfig({ refreshToken: null }), deps, {
      print: (m) => {
        printed.push(m);
        const u = /https:\/\/\S+/.exec(m);
        if (u && u[0].includes('/authorize?')) {
          challenge = new URL(u[0]).searchParams.get('code_challenge')!;
          browserVisit = browser(printed);
        }
      },
    });

    assert.ok(token.isDone(), `pending: ${token.pendingMocks().join(', ')}`);
    const visit = await browserVisit!;
    assert.strictEqual(visit.status, 200);
    assert.match(visit.data, /connected/);
    assert.strictEqual(result.refreshToken, true);
    assert.strictEqual(deps.kv.get('refresh_token'), 'refresh-token-first');
    assert.strictEqual(deps.kv.get('access_token'), 'access-token-first');
    assert.strictEqual(deps.kv.get('access_expires_at'), '2026-01-02T10:00:00.000Z');
  });

  it('PKCE: a callback with the wrong state is refused and nothing is exchanged', async () => {
    const deps = makeDeps(memKv());
    const printed: string[] = [];
    let visit: Promise<{ status: number; data: string }> | null = null;
    const token = nock(AUTH_ORIGIN).post(`${AUTH_PATH}/token`).reply(200, { access_token: 'x-should-not-happen' });
    await assert.rejects(
      authorizeWithPkce(makeConfig(), deps, {
        print: (m) => {
          printed.push(m);
          if (m.includes('/authorize?')) visit = browser(printed, { state: 'forged-state' });
        },
      }),
      (err: unknown) => err instanceof SourceError && /state does not match/.test(err.message),
    );
    assert.strictEqual((await visit!).status, 400);
    assert.ok(!token.isDone());
    assert.strictEqual(deps.kv.get('access_token'), null);
  });

  it('PKCE: a refusal in the browser (error=access_denied) is reported', async () => {
    const deps = makeDeps(memKv());
    const printed: string[] = [];
    await assert.rejects(
      authorizeWithPkce(makeConfig(), deps, {
        print: (m) => {
          printed.push(m);
          if (m.includes('/authorize?'))
            void browser(printed, { query: 'error=access_denied&error_description=User%20said%20no' });
        },
      }),
      /access_denied: User said no/,
    );
  });

  it('device flow: prints the code, polls honouring interval, authorization_pending and slow_down, stores tokens', async () => {
    const deps = makeDeps(memKv());
    const printed: string[] = [];
    const polls: string[] = [];
    nock(AUTH_ORIGIN)
      .post(`${AUTH_PATH}/device/authorize`, (body) => {
        const f = form(body);
        return f['client_id'] === CLIENT_ID && f['scope'] === 'contact_data offline_access';
      })
      .reply(200, {
        device_code: 'device-code-secret-1',
        user_code: 'WDJB-MJHT',
        verification_uri: 'https://authz.constantcontact.com/activate',
        verification_uri_complete: 'https://authz.constantcontact.com/activate?user_code=WDJB-MJHT',
        expires_in: 600,
        interval: 5,
      });
    const isPoll = (body: unknown): boolean => {
      const f = form(body);
      return f['grant_type'] === DEVICE_CODE_GRANT && f['device_code'] === 'device-code-secret-1';
    };
    nock(AUTH_ORIGIN, { reqheaders: { authorization: BASIC } })
      .post(`${AUTH_PATH}/token`, isPoll)
      .reply(400, () => (polls.push('pending'), { error: 'authorization_pending' }))
      .post(`${AUTH_PATH}/token`, isPoll)
      .reply(400, () => (polls.push('slow_down'), { error: 'slow_down' }))
      .post(`${AUTH_PATH}/token`, isPoll)
      .reply(
        200,
        () => (
          polls.push('ok'),
          { access_token: 'access-token-device', refresh_token: 'refresh-token-device', expires_in: 86400 }
        ),
      );

    const result = await authorizeWithDeviceFlow(makeConfig({ refreshToken: null }), deps, {
      print: (m) => printed.push(m),
    });

    assert.deepStrictEqual(polls, ['pending', 'slow_down', 'ok']);
    assert.deepStrictEqual(
      deps.clock.slept,
      [5000, 5000, 10000],
      'waits interval, then interval + 5 s after slow_down',
    );
    assert.ok(
      printed.some(
        (l) => l.includes('https://authz.constantcontact.com/activate?user_code=WDJB-MJHT') && l.includes('WDJB-MJHT'),
      ),
      printed.join('\n'),
    );
    assert.strictEqual(result.refreshToken, true);
    assert.strictEqual(deps.kv.get('refresh_token'), 'refresh-token-device');
    assert.strictEqual(deps.kv.get('access_token'), 'access-token-device');
  });

  it('device flow: expired_token stops with a message to run the command again', async () => {
    const deps = makeDeps(memKv());
    nock(AUTH_ORIGIN)
      .post(`${AUTH_PATH}/device/authorize`)
      .reply(200, {
        device_code: 'device-code-secret-2',
        user_code: 'ABCD-EFGH',
        verification_uri: 'https://authz.constantcontact.com/activate',
        expires_in: 600,
      })
      .post(`${AUTH_PATH}/token`)
      .reply(400, { error: 'authorization_pending' })
      .post(`${AUTH_PATH}/token`)
      .reply(400, { error: 'expired_token' });
    await assert.rejects(authorizeWithDeviceFlow(makeConfig(), deps, { print: () => undefined }), (err: unknown) => {
      assert.ok(err instanceof SourceError, String(err));
      assert.strictEqual(err.errorKey, 'expired_token');
      assert.match(err.message, /expired/);
      assert.ok(!err.message.includes('device-code-secret-2'));
      return true;
    });
    assert.deepStrictEqual(deps.clock.slept, [5000, 5000], 'default interval is 5 s');
    assert.strictEqual(deps.kv.get('access_token'), null);
  });
});
