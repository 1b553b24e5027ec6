/**
 * The PostgreSQL state store (src/store/postgres.ts) on a real server (test/support/postgres.ts): the same calls
 * give the same answers as the SQLite store, plus what only a shared database has (the fence guard, the
 * key/value cache, accounts side by side, removing an account, concurrent instances, connect errors).
 */
import { strict as assert } from 'assert';
import * as net from 'net';
import * as os from 'os';
import { PoolClient } from 'pg';
import { ConfigError, ObservedContact, OptOut } from '../../src/domain';
import { PgFenceGuard } from '../../src/store/backend';
import { PgBackend, openPgBackend } from '../../src/store/postgres';
import { SqliteStateStore } from '../../src/store/sqlite';
import { LeaseLost, RunLocked, StateStore, StoreOpenError, StoreUnreachable } from '../../src/store/types';
import { StaleFence } from '../../src/fleet/types';
import { freshDatabase, pgSkipped } from '../support/postgres';

const T0 = '2026-06-01T00:00:00.000Z';
const at = (minutes: number): string => new Date(Date.parse(T0) + minutes * 60_000).toISOString();
const policy = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };

function optOut(email: string, when = '2026-05-01T00:00:00.000Z', extra: Partial<OptOut> = {}): OptOut {
  return {
    email,
    contactId: `c-${email}`,
    optedOutAt: when,
    source: 'Contact',
    reason: null,
    deleted: false,
    ...extra,
  };
}

function observed(email: string): ObservedContact {
  return {
    email,
    contactId: `c-${email}`,
    permission: 'implicit',
    optedOutAt: null,
    source: null,
    reason: null,
    deleted: false,
  };
}

/** A deterministic random sequence (the same backoff jitter for both stores). */
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

type Step = [string, (s: StateStore) => unknown];

