/**
 * Salesforce auth through the REAL jsforce: JWT bearer, client credentials, refresh token (rotation),
 * access token; the 401 refresh-loop cap; secrets kept out of logs and errors.
 */
import { strict as assert } from 'assert';
import * as crypto from 'crypto';
import nock from 'nock';
import * as E from 'fp-ts/Either';
import { connector, openSalesforce } from '..';
import { JWT_BEARER_GRANT } from '../auth';
import { HaltInfo } from '../../../src/sdk';
import { DeliveryResult as DeliveryReport } from '../../../test/contract';
import { clearSecrets } from '../../../src/log';
import { FakeOrg, INSTANCE, LOGIN, API, contact, testCaps, optOut, rsaKeyPair } from './fixtures/fake-org';
import { deliverEither } from '../../../test/contract';

const FAST = { retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 100 } };
const KEY_PATH = '/secrets/salesforce.key';

function open(raw: Record<string, unknown>, files: Record<string, string> = {}, shared?: ReturnType<typeof testCaps>) {
  const decoded = connector.config.decode(raw);
  if (E.isLeft(decoded)) throw new Error('bad test config');
  const t = shared ?? testCaps(files);
  const target = openSalesforce(decoded.right, t.caps, FAST);
  return { ...t, target };
}

function b64json(s: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Record<string, unknown>;
}

