/**
 * A server-backed state store queues key/value writes until `flush()` (src/sdk KeyValue): a rotated Salesforce
 * refresh token is flushed before the new access token is used.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import * as E from 'fp-ts/Either';
import { connector, openSalesforce } from '..';
import { clearSecrets } from '../../../src/log';
import { deliverEither } from '../../../test/contract';
import { queuedKv } from '../../../test/support/async-store';
import { FakeOrg, INSTANCE, contact, optOut, testCaps } from './fixtures/fake-org';

const FAST = { retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 5 } };

describe('salesforce auth: a queued key/value store', () => {
  beforeEach(() => clearSecrets());
  afterEach(() => nock.cleanAll());

  it('the rotated refresh token is durable (flushed) before the first API call with the new access token', async () => {
    const org = new FakeOrg().install();
    org.add(contact('003A1', 'a@example.com'));
    org.tokenReply = () => {
      org.validTokens.add('rt-access-1-token');
      return [
        200,
        { access_token: 'rt-access-1-token', instance_url: INSTANCE, refresh_token: 'rotated-refresh-token-1' },
        { 'Content-Type': 'application/json' },
      ];
    };
    const kv = queuedKv();
    const durableAtApiCalls: Array<string | undefined> = [];
    org.fault = () => {
      durableAtApiCalls.push(kv.durable.get('refresh_token'));
      return undefined;
    };
    const t = testCaps();
    const decoded = connector.config.decode({
      auth: { type: 'refresh-token', clientId: 'rt-client', clientSecret: 'rt-secret', refreshToken: 'configured-rt' },
    });
    if (E.isLeft(decoded)) throw new Error('bad test config');
    const target = openSalesforce(decoded.right, { ...t.caps, kv }, FAST);
    const r = await deliverEither(target, [optOut('a@example.com')], 'apply');
    assert.ok(E.isRight(r));
    assert.ok(durableAtApiCalls.length > 0, 'API calls were made');
    for (const v of durableAtApiCalls) assert.match(v ?? '', /rotated-refresh-token-1/, 'durable before the API call');
  });
});