/** One scenario touching every method; each step's answer (or error) is compared between the two stores. */
function scenario(): Step[] {
  const me = { owner: 'o1', pid: process.pid, host: os.hostname() };
  const random = seeded(7);
  return [
    ['acquireRunLock', (s) => s.acquireRunLock({ ...me, command: 'sync', now: T0, leaseMs: 24 * 3600_000 })],
    ['startRun 1', (s) => s.startRun('sync', false, T0, me)],
    [
      'commitDetection',
      (s) =>
        s.commitDetection({
          runId: 1,
          added: [optOut('a@x.com', '2026-05-02T00:00:00Z'), optOut('b@x.com'), optOut('c@x.com'), optOut('a@x.com')],
          resubscribed: [],
          targets: ['hs', 'sf', 'hs'],
          now: T0,
          checkpoints: { window: T0, other: 'x' },
        }),
    ],
    ['knownOptOuts', (s) => s.knownOptOuts(['a@x.com', 'b@x.com', 'zz@x.com'])],
    ['activeOptOutEmails', (s) => s.activeOptOutEmails()],
    ['countOptOuts', (s) => s.countOptOuts()],
    ['targetStatus', (s) => s.targetStatus(['hs', 'sf', 'none'], new Date(T0))],
    ['dueOutbox', (s) => s.dueOutbox('hs', new Date(T0), 10)],
    [
      'recordOutcomes hs',
      (s) =>
        s.recordOutcomes({
          runId: 1,
          target: 'hs',
          now: new Date(at(1)),
          policy,
          random,
          outcomes: [
            { email: 'a@x.com', kind: 'applied', recordIds: ['1', '2'], matchedBy: 'primary' },
            { email: 'b@x.com', kind: 'failed-retryable', recordIds: [], message: 'timeout' },
            { email: 'c@x.com', kind: 'failed-permanent', recordIds: ['9'], message: 'bad record' },
            { email: 'zz@x.com', kind: 'applied', recordIds: [] },
            { email: 'a@x.com', kind: 'already-suppressed', recordIds: ['1'] },
          ],
        }),
    ],
    [
      'recordOutcomes hs retries',
      (s) =>
        s.recordOutcomes({
          runId: 1,
          target: 'hs',
          now: new Date(at(2)),
          policy,
          random,
          outcomes: [
            { email: 'b@x.com', kind: 'failed-retryable', recordIds: [], message: 'timeout 2' },
            { email: 'b@x.com', kind: 'failed-retryable', recordIds: [] },
          ],
        }),
    ],
    [
      'recordOutcomes sf deferred',
      (s) =>
        s.recordOutcomes({
          runId: 1,
          target: 'sf',
          now: new Date(at(3)),
          policy,
          random,
          deferUntil: new Date(at(60)),
          outcomes: [{ email: 'a@x.com', kind: 'failed-retryable', recordIds: [], message: 'daily limit' }],
        }),
    ],
    [
      'recordOutcomes sf',
      (s) =>
        s.recordOutcomes({
          runId: 1,
          target: 'sf',
          now: new Date(at(4)),
          policy,
          random,
          outcomes: [
            { email: 'b@x.com', kind: 'not-found', recordIds: [] },
            { email: 'c@x.com', kind: 'already-suppressed', recordIds: ['003'] },
            { email: 'a@x.com', kind: 'planned', recordIds: [] },
          ],
        }),
    ],
    ['dueOutbox sf later', (s) => s.dueOutbox('sf', new Date(at(120)), 10)],
    ['queuedOutbox', (s) => s.queuedOutbox('sf', 10, 0)],
    ['parkedOutbox', (s) => s.parkedOutbox('hs', 10, 0)],
    ['targetStatus 2', (s) => s.targetStatus(['hs', 'sf'], new Date(at(5)))],
    [
      'requeueParkedRecords',
      (s) =>
        s.requeueParkedRecords({ target: 'hs', emails: ['c@x.com', 'nope@x.com'], now: at(6), via: 'status-page' }),
    ],
    ['parkedOutbox after', (s) => s.parkedOutbox('hs', 10, 0)],
    ['requeueParked all', (s) => s.requeueParked(null, at(7))],
    ['requeueNotFound early', (s) => s.requeueNotFound(at(4), at(8))],
    ['requeueNotFound', (s) => s.requeueNotFound(at(5), at(8))],
    ['deferQueued', (s) => s.deferQueued('sf', at(30))],
    ['countDue', (s) => s.countDue('sf', new Date(at(40)))],
    ['countDue limit', (s) => s.countDue('hs', new Date(at(40)), 1)],
    [
      'commitDetection 2',
      (s) =>
        s.commitDetection({
          runId: 1,
          added: [optOut('d@x.com', '2026-05-03T00:00:00.000Z')],
          // a mix of both forms (the store takes each as it is)
          resubscribed: [observed('b@x.com'), 'c@x.com', observed('b@x.com'), 'never@x.com'] as unknown as string[],
          seen: ['a@x.com', 'unknown@x.com'],
          seenDeleted: ['a@x.com', 'c@x.com'],
          targets: ['hs', 'sf'],
          now: at(9),
        }),
    ],
    ['knownOptOuts 2', (s) => s.knownOptOuts(['a@x.com', 'b@x.com', 'c@x.com', 'd@x.com'])],
    ['countOptOuts 2', (s) => s.countOptOuts()],
    ['backfillCandidates new', (s) => s.backfillCandidates('new', null, false)],
    ['backfillCandidates redeliver', (s) => s.backfillCandidates('hs', '2026-05-02T00:00:00.000Z', true)],
    [
      'enqueueKnown',
      (s) => s.enqueueKnown({ runId: 1, targets: ['hs', 'new'], since: null, redeliver: true, now: at(10) }),
    ],
    ['queuedOutbox new', (s) => s.queuedOutbox('new', 10, 0)],
    ['getCheckpoint', (s) => s.getCheckpoint('window')],
    ['setCheckpoint', (s) => s.setCheckpoint('window', at(10), at(10))],
    ['getCheckpoint 2', (s) => [s.getCheckpoint('window'), s.getCheckpoint('missing')]],
    [
      'quarantine',
      (s) => s.quarantine(1, 'cc', { reason: 'no email', raw: { contact_id: 'q1' }, recordId: 'q1' }, at(11)),
    ],
    [
      'quarantine again',
      (s) =>
        s.quarantine(1, 'cc', { reason: 'still no email', raw: { contact_id: 'q1', x: 1 }, recordId: 'q1' }, at(12)),
    ],
    ['quarantine no id', (s) => s.quarantine(null, 'cc', { reason: 'junk', raw: [1, 2], recordId: null }, at(13))],
    ['quarantined', (s) => s.quarantined(10)],
    ['countQuarantined', (s) => s.countQuarantined()],
    ['addEvent', (s) => s.addEvent(1, 'note', null, 'hello', at(14))],
    ['events', (s) => s.events(null)],
    ['events kinds', (s) => s.events(null, ['requeued', 'left-unsubscribed-set', 'requeued'])],
    ['events since run', (s) => s.events(at(9), undefined, 1)],
    ['audit', (s) => s.audit(null)],
    ['audit since', (s) => s.audit(at(5))],
    ['audit run', (s) => s.audit(null, 1)],
    ['deliveryHistory', (s) => s.deliveryHistory(null)],
    ['deliveryHistory since', (s) => s.deliveryHistory(at(3), 1)],
    ['lagPoints', (s) => s.lagPoints(10)],
    [
      'finishRun',
      (s) =>
        s.finishRun(1, 3, { targets: { hs: { outcomes: { applied: 1 } } } }, at(15), {
          counts: { hs: { applied: 1 } },
          apiCalls: { cc: 3 },
          variant: 'window',
        }),
    ],
    ['startRun 2', (s) => s.startRun('backfill', true, at(16), me)],
    ['startRun 3', (s) => s.startRun('sync', false, at(17))],
    ['recentRuns', (s) => s.recentRuns(10, new Date(at(18)))],
    ['failRun', (s) => s.failRun(3, 1, 'boom', at(19), { counts: {}, apiCalls: { hubspot: 1 } })],
    ['getRun', (s) => [s.getRun(1, new Date(at(20))), s.getRun(3, new Date(at(20))), s.getRun(99)]],
    [
      'commitDetection backfill origin',
      (s) =>
        s.commitDetection({ runId: 2, added: [optOut('e@x.com')], resubscribed: [], targets: ['hs'], now: at(21) }),
    ],
    ['queuedOutbox hs', (s) => s.queuedOutbox('hs', 10, 0)],
    ['openBackfill', (s) => s.openBackfill(null, ['sf', 'hs'], at(22))],
    ['openBackfill again', (s) => s.openBackfill(null, ['hs', 'sf'], at(23))],
    ['openBackfill since', (s) => s.openBackfill(at(1), ['hs'], at(23))],
    ['markBackfillScanned', (s) => s.markBackfillScanned(1, at(24))],
    ['finishBackfill', (s) => s.finishBackfill(1, at(25))],
    ['openBackfill new', (s) => s.openBackfill(null, ['sf', 'hs'], at(26))],
    ['runLock', (s) => s.runLock()],
    ['renewRunLock', (s) => [s.renewRunLock('o1', at(27), 60_000), s.renewRunLock('o2', at(27), 60_000)]],
    [
      'acquireRunLock other',
      (s) => s.acquireRunLock({ owner: 'o2', pid: process.pid, host: os.hostname(), command: 'sync', now: at(27) }),
    ],
    ['recentRuns lease valid', (s) => s.recentRuns(10, new Date(at(27)))],
    ['recentRuns lease expired', (s) => s.recentRuns(10, new Date(at(29)))],
    [
      'acquireRunLock takeover',
      (s) => s.acquireRunLock({ owner: 'o2', pid: process.pid, host: os.hostname(), command: 'run', now: at(29) }),
    ],
    ['events takeover', (s) => s.events(at(29))],
    ['releaseRunLock other', (s) => s.releaseRunLock('o1')],
    ['releaseRunLock any', (s) => s.releaseRunLock(null)],
    ['runLock none', (s) => s.runLock()],
    ['targetStatus final', (s) => s.targetStatus(['hs', 'sf', 'new'], new Date(at(60)))],
  ];
}

