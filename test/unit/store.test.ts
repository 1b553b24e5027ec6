import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SqliteStateStore, MIGRATIONS } from '../../src/store/sqlite';
import { OptOut } from '../../src/domain';

const NOW = '2026-06-01T00:00:00.000Z';
const policy = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };

function optOut(email: string, at = '2026-05-01T00:00:00.000Z'): OptOut {
  return { email, contactId: `c-${email}`, optedOutAt: at, source: 'Contact', reason: null, deleted: false };
}

describe('SQLite state store', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-store-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('migrates a new file to the latest schema with owner-only permissions', () => {
    const file = path.join(dir, 'nested', 'state.db');
    const s = new SqliteStateStore(file);
    assert.strictEqual(s.schemaVersion, MIGRATIONS.length);
    assert.strictEqual(s.db.pragma('user_version', { simple: true }), MIGRATIONS.length);
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600);
    s.close();
    // reopening does not re-run migrations
    const again = new SqliteStateStore(file);
    assert.strictEqual(again.schemaVersion, MIGRATIONS.length);
    again.close();
  });

  it('refuses a store written by a newer version', () => {
    const file = path.join(dir, 'state.db');
    const s = new SqliteStateStore(file);
    s.db.pragma(`user_version = ${MIGRATIONS.length + 5}`);
    s.close();
    assert.throws(() => new SqliteStateStore(file), /newer than this program understands/);
  });

  it('commits opt-outs, one outbox row per target and the checkpoint in one transaction', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: [optOut('a@x.com'), optOut('b@x.com')],
      resubscribed: [],
      targets: ['hs', 'sf'],
      now: NOW,
      checkpoints: { w: NOW },
    });
    assert.strictEqual(s.getCheckpoint('w'), NOW);
    assert.deepStrictEqual(
      s.targetStatus(['hs', 'sf'], new Date(NOW)).map((t) => [t.target, t.queued]),
      [
        ['hs', 2],
        ['sf', 2],
      ],
    );
    assert.deepStrictEqual(s.countOptOuts(), { active: 2, left: 0 });
  });

  it('rolls the whole detection back when any part fails (checkpoint never moves past unqueued work)', () => {
    const s = new SqliteStateStore(':memory:');
    const bad = { ...optOut('bad@x.com'), contactId: null as unknown as string }; // NOT NULL violation
    assert.throws(() =>
      s.commitDetection({
        runId: 1,
        added: [optOut('ok@x.com'), bad],
        resubscribed: [],
        targets: ['hs'],
        now: NOW,
        checkpoints: { w: NOW },
      }),
    );
    assert.strictEqual(s.getCheckpoint('w'), null);
    assert.deepStrictEqual(s.countOptOuts(), { active: 0, left: 0 });
    assert.strictEqual(s.targetStatus(['hs'], new Date(NOW))[0]!.queued, 0);
  });

  it('records final outcomes, retries with backoff, parks permanent failures and gives up after maxAttempts', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: ['a', 'b', 'c', 'd'].map((e) => optOut(`${e}@x.com`)),
      resubscribed: [],
      targets: ['hs'],
      now: NOW,
    });
    const now = new Date(NOW);
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now,
      policy,
      random: () => 0.5,
      outcomes: [
        { email: 'a@x.com', kind: 'applied', recordIds: ['1'] },
        { email: 'b@x.com', kind: 'not-found', recordIds: [] },
        { email: 'c@x.com', kind: 'failed-permanent', recordIds: ['3'], message: 'CANNOT_UPDATE_CONVERTED_LEAD' },
        { email: 'd@x.com', kind: 'failed-retryable', recordIds: [], message: 'lock' },
      ],
    });
    const st = s.targetStatus(['hs'], now)[0]!;
    assert.deepStrictEqual(st.done, { applied: 1, 'not-found': 1 });
    assert.strictEqual(st.parked, 1);
    assert.strictEqual(st.queued, 1);
    assert.strictEqual(st.due, 0, 'retry is scheduled in the future');
    const [row] = s.queuedOutbox('hs', 10, 0);
    // attempt 1: base 60 s, jitter 0.5 -> 45 s
    assert.strictEqual(Date.parse(row!.nextAttemptAt) - now.getTime(), 45_000);
    // two more retryable failures -> parked after maxAttempts (3)
    for (let i = 0; i < 2; i++) {
      s.recordOutcomes({
        runId: 1,
        target: 'hs',
        now,
        policy,
        outcomes: [{ email: 'd@x.com', kind: 'failed-retryable', recordIds: [], message: 'lock' }],
      });
    }
    const after = s.targetStatus(['hs'], now)[0]!;
    assert.strictEqual(after.queued, 0);
    assert.strictEqual(after.parked, 2);
    const audit = s.audit(null);
    const d = audit.find((r) => r.email === 'd@x.com')!;
    assert.strictEqual(d.attempts, 3);
    assert.match(d.message ?? '', /gave up after 3 attempts/);
    assert.strictEqual(s.requeueParked('hs', NOW), 2);
  });

  it('a target-wide deferral keeps rows queued without counting an attempt', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({ runId: 1, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
    const until = new Date('2026-06-02T00:00:00.000Z');
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now: new Date(NOW),
      policy,
      deferUntil: until,
      outcomes: [{ email: 'a@x.com', kind: 'failed-retryable', recordIds: [] }],
    });
    const [row] = s.queuedOutbox('hs', 10, 0);
    assert.strictEqual(row!.attempts, 0);
    assert.strictEqual(row!.nextAttemptAt, until.toISOString());
  });

  it('deferQueued holds every queued row of one target until the given time, and only later ones', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: [optOut('a@x.com'), optOut('b@x.com')],
      resubscribed: [],
      targets: ['hs', 'sf'],
      now: NOW,
    });
    assert.strictEqual(s.deferQueued('hs', '2026-06-02T00:00:00.000Z'), 2);
    assert.strictEqual(s.dueOutbox('hs', new Date('2026-06-01T12:00:00Z'), 10).length, 0);
    assert.strictEqual(s.dueOutbox('sf', new Date(NOW), 10).length, 2, 'the other target is not held');
    assert.strictEqual(s.deferQueued('hs', '2026-06-01T06:00:00.000Z'), 0, 'never pulls a later retry earlier');
  });

  it('audit: written_at only for rows actually written; closed_at for every closed row', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: [optOut('a@x.com'), optOut('b@x.com')],
      resubscribed: [],
      targets: ['hs'],
      now: NOW,
    });
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now: new Date(NOW),
      policy,
      outcomes: [
        { email: 'a@x.com', kind: 'applied', recordIds: ['1'] },
        { email: 'b@x.com', kind: 'not-found', recordIds: [] },
      ],
    });
    const rows = new Map(s.audit(null).map((r) => [r.email, r]));
    assert.strictEqual(rows.get('a@x.com')!.writtenAt, NOW);
    assert.strictEqual(rows.get('a@x.com')!.lagSeconds, 31 * 86400);
    assert.strictEqual(rows.get('b@x.com')!.writtenAt, null);
    assert.strictEqual(rows.get('b@x.com')!.lagSeconds, null);
    assert.strictEqual(rows.get('b@x.com')!.closedAt, NOW);
  });

  it('marks resubscribes, re-queues a returning opt-out, and keeps tokens in a namespaced kv', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({ runId: 1, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now: new Date(NOW),
      policy,
      outcomes: [{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }],
    });
    s.commitDetection({ runId: 2, added: [], resubscribed: ['a@x.com'], targets: ['hs'], now: NOW });
    assert.deepStrictEqual(s.countOptOuts(), { active: 0, left: 1 });
    assert.deepStrictEqual(
      s.events(null, ['left-unsubscribed-set']).map((e) => e.email),
      ['a@x.com'],
    );
    s.commitDetection({
      runId: 3,
      added: [optOut('a@x.com', '2026-05-20T00:00:00.000Z')],
      resubscribed: [],
      targets: ['hs'],
      now: NOW,
    });
    assert.strictEqual(s.targetStatus(['hs'], new Date(NOW))[0]!.queued, 1);
    const kv = s.kv('source:cc');
    kv.set('refresh_token', 'r1');
    assert.strictEqual(kv.get('refresh_token'), 'r1');
    assert.strictEqual(s.kv('other').get('refresh_token'), null);
  });

  it('backfill enqueue skips delivered rows unless redeliver, and a backfill job can be resumed', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: [optOut('a@x.com', '2025-01-01T00:00:00.000Z'), optOut('b@x.com')],
      resubscribed: [],
      targets: [],
      now: NOW,
    });
    assert.strictEqual(s.enqueueKnown({ runId: 1, targets: ['hs'], since: null, redeliver: false, now: NOW }), 2);
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now: new Date(NOW),
      policy,
      outcomes: [{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }],
    });
    assert.strictEqual(s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: false, now: NOW }), 0);
    assert.strictEqual(
      s.enqueueKnown({ runId: 2, targets: ['sf'], since: '2026-01-01T00:00:00.000Z', redeliver: false, now: NOW }),
      1,
    );
    // a dry run plans exactly what enqueueKnown would queue
    assert.deepStrictEqual(
      s.backfillCandidates('hs', null, false).map((o) => o.email),
      [],
    );
    assert.deepStrictEqual(
      s.backfillCandidates('hs', null, true).map((o) => o.email),
      ['a@x.com'],
    );
    assert.deepStrictEqual(
      s.backfillCandidates('new', '2026-01-01T00:00:00.000Z', false).map((o) => o.email),
      ['b@x.com'],
    );
    assert.strictEqual(s.enqueueKnown({ runId: 3, targets: ['hs'], since: null, redeliver: true, now: NOW }), 1);
    const job = s.openBackfill(null, ['hs'], NOW);
    s.markBackfillScanned(job.id, NOW);
    const again = s.openBackfill(null, ['hs'], NOW);
    assert.strictEqual(again.id, job.id);
    assert.strictEqual(again.scanCompletedAt, NOW);
    s.finishBackfill(job.id, NOW);
    assert.notStrictEqual(s.openBackfill(null, ['hs'], NOW).id, job.id);
  });

  it('quarantines raw records with their reason', () => {
    const s = new SqliteStateStore(':memory:');
    s.quarantine(
      1,
      'constant-contact',
      { reason: 'contact_id: missing', raw: { email_address: { address: 'x' } }, recordId: null },
      NOW,
    );
    assert.strictEqual(s.countQuarantined(), 1);
    assert.deepStrictEqual(s.quarantined(5)[0]!.raw, { email_address: { address: 'x' } });
  });
});

