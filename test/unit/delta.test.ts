import assert from 'assert';
import { computeDelta, missingFromFullScan, KnownState } from '../../src/delta';
import { normaliseEmail } from '../../src/domain';
import { contact } from '../helpers';

const NOW = '2026-06-01T00:00:00.000Z';

describe('delta (pure)', () => {
  it('adds opted-out contacts that are not known', () => {
    const d = computeDelta(
      new Map(),
      [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00Z'), contact('b@x.com', 'implicit', null)],
      NOW,
    );
    assert.deepStrictEqual(
      d.added.map((o) => o.email),
      ['a@x.com'],
    );
    assert.strictEqual(d.added[0]!.optedOutAt, '2026-05-01T00:00:00.000Z');
    assert.deepStrictEqual(d.resubscribed, []);
  });

  it('the seed forum case: top-level updated_at older than the opt-out is still an opt-out', () => {
    // contact "abc": updated_at 2023-01-30, email_address.updated_at / opt_out_date 2024-06-08
    const abc = contact('abc@example.com', 'unsubscribed', '2024-06-08T01:31:05Z');
    const d = computeDelta(new Map(), [abc], NOW);
    assert.strictEqual(d.added.length, 1);
    assert.strictEqual(d.added[0]!.optedOutAt, '2024-06-08T01:31:05.000Z');
  });

  it('deleted contacts that are not unsubscribed are not opt-outs; unsubscribed-then-deleted are', () => {
    const d = computeDelta(
      new Map(),
      [
        contact('del@x.com', 'implicit', null, { deleted: true }),
        contact('unsubdel@x.com', 'unsubscribed', '2026-01-01T00:00:00Z', { deleted: true }),
      ],
      NOW,
    );
    assert.deepStrictEqual(
      d.added.map((o) => [o.email, o.deleted]),
      [['unsubdel@x.com', true]],
    );
  });

  it('known active opt-outs are unchanged; known ones seen with another permission are resubscribed', () => {
    const known = new Map<string, KnownState>([
      ['a@x.com', { state: 'active' }],
      ['b@x.com', { state: 'active' }],
    ]);
    const d = computeDelta(known, [contact('a@x.com', 'unsubscribed', NOW), contact('b@x.com', 'explicit', null)], NOW);
    assert.deepStrictEqual(d.added, []);
    assert.deepStrictEqual(d.unchanged, ['a@x.com']);
    assert.deepStrictEqual(
      d.resubscribed.map((c) => c.email),
      ['b@x.com'],
    );
  });

  it('an opt-out that left the set and came back is added again', () => {
    const known = new Map<string, KnownState>([['a@x.com', { state: 'left' }]]);
    const d = computeDelta(known, [contact('a@x.com', 'unsubscribed', NOW)], NOW);
    assert.deepStrictEqual(
      d.added.map((o) => o.email),
      ['a@x.com'],
    );
  });

  it('duplicates in one observation collapse; opted out wins over a conflicting observation', () => {
    const known = new Map<string, KnownState>([['a@x.com', { state: 'active' }]]);
    const d = computeDelta(
      known,
      [
        contact('n@x.com', 'unsubscribed', NOW),
        contact('n@x.com', 'unsubscribed', NOW),
        contact('a@x.com', 'explicit', null),
        contact('a@x.com', 'unsubscribed', NOW),
      ],
      NOW,
    );
    assert.deepStrictEqual(
      d.added.map((o) => o.email),
      ['n@x.com'],
    );
    assert.deepStrictEqual(d.resubscribed, []);
  });

  it('stores opt-out times as canonical UTC so they compare as strings (offsets, missing milliseconds)', () => {
    const d = computeDelta(new Map(), [contact('a@x.com', 'unsubscribed', '2024-06-08T03:31:05+02:00')], NOW);
    assert.strictEqual(d.added[0]!.optedOutAt, '2024-06-08T01:31:05.000Z');
  });

  it('falls back to the detection time when the opt-out date is missing', () => {
    const d = computeDelta(new Map(), [contact('a@x.com', 'unsubscribed', null)], NOW);
    assert.strictEqual(d.added[0]!.optedOutAt, NOW);
  });

  it('missingFromFullScan lists known active emails absent from the unsubscribed set', () => {
    assert.deepStrictEqual(missingFromFullScan(new Set(['a', 'b', 'c']), new Set(['b'])), ['a', 'c']);
  });

  it('emails are compared trimmed and lower-cased', () => {
    assert.strictEqual(normaliseEmail('  Mixed.Case@Example.COM \t'), 'mixed.case@example.com');
  });
});