async function settle(v: unknown): Promise<unknown> {
  if (Array.isArray(v)) return Promise.all(v.map((x) => settle(x)));
  return v;
}

async function answer(fn: () => unknown): Promise<unknown> {
  try {
    return { ok: await settle(await fn()) };
  } catch (err) {
    return { error: (err as Error).name, message: (err as Error).message };
  }
}

/** Maps and sets as sorted lists (their order is not part of the contract), through JSON. */
function plain(v: unknown): unknown {
  const json = JSON.stringify(v, (_k, x: unknown) =>
    x instanceof Map
      ? { map: [...x.entries()].sort(([a], [b]) => String(a).localeCompare(String(b))) }
      : x instanceof Set
        ? { set: [...x].sort() }
        : x,
  );
  return JSON.parse(json) as unknown;
}

async function backendOn(url: string, poolMax?: number): Promise<PgBackend> {
  return (await openPgBackend(url, poolMax ? { poolMax } : {})) as PgBackend;
}

async function count(b: PgBackend, sql: string, params: unknown[] = []): Promise<number> {
  return Number((await b.pool.query(sql, params)).rows[0].n);
}

describe('PostgreSQL state store (a real server)', function () {
  this.timeout(120_000);
  let db: { url: string; drop: () => Promise<void> };
  let backend: PgBackend;
  before(async function () {
    if (pgSkipped()) this.skip();
  });
  beforeEach(async () => {
    db = await freshDatabase('pgstore');
    backend = await backendOn(db.url);
  });
  afterEach(async () => {
    await backend?.close().catch(() => undefined);
    await db?.drop();
  });

  it('answers every call of a whole scenario exactly as the SQLite store does', async () => {
    const lite = new SqliteStateStore(':memory:');
    const pg = (await backend.account('default')) as StateStore;
    const a = scenario();
    const b = scenario();
    for (let i = 0; i < a.length; i++) {
      const [name, fn] = a[i]!;
      const want = plain(await answer(() => fn(lite)));
      const got = plain(await answer(() => b[i]![1](pg)));
      assert.deepStrictEqual(got, want, `step ${name}`);
    }
    lite.close();
  });

  it('runs the guard in every write transaction; a guard that throws leaves nothing written', async () => {
    const scopes: { account: string; target?: string }[] = [];
    let refuse = false;
    const guard: PgFenceGuard = {
      check: async (client: PoolClient, scope) => {
        scopes.push(scope);
        await client.query('SELECT 1'); // it runs on the transaction's own client
        if (refuse) throw new StaleFence('account:default', 1, 2);
      },
    };
    const s = await backend.pgAccount('default', { guard });
    const runId = await s.startRun('sync', false, T0);
    await s.commitDetection({
      runId,
      added: [optOut('a@x.com')],
      resubscribed: [],
      targets: ['hs'],
      now: T0,
    });
    assert.deepStrictEqual(scopes, [{ account: 'default' }, { account: 'default' }]);
    const before = await backend.pool.query(
      `SELECT (SELECT count(*) FROM cc_opt_outs) + (SELECT count(*) FROM cc_outbox) + (SELECT count(*) FROM cc_outcomes)
            + (SELECT count(*) FROM cc_checkpoints) + (SELECT count(*) FROM cc_events) + (SELECT count(*) FROM cc_runs)
            + (SELECT count(*) FROM cc_quarantine) + (SELECT count(*) FROM cc_backfills) AS n`,
    );
    refuse = true;
    scopes.length = 0;
    const writes: [string, () => Promise<unknown>, string | undefined][] = [
      [
        'commitDetection',
        () =>
          s.commitDetection({
            runId,
            added: [optOut('b@x.com')],
            resubscribed: ['a@x.com'],
            targets: ['hs'],
            now: T0,
            checkpoints: { w: T0 },
          }),
        undefined,
      ],
      [
        'recordOutcomes',
        () =>
          s.recordOutcomes({
            runId,
            target: 'hs',
            now: new Date(T0),
            policy,
            outcomes: [{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }],
          }),
        'hs',
      ],
      ['deferQueued', () => s.deferQueued('hs', at(10)), 'hs'],
      ['requeueParkedRecords', () => s.requeueParkedRecords({ target: 'hs', now: T0, via: 'cli' }), 'hs'],
      ['requeueParked all', () => s.requeueParked(null, T0), undefined],
      ['requeueNotFound', () => s.requeueNotFound(T0, T0), undefined],
      [
        'enqueueKnown',
        () => s.enqueueKnown({ runId, targets: ['sf'], since: null, redeliver: true, now: T0 }),
        undefined,
      ],
      ['setCheckpoint', () => s.setCheckpoint('w', T0, T0), undefined],
      ['startRun', () => s.startRun('sync', false, T0), undefined],
      ['finishRun', () => s.finishRun(runId, 0, {}, T0), undefined],
      ['quarantine', () => s.quarantine(runId, 'cc', { reason: 'r', raw: {}, recordId: '1' }, T0), undefined],
      ['addEvent', () => s.addEvent(runId, 'k', null, null, T0), undefined],
      ['openBackfill', () => s.openBackfill(null, ['hs'], T0), undefined],
      ['markBackfillScanned', () => s.markBackfillScanned(1, T0), undefined],
      ['finishBackfill', () => s.finishBackfill(1, T0), undefined],
    ];
    for (const [name, write, target] of writes) {
      scopes.length = 0;
      await assert.rejects(write(), (err: Error) => err instanceof StaleFence && err instanceof LeaseLost, name);
      assert.deepStrictEqual(scopes, [target ? { account: 'default', target } : { account: 'default' }], name);
    }
    const after = await backend.pool.query(
      `SELECT (SELECT count(*) FROM cc_opt_outs) + (SELECT count(*) FROM cc_outbox) + (SELECT count(*) FROM cc_outcomes)
            + (SELECT count(*) FROM cc_checkpoints) + (SELECT count(*) FROM cc_events) + (SELECT count(*) FROM cc_runs)
            + (SELECT count(*) FROM cc_quarantine) + (SELECT count(*) FROM cc_backfills) AS n`,
    );
    assert.equal(after.rows[0].n, before.rows[0].n);
    assert.equal(await s.getCheckpoint('w'), null);
    assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 0 });
    assert.equal((await s.dueOutbox('hs', new Date(T0), 10)).length, 1);

    // a key/value write under a refusing guard: the cache has it, the database does not, flush says why
    s.kv('source').set('refresh_token', 'rt-2');
    await assert.rejects(s.kv('source').flush(), StaleFence);
    assert.equal(await count(backend, 'SELECT count(*) AS n FROM cc_kv'), 0);
  });

  it('a rotated credential (setCredential) is written even under a stale fence; a plain set() is not', async () => {
    const guard: PgFenceGuard = {
      check: async () => {
        throw new StaleFence('account:default', 1, 2);
      },
    };
    const s = await backend.pgAccount('default', { guard });
    s.kv('source').setCredential?.('refresh_token', 'rt-rotated');
    await s.kv('source').flush();
    s.kv('source').set('other', 'x');
    await assert.rejects(s.kv('source').flush(), StaleFence);
    const r = await backend.pool.query("SELECT key, value FROM cc_kv WHERE namespace = 'source' ORDER BY key");
    assert.deepStrictEqual(r.rows, [{ key: 'refresh_token', value: 'rt-rotated' }]);
  });

  it('key/value: preloaded when opened, set() queued in order, flushed before every write and by close()', async () => {
    const observedValues: (string | null)[] = [];
    const guard: PgFenceGuard = {
      check: async (client: PoolClient) => {
        const r = await client.query(
          `SELECT value FROM cc_kv WHERE account = 'default' AND namespace = 'n' AND key = 'k'`,
        );
        observedValues.push(r.rows[0]?.value ?? null);
      },
    };
    const s = await backend.pgAccount('default', { guard });
    const kv = s.kv('n');
    for (let i = 1; i <= 30; i++) kv.set('k', String(i));
    assert.equal(kv.get('k'), '30'); // the cache answers at once
    await s.setCheckpoint('cp', 'v', T0);
    // each kv write's guard saw the value before it; the checkpoint's saw the last: in order, all before it
    assert.deepStrictEqual(observedValues, [null, ...Array.from({ length: 30 }, (_, i) => String(i + 1))]);
    kv.set('other', 'x');
    s.kv('n2').set('k', 'y');
    await s.close();
    // a new store of the account reads the rows when opened: get() needs no query
    const again = await backend.pgAccount('default');
    assert.equal(again.kv('n').get('k'), '30');
    assert.equal(again.kv('n').get('other'), 'x');
    assert.equal(again.kv('n2').get('k'), 'y');
    assert.equal(again.kv('n3').get('k'), null);
    await again.kv('n').flush(); // nothing queued: resolves
  });

  it('keeps two accounts in one database apart (ids, opt-outs, outbox, checkpoints, key/value, run locks)', async () => {
    await backend.putAccount({ id: 'acme', config: { source: { type: 'constant-contact' } }, priority: 2 }, T0);
    const d = await backend.pgAccount('default');
    const acme = await backend.pgAccount('acme');
    const me = { pid: process.pid, host: os.hostname(), command: 'sync', now: T0 };
    await d.acquireRunLock({ ...me, owner: 'w-default' });
    await acme.acquireRunLock({ ...me, owner: 'w-acme' }); // its own lock: no RunLocked
    assert.equal(await d.startRun('sync', false, T0), 1);
    assert.equal(await acme.startRun('sync', false, T0), 1);
    assert.equal(await acme.startRun('sync', false, T0), 2);
    await d.commitDetection({ runId: 1, added: [optOut('same@x.com')], resubscribed: [], targets: ['hs'], now: T0 });
    await acme.commitDetection({
      runId: 2,
      added: [optOut('same@x.com', '2026-01-01T00:00:00.000Z'), optOut('only-acme@x.com')],
      resubscribed: [],
      targets: ['hs', 'sf'],
      now: T0,
      checkpoints: { w: 'acme' },
    });
    assert.deepStrictEqual(await d.countOptOuts(), { active: 1, left: 0 });
    assert.deepStrictEqual(await acme.countOptOuts(), { active: 2, left: 0 });
    assert.equal((await d.knownOptOuts(['same@x.com'])).get('same@x.com')?.optedOutAt, '2026-05-01T00:00:00.000Z');
    assert.deepStrictEqual(
      (await d.targetStatus(['hs', 'sf'], new Date(T0))).map((t) => [t.target, t.queued]),
      [
        ['hs', 1],
        ['sf', 0],
      ],
    );
    assert.equal(await d.getCheckpoint('w'), null);
    assert.equal(await acme.getCheckpoint('w'), 'acme');
    acme.kv('source').set('token', 'acme-token');
    await acme.kv('source').flush();
    assert.equal((await backend.pgAccount('default')).kv('source').get('token'), null);
    assert.equal((await backend.pgAccount('acme')).kv('source').get('token'), 'acme-token');
    assert.equal((await d.recentRuns(10)).length, 1);
    assert.equal((await d.runLock())?.owner, 'w-default');
    assert.equal((await acme.runLock())?.owner, 'w-acme');
    assert.deepStrictEqual(
      (await backend.listAccounts()).map((a) => [a.id, a.priority, a.config]),
      [
        ['acme', 2, { source: { type: 'constant-contact' } }],
        ['default', 1, null],
      ],
    );
    await assert.rejects(
      backend.account('nobody'),
      (e: Error) => e instanceof ConfigError && /accounts add nobody/.test(e.message),
    );
    await assert.rejects(backend.account('Bad Id'), ConfigError);
  });

  it('lists `default` once it has state or was added; putAccount replaces, keeping createdAt', async () => {
    assert.deepStrictEqual(await backend.listAccounts(), []);
    assert.equal(await backend.getAccount('default'), null);
    const d = await backend.pgAccount('default'); // works without being added
    assert.equal(await d.getCheckpoint('x'), null);
    await d.setCheckpoint('x', '1', T0);
    assert.deepStrictEqual(await backend.listAccounts(), [
      { id: 'default', config: null, priority: 1, createdAt: T0, updatedAt: T0 },
    ]);
    const first = await backend.putAccount({ id: 'b', config: { a: 1 } }, T0);
    assert.deepStrictEqual(first, { id: 'b', config: { a: 1 }, priority: 1, createdAt: T0, updatedAt: T0 });
    const second = await backend.putAccount({ id: 'b', config: { a: 2 }, priority: 0 }, at(1));
    assert.deepStrictEqual(second, { id: 'b', config: { a: 2 }, priority: 0, createdAt: T0, updatedAt: at(1) });
    assert.deepStrictEqual(await backend.getAccount('b'), second);
    await assert.rejects(backend.putAccount({ id: 'b', config: {}, priority: -1 }, T0), /priority/);
    await assert.rejects(backend.putAccount({ id: '-b', config: {} }, T0), /id: "-b" is not an account id/);
  });

  it('removeAccount deletes every row of the account in every table, in one transaction, and nothing else', async () => {
    await backend.putAccount({ id: 'gone', config: {} }, T0);
    for (const id of ['default', 'gone']) {
      const s = await backend.pgAccount(id);
      await s.acquireRunLock({ owner: id, pid: process.pid, host: os.hostname(), command: 'sync', now: T0 });
      const runId = await s.startRun('sync', false, T0);
      await s.commitDetection({
        runId,
        added: [optOut('a@x.com')],
        resubscribed: [],
        targets: ['hs'],
        now: T0,
        checkpoints: { w: T0 },
      });
      await s.recordOutcomes({
        runId,
        target: 'hs',
        now: new Date(T0),
        policy,
        outcomes: [{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }],
      });
      await s.quarantine(runId, 'cc', { reason: 'r', raw: {}, recordId: '1' }, T0);
      await s.openBackfill(null, ['hs'], T0);
      s.kv('source').set('k', 'v');
      await s.close();
    }
    const tables = [
      'cc_outcomes',
      'cc_outbox',
      'cc_opt_outs',
      'cc_checkpoints',
      'cc_kv',
      'cc_runs',
      'cc_quarantine',
      'cc_events',
      'cc_backfills',
      'cc_run_lock',
    ];
    const rowsOf = async (id: string): Promise<number[]> =>
      Promise.all(tables.map((t) => count(backend, `SELECT count(*) AS n FROM ${t} WHERE account = $1`, [id])));
    const defaultRows = await rowsOf('default');
    assert.ok((await rowsOf('gone')).every((n) => n > 0));
    // the delivery history stays append-only for everything else
    await assert.rejects(backend.pool.query(`DELETE FROM cc_outcomes WHERE account = 'gone'`), /append-only/);
    await assert.rejects(backend.pool.query(`UPDATE cc_outcomes SET kind = 'x'`), /append-only/);
    assert.equal(await backend.removeAccount('gone'), true);
    assert.deepStrictEqual(
      await rowsOf('gone'),
      tables.map(() => 0),
    );
    assert.deepStrictEqual(await rowsOf('default'), defaultRows);
    assert.equal(await backend.getAccount('gone'), null);
    await assert.rejects(backend.account('gone'), ConfigError);
    assert.equal(await backend.removeAccount('gone'), false);
  });

  it('never shows the URL password in an open error, and says what to check (a ConfigError naming store.url)', async () => {
    const u = new URL(db.url);
    u.username = 'postgres';
    u.password = 'S3cr%65t-pw';
    u.pathname = '/no_such_database_here';
    const check = (e: unknown, what: RegExp): boolean => {
      assert.ok(e instanceof StoreOpenError && e instanceof ConfigError, String(e));
      assert.doesNotMatch(e.message, /S3cr|%65t|S3cret/);
      assert.doesNotMatch(JSON.stringify(e.problems), /S3cr/);
      assert.match(e.message, /^store\.url: postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/no_such_database_here/);
      assert.equal(e.field, 'store.url');
      assert.match(e.message, what);
      return true;
    };
    await assert.rejects(openPgBackend(u.toString()), (e) =>
      check(e, /database no_such_database_here does not exist: create it/),
    );
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    u.port = String(port);
    // a server not reachable is not a config error (StoreUnreachable: exit 1, `run` waits for it); same message
    await assert.rejects(openPgBackend(u.toString()), (e: Error) => {
      assert.ok(e instanceof StoreUnreachable && !(e instanceof ConfigError), String(e));
      assert.doesNotMatch(e.message, /S3cr|%65t|S3cret/);
      assert.match(e.message, /^store\.url: postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/no_such_database_here/);
      assert.match(e.message, /nothing accepts connections at 127\.0\.0\.1:\d+: is PostgreSQL running/);
      return true;
    });
    // a password as a query parameter is masked too
    const q = new URL(db.url);
    q.pathname = '/no_such_database_here';
    q.searchParams.set('password', 'Qp4ss-word');
    await assert.rejects(openPgBackend(q.toString()), (e: Error) => {
      assert.ok(e instanceof StoreOpenError, String(e));
      assert.doesNotMatch(e.message, /Qp4ss/);
      assert.match(e.message, /password=\*\*\*/);
      return true;
    });
    await assert.rejects(
      openPgBackend('postgres://u:pw@[bad'),
      (e: Error) => e instanceof StoreOpenError && !/pw/.test(e.message.replace('postgres://', '')),
    );
  });

  it('serialises startRun across instances: distinct ids, exactly one run left running', async () => {
    const other = await backendOn(db.url);
    try {
      const a = await backend.pgAccount('default');
      const b = await other.pgAccount('default');
      const ids = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).startRun('sync', false, at(i))),
      );
      assert.deepStrictEqual(
        [...ids].sort((x, y) => x - y),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      const states = await backend.pool.query(
        `SELECT status, count(*) AS n FROM cc_runs GROUP BY status ORDER BY status`,
      );
      assert.deepStrictEqual(
        states.rows.map((r) => [r.status, r.n]),
        [
          ['abandoned', 19],
          ['running', 1],
        ],
      );
      const running = await backend.pool.query(`SELECT id FROM cc_runs WHERE status = 'running'`);
      assert.equal(running.rows[0].id, 20);
    } finally {
      await other.close();
    }
  });

  it('under fleet leases (no run lock) a run is running while its owner holds a lease of the account; lanes run side by side', async () => {
    // the fleet's lease table (src/fleet/postgres.ts, migration set "fleet"): the columns the store reads
    await backend.pool.query(
      `CREATE TABLE cc_leases (key text PRIMARY KEY, account text NOT NULL, target text, owner text, fence bigint NOT NULL DEFAULT 0,
         expires_at timestamptz, next_due_at timestamptz NOT NULL DEFAULT now())`,
    );
    const lease = (key: string, target: string | null, owner: string, expires: string) =>
      backend.pool.query(
        `INSERT INTO cc_leases (key, account, target, owner, expires_at) VALUES ($1, 'default', $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at`,
        [key, target, owner, expires],
      );
    await lease('account:default', null, 'w1', at(10));
    await lease('deliver:default:hs', 'hs', 'w2', at(10));
    const guard: PgFenceGuard = { check: async () => undefined };
    const detect = await backend.pgAccount('default', { guard });
    const deliver = await backend.pgAccount('default', { guard });
    const who = (owner: string) => ({ owner, pid: process.pid, host: os.hostname() });
    const crashed = await detect.startRun('sync', false, T0, who('w0')); // a worker that died: no lease any more
    const d = await detect.startRun('sync', false, at(1), who('w1'));
    const l = await deliver.startRun('deliver', false, at(1), who('w2'));
    const status = async (when: string) =>
      new Map((await detect.recentRuns(10, new Date(when))).map((r) => [r.id, r.status]));
    assert.deepStrictEqual(
      await status(at(2)),
      new Map([
        [l, 'running'],
        [d, 'running'],
        [crashed, 'abandoned'],
      ]),
    );
    const stored = await backend.pool.query(`SELECT id, status FROM cc_runs ORDER BY id`);
    assert.deepStrictEqual(
      stored.rows.map((r) => [r.id, r.status]),
      [
        [crashed, 'abandoned'],
        [d, 'running'],
        [l, 'running'],
      ],
    );
    // once w1's lease lapsed, its run reads abandoned; w2's is still running
    assert.deepStrictEqual(
      await status(at(11)),
      new Map([
        [l, 'abandoned'],
        [d, 'abandoned'],
        [crashed, 'abandoned'],
      ]),
    );
    await lease('deliver:default:hs', 'hs', 'w2', at(30));
    assert.equal((await detect.getRun(l, new Date(at(11))))!.status, 'running');
    assert.equal((await detect.getRun(d, new Date(at(11))))!.status, 'abandoned');
  });

  it('recordOutcomes from two instances at once: each reads the row after the other wrote it (row locks)', async () => {
    const other = await backendOn(db.url);
    try {
      const a = await backend.pgAccount('default');
      const b = await other.pgAccount('default');
      const runId = await a.startRun('sync', false, T0);
      const emails = Array.from({ length: 50 }, (_, i) => `r${i}@x.com`);
      await a.commitDetection({
        runId,
        added: emails.map((e) => optOut(e)),
        resubscribed: [],
        targets: ['hs'],
        now: T0,
      });
      const retry = (s: typeof a, order: string[]) =>
        s.recordOutcomes({
          runId,
          target: 'hs',
          now: new Date(T0),
          policy: { ...policy, maxAttempts: 10 },
          outcomes: order.map((email) => ({ email, kind: 'failed-retryable' as const, recordIds: [], message: 'x' })),
        });
      // opposite orders: the store locks rows in one order, so neither deadlocks
      await Promise.all([retry(a, emails), retry(b, [...emails].reverse()), retry(a, emails)]);
      const rows = await a.queuedOutbox('hs', 100, 0);
      assert.deepStrictEqual(
        rows.map((r) => r.attempts),
        emails.map(() => 3),
      );
      const history = await a.deliveryHistory(null);
      const attempts = new Map<string, number[]>();
      for (const h of history) attempts.set(h.email, [...(attempts.get(h.email) ?? []), h.attempt]);
      for (const e of emails) assert.deepStrictEqual(attempts.get(e), [1, 2, 3], e);
    } finally {
      await other.close();
    }
  });

  it('the run lock is one per account across instances; a store whose lock was taken over writes nothing (LeaseLost)', async () => {
    const other = await backendOn(db.url);
    try {
      const a = await backend.pgAccount('default');
      const b = await other.pgAccount('default');
      const who = { pid: 999_999, host: 'host-a', command: 'sync' };
      await a.acquireRunLock({ ...who, owner: 'A', now: T0, leaseMs: 60_000 });
      await assert.rejects(
        b.acquireRunLock({ ...who, host: 'host-b', owner: 'B', now: at(0.5) }),
        (e: Error) => e instanceof RunLocked && /pid 999999 on host-a/.test(e.message),
      );
      // both at once: exactly one wins
      const [x, y] = await Promise.allSettled([
        a.acquireRunLock({ ...who, owner: 'A2', now: at(0.5) }),
        b.acquireRunLock({ ...who, host: 'host-b', owner: 'B', now: at(0.5) }),
      ]);
      assert.deepStrictEqual([x.status, y.status], ['fulfilled', 'rejected']);
      await b.acquireRunLock({ ...who, host: 'host-b', owner: 'B', now: at(5) }); // expired: taken over
      await assert.rejects(a.setCheckpoint('w', 'zombie', at(5)), LeaseLost);
      await assert.rejects(
        a.commitDetection({ runId: 1, added: [optOut('z@x.com')], resubscribed: [], targets: ['hs'], now: at(5) }),
        LeaseLost,
      );
      assert.equal(await b.getCheckpoint('w'), null);
      assert.deepStrictEqual(await b.countOptOuts(), { active: 0, left: 0 });
      assert.equal(await a.renewRunLock('A2', at(5)), false);
      await b.setCheckpoint('w', 'successor', at(5));
      assert.equal(await a.getCheckpoint('w'), 'successor');
    } finally {
      await other.close();
    }
  });

  it('commits a detection of 1,000 opt-outs x 2 targets well under a second (batched)', async function () {
    const s = await backend.pgAccount('default');
    const runId = await s.startRun('sync', false, T0);
    // warm up the pool and the plans
    await s.commitDetection({ runId, added: [optOut('warm@x.com')], resubscribed: [], targets: ['hs', 'sf'], now: T0 });
    const added = Array.from({ length: 1000 }, (_, i) => optOut(`p${i}@x.com`, at(-i)));
    const t0 = process.hrtime.bigint();
    await s.commitDetection({ runId, added, resubscribed: [], targets: ['hs', 'sf'], now: T0, checkpoints: { w: T0 } });
    const detectMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const t1 = process.hrtime.bigint();
    await s.dueOutbox('hs', new Date(T0), 100); // the first read of new rows also sets their hint bits
    const firstDueMs = Number(process.hrtime.bigint() - t1) / 1e6;
    const t1b = process.hrtime.bigint();
    const due = await s.dueOutbox('hs', new Date(T0), 100);
    const dueMs = Number(process.hrtime.bigint() - t1b) / 1e6;
    const t2 = process.hrtime.bigint();
    await s.recordOutcomes({
      runId,
      target: 'hs',
      now: new Date(T0),
      policy,
      outcomes: due.map((r) => ({ email: r.optOut.email, kind: 'applied' as const, recordIds: ['1'] })),
    });
    const outcomesMs = Number(process.hrtime.bigint() - t2) / 1e6;
    const t3 = process.hrtime.bigint();
    const n = await s.enqueueKnown({ runId, targets: ['t3', 't4'], since: null, redeliver: false, now: T0 });
    const enqueueMs = Number(process.hrtime.bigint() - t3) / 1e6;
    const t4 = process.hrtime.bigint();
    const status = await s.targetStatus(['hs', 'sf', 't3', 't4'], new Date(T0));
    const statusMs = Number(process.hrtime.bigint() - t4) / 1e6;
    assert.equal(n, 2002);
    assert.equal(status[0]!.queued, 901);
    assert.equal(status[1]!.queued, 1001);
    console.log(
      `      pg: commitDetection 1000x2 ${detectMs.toFixed(0)} ms; dueOutbox(100) first ${firstDueMs.toFixed(1)} ms, then ${dueMs.toFixed(1)} ms; ` +
        `recordOutcomes(100) ${outcomesMs.toFixed(1)} ms; enqueueKnown 1001x2 ${enqueueMs.toFixed(0)} ms; ` +
        `targetStatus(4) ${statusMs.toFixed(1)} ms`,
    );
    assert.ok(detectMs < 1000, `commitDetection took ${detectMs} ms`);
  });
});