describe('run lock', () => {
  const lock = (owner: string, pid: number, host = 'h1') => ({
    owner,
    pid,
    host,
    command: 'sync',
    now: '2026-06-01T00:00:00.000Z',
  });

  it('refuses a second live run, lets the holder re-enter, and takes over a dead holder', () => {
    const s = new SqliteStateStore(':memory:');
    s.acquireRunLock(lock('a', 111), () => true);
    s.acquireRunLock(lock('a', 111), () => true); // same owner
    assert.throws(
      () => s.acquireRunLock(lock('b', 222), () => true),
      (e: Error) => e.name === 'RunLocked' && /pid 111 on h1/.test(e.message),
    );
    s.acquireRunLock(lock('b', 222), (pid) => pid !== 111); // 111 is dead: taken over
    assert.throws(() => s.acquireRunLock(lock('c', 333), () => true), /pid 222/);
    s.releaseRunLock('b');
    s.acquireRunLock(lock('c', 333), () => true);
    s.releaseRunLock(null);
    s.acquireRunLock(lock('d', 444), () => true);
  });

  it('a lock held from another host is a lease: taken over once it was not renewed for 90 s (issue 8 #20, was 6 hours)', () => {
    const s = new SqliteStateStore(':memory:');
    s.acquireRunLock(lock('a', 1, 'other-host'));
    assert.throws(() => s.acquireRunLock({ ...lock('b', 2), now: '2026-06-01T00:01:00.000Z' }));
    s.acquireRunLock({ ...lock('b', 2), now: '2026-06-01T00:01:31.000Z' });
  });
});
