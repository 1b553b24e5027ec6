/**
 * The engine's entry points for the fleet (issue 13): an external lease instead of the store's run lock, a sync that
 * detects and queues only (`deliver: false`), and a deliver-only run (`Engine.deliver`) that drains the outbox
 * without reading Constant Contact.
 */
import assert from 'assert';
import { Engine, UnknownTarget } from '../../src/engine';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { SqliteStateStore } from '../../src/store/sqlite';
import { LeaseLost, RunLocked } from '../../src/store/types';
import { OptOutSource } from '../../src/source/types';
import { FakeSource, contact, testConfig, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';

const T0 = new Date('2026-06-01T12:00:00Z');

function seeded(n = 4): FakeSource {
  const src = new FakeSource();
  src.contacts = Array.from({ length: n }, (_, i) =>
    contact(`p${i}@x.com`, 'unsubscribed', `2026-05-0${(i % 9) + 1}T00:00:00.000Z`),
  );
  return src;
}

function engineWith(opts: {
  crms: string[];
  source: OptOutSource;
  externalLease?: { lost(): string | null; owner: string };
  store?: SqliteStateStore;
}) {
  const registry = testRegistry();
  const config = testConfig(
    registry,
    opts.crms.map((c, i) => ({ name: `t${i}`, crm: c })),
  );
  const store = opts.store ?? new SqliteStateStore(':memory:');
  const engine = new Engine({
    config,
    store,
    registry,
    source: () => opts.source,
    clock: fakeClock(T0),
    logger: memoryLogger(),
    random: () => 0.5,
    externalLease: opts.externalLease,
  });
  return { engine, store };
}

const emails = (n: number): string[] => Array.from({ length: n }, (_, i) => `p${i}@x.com`);

describe('engine: an external lease (the fleet fences the writes)', () => {
  it('takes no store run lock: runs while another holder has it, and records the run under the lease owner', async () => {
    const crm = memoryCrm('lanes-1', emails(4));
    const src = seeded();
    const store = new SqliteStateStore(':memory:');
    store.acquireRunLock({ owner: 'someone-else', pid: 1, host: 'elsewhere', command: 'sync', now: T0.toISOString() });
    // without the external lease the lock stops the run
    const plain = engineWith({ crms: ['lanes-1'], source: src, store });
    await assert.rejects(plain.engine.sync(), RunLocked);
    const { engine } = engineWith({
      crms: ['lanes-1'],
      source: src,
      store,
      externalLease: { lost: () => null, owner: 'worker-7' },
    });
    const r = await engine.sync();
    assert.strictEqual(r.exitCode, 0, JSON.stringify(r.messages));
    assert.deepStrictEqual(r.targets.t0!.outcomes, { applied: 4 });
    assert.strictEqual(crm.writes, 4);
    assert.strictEqual(store.runLock()!.owner, 'someone-else', 'the store lock is neither taken nor released');
    const run = store.getRun(r.runId)!;
    assert.strictEqual(run.kind, 'sync');
    assert.strictEqual(run.exitCode, 0);
    assert.strictEqual(store.db.prepare(`SELECT owner FROM runs WHERE id = ?`).pluck().get(r.runId), 'worker-7');
    await engine.close();
    assert.strictEqual(store.runLock()!.owner, 'someone-else', 'close() leaves it too');
  });

  it('stops with LeaseLost once lost() says so: the page in hand is the last one committed, the run is failed', async () => {
    memoryCrm('lanes-2', emails(6));
    const src = seeded(6);
    src.pageSize = 2;
    let pages = 0;
    let lost: string | null = null;
    const counting: OptOutSource = {
      scanWindow: src.scanWindow.bind(src),
      unsubscribedCount: src.unsubscribedCount.bind(src),
      check: src.check.bind(src),
      scanUnsubscribed: (onPage) =>
        src.scanUnsubscribed(async (p) => {
          await onPage(p);
          pages += 1;
          if (pages === 1) lost = 'the account lease was taken over by worker-9 (fence 4 > 3)';
        }),
    };
    const { engine, store } = engineWith({
      crms: ['lanes-2'],
      source: counting,
      externalLease: { lost: () => lost, owner: 'worker-7' },
    });
    await assert.rejects(
      engine.sync(),
      (e: Error) => e instanceof LeaseLost && /taken over by worker-9/.test(e.message),
    );
    assert.strictEqual(pages, 1, 'no page after the loss');
    assert.strictEqual(store.countOptOuts().active, 2, 'only the first page was committed');
    const [run] = store.recentRuns(1);
    assert.strictEqual(run!.status, 'failed');
    assert.match(run!.error ?? '', /taken over by worker-9/);
    // a lease already lost starts nothing
    const before = store.recentRuns(10).length;
    await assert.rejects(engine.sync(), LeaseLost);
    assert.strictEqual(store.recentRuns(10).length, before, 'no run row');
  });
});

describe('engine: two lanes under external leases on one store', () => {
  it("a deliver run started while a detect run is live leaves the detect run's row running (not abandoned)", async () => {
    memoryCrm('lanes-5', emails(4));
    const src = seeded(4);
    src.pageSize = 2;
    const store = new SqliteStateStore(':memory:');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let firstPage!: () => void;
    const atFirstPage = new Promise<void>((r) => (firstPage = r));
    const blocking: OptOutSource = {
      scanWindow: src.scanWindow.bind(src),
      unsubscribedCount: src.unsubscribedCount.bind(src),
      check: src.check.bind(src),
      scanUnsubscribed: (onPage) =>
        src.scanUnsubscribed(async (p) => {
          await onPage(p);
          firstPage();
          await gate;
        }),
    };
    const detect = engineWith({
      crms: ['lanes-5'],
      source: blocking,
      store,
      externalLease: { lost: () => null, owner: 'detect-lane' },
    });
    const deliver = engineWith({
      crms: ['lanes-5'],
      source: src,
      store,
      externalLease: { lost: () => null, owner: 'deliver-lane' },
    });
    const detecting = detect.engine.sync({ deliver: false });
    await atFirstPage;
    const detectRunId = store.db.prepare(`SELECT MAX(id) FROM runs`).pluck().get() as number;
    const d = await deliver.engine.deliver();
    assert.deepStrictEqual(d.targets.t0!.outcomes, { applied: 2 }, 'the committed page is delivered by the other lane');
    const status = (): unknown => store.db.prepare(`SELECT status FROM runs WHERE id = ?`).pluck().get(detectRunId);
    assert.strictEqual(status(), 'running', 'the live detect run is not marked abandoned');
    release();
    const r = await detecting;
    assert.strictEqual(r.exitCode, 0);
    assert.strictEqual(status(), 'ok');
    await detect.engine.close();
    await deliver.engine.close();
  });
});

describe('engine: detect-only and deliver-only runs', () => {
  it('sync with deliver: false detects and queues only; deliver() then drains the outbox without reading Constant Contact', async () => {
    const crm = memoryCrm('lanes-3', emails(4));
    const src = seeded(4);
    const { engine, store } = engineWith({ crms: ['lanes-3'], source: src });
    const d = await engine.sync({ deliver: false });
    assert.strictEqual(d.exitCode, 0);
    assert.strictEqual(d.detection.newOptOuts, 4);
    assert.deepStrictEqual(d.targets, {}, 'no target delivered');
    assert.strictEqual(crm.writes + crm.lookups, 0, 'no CRM call');
    assert.strictEqual(store.countDue('t0', T0), 4, 'queued');
    assert.ok(d.messages.some((m) => /detect only: 4 opt-out\(s\) queued for t0/.test(m)));
    const scansBefore = src.fullScans + src.windowCalls.length;

    const r = await engine.deliver();
    assert.strictEqual(r.command, 'deliver');
    assert.strictEqual(r.exitCode, 0);
    assert.strictEqual(r.detection.mode, 'skipped');
    assert.deepStrictEqual(r.targets.t0!.outcomes, { applied: 4 });
    assert.strictEqual(crm.writes, 4);
    assert.strictEqual(src.fullScans + src.windowCalls.length, scansBefore, 'Constant Contact not read');
    assert.strictEqual(store.countDue('t0', T0), 0);
    const [run] = store.recentRuns(1);
    assert.deepStrictEqual([run!.kind, run!.status], ['deliver', 'ok']);
    assert.deepStrictEqual(run!.counts, { t0: { applied: 4 } });
    assert.strictEqual(store.runLock(), null, 'the run lock is released');
    await engine.close();
  });

  it('deliver({ targets }) drains only those targets; an unknown target is refused before any run is recorded', async () => {
    const a = memoryCrm('lanes-4a', emails(3));
    const b = memoryCrm('lanes-4b', emails(3));
    const { engine, store } = engineWith({ crms: ['lanes-4a', 'lanes-4b'], source: seeded(3) });
    await engine.sync({ deliver: false });
    const r = await engine.deliver({ targets: ['t1'] });
    assert.deepStrictEqual(Object.keys(r.targets), ['t1']);
    assert.strictEqual(b.writes, 3);
    assert.strictEqual(a.writes, 0);
    assert.strictEqual(store.countDue('t0', T0), 3, 't0 still queued');
    const runs = store.recentRuns(10).length;
    await assert.rejects(engine.deliver({ targets: ['nope'] }), UnknownTarget);
    assert.strictEqual(store.recentRuns(10).length, runs);
    // an aborted signal stops before the first batch: nothing more delivered, the rows stay queued
    const ac = new AbortController();
    ac.abort('SIGTERM');
    const stopped = await engine.deliver({ targets: ['t0'], signal: ac.signal });
    assert.strictEqual(stopped.interrupted, true);
    assert.strictEqual(a.writes, 0);
    assert.strictEqual(store.countDue('t0', T0), 3);
    await engine.close();
  });
});