describe('salesforce auth (jsforce + nock)', () => {
  let org: FakeOrg;
  let keys: ReturnType<typeof rsaKeyPair>;
  before(() => {
    keys = rsaKeyPair();
  });
  beforeEach(() => {
    clearSecrets();
    org = new FakeOrg().install();
    org.add(contact('003A1', 'a@example.com'));
  });
  afterEach(() => {
    nock.cleanAll();
  });

  const jwtConfig = (extra: Record<string, unknown> = {}) => ({
    auth: {
      type: 'jwt',
      clientId: '3MVG9-consumer-key',
      username: 'integration@acme.com',
      privateKeyPath: KEY_PATH,
      ...extra,
    },
  });

  it('JWT bearer: an RS256 assertion (iss, sub, aud, exp) that verifies with the public key, posted to the login host', async () => {
    const { target, clock } = open(jwtConfig(), { [KEY_PATH]: keys.privatePem });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r));
    assert.equal(r.right.outcomes[0]!.kind, 'applied');
    const tokenReq = org.requests.find((q) => q.path === '/services/oauth2/token')!;
    assert.equal(tokenReq.url, `${LOGIN}/services/oauth2/token`);
    assert.equal(org.tokenBodies.length, 1);
    const body = org.tokenBodies[0]!;
    assert.equal(body.get('grant_type'), JWT_BEARER_GRANT);
    const [h, c, s] = body.get('assertion')!.split('.');
    assert.deepEqual(b64json(h!), { alg: 'RS256', typ: 'JWT' });
    assert.deepEqual(b64json(c!), {
      iss: '3MVG9-consumer-key',
      sub: 'integration@acme.com',
      aud: 'https://login.salesforce.com',
      exp: Math.floor(clock.now().getTime() / 1000) + 180,
    });
    assert.ok(
      crypto.verify('RSA-SHA256', Buffer.from(`${h}.${c}`), keys.publicKey, Buffer.from(s!, 'base64url')),
      'signature verifies',
    );
    const other = rsaKeyPair();
    assert.ok(!crypto.verify('RSA-SHA256', Buffer.from(`${h}.${c}`), other.publicKey, Buffer.from(s!, 'base64url')));
    // the issued token and the instance_url from the token response are used for the API
    const q = org.requests.find((x) => x.path === `${API}/query` || x.path === `${API}/composite`)!;
    assert.equal(q.headers['authorization'], 'Bearer issued-access-token-1-xyz');
    assert.ok(q.url.startsWith(INSTANCE));
  });

  it('JWT with an inline key (newlines escaped as \\n, as environment variables often carry them) and a sandbox login host', async () => {
    const escaped = keys.privatePem.replace(/\n/g, '\\n');
    const { target } = open({
      loginUrl: 'https://test.salesforce.com',
      auth: { type: 'jwt', clientId: 'cid-123', username: 'u@acme.com.uat', privateKey: escaped },
    });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r));
    const tokenReq = org.requests.find((q) => q.path === '/services/oauth2/token')!;
    assert.equal(tokenReq.url, 'https://test.salesforce.com/services/oauth2/token');
    const claims = b64json(org.tokenBodies[0]!.get('assertion')!.split('.')[1]!);
    assert.equal(claims['aud'], 'https://test.salesforce.com');
  });

  it('an unreadable private key is a config error before any request', async () => {
    const { target } = open(jwtConfig(), {});
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'config');
    assert.match(r.left.message, /auth\.privateKeyPath: cannot read \/secrets\/salesforce\.key/);
    assert.equal(org.requests.length, 0);
  });

  it('a 401 that persists after a successful refresh: one refresh, one retry, then an auth error (no refresh loop)', async function () {
    this.timeout(5000);
    org.acceptIssuedTokens = false;
    const { target, counts } = open(jwtConfig(), { [KEY_PATH]: keys.privatePem });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isLeft(r), 'Left');
    assert.equal(r.left.kind, 'auth');
    assert.match(r.left.message, /401 again after a successful refresh/);
    assert.equal(org.tokensIssued, 2, 'initial token + one refresh');
    assert.equal(org.apiRequests().length, 2, 'the query and its single retry');
    assert.equal(counts.get('salesforce'), 4);
  });

  it('an expired session is refreshed once and the request re-sent; a later expiry may refresh again', async () => {
    let expireOnPatch = true;
    org.fault = (req) => {
      if (req.method === 'PATCH' && expireOnPatch) {
        expireOnPatch = false;
        org.validTokens.clear();
        return [
          401,
          JSON.stringify([{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }]),
          { 'Content-Type': 'application/json' },
        ];
      }
      return undefined;
    };
    const { target } = open(jwtConfig(), { [KEY_PATH]: keys.privatePem });
    const r1 = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r1));
    assert.equal(r1.right.outcomes[0]!.kind, 'applied');
    assert.equal(org.tokensIssued, 2);
    assert.equal(org.collectionCalls().length, 2);
    // expire again in a later run: the cap counts refreshes since the last success, so this refresh is allowed
    org.add(contact('003A2', 'b@example.com'));
    expireOnPatch = true;
    const r2 = await deliverEither(target, [optOut('b@example.com')], 'apply');
    assert.ok(E.isRight(r2));
    assert.equal(r2.right.outcomes[0]!.kind, 'applied');
    assert.equal(org.tokensIssued, 3);
  });

  it('a refused access token (no way to refresh) is an auth error after one request', async () => {
    const { target } = open({
      instanceUrl: INSTANCE,
      auth: { type: 'access-token', accessToken: 'revoked-access-token-000' },
    });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'auth');
    assert.match(r.left.message, /INVALID_SESSION_ID/);
    assert.equal(org.requests.length, 1);
  });

  it('client credentials: token from the My Domain (instanceUrl) endpoint', async () => {
    const { target } = open({
      instanceUrl: INSTANCE,
      auth: { type: 'client-credentials', clientId: 'cc-client-id', clientSecret: 'cc-client-secret-value' },
    });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r));
    const tokenReq = org.requests.find((q) => q.path === '/services/oauth2/token')!;
    assert.equal(tokenReq.url, `${INSTANCE}/services/oauth2/token`);
    const body = org.tokenBodies[0]!;
    assert.deepEqual(
      [body.get('grant_type'), body.get('client_id'), body.get('client_secret')],
      ['client_credentials', 'cc-client-id', 'cc-client-secret-value'],
    );
  });

  it('refresh token: a rotated refresh token is stored (kv) and used by the next run', async () => {
    let n = 0;
    org.tokenReply = (_body) => {
      n += 1;
      org.validTokens.add(`rt-access-${n}-token`);
      return [
        200,
        {
          access_token: `rt-access-${n}-token`,
          instance_url: INSTANCE,
          refresh_token: `rotated-refresh-token-${n}`,
          id: 'x/y/z',
          token_type: 'Bearer',
        },
        { 'Content-Type': 'application/json' },
      ];
    };
    const raw = {
      auth: {
        type: 'refresh-token',
        clientId: 'rt-client',
        clientSecret: 'rt-secret-value',
        refreshToken: 'configured-refresh-token',
      },
    };
    const first = open(raw);
    assert.ok(E.isRight(await deliverEither(first.target, [optOut('a@example.com')], 'apply')));
    assert.equal(org.tokenBodies[0]!.get('grant_type'), 'refresh_token');
    assert.equal(org.tokenBodies[0]!.get('refresh_token'), 'configured-refresh-token');
    assert.equal(org.tokenBodies[0]!.get('client_secret'), 'rt-secret-value');
    assert.match(first.kvMap.get('refresh_token')!, /rotated-refresh-token-1/);
    // a new process, same store
    const second = open(raw, {}, first);
    assert.ok(E.isRight(await deliverEither(second.target, [optOut('a@example.com')], 'plan')));
    assert.equal(org.tokenBodies[1]!.get('refresh_token'), 'rotated-refresh-token-1');
  });

  it('a token endpoint refusal (invalid_grant) is an auth error that never shows the secret', async () => {
    org.tokenReply = (body) => [
      400,
      { error: 'invalid_grant', error_description: `expired access/refresh token ${body.get('refresh_token')}` },
      { 'Content-Type': 'application/json' },
    ];
    const { target, logger } = open({
      auth: { type: 'refresh-token', clientId: 'rt-client', refreshToken: 'super-secret-refresh-token' },
    });
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isLeft(r));
    assert.equal(r.left.kind, 'auth');
    assert.match(r.left.message, /invalid_grant/);
    assert.ok(!r.left.message.includes('super-secret-refresh-token'), r.left.message);
    assert.ok(!logger.lines.join('\n').includes('super-secret-refresh-token'));
    assert.equal(org.tokenBodies.length, 1, 'a 400 from the token endpoint is not retried');
  });

  it('keeps every secret out of logs, outcomes and errors', async () => {
    // error bodies that echo the token back, a permanent failure and a 401 loop: every path that prints
    org.fault = (req) =>
      req.method === 'PATCH'
        ? [
            400,
            JSON.stringify([
              { errorCode: 'JSON_PARSER_ERROR', message: `bad request with ${String(req.headers['authorization'])}` },
            ]),
            { 'Content-Type': 'application/json' },
          ]
        : undefined;
    const { target, logger } = open(
      {
        auth: {
          type: 'jwt',
          clientId: '3MVG9-consumer-key',
          username: 'integration@acme.com',
          privateKeyPath: KEY_PATH,
        },
      },
      { [KEY_PATH]: keys.privatePem },
    );
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r));
    const report: DeliveryReport = r.right;
    assert.equal(report.outcomes[0]!.kind, 'failed-permanent');
    org.acceptIssuedTokens = false;
    org.validTokens.clear();
    const r2 = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isLeft(r2));
    const left: HaltInfo = r2.left;

    const printed = [logger.lines.join('\n'), JSON.stringify(report), left.message].join('\n');
    const pemBody = keys.privatePem.split('\n')[1]!;
    for (const secret of ['issued-access-token-1-xyz', 'issued-access-token-2-xyz', pemBody]) {
      assert.ok(!printed.includes(secret), `leaked ${secret}`);
    }
    assert.match(report.outcomes[0]!.message ?? '', /JSON_PARSER_ERROR: bad request with Bearer \[redacted\]/);
    assert.ok(logger.lines.length > 0);
  });
});
