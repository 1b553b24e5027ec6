/**
 * Constant Contact codecs: per-contact decoding with quarantine, SMS-only contacts, the mapping to
 * ObservedContact, and both error body shapes.
 */
import assert from 'assert';
import { isOptedOut } from '../../src/domain';
import { QuarantinedRecord } from '../../src/source/types';
import { decodeContacts, decodeContactsPage, parseApiError } from '../../src/source/constant-contact/codecs';
import { unsubscribed } from '../fixtures/cc/helpers';

describe('cc codecs', () => {
  it('quarantines malformed contacts with a readable path and keeps the rest of the page', () => {
    const q: QuarantinedRecord[] = [];
    const good = unsubscribed(' Alice@Example.COM ');
    const noId = unsubscribed('noid@example.com');
    delete noId['contact_id'];
    const badAddress = unsubscribed('x@example.com', { contact_id: 'c-bad-address' });
    (badAddress['email_address'] as Record<string, unknown>)['address'] = 42;
    const noPermission = unsubscribed('y@example.com', { contact_id: 'c-no-permission' });
    delete (noPermission['email_address'] as Record<string, unknown>)['permission_to_send'];
    const good2 = unsubscribed('bob@example.com');

    const out = decodeContacts([good, noId, badAddress, noPermission, 'not an object', good2], (r) => q.push(r));

    assert.deepStrictEqual(
      out.contacts.map((c) => c.email),
      ['alice@example.com', 'bob@example.com'],
    );
    assert.strictEqual(out.quarantined, 4);
    assert.strictEqual(q.length, 4);
    assert.match(q[0]!.reason, /^contact_id: got nothing \(missing\), expected/);
    assert.strictEqual(q[0]!.recordId, null);
    assert.strictEqual(q[0]!.raw, noId);
    assert.match(q[1]!.reason, /^email_address\.address: got 42, expected/);
    assert.strictEqual(q[1]!.recordId, 'c-bad-address');
    assert.match(q[2]!.reason, /^email_address\.permission_to_send: got nothing \(missing\), expected string$/);
    assert.strictEqual(q[2]!.recordId, 'c-no-permission');
    assert.strictEqual(q[3]!.recordId, null);
  });

  it('counts contacts without an email address (SMS-only) as skippedNoEmail', () => {
    const q: QuarantinedRecord[] = [];
    const sms = {
      contact_id: 'sms-1',
      sms_channel: { sms_address: '+15555550100' },
      updated_at: '2024-01-01T00:00:00Z',
    };
    const smsNull = { contact_id: 'sms-2', email_address: null };
    const out = decodeContacts([sms, unsubscribed('a@example.com'), smsNull], (r) => q.push(r));
    assert.strictEqual(out.skippedNoEmail, 2);
    assert.strictEqual(out.contacts.length, 1);
    assert.strictEqual(out.quarantined, 0);
    assert.strictEqual(q.length, 0);
  });

  it('maps a contact to ObservedContact: opt_out_date first, then email_address.updated_at, never the top-level updated_at', () => {
    const withDate = unsubscribed('a@example.com', { contact_id: 'c1' });
    const noOptOutDate = unsubscribed('b@example.com', { contact_id: 'c2' });
    delete (noOptOutDate['email_address'] as Record<string, unknown>)['opt_out_date'];
    (noOptOutDate['email_address'] as Record<string, unknown>)['updated_at'] = '2024-07-01T12:00:00Z';
    const neither = unsubscribed('c@example.com', { contact_id: 'c3', deleted_at: '2024-06-09' });
    const ea = neither['email_address'] as Record<string, unknown>;
    delete ea['opt_out_date'];
    delete ea['updated_at'];
    delete ea['opt_out_reason'];
    ea['opt_out_source'] = null;

    const out = decodeContacts([withDate, noOptOutDate, neither], () => assert.fail('nothing to quarantine'));
    assert.deepStrictEqual(out.contacts[0], {
      email: 'a@example.com',
      contactId: 'c1',
      permission: 'unsubscribed',
      optedOutAt: '2024-06-08T01:31:05Z',
      source: 'Contact',
      reason: 'Too many emails',
      deleted: false,
    });
    assert.strictEqual(out.contacts[1]!.optedOutAt, '2024-07-01T12:00:00Z');
    assert.strictEqual(out.contacts[2]!.optedOutAt, null);
    assert.strictEqual(out.contacts[2]!.deleted, true);
    assert.strictEqual(out.contacts[2]!.source, null);
    assert.strictEqual(out.contacts[2]!.reason, null);
  });

  it('a deleted contact that is still subscribed is deleted, not opted out', () => {
    const c = unsubscribed('d@example.com', { deleted_at: '2024-06-09' });
    const ea = c['email_address'] as Record<string, unknown>;
    ea['permission_to_send'] = 'implicit';
    delete ea['opt_out_date'];
    const out = decodeContacts([c], () => assert.fail('nothing to quarantine'));
    assert.strictEqual(out.contacts[0]!.deleted, true);
    assert.strictEqual(isOptedOut(out.contacts[0]!), false);
  });

  it('decodes the page envelope strictly', () => {
    assert.strictEqual(
      decodeContactsPage({ contacts: [], _links: { next: { href: '/v3/contacts?cursor=a' } } }).ok,
      true,
    );
    assert.strictEqual(decodeContactsPage({ contacts: [], _links: null, contacts_count: 0 }).ok, true);
    const bad = decodeContactsPage({ results: [] });
    assert.strictEqual(bad.ok, false);
    assert.ok(!bad.ok && bad.problems.some((p) => p.startsWith('contacts:')), JSON.stringify(bad));
    const badLink = decodeContactsPage({ contacts: [], _links: { next: { href: 7 } } });
    assert.ok(!badLink.ok && badLink.problems.some((p) => p.startsWith('_links.next.href:')), JSON.stringify(badLink));
  });

  it('parses both error body shapes', () => {
    assert.deepStrictEqual(parseApiError([{ error_key: 'throttled', error_message: 'Too many requests' }]), {
      errorKey: 'throttled',
      errorMessage: 'Too many requests',
    });
    assert.deepStrictEqual(parseApiError({ error_key: 'unauthorized', error_message: 'Unauthorized' }), {
      errorKey: 'unauthorized',
      errorMessage: 'Unauthorized',
    });
    assert.deepStrictEqual(parseApiError('<html>Bad gateway</html>'), {
      errorKey: null,
      errorMessage: '<html>Bad gateway</html>',
    });
    assert.deepStrictEqual(parseApiError(''), { errorKey: null, errorMessage: null });
  });
});
