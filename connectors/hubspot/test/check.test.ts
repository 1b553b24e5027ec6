/**
 * HubSpot `check()`: token, scopes (missing ones named), contact lookup, subscription ids, audit property
 * types, batch suppression as known.
 */
import * as assert from 'assert';
import nock from 'nock';
import { isLeft } from 'fp-ts/Either';
import { clearSecrets } from '../../../src/log';
import { CheckReport, Target } from '../../../src/sdk';
import { FakeHubSpot, P, TOKEN, deliver, isPath, open, optOut, privateApp } from './fixtures/harness';
import { checkEither } from '../../../test/contract';

async function check(target: Target): Promise<CheckReport> {
  const r = await checkEither(target);
  if (isLeft(r)) throw new Error(`check returned Left: ${r.left.message}`);
  return r.right;
}

const item = (report: CheckReport, name: string) => {
  const i = report.items.find((x) => x.name === name);
  assert.ok(i, `no check item ${name}: ${report.items.map((x) => x.name).join(', ')}`);
  return i;
};

const ALL_SCOPES = [
  'crm.objects.contacts.read',
  'crm.objects.contacts.write',
  'communication_preferences.read_write',
  'communication_preferences.statuses.batch.write',
];

describe('hubspot connector: check', () => {
  afterEach(() => {
    nock.cleanAll();
    clearSecrets();
  });

  it('passes on a well-configured portal and reads definitions for the business unit', async () => {
    const hs = new FakeHubSpot().install();
    hs.scopes = ALL_SCOPES;
    hs.definitions = [{ id: '111', name: 'Newsletter', isActive: true, businessUnitId: 3 }];
    hs.propertyDefs.set('cc_opted_out_at', { type: 'datetime', fieldType: 'date' });
    const { target } = open(
      privateApp({
        businessUnitId: 3,
        suppression: { type: 'subscriptions', subscriptionIds: ['111'] },
        properties: { cc_opted_out_at: 'optOutDate' },
      }),
    );
    const report = await check(target);
    assert.ok(report.ok, JSON.stringify(report.items, null, 2));
    assert.deepStrictEqual(
      report.items.map((i) => i.name),
      [
        'token',
        'contact-lookup',
        'contact-search',
        'subscriptions',
        'property:cc_opted_out_at',
        'scopes',
        'batch-suppression',
      ],
    );
    const tokenInfo = hs.requests.find(isPath('/oauth/v2/private-apps/get/access-token-info'))!;
    assert.deepStrictEqual(tokenInfo.body, { tokenKey: TOKEN });
    const defs = hs.requests.find(isPath(P.definitions, 'GET'))!;
    assert.strictEqual(defs.query.get('businessUnitId'), '3');
    assert.match(item(report, 'subscriptions').detail, /111 \(Newsletter\)/);
    assert.ok(!JSON.stringify(report).includes(TOKEN));
  });

  it('names missing scopes, missing subscription ids, missing and incompatible properties', async () => {
    const hs = new FakeHubSpot().install();
    hs.scopes = ['crm.objects.contacts.read', 'communication_preferences.read'];
    hs.definitions = [
      { id: '111', name: 'Newsletter', isActive: true, businessUnitId: 0 },
      { id: '333', name: 'Old', isActive: false, businessUnitId: 0 },
    ];
    hs.propertyDefs.set('cc_opted_out_at', { type: 'number', fieldType: 'number' });
    hs.propertyDefs.set('cc_reason', { type: 'string', fieldType: 'text' });
    hs.propertyDefs.set('cc_locked', { type: 'string', fieldType: 'text', readOnlyValue: true });
    const { target } = open(
      privateApp({
        suppression: { type: 'subscriptions', subscriptionIds: ['111', '222', '333'], batch: 'always' },
        properties: {
          cc_opted_out_at: 'optOutDate',
          cc_reason: 'reason',
          cc_missing: 'source',
          cc_locked: { constant: 'x' },
        },
      }),
    );
    const report = await check(target);
    assert.strictEqual(report.ok, false);
    const scopes = item(report, 'scopes');
    assert.strictEqual(scopes.ok, false);
    assert.match(scopes.detail, /communication_preferences\.write \(or communication_preferences\.read_write\)/);
    assert.match(scopes.detail, /crm\.objects\.contacts\.write/);
    assert.match(scopes.detail, /communication_preferences\.statuses\.batch\.write/);
    assert.doesNotMatch(scopes.detail, /missing scopes:.*crm\.objects\.contacts\.read[ ,(]/);
    const subs = item(report, 'subscriptions');
    assert.strictEqual(subs.ok, false);
    assert.match(subs.detail, /222 not found/);
    assert.match(subs.detail, /333 \(Old\) is inactive/);
    assert.strictEqual(item(report, 'property:cc_opted_out_at').ok, false);
    assert.match(item(report, 'property:cc_opted_out_at').detail, /type number/);
    assert.strictEqual(item(report, 'property:cc_reason').ok, true);
    assert.strictEqual(item(report, 'property:cc_missing').ok, false);
    assert.match(item(report, 'property:cc_missing').detail, /does not exist/);
    assert.strictEqual(item(report, 'property:cc_locked').ok, false);
    assert.match(item(report, 'property:cc_locked').detail, /read-only/);
    assert.strictEqual(item(report, 'batch-suppression').ok, false, 'batch "always" without the batch scope');
  });

  it('says so when the token-info endpoint is unavailable, instead of failing', async () => {
    const hs = new FakeHubSpot().install();
    hs.scopes = null;
    const { target } = open(privateApp());
    const report = await check(target);
    assert.ok(report.ok, JSON.stringify(report.items));
    assert.match(item(report, 'token').detail, /token info unavailable \(.*HTTP 404/);
    assert.match(item(report, 'scopes').detail, /not verifiable/);
    assert.strictEqual(item(report, 'contact-lookup').ok, true);
  });

  it('fails the token item on a 401, without printing the token', async () => {
    const hs = new FakeHubSpot().install();
    hs.validTokens.add('another-token');
    const { target } = open(privateApp());
    const report = await check(target);
    assert.strictEqual(report.ok, false);
    assert.strictEqual(item(report, 'token').ok, false);
    assert.ok(!JSON.stringify(report).includes(TOKEN));
  });

  it('OAuth: POST /oauth/2026-09/token/introspect for scopes; the token never appears in the report', async () => {
    const hs = new FakeHubSpot().install();
    hs.oauth = {
      clientId: 'cid',
      clientSecret: 'client-secret-xyz',
      refreshToken: 'refresh-token-xyz',
      rotate: false,
      expiresIn: 1800,
    };
    hs.scopes = ['crm.objects.contacts.read', 'communication_preferences.write'];
    const { target } = open({
      auth: { type: 'oauth', clientId: 'cid', clientSecret: 'client-secret-xyz', refreshToken: 'refresh-token-xyz' },
    });
    const report = await check(target);
    assert.ok(report.ok, JSON.stringify(report.items));
    const intro = hs.requests.find(isPath(P.introspect))!;
    assert.ok(intro, 'introspection called');
    assert.strictEqual(new URLSearchParams(intro.body as string).get('token'), 'oauth-access-token-1-abcdef');
    assert.ok(hs.requests.some(isPath(P.token)), 'refresh through the date-versioned token endpoint');
    assert.match(item(report, 'batch-suppression').detail, /not granted: per-email writes will be used/);
    assert.ok(!JSON.stringify(report).includes('oauth-access-token-1-abcdef'));
    assert.ok(!JSON.stringify(report).includes('refresh-token-xyz'));
  });

  it('reports the batch decision learnt from a 403 fallback', async () => {
    const hs = new FakeHubSpot().install();
    hs.batchRefused = true;
    hs.scopes = ALL_SCOPES;
    hs.addContact('a@example.com');
    const { target } = open(privateApp());
    const before = await check(target);
    assert.match(item(before, 'batch-suppression').detail, /not yet known/);
    await deliver(target, [optOut('a@example.com')]);
    const after = await check(target);
    const b = item(after, 'batch-suppression');
    assert.strictEqual(b.ok, true);
    assert.match(b.detail, /refused by HubSpot \(403/);
    assert.match(b.detail, /per-email fallback in use/);
  });
});
