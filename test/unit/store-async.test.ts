/**
 * The StateStore is asynchronous (issue 13): the engine, the lease and the commands await every store call, so a
 * server-backed store whose answers arrive later (test/support/async-store.ts) runs exactly as SQLite does, and a
 * store write lands before the next external action that depends on it. Key/value writes a server-backed store
 * queues are flushed before a run ends and right after a rotated refresh token is stored.
 */
import assert from 'assert';
import nock from 'nock';
import { Engine } from '../../src/engine';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { SqliteStateStore } from '../../src/store/sqlite';
import { holdRunLock } from '../../src/store/lease';
import { TokenManager } from '../../src/source/constant-contact/auth';
import { OptOutSource, SourceDeps } from '../../src/source/types';
import { FakeSource, contact, testConfig, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { asyncStore, queuedKv } from '../support/async-store';
import { AUTH_ORIGIN, AUTH_PATH, makeConfig, makeDeps } from '../fixtures/cc/helpers';

const T0 = new Date('2026-06-01T12:00:00Z');

function seeded(): FakeSource {
  const src = new FakeSource();
  src.contacts = [
    contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
    contact('b@x.com', 'unsubscribed', '2026-05-02T00:00:00.000Z'),
    contact('c@x.com', 'implicit', null),
    contact('gone@x.com', 'unsubscribed', '2026-05-03T00:00:00.000Z', { deleted: true }),
  ];
  return src;
}

function asyncEngine(crmName: string, src: FakeSource, wrapSource?: (s: FakeSource, deps: SourceDeps) => OptOutSource) {
  const registry = testRegistry();
  const config = testConfig(registry, [{ name: 'crm', crm: crmName }]);
  const inner = new SqliteStateStore(':memory:');
  const store = asyncStore(inner);
  const clock = fakeClock(T0);
  const crm = memoryCrm(crmName, ['a@x.com', 'b@x.com', 'gone@x.com', 'c@x.com']);
  const push = crm.delivered.push.bind(crm.delivered);
  crm.delivered.push = (...batches: string[][]) => {
    store.log.push('crm:deliver');
    return push(...batches);
  };
  const engine = new Engine({
    config,
    store,
    registry,
    source: (deps) => (wrapSource ? wrapSource(src, deps) : src),
    clock,
    logger: memoryLogger(),
    random: () => 0.5,
  });
  return { engine, inner, store, crm, clock };
}

const at = (log: string[], entry: string): number => {
  const i = log.indexOf(entry);
  assert.ok(i >= 0, `${entry} is in the log: ${log.join(' ')}`);
  return i;
};

describe('store: the engine against an asynchronous StateStore', () => {
  it('sync detects, queues and delivers as with SQLite; every write lands before the CRM call that follows it', async () => {
    const { engine, inner, store, crm, clock } = asyncEngine('async-1', seeded());
    const r = await engine.sync();
    assert.strictEqual(r.exitCode, 0, JSON.stringify(r.messages));
    assert.strictEqual(r.detection.mode, 'full');
    assert.strictEqual(r.detection.newOptOuts, 3);
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 3 });
    assert.strictEqual(crm.writes, 3);
    // what the store holds is what SQLite would hold
    assert.strictEqual(inner.getCheckpoint('cc.optout_window.before'), new Date(T0.getTime() - 120_000).toISOString());
    const [run] = inner.recentRuns(1);
    assert.strictEqual(run!.status, 'ok');
    assert.deepStrictEqual(run!.counts, { crm: { applied: 3 } });
    assert.strictEqual(inner.runLock(), null, 'the run lock is released');
    assert.strictEqual(inner.audit(null).filter((x) => x.outcome === 'applied').length, 3);
    // ordering: the lock, the run row and the page's commit are in the store before the first CRM call
    const log = store.log;
    const firstDeliver = at(log, 'crm:deliver');
    assert.ok(at(log, 'acquireRunLock:done') < firstDeliver);
    assert.ok(at(log, 'startRun:done') < firstDeliver);
    assert.ok(at(log, 'commitDetection:done') < firstDeliver);
    assert.ok(log.lastIndexOf('recordOutcomes:done') < at(log, 'finishRun'), 'outcomes recorded before the run ends');
    assert.ok(at(log, 'finishRun:done') < at(log, 'releaseRunLock:done'));

    // a rerun reads the window and delivers nothing again
    clock.advance(15 * 60_000);
    const r2 = await engine.sync();
    assert.strictEqual(r2.detection.mode, 'window');
    assert.deepStrictEqual(r2.targets.crm!.outcomes, {});
    assert.strictEqual(crm.writes, 3);
    await engine.close();
  });

  it('backfill (dry run and real) and check go through the asynchronous store', async () => {
    const { engine, inner, crm } = asyncEngine('async-2', seeded());
    const plan = await engine.backfill({ dryRun: true });
    assert.strictEqual(plan.plan!.length, 3);
    assert.strictEqual(crm.writes, 0);
    const b = await engine.backfill();
    assert.deepStrictEqual(b.targets.crm!.outcomes, { applied: 3 });
    const c = await engine.check();
    assert.strictEqual(c.ok, true);
    assert.deepStrictEqual(
      inner.recentRuns(10).map((x) => [x.kind, x.status]),
      [
        ['check', 'ok'],
        ['backfill', 'ok'],
        ['backfill', 'ok'],
      ],
    );
    await engine.close();
  });

  it('a record the source quarantines (a synchronous callback) is stored before the page commits and counted', async () => {
    const { engine, inner, store } = asyncEngine('async-3', seeded(), (src, deps) => ({
      scanWindow: src.scanWindow.bind(src),
      unsubscribedCount: src.unsubscribedCount.bind(src),
      check: src.check.bind(src),
      scanUnsubscribed: (onPage) => {
        deps.quarantine({ reason: 'bad record', raw: { id: 'x' }, recordId: 'x' });
        return src.scanUnsubscribed(onPage);
      },
    }));
    const r = await engine.sync();
    assert.strictEqual(r.quarantined, 1);
    assert.strictEqual(inner.countQuarantined(), 1);
    assert.ok(at(store.log, 'quarantine:done') < at(store.log, 'commitDetection'));
    await engine.close();
  });

  it('key/value writes the source queues are flushed before the run is recorded as ended', async () => {
    const src = seeded();
    const { engine, inner, store } = asyncEngine('async-4', src, (s, deps) => {
      deps.kv.set('refresh_token', 'rotated-R2');
      return s;
    });
    await engine.sync();
    assert.strictEqual(inner.kv('source:constant-contact').get('refresh_token'), 'rotated-R2');
    assert.ok(at(store.log, 'kv:source:constant-contact:flush') < at(store.log, 'finishRun'));
    await engine.close();
  });

  it('holdRunLock awaits the store: the lock is held when it resolves, released when release() resolves', async () => {
    const inner = new SqliteStateStore(':memory:');
    const store = asyncStore(inner);
    const lease = await holdRunLock(
      store,
      { owner: 'o1', pid: 1, host: 'h', command: 'sync' },
      { renewMs: 1000, now: () => T0, onLost: () => undefined },
    );
    assert.strictEqual(inner.runLock()!.owner, 'o1');
    assert.strictEqual(await lease.renew(), true);
    await lease.release();
    assert.strictEqual(inner.runLock(), null);
  });
});

describe('KeyValue.flush: a rotated refresh token is durable before it is used', () => {
  afterEach(() => nock.cleanAll());

  it('Constant Contact: the token refresh flushes the rotated refresh token (and the access token) before returning', async () => {
    const kv = queuedKv(new Map([['refresh_token', 'R1-seed']]));
    const deps = makeDeps(kv as never);
    const tm = new TokenManager(makeConfig(), deps);
    nock(AUTH_ORIGIN)
      .post(`${AUTH_PATH}/token`)
      .reply(200, { access_token: 'A1-fresh', refresh_token: 'R2-rotated', token_type: 'Bearer', expires_in: 86400 });
    const token = await tm.refresh();
    assert.strictEqual(token, 'A1-fresh');
    assert.strictEqual(kv.durable.get('refresh_token'), 'R2-rotated', 'durable when refresh() resolves');
    assert.strictEqual(kv.durable.get('access_token'), 'A1-fresh');
    assert.strictEqual(kv.pending.size, 0);
  });
});
