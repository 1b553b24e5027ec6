/**
 * The Dataverse client and MSAL under nock: service protection (429 Retry-After honoured and capped), 401 ->
 * one fresh token -> auth halt, 403 and 5xx halts, the token pinned to the environment's origin (foreign
 * nextLink and redirects refused), and MSAL's client-credentials POST with no discovery request.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import { isTargetHalt } from 'cc-optout-connector/sdk';
import { AuthFailure, msalTokenSource, TokenSource } from '../../src/auth';
import { DataverseClient, DataverseHalt, DataverseRequestError, retryAfterSeconds } from '../../src/client';
import { openDynamics, DynamicsConfig } from '../../src';
import { optOut, testCaps } from '../helpers';

const ORG = 'https://contoso.crm.dynamics.com';
const API = '/api/data/v9.2';

function fakeTokens(): TokenSource & { calls: boolean[] } {
  const calls: boolean[] = [];
  return {
    calls,
    async get(fresh = false) {
      calls.push(fresh);
      return `token-${calls.length}`;
    },
  };
}

function client(
  tokens: TokenSource,
  caps = testCaps(),
  over: Partial<{ maxRetryAfterSeconds: number; maxRetries: number }> = {},
): { c: DataverseClient; caps: ReturnType<typeof testCaps> } {
  const pauses: number[] = caps.pauses;
  const c = new DataverseClient(
    {
      url: ORG,
      apiVersion: '9.2',
      timeoutMs: 5000,
      maxRetryAfterSeconds: over.maxRetryAfterSeconds ?? 60,
      maxRetries: over.maxRetries ?? 3,
      backoffBaseMs: 1,
    },
    {
      tokens,
      pacer: { acquire: async () => undefined, pause: (ms) => void pauses.push(ms) },
      sleep: (ms) => caps.clock.sleep(ms),
      now: () => caps.clock.now(),
      record: (n) => caps.calls.record('dynamics', n),
      redact: (s) => caps.secrets.redact(s),
    },
  );
  return { c, caps };
}

describe('dynamics client (nock)', () => {
  afterEach(() => nock.cleanAll());

  it('429: waits the Retry-After seconds (and pauses the limiter), then succeeds', async () => {
    const scope = nock(ORG)
      .get(`${API}/WhoAmI`)
      .reply(
        429,
        {
          error: {
            code: '0x80072322',
            message: 'Number of requests exceeded the limit of 6000 over time window of 300 seconds.',
          },
        },
        { 'Retry-After': '7' },
      )
      .get(`${API}/WhoAmI`)
      .reply(200, { UserId: 'u1' });
    const { c, caps } = client(fakeTokens());
    const r = await c.getJson<{ UserId: string }>('WhoAmI');
    assert.equal(r.UserId, 'u1');
    assert.deepEqual(caps.sleeps, [7000]);
    assert.deepEqual(caps.pauses, [7000]);
    assert.equal(caps.callCounts.get('dynamics'), 2);
    scope.done();
  });

  it('429 with a Retry-After over the cap: a rate-limit halt with retryAt, no waiting', async () => {
    nock(ORG)
      .get(`${API}/WhoAmI`)
      .reply(429, { error: { code: '0x80072321', message: 'Combined execution time ...' } }, { 'Retry-After': '900' });
    const { c, caps } = client(fakeTokens(), testCaps(), { maxRetryAfterSeconds: 60 });
    const at = caps.clock.now().getTime();
    await assert.rejects(c.getJson('WhoAmI'), (e: unknown) => {
      assert.ok(e instanceof DataverseHalt);
      assert.equal(e.kind, 'rate-limit');
      assert.ok(Math.abs(Date.parse(e.retryAt!) - (at + 900_000)) < 2000);
      assert.match(e.message, /0x80072321/);
      return true;
    });
    assert.deepEqual(caps.sleeps, []);
  });

  it('an absurd Retry-After (1e20 s) is read as a day: a rate-limit halt with a real retryAt, not a crash', async () => {
    nock(ORG).get(`${API}/WhoAmI`).reply(429, '', { 'Retry-After': '100000000000000000000' });
    const { c, caps } = client(fakeTokens(), testCaps(), { maxRetryAfterSeconds: 60 });
    const at = caps.clock.now().getTime();
    await assert.rejects(c.getJson('WhoAmI'), (e: unknown) => {
      assert.ok(e instanceof DataverseHalt);
      assert.equal(e.kind, 'rate-limit');
      assert.ok(Math.abs(Date.parse(e.retryAt!) - (at + 86_400_000)) < 2000);
      return true;
    });
  });

  it('429 again and again: stops after maxRetries', async () => {
    nock(ORG).get(`${API}/WhoAmI`).times(3).reply(429, '', { 'Retry-After': '1' });
    const { c, caps } = client(fakeTokens(), testCaps(), { maxRetries: 2 });
    await assert.rejects(c.getJson('WhoAmI'), (e: unknown) => e instanceof DataverseHalt && e.kind === 'rate-limit');
    assert.deepEqual(caps.sleeps, [1000, 1000]);
  });

  it('Retry-After as an HTTP date', () => {
    const now = new Date('2026-12-01T12:00:00Z');
    assert.equal(retryAfterSeconds('Tue, 01 Dec 2026 12:00:30 GMT', now), 30);
    assert.equal(retryAfterSeconds('12', now), 12);
    assert.equal(retryAfterSeconds(undefined, now), null);
  });

  it('401: one fresh token (MSAL cache skipped), then an auth halt', async () => {
    nock(ORG).get(`${API}/WhoAmI`).times(2).reply(401, '');
    const tokens = fakeTokens();
    const { c } = client(tokens);
    await assert.rejects(
      c.getJson('WhoAmI'),
      (e: unknown) => e instanceof DataverseHalt && e.kind === 'auth' && /401/.test(e.message),
    );
    assert.deepEqual(tokens.calls, [false, true]);
  });

  it('403 (missing privilege) halts as auth with Dataverse message; 5xx retries then halts as unavailable', async () => {
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(403, { error: { code: '0x80040220', message: 'Principal user is missing prvReadContact privilege' } });
    const { c } = client(fakeTokens());
    await assert.rejects(
      c.getJson('contacts?$top=1'),
      (e: unknown) => e instanceof DataverseHalt && e.kind === 'auth' && /prvReadContact/.test(e.message),
    );
    nock(ORG).get(`${API}/WhoAmI`).times(4).reply(503, 'busy');
    const { c: c2, caps } = client(fakeTokens());
    await assert.rejects(
      c2.getJson('WhoAmI'),
      (e: unknown) => e instanceof DataverseHalt && e.kind === 'unavailable' && /503/.test(e.message),
    );
    assert.equal(caps.callCounts.get('dynamics'), 4);
  });

  it('400 is a request error for the caller, not a halt', async () => {
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(400, {
        error: {
          code: '0x80060888',
          message: "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.contact'.",
        },
      });
    const { c } = client(fakeTokens());
    await assert.rejects(
      c.getJson('contacts?$select=nope'),
      (e: unknown) => e instanceof DataverseRequestError && e.status === 400 && /nope/.test(e.message),
    );
  });

  it('the token goes only to the environment: a nextLink to another origin and a redirect are refused', async () => {
    const evil = nock('https://evil.example.com').get(/.*/).reply(200, { value: [] });
    const { c } = client(fakeTokens());
    await assert.rejects(
      c.getJson('https://evil.example.com/api/data/v9.2/contacts'),
      (e: unknown) => e instanceof DataverseHalt && /refusing to send the token/.test(e.message),
    );
    await assert.rejects(
      c.getJson(`${ORG}/elsewhere`),
      (e: unknown) => e instanceof DataverseHalt && /refusing/.test(e.message),
    );
    nock(ORG).get(`${API}/WhoAmI`).reply(302, '', { Location: 'https://evil.example.com/api/data/v9.2/WhoAmI' });
    await assert.rejects(c.getJson('WhoAmI'), (e: unknown) => e instanceof DataverseHalt && /redirect/.test(e.message));
    assert.equal(evil.isDone(), false, 'nothing was sent to the other host');
  });

  it('a lookup page whose nextLink leaves the environment stops the target (fatal), nothing written', async () => {
    const caps = testCaps();
    const cfg = {
      url: ORG,
      auth: { type: 'client-credentials', tenantId: 't', clientId: 'c', clientSecret: 'secret-xyz' },
      entities: { lead: false },
    } as unknown as DynamicsConfig;
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(200, {
        value: [
          { contactid: '00000000-0000-0000-0000-000000000001', emailaddress1: 'a@example.com', donotbulkemail: false },
        ],
        '@odata.nextLink': 'https://evil.example.com/api/data/v9.2/contacts?$skiptoken=1',
      });
    const target = openDynamics(cfg, caps, { tokens: fakeTokens() });
    await assert.rejects(
      target.deliver([optOut('a@example.com')], 'apply'),
      (e: unknown) => isTargetHalt(e) && e.kind === 'fatal',
    );
  });
});

