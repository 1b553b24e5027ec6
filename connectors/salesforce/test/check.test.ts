/**
 * Salesforce check(): credentials, describe of each mapped object and field, API headroom, Person Accounts.
 */
import { strict as assert } from 'assert';
import nock from 'nock';
import * as E from 'fp-ts/Either';
import { connector, openSalesforce } from '..';
import { CheckReport } from '../../../src/sdk';
import { clearSecrets } from '../../../src/log';
import { FakeOrg, INSTANCE, API, testCaps } from './fixtures/fake-org';
import { checkEither } from '../../../test/contract';

function open(overrides: Record<string, unknown> = {}) {
  const raw = {
    instanceUrl: INSTANCE,
    auth: { type: 'access-token', accessToken: 'initial-access-token-abc' },
    ...overrides,
  };
  const decoded = connector.config.decode(raw);
  if (E.isLeft(decoded)) throw new Error('bad test config');
  const t = testCaps();
  return {
    ...t,
    target: openSalesforce(decoded.right, t.caps, { retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 } }),
  };
}

async function check(target: ReturnType<typeof open>['target']): Promise<CheckReport> {
  const r = await checkEither(target);
  if (E.isLeft(r)) throw new Error(`check returned Left: ${r.left.message}`);
  return r.right;
}

function item(report: CheckReport, name: string) {
  const found = report.items.find((i) => i.name === name);
  assert.ok(found, `no check item "${name}" in ${report.items.map((i) => i.name).join(', ')}`);
  return found;
}

describe('salesforce check (jsforce + nock)', () => {
  let org: FakeOrg;
  beforeEach(() => {
    clearSecrets();
    org = new FakeOrg().install();
  });
  afterEach(() => {
    nock.cleanAll();
  });

  it('passes with the default mapping, using only reads (describe, limits)', async () => {
    const { target, kvMap } = open();
    const r = await check(target);
    assert.ok(r.ok, JSON.stringify(r.items, null, 1));
    assert.ok(item(r, 'credentials').ok);
    assert.ok(item(r, 'Contact.HasOptedOutOfEmail').ok);
    assert.ok(item(r, 'Lead.HasOptedOutOfEmail').ok);
    assert.match(item(r, 'api usage').detail, /daily API requests: \d+ of 15000 used/);
    assert.deepEqual(
      org.requests.map((q) => `${q.method} ${q.path.replace(API, '')}`),
      ['GET /limits', 'GET /sobjects/Contact/describe', 'GET /sobjects/Lead/describe'],
    );
    assert.ok(kvMap.get('api_usage'));
  });

  it('names a missing field, a non-boolean suppression field, a read-only field and an incompatible extra field', async () => {
    org.describes
      .get('Contact')!
      .fields.push(
        { name: 'ReadOnly__c', type: 'string', updateable: false },
        { name: 'Opt_Text__c', type: 'string', updateable: true },
      );
    const { target } = open({
      objects: {
        Contact: {
          field: 'Opt_Text__c',
          extraFields: { Missing__c: 'reason', ReadOnly__c: 'source', CC_Opted_Out_At__c: 'optOutDate' },
        },
        Lead: { extraFields: { CC_Opted_Out_At__c: 'optOutDate' } },
      },
    });
    const r = await check(target);
    assert.equal(r.ok, false);
    assert.match(item(r, 'Contact.Opt_Text__c').detail, /is a string field; the suppression field must be a checkbox/);
    assert.match(item(r, 'Contact.Missing__c').detail, /Contact has no field "Missing__c"/);
    assert.match(item(r, 'Contact.ReadOnly__c').detail, /not updateable/);
    assert.ok(item(r, 'Contact.CC_Opted_Out_At__c').ok);
    const leadDate = item(r, 'Lead.CC_Opted_Out_At__c');
    assert.equal(leadDate.ok, false);
    assert.match(
      leadDate.detail,
      /is a date field; optOutDate needs one of datetime, string, textarea \(optOutDate is a date-time/,
    );
  });

  it('reports Person Accounts not enabled when mapped', async () => {
    const { target } = open({ objects: { PersonAccount: { enabled: true } } });
    const r = await check(target);
    assert.equal(r.ok, false);
    assert.match(item(r, 'PersonAccount').detail, /Person Accounts are not enabled/);
    assert.match(item(r, 'Contact.IsPersonAccount').detail, /not enabled/);
  });

  it('accepts Person Accounts where the org has them', async () => {
    org.describes.set('Account', {
      name: 'Account',
      fields: [
        { name: 'Id', type: 'id', updateable: false },
        { name: 'IsPersonAccount', type: 'boolean', updateable: false },
        { name: 'PersonEmail', type: 'email', updateable: true },
        { name: 'PersonHasOptedOutOfEmail', type: 'boolean', updateable: true },
      ],
    });
    org.describes.get('Contact')!.fields.push({ name: 'IsPersonAccount', type: 'boolean', updateable: false });
    const { target } = open({ objects: { PersonAccount: { enabled: true } } });
    const r = await check(target);
    assert.ok(r.ok, JSON.stringify(r.items.filter((i) => !i.ok)));
    assert.ok(item(r, 'Account.PersonHasOptedOutOfEmail').ok);
  });

  it('fails on low API headroom', async () => {
    org.apiUsed = 14990;
    const { target } = open();
    const r = await check(target);
    assert.equal(r.ok, false);
    assert.match(item(r, 'api usage').detail, /remaining \(below the 750 kept as headroom/);
  });

  it('reports refused credentials as a failed item and stops there', async () => {
    const { target } = open({ auth: { type: 'access-token', accessToken: 'revoked-access-token-000' } });
    const r = await check(target);
    assert.equal(r.ok, false);
    assert.deepEqual(
      r.items.map((i) => [i.name, i.ok]),
      [['credentials', false]],
    );
    assert.match(
      item(r, 'credentials').detail,
      /access-token auth failed: auth: Salesforce refused the credentials \(limits: HTTP 401 INVALID_SESSION_ID/,
    );
    assert.equal(org.requests.length, 1);
  });

  it('names an object the integration user cannot see', async () => {
    org.describes.delete('Lead');
    const { target } = open();
    const r = await check(target);
    assert.equal(r.ok, false);
    assert.match(item(r, 'object Lead').detail, /cannot describe Lead: NOT_FOUND/);
  });
});
