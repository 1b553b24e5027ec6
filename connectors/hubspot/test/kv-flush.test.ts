/**
 * A server-backed state store queues key/value writes until `flush()` (src/sdk KeyValue): HubSpot's rotated OAuth
 * refresh token is flushed before the new access token is used.
 */
import * as assert from 'assert';
import nock from 'nock';
import { clearSecrets } from '../../../src/log';
import { queuedKv } from '../../../test/support/async-store';
import { OAUTH_KV_KEY } from '../api';
import { FakeHubSpot, P, deliver, kinds, makeCaps, open, optOut } from './fixtures/harness';

describe('hubspot connector: OAuth with a queued key/value store', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  it('the rotated tokens are durable (flushed) before the first API call uses the new access token', async () => {
    const hs = new FakeHubSpot().install();
    hs.oauth = {
      clientId: 'client-id-1',
      clientSecret: 'client-secret-value-9876',
      refreshToken: 'rt-1',
      rotate: true,
      expiresIn: 1800,
    };
    hs.addContact('a@example.com');
    const kv = queuedKv();
    const h = makeCaps();
    const opened = open(
      {
        auth: {
          type: 'oauth',
          clientId: 'client-id-1',
          clientSecret: 'client-secret-value-9876',
          refreshToken: 'rt-1',
        },
        suppression: { type: 'unsubscribe-all', batch: 'never' },
      },
      { ...h, caps: { ...h.caps, kv } },
    );
    const durableAtLookup: Array<string | undefined> = [];
    hs.script({
      match: (r) => {
        if (r.path === P.read) durableAtLookup.push(kv.durable.get(OAUTH_KV_KEY));
        return false;
      },
      status: 0,
      body: null,
    });
    const report = await deliver(opened.target, [optOut('a@example.com')]);
    assert.deepStrictEqual(kinds(report), { 'a@example.com': 'applied' });
    assert.ok(durableAtLookup[0], 'tokens durable before the first API call');
    assert.strictEqual(JSON.parse(durableAtLookup[0]!).refreshToken, 'oauth-refresh-token-1-abcdef');
  });
});
