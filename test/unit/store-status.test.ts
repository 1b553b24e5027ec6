/**
 * `status` on a large store (issue 12 item 5): the counts it shows are kept by triggers (migration 6) and equal
 * what counting the rows says, after every kind of change and after migrating a store that already has data;
 * the queries it runs use indexes (no full scan of the outbox, opt-outs or events); the store imports only the
 * domain and its own types.
 */
import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { OptOut, Outcome } from '../../src/domain';
import { MIGRATIONS, SqliteStateStore } from '../../src/store/sqlite';

const POLICY = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };
const T0 = new Date('2026-06-01T12:00:00Z');
const TARGETS = ['hubspot', 'salesforce'];

function optOut(i: number): OptOut {
  return {
    email: `p${i}@x.com`,
    contactId: `c${i}`,
    optedOutAt: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
    source: 'Contact',
    reason: null,
    deleted: false,
  };
}

/** What status showed before migration 6: counted from the rows themselves. */
function counted(db: Database.Database, target: string, now: Date) {
  const rows = db
    .prepare(`SELECT state, outcome, COUNT(*) n FROM outbox WHERE target = ? GROUP BY state, outcome`)
    .all(target) as { state: string; outcome: string | null; n: number }[];
  const done: Record<string, number> = {};
  let queued = 0;
  let parked = 0;
  for (const c of rows) {
    if (c.state === 'queued') queued += c.n;
    else if (c.state === 'parked') parked += c.n;
    else if (c.outcome) done[c.outcome] = (done[c.outcome] ?? 0) + c.n;
  }
  return {
    target,
    queued,
    due: db
      .prepare(`SELECT COUNT(*) FROM outbox WHERE target = ? AND state = 'queued' AND next_attempt_at <= ?`)
      .pluck()
      .get(target, now.toISOString()) as number,
    parked,
    done,
    oldestQueuedOptOutAt: db
      .prepare(
        `SELECT MIN(p.opted_out_at) FROM outbox o JOIN opt_outs p ON p.email = o.email WHERE o.target = ? AND o.state = 'queued'`,
      )
      .pluck()
      .get(target) as string | null,
    oldestQueuedAt: db
      .prepare(`SELECT MIN(enqueued_at) FROM outbox WHERE target = ? AND state = 'queued'`)
      .pluck()
      .get(target) as string | null,
    lastDeliveredAt: db
      .prepare(`SELECT MAX(completed_at) FROM outbox WHERE target = ? AND state = 'done'`)
      .pluck()
      .get(target) as string | null,
  };
}

function countedOptOuts(db: Database.Database) {
  const rows = db.prepare(`SELECT state, COUNT(*) n FROM opt_outs GROUP BY state`).all() as {
    state: string;
    n: number;
  }[];
  return { active: rows.find((r) => r.state === 'active')?.n ?? 0, left: rows.find((r) => r.state === 'left')?.n ?? 0 };
}

function kept(db: Database.Database): { target: string; state: string; outcome: string; n: number }[] {
  return db.prepare(`SELECT target, state, outcome, n FROM outbox_counts WHERE n != 0 ORDER BY 1, 2, 3`).all() as {
    target: string;
    state: string;
    outcome: string;
    n: number;
  }[];
}