describe('dynamics auth: MSAL client credentials (nock)', () => {
  afterEach(() => nock.cleanAll());
  const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47';

  it('one POST to the v2.0 token endpoint with scope <org>/.default, no discovery, then the cache; the token is registered', async () => {
    const bodies: string[] = [];
    const entra = nock('https://login.microsoftonline.com')
      .post(`/${tenant}/oauth2/v2.0/token`, (b: unknown) => {
        bodies.push(typeof b === 'string' ? b : new URLSearchParams(b as Record<string, string>).toString());
        return true;
      })
      .query(true)
      .reply(200, {
        token_type: 'Bearer',
        expires_in: 3599,
        ext_expires_in: 3599,
        access_token: 'eyJ0eXAi.access-token-1',
      });
    const registered: string[] = [];
    const src = msalTokenSource(
      {
        tenantId: tenant,
        clientId: 'app-id',
        clientSecret: 'the-client-secret',
        authorityHost: 'https://login.microsoftonline.com',
        ca: null,
        resource: ORG,
        timeoutMs: 5000,
      },
      (v) => registered.push(v),
      (s) => s,
    );
    assert.equal(await src.get(), 'eyJ0eXAi.access-token-1');
    assert.equal(await src.get(), 'eyJ0eXAi.access-token-1', 'served from the MSAL cache');
    entra.done();
    const form = new URLSearchParams(bodies[0]);
    assert.equal(form.get('grant_type'), 'client_credentials');
    assert.equal(form.get('client_id'), 'app-id');
    assert.equal(form.get('client_secret'), 'the-client-secret');
    assert.equal(form.get('scope'), `${ORG}/.default`);
    assert.deepEqual(registered, ['eyJ0eXAi.access-token-1', 'eyJ0eXAi.access-token-1']);
  });

  it('invalid_client is an auth failure naming AADSTS7000215, never the secret', async () => {
    nock('https://login.microsoftonline.com')
      .post(`/${tenant}/oauth2/v2.0/token`)
      .query(true)
      .reply(401, {
        error: 'invalid_client',
        error_description:
          'AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value. Trace ID: x Correlation ID: y Timestamp: z',
        error_codes: [7000215],
      });
    const src = msalTokenSource(
      {
        tenantId: tenant,
        clientId: 'app-id',
        clientSecret: 'the-client-secret',
        authorityHost: 'https://login.microsoftonline.com',
        ca: null,
        resource: ORG,
        timeoutMs: 5000,
      },
      () => undefined,
      (s) => s.split('the-client-secret').join('***'),
    );
    await assert.rejects(src.get(), (e: unknown) => {
      assert.ok(e instanceof AuthFailure);
      assert.equal(e.kind, 'auth');
      assert.match(e.message, /invalid_client.*AADSTS7000215/);
      assert.ok(!e.message.includes('the-client-secret'));
      return true;
    });
  });

  it('through the connector: the bearer token from Entra reaches Dataverse only', async () => {
    nock('https://login.microsoftonline.com')
      .post(`/${tenant}/oauth2/v2.0/token`)
      .query(true)
      .reply(200, { token_type: 'Bearer', expires_in: 3599, access_token: 'tok-abcdef-123' });
    let auth = '';
    nock(ORG)
      .get(`${API}/contacts`)
      .query(true)
      .reply(function () {
        auth = String(this.req.headers.authorization);
        return [200, { value: [] }];
      });
    const caps = testCaps();
    const cfg = {
      url: ORG,
      auth: { type: 'client-credentials', tenantId: tenant, clientId: 'app-id', clientSecret: 'the-client-secret' },
      entities: { lead: false },
    } as unknown as DynamicsConfig;
    const r = await openDynamics(cfg, caps).deliver([optOut('nobody@example.com')], 'apply');
    assert.deepEqual(
      r.outcomes.map((o) => o.kind),
      ['not-found'],
    );
    assert.equal(auth, 'Bearer tok-abcdef-123');
    assert.ok(caps.registered.has('the-client-secret') && caps.registered.has('tok-abcdef-123'));
  });
});
