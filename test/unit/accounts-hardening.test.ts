/**
 * The re-authorise hint of an added account names it (`cc-optout --account a auth constant-contact`), and a write
 * under a lease that was released or removed (e.g. by `accounts remove`) says so instead of "taken over".
 */
import assert from 'assert';
import nock from 'nock';
import { createConstantContactSource } from '../../src/source/constant-contact';
import { reauthCommand } from '../../src/source/constant-contact/auth';
import { ReauthorizationRequired } from '../../src/source/types';
import { StaleFence } from '../../src/fleet/types';
import { AUTH_ORIGIN, AUTH_PATH, makeConfig, makeDeps, memKv } from '../fixtures/cc/helpers';

describe('accounts hardening: the re-authorise hint and a released lease', () => {
  afterEach(() => nock.cleanAll());

  for (const [account, hint] of [
    ['a', 'cc-optout --account a auth constant-contact'],
    ['default', 'cc-optout auth constant-contact'],
    [undefined, 'cc-optout auth constant-contact'],
  ] as const) {
    it(`invalid_grant for account ${account ?? '(none)'}: Re-authorise with \`${hint}\``, async () => {
      assert.equal(reauthCommand(account), hint);
      const deps = makeDeps(memKv({ refresh_token: 'dead-refresh-token' }));
      const source = createConstantContactSource(makeConfig(), deps, account ? { account } : {});
      nock(AUTH_ORIGIN)
        .post(`${AUTH_PATH}/token`)
        .reply(400, { error: 'invalid_grant', error_description: 'The refresh token is invalid or expired.' });
      const err = await source.tokens.refresh().then(
        () => assert.fail('expected ReauthorizationRequired'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ReauthorizationRequired, String(err));
      assert.ok(err.message.includes(`Re-authorise with \`${hint}\`.`), err.message);
    });
  }

  it('no refresh token at all: the check item names the account command too', async () => {
    const deps = makeDeps(memKv({}));
    const source = createConstantContactSource(makeConfig({ refreshToken: null }), deps, { account: 'acme' });
    const r = await source.check();
    const item = r.items.find((i) => i.name === 'Constant Contact authorisation');
    assert.ok(item && !item.ok);
    assert.match(item.detail, /run `cc-optout --account acme auth constant-contact`/);
  });

  it('StaleFence: a released or removed lease is not "taken over"; a moved fence is', () => {
    const gone = new StaleFence('deliver:acme:hubspot', 7, null);
    assert.doesNotMatch(gone.message, /another worker took this lease over/);
    assert.match(gone.message, /fence 7 is stale \(now released\): the lease was released or removed/);
    assert.match(new StaleFence('account:acme', 7, 8).message, /\(now 8\): another worker took this lease over/);
  });
});
