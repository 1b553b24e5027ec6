import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FakeSource, contact, testEngine } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { CHECKPOINT_WINDOW } from '../../src/engine';

const T0 = new Date('2026-06-01T12:00:00Z');
const iso = (d: Date) => d.toISOString();

function seed(src: FakeSource): void {
  src.contacts = [
    contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
    contact('b@x.com', 'unsubscribed', '2026-05-02T00:00:00.000Z'),
    contact('c@x.com', 'implicit', null),
    contact('gone@x.com', 'unsubscribed', '2026-05-03T00:00:00.000Z', { deleted: true }),
    contact('d@x.com', 'implicit', null, { deleted: true }),
  ];
}

describe('engine: detect -> outbox -> deliver', () => {
  it('first sync reconciles fully, queues every opt-out for every target and delivers it', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('crm1', ['a@x.com', 'B@X.com', 'gone@x.com', 'c@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'crm1' }], source: src, start: T0 });
    const r = await engine.sync();
    assert.strictEqual(r.detection.mode, 'full');
    assert.strictEqual(r.detection.newOptOuts, 3);
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 3 });
    assert.strictEqual(r.exitCode, 0);
    assert.deepStrictEqual(
      crm.records
        .filter((x) => x.suppressed)
        .map((x) => x.email)
        .sort(),
      ['B@X.com', 'a@x.com', 'gone@x.com'],
    );
    assert.ok(!crm.records.find((x) => x.email === 'c@x.com')!.suppressed, 'a subscribed contact is never touched');
    // checkpoint = start - lag (2 min)
    assert.strictEqual(store.getCheckpoint(CHECKPOINT_WINDOW), iso(new Date(T0.getTime() - 120_000)));
  });

  it('later syncs read only the overlapping opt-out window and deliver new opt-outs once', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('crm2', ['a@x.com', 'new@x.com']);
    const { engine, clock } = testEngine({ targets: [{ name: 'crm', crm: 'crm2' }], source: src, start: T0 });
    await engine.sync();
    clock.advance(15 * 60_000);
    const optAt = iso(new Date(clock.now().getTime() - 5 * 60_000));
    src.contacts.push(contact('new@x.com', 'unsubscribed', optAt));
    const r = await engine.sync();
    assert.strictEqual(r.detection.mode, 'window');
    assert.deepStrictEqual(src.windowCalls.at(-1), {
      after: iso(new Date(T0.getTime() - 120_000 - 10 * 60_000)), // checkpoint - overlap
      before: iso(new Date(clock.now().getTime() - 120_000)), // now - lag
    });
    assert.strictEqual(r.detection.newOptOuts, 1);
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 1 });
    assert.strictEqual(src.fullScans, 1);
    // a third run sees the same opt-out in the overlap and does not deliver it again
    clock.advance(60_000 * 3);
    const r3 = await engine.sync();
    assert.strictEqual(r3.detection.newOptOuts, 0);
    assert.deepStrictEqual(r3.targets.crm!.outcomes, {});
    assert.strictEqual(crm.writes, 2);
  });

  it('the periodic full reconcile finds an opt-out the window missed and reports resubscribes', async () => {
    const src = new FakeSource();
    seed(src);
    memoryCrm('crm3', ['late@x.com']);
    const { engine, clock, store } = testEngine({ targets: [{ name: 'crm', crm: 'crm3' }], source: src, start: T0 });
    await engine.sync();
    src.brokenWindow = true;
    src.contacts.push(contact('late@x.com', 'unsubscribed', iso(new Date(T0.getTime() + 60_000))));
    src.contacts = src.contacts.map((c) => (c.email === 'a@x.com' ? { ...c, permission: 'explicit' } : c));
    clock.advance(60 * 60_000);
    const missed = await engine.sync();
    assert.strictEqual(missed.detection.newOptOuts, 0, 'the broken window misses it');
    clock.advance(24 * 3600_000);
    const r = await engine.sync();
    assert.strictEqual(r.detection.mode, 'full');
    assert.strictEqual(r.detection.newOptOuts, 1);
    assert.strictEqual(r.detection.resubscribed, 1);
    // late@ is new; b@ and gone@ (not-found a day ago) are looked up again; a@ left the set and is not
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 1, 'not-found': 2 });
    assert.deepStrictEqual(
      store.events(null, ['left-unsubscribed-set']).map((e) => e.email),
      ['a@x.com'],
    );
  });

  it('sync --full and detection.mode "full" reconcile every run', async () => {
    const src = new FakeSource();
    seed(src);
    memoryCrm('crm4', []);
    const { engine, clock } = testEngine({
      targets: [{ name: 'crm', crm: 'crm4' }],
      source: src,
      start: T0,
      config: { source: { detection: { mode: 'full' } } },
    });
    await engine.sync();
    clock.advance(60_000 * 10);
    const r = await engine.sync();
    assert.strictEqual(r.detection.mode, 'full');
    assert.strictEqual(src.fullScans, 2);
  });

  it('a CRM outage delays only that CRM; nothing is lost', async () => {
    const src = new FakeSource();
    seed(src);
    memoryCrm('up', ['a@x.com']);
    const down = memoryCrm('down', ['a@x.com']);
    down.outage = { kind: 'unavailable', message: 'HTTP 503' };
    const { engine, clock } = testEngine({
      targets: [
        { name: 'up', crm: 'up' },
        { name: 'down', crm: 'down' },
      ],
      source: src,
      start: T0,
    });
    const r = await engine.sync();
    assert.deepStrictEqual(r.targets.up!.outcomes, { applied: 1, 'not-found': 2 });
    assert.strictEqual(r.targets.down!.queued, 3);
    assert.match(r.targets.down!.halted ?? '', /503/);
    assert.strictEqual(r.exitCode, 3);
    down.outage = null;
    clock.advance(3600_000);
    const r2 = await engine.sync();
    assert.deepStrictEqual(r2.targets.down!.outcomes, { applied: 1, 'not-found': 2 });
    assert.strictEqual(r2.exitCode, 0);
  });

  it('a halt part-way keeps the untouched emails queued and defers them to retryAt', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('half', ['a@x.com', 'b@x.com', 'gone@x.com']);
    crm.haltAfterWrites = 1;
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'half' }], source: src, start: T0 });
    const r = await engine.sync();
    assert.strictEqual(r.targets.crm!.outcomes.applied, 1);
    assert.strictEqual(r.targets.crm!.queued, 2);
    const rows = store.queuedOutbox('crm', 10, 0);
    assert.ok(rows.every((x) => x.nextAttemptAt === '2999-01-01T00:00:00.000Z' && x.attempts === 0));
  });

  it('permanent failures are parked with their reason (exit 3); retryable ones retry on later runs', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('fail', ['a@x.com', 'b@x.com']);
    crm.failPermanent.add('a@x.com');
    crm.failRetryable.add('b@x.com');
    const { engine, clock, store } = testEngine({ targets: [{ name: 'crm', crm: 'fail' }], source: src, start: T0 });
    const r = await engine.sync();
    assert.strictEqual(r.targets.crm!.parked, 1);
    assert.strictEqual(r.targets.crm!.queued, 1);
    assert.strictEqual(r.exitCode, 3);
    crm.failRetryable.clear();
    clock.advance(3600_000);
    const r2 = await engine.sync();
    assert.deepStrictEqual(r2.targets.crm!.outcomes, { applied: 1 });
    const audit = store.audit(null).find((x) => x.email === 'a@x.com')!;
    assert.strictEqual(audit.outcome, 'failed-permanent');
    assert.match(audit.message ?? '', /rejected by CRM/);
  });

  it('dry run writes nothing to the CRM or the store and returns the plan', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('dry', ['a@x.com', 'b@x.com'], ['b@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'dry' }], source: src, start: T0 });
    const r = await engine.sync({ dryRun: true });
    assert.strictEqual(crm.writes, 0);
    assert.ok(!crm.records[0]!.suppressed);
    assert.deepStrictEqual(store.countOptOuts(), { active: 0, left: 0 });
    assert.strictEqual(store.getCheckpoint(CHECKPOINT_WINDOW), null);
    const plan = r.plan!.map((p) => [p.email, p.kind]).sort();
    assert.deepStrictEqual(plan, [
      ['a@x.com', 'planned'],
      ['b@x.com', 'already-suppressed'],
      ['gone@x.com', 'not-found'],
    ]);
  });

  it('quota_exceeded stops detection cleanly, keeps what was committed, does not move the checkpoint', async () => {
    const src = new FakeSource();
    seed(src);
    src.pageSize = 1;
    src.quotaAfterPages = 2;
    memoryCrm('quota', ['a@x.com', 'b@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'quota' }], source: src, start: T0 });
    const r = await engine.sync();
    assert.strictEqual(r.detection.complete, false);
    assert.match(r.messages.join('\n'), /resumes after 2030-01-01T00:00:00.000Z/);
    assert.strictEqual(store.getCheckpoint(CHECKPOINT_WINDOW), null);
    assert.strictEqual(r.detection.newOptOuts, 2);
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 2 }, 'what was found is still delivered');
    assert.strictEqual(r.exitCode, 3);
  });

  it('a process that dies after detection and before delivery delivers on the next run', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-engine-'));
    const file = path.join(dir, 'state.db');
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('crash', ['a@x.com', 'b@x.com']);
    crm.outage = { kind: 'fatal', message: 'process killed (simulated: nothing delivered)' };
    const first = testEngine({ targets: [{ name: 'crm', crm: 'crash' }], source: src, start: T0, storePath: file });
    await first.engine.sync();
    first.store.close(); // the "process" is gone; only the file remains
    crm.outage = null;
    src.contacts = []; // the source no longer shows them in any window: only the outbox remembers
    const second = testEngine({
      targets: [{ name: 'crm', crm: 'crash' }],
      source: src,
      start: new Date(T0.getTime() + 3600_000),
      storePath: file,
    });
    const r = await second.engine.sync();
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 2, 'not-found': 1 });
    second.store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('backfill queues every known opt-out for a new target, resumes without repeating delivered work', async () => {
    const src = new FakeSource();
    seed(src);
    const a = memoryCrm('bf-a', ['a@x.com', 'b@x.com', 'gone@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'a', crm: 'bf-a' }], source: src, start: T0 });
    a.haltAfterWrites = 2; // "interrupted" after two writes
    const r1 = await engine.backfill();
    assert.strictEqual(r1.targets.a!.outcomes.applied, 2);
    assert.strictEqual(r1.exitCode, 3);
    a.haltAfterWrites = null;
    store.requeueParked(null, T0.toISOString());
    // make the deferred rows due again (retryAt was far in the future)
    (store as unknown as { db: { prepare(s: string): { run(...a: unknown[]): void } } }).db
      .prepare(`UPDATE outbox SET next_attempt_at = ?`)
      .run(T0.toISOString());
    const scansBefore = src.fullScans;
    const r2 = await engine.backfill();
    assert.strictEqual(src.fullScans, scansBefore, 'the completed scan is not repeated');
    assert.deepStrictEqual(r2.targets.a!.outcomes, { applied: 1 });
    assert.strictEqual(a.writes, 3, 'no delivered write was repeated');
    assert.strictEqual(r2.exitCode, 0);
  });

  it('backfill --since only queues opt-outs on or after the date; --target limits delivery', async () => {
    const src = new FakeSource();
    seed(src);
    const one = memoryCrm('s1', ['a@x.com', 'b@x.com', 'gone@x.com']);
    const two = memoryCrm('s2', ['a@x.com']);
    const { engine } = testEngine({
      targets: [
        { name: 'one', crm: 's1' },
        { name: 'two', crm: 's2' },
      ],
      source: src,
      start: T0,
    });
    const r = await engine.backfill({ since: '2026-05-02', target: 'one' });
    assert.deepStrictEqual(Object.keys(r.targets), ['one']);
    // full scan queued all three as new detections for every target, since only limits the backfill's own enqueue
    assert.strictEqual(two.writes, 0, 'the other target is not delivered by a --target backfill');
    assert.ok(one.writes >= 2);
  });

  it('refuses to run while another live run holds the store, and releases its own lock when done', async () => {
    const src = new FakeSource();
    seed(src);
    memoryCrm('lock', []);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'lock' }], source: src, start: T0 });
    store.acquireRunLock({
      owner: 'other',
      pid: process.pid,
      host: require('os').hostname(),
      command: 'sync',
      now: T0.toISOString(),
    });
    await assert.rejects(engine.sync(), /another cc-optout sync is running/);
    store.releaseRunLock('other');
    await engine.sync();
    // released after the run: another owner may take it now
    store.acquireRunLock({
      owner: 'next',
      pid: process.pid,
      host: require('os').hostname(),
      command: 'sync',
      now: T0.toISOString(),
    });
  });

  it('a disabled target is paused: opt-outs queue for it and are delivered once it is enabled', async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('paused', ['a@x.com']);
    const first = testEngine({ targets: [{ name: 'crm', crm: 'paused' }], source: src, start: T0 });
    (first.config.targets[0] as { enabled: boolean }).enabled = false;
    const r = await first.engine.sync();
    assert.deepStrictEqual(Object.keys(r.targets), []);
    assert.strictEqual(crm.writes, 0);
    assert.strictEqual(first.store.targetStatus(['crm'], T0)[0]!.queued, 3);
    // the run says what waits, and is not complete (exit 3): opt-outs are not reaching that CRM
    assert.ok(
      r.messages.some((m) => /target crm is paused \("enabled": false\): 3 opt-out\(s\) wait/.test(m)),
      r.messages.join('\n'),
    );
    assert.strictEqual(r.exitCode, 3);
    (first.config.targets[0] as { enabled: boolean }).enabled = true;
    const r2 = await first.engine.sync();
    assert.deepStrictEqual(r2.targets.crm!.outcomes, { applied: 1, 'not-found': 2 });
  });

  it("an opt-out whose record reaches the CRM later (an import) is suppressed on the next day's re-check", async () => {
    const src = new FakeSource();
    seed(src);
    const crm = memoryCrm('later', ['a@x.com']);
    const { engine, clock } = testEngine({ targets: [{ name: 'crm', crm: 'later' }], source: src, start: T0 });
    const r1 = await engine.sync();
    assert.deepStrictEqual(r1.targets.crm!.outcomes, { applied: 1, 'not-found': 2 });
    crm.records.push({ id: 'later-9', email: 'B@x.com', suppressed: false });
    clock.advance(3600_000);
    const r2 = await engine.sync();
    assert.deepStrictEqual(r2.targets.crm!.outcomes, {}, 'not re-checked before recheckNotFoundHours (24 h)');
    clock.advance(24 * 3600_000);
    const r3 = await engine.sync();
    assert.deepStrictEqual(r3.targets.crm!.outcomes, { applied: 1, 'not-found': 1 });
    assert.ok(crm.records.find((x) => x.id === 'later-9')!.suppressed);
    assert.match(r3.messages.join('\n'), /looking up again 2 opt-outs/);
  });

  it('rejects an unknown --target with the configured names', async () => {
    const src = new FakeSource();
    memoryCrm('u', []);
    const { engine } = testEngine({ targets: [{ name: 'crm', crm: 'u' }], source: src, start: T0 });
    await assert.rejects(engine.backfill({ target: 'nope' }), /unknown target "nope" \(configured: crm\)/);
  });
});