function assertAgrees(store: SqliteStateStore, now: Date, what: string): void {
  assert.deepStrictEqual(
    store.targetStatus(TARGETS, now),
    TARGETS.map((t) => counted(store.db, t, now)),
    `targetStatus after ${what}`,
  );
  assert.deepStrictEqual(store.countOptOuts(), countedOptOuts(store.db), `countOptOuts after ${what}`);
  const recount = store.db
    .prepare(
      `SELECT target, state, COALESCE(outcome, '') outcome, COUNT(*) n FROM outbox GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
    )
    .all() as { target: string; state: string; outcome: string; n: number }[];
  assert.deepStrictEqual(kept(store.db), recount, `the kept outbox counts after ${what}`);
}

function outcomes(emails: string[], kind: Outcome['kind']): Outcome[] {
  return emails.map((email) => ({
    email,
    kind,
    recordIds: kind === 'applied' ? ['r1'] : [],
    message: kind.startsWith('failed') ? 'boom' : undefined,
  }));
}

/** Mixed outcomes, retries, parked rows, requeue, redeliveries, not-found rechecks, deferrals, leavers. */
function exercise(store: SqliteStateStore, check: (what: string, now: Date) => void): void {
  const runId = store.startRun('sync', false, T0.toISOString());
  const people = Array.from({ length: 300 }, (_, i) => optOut(i));
  for (let i = 0; i < people.length; i += 50)
    store.commitDetection({
      runId,
      added: people.slice(i, i + 50),
      resubscribed: [],
      targets: TARGETS,
      now: T0.toISOString(),
    });
  check('detection', T0);
  const e = (from: number, to: number) => people.slice(from, to).map((p) => p.email);
  const rec = (target: string, list: Outcome[], at: Date, deferUntil?: Date) =>
    store.recordOutcomes({ runId, target, outcomes: list, now: at, policy: POLICY, random: () => 0.5, deferUntil });
  const t1 = new Date(T0.getTime() + 60_000);
  rec(
    'hubspot',
    [
      ...outcomes(e(0, 100), 'applied'),
      ...outcomes(e(100, 130), 'already-suppressed'),
      ...outcomes(e(130, 160), 'not-found'),
      ...outcomes(e(160, 180), 'failed-permanent'),
      ...outcomes(e(180, 200), 'failed-retryable'),
    ],
    t1,
  );
  rec(
    'salesforce',
    [...outcomes(e(0, 50), 'applied'), ...outcomes(e(50, 60), 'failed-retryable')],
    t1,
    new Date(T0.getTime() + 3600_000),
  );
  check('mixed outcomes', t1);
  // retries until parked (maxAttempts 3)
  for (let k = 2; k <= 3; k++)
    rec('hubspot', outcomes(e(180, 200), 'failed-retryable'), new Date(T0.getTime() + k * 86400_000));
  check('retries that gave up', new Date(T0.getTime() + 3 * 86400_000));
  assert.strictEqual(store.requeueParked('hubspot', new Date(T0.getTime() + 4 * 86400_000).toISOString()), 40);
  check('requeue of parked rows', new Date(T0.getTime() + 4 * 86400_000));
  const t5 = new Date(T0.getTime() + 5 * 86400_000);
  store.requeueNotFound(new Date(t5.getTime() - 86400_000).toISOString(), t5.toISOString());
  store.deferQueued('salesforce', new Date(t5.getTime() + 3600_000).toISOString());
  check('not-found recheck and a dated stop', t5);
  // redelivery of delivered rows (backfill --redeliver), delivered again as already suppressed
  const run2 = store.startRun('backfill', false, t5.toISOString());
  store.enqueueKnown({ runId: run2, targets: ['hubspot'], since: null, redeliver: true, now: t5.toISOString() });
  check('a redeliver', t5);
  rec('hubspot', outcomes(e(0, 100), 'already-suppressed'), new Date(t5.getTime() + 60_000));
  // some left the unsubscribed set, one came back
  store.commitDetection({ runId: run2, added: [], resubscribed: e(290, 300), targets: TARGETS, now: t5.toISOString() });
  store.commitDetection({
    runId: run2,
    added: [{ ...optOut(299), optedOutAt: '2019-01-01T00:00:00.000Z' }],
    resubscribed: [],
    targets: TARGETS,
    now: new Date(t5.getTime() + 120_000).toISOString(),
  });
  check('leavers and a return with an earlier opt-out date', new Date(t5.getTime() + 180_000));
  // a queued opt-out seen again with another date (the oldest queued opt-out follows it)
  store.commitDetection({
    runId: run2,
    added: [{ ...optOut(250), optedOutAt: '2018-06-01T00:00:00.000Z' }],
    resubscribed: [],
    targets: TARGETS,
    now: new Date(t5.getTime() + 200_000).toISOString(),
  });
  assert.strictEqual(store.targetStatus(['hubspot'], t5)[0]!.oldestQueuedOptOutAt, '2018-06-01T00:00:00.000Z');
  check('a queued opt-out re-dated', new Date(t5.getTime() + 240_000));
}

describe('store: the counts `status` shows', () => {
  it('are kept equal to counting the rows, through every kind of change', () => {
    const store = new SqliteStateStore(':memory:');
    exercise(store, (what, now) => assertAgrees(store, now, what));
    assert.deepStrictEqual(store.countOptOuts(), { active: 291, left: 9 });
    store.close();
  });

  it('are filled in by the migration from a store that already has data, and kept from then on', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-optout-status-'));
    try {
      const file = path.join(dir, 'state.db');
      // a store as the previous version left it: every migration before the counts, with rows in it
      const mine = MIGRATIONS.findIndex((m) => m.includes('CREATE TABLE outbox_counts'));
      assert.ok(mine > 0, 'the counts migration exists');
      const old = new Database(file);
      old.function('cc_sha256', (v: unknown) => String(v));
      for (let v = 0; v < mine; v++) old.exec(MIGRATIONS[v]!);
      old.pragma(`user_version = ${mine}`);
      const ins = old.prepare(
        `INSERT INTO opt_outs (email, contact_id, opted_out_at, state, first_seen_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)`,
      );
      const box = old.prepare(
        `INSERT INTO outbox (target, email, state, enqueued_at, attempts, next_attempt_at, outcome, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const at = T0.toISOString();
      old.transaction(() => {
        for (let i = 0; i < 120; i++) {
          const p = optOut(i);
          ins.run(p.email, p.contactId, p.optedOutAt, i % 10 === 0 ? 'left' : 'active', at, at);
          const kind = ['applied', 'not-found', 'already-suppressed'][i % 3]!;
          box.run(
            'hubspot',
            p.email,
            i < 90 ? 'done' : i < 100 ? 'parked' : 'queued',
            at,
            1,
            i % 2 ? at : '2030-01-01T00:00:00.000Z',
            i < 90 ? kind : i < 100 ? 'failed-permanent' : i % 4 ? 'failed-retryable' : null,
            i < 100 ? new Date(T0.getTime() + i * 1000).toISOString() : null,
          );
          if (i % 2 === 0) box.run('salesforce', p.email, 'queued', at, 0, at, null, null);
        }
      })();
      old.close();
      const store = new SqliteStateStore(file);
      assert.strictEqual(store.schemaVersion, MIGRATIONS.length);
      assertAgrees(store, new Date(T0.getTime() + 3600_000), 'the migration');
      assert.deepStrictEqual(store.countOptOuts(), { active: 108, left: 12 });
      // and from then on the triggers keep them
      store.recordOutcomes({
        runId: 1,
        target: 'salesforce',
        outcomes: outcomes(['p0@x.com', 'p2@x.com'], 'applied'),
        now: T0,
        policy: POLICY,
      });
      store.requeueParked(null, T0.toISOString());
      assertAgrees(store, T0, 'changes after the migration');
      store.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('are read through indexes: no full scan of the outbox, the opt-outs or the events', () => {
    const store = new SqliteStateStore(':memory:');
    exercise(store, () => undefined);
    const texts: string[] = [];
    const db = store.db;
    const prepare = db.prepare.bind(db);
    (db as { prepare: unknown }).prepare = (sql: string) => {
      texts.push(sql);
      return prepare(sql);
    };
    // status's reads, none of them prepared before (the store prepares each SQL text once)
    store.targetStatus(TARGETS, T0);
    store.countOptOuts();
    const left = store.events(null, ['left-unsubscribed-set']);
    assert.strictEqual(left.length, 10);
    assert.ok(left.every((x) => x.kind === 'left-unsubscribed-set'));
    assert.ok(texts.length > 0);
    for (const sql of texts) {
      const named = [...new Set([...sql.matchAll(/@(\w+)/g)].map((m) => m[1]!))];
      const args =
        named.length > 0
          ? [Object.fromEntries(named.map((n) => [n, 'x']))]
          : Array.from({ length: (sql.match(/\?/g) ?? []).length }, () => 'x');
      const plan = (prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[]).map((r) => r.detail);
      const scans = plan.filter(
        (d) => /^SCAN (outbox|opt_outs|events|o|p)\b/.test(d) && !/USING (COVERING )?INDEX/.test(d),
      );
      assert.deepStrictEqual(scans, [], `${sql.trim()}\n  plan: ${plan.join(' | ')}`);
    }
    store.close();
  });

  it('the store imports only the domain and its own types (not the source, the registry or the config)', () => {
    for (const f of ['sqlite.js', 'types.js', 'lease.js', 'rows.js']) {
      const js = fs.readFileSync(path.join(__dirname, '..', '..', 'src', 'store', f), 'utf8');
      const local = [...js.matchAll(/require\("(\.[^"]+)"\)/g)].map((m) => m[1]!);
      for (const r of local) assert.ok(['../domain', './types', './rows'].includes(r), `store/${f} requires ${r}`);
    }
  });
});
