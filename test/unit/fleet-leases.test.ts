/**
 * Leases with fencing (src/fleet): the same behaviour on PostgreSQL (a real server, SKIP LOCKED) and SQLite.
 * Times are the caller's (`time: 'caller'` on PostgreSQL) so expiry is exact; one test runs on the
 * database's clock, the production default.
 */
import { strict as assert } from 'assert';
import Database from 'better-sqlite3';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Pool } from 'pg';
import {
  accountLeaseKey,
  createPgLeases,
  createSqliteLeases,
  deliverLeaseKey,
  HeldLease,
  Leases,
  StaleFence,
} from '../../src/fleet';
import { openPgPool } from '../../src/store/pg/pool';
import { LeaseLost } from '../../src/store/types';
import { freshDatabase, pgSkipped } from '../support/postgres';

const T0 = new Date('2026-12-01T10:00:00Z');
const at = (ms: number): Date => new Date(T0.getTime() + ms);
const TTL = 30_000;

interface Backend {
  leases: Leases;
  /** Run the guard's check the way a store's write transaction does. */
  guarded(held: readonly HeldLease[], scope: { account: string; target?: string }): Promise<void>;
  close(): Promise<void>;
}

type Factory = () => Promise<Backend>;

async function pgBackend(): Promise<Backend> {
  const db = await freshDatabase('leases');
  const pool = openPgPool(db.url);
  const leases = createPgLeases(pool, { time: 'caller' });
  return {
    leases,
    async guarded(held, scope) {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await leases.guard(held).check(c, scope);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK');
        throw err;
      } finally {
        c.release();
      }
    },
    close: async () => {
      await pool.end();
      await db.drop();
    },
  };
}

async function sqliteBackend(): Promise<Backend> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-fleet-leases-'));
  const db = new Database(path.join(dir, 'state.db'));
  const leases = createSqliteLeases(db);
  return {
    leases,
    guarded: (held, scope) => leases.guard(held).check(undefined as never, scope),
    close: async () => {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function suite(name: string, factory: Factory, skip: () => boolean): void {
  describe(`fleet leases: ${name}`, function () {
    this.timeout(60_000);
    let b: Backend;
    beforeEach(async function () {
      if (skip()) this.skip();
      b = await factory();
    });
    afterEach(async () => b?.close());

    async function seed(n: number, dueMs = 0): Promise<void> {
      for (let i = 0; i < n; i++) {
        const id = `a${String(i).padStart(2, '0')}`;
        await b.leases.ensure(accountLeaseKey(id), id, null, at(dueMs).toISOString());
      }
    }

    it('claims due keys once: fence 1, disjoint between owners, highest priority and longest-due first', async () => {
      await seed(5);
      await b.leases.ensure(accountLeaseKey('late'), 'late', null, at(60_000).toISOString());
      await b.leases.ensure(accountLeaseKey('vip'), 'vip', null, at(30).toISOString(), 5);
      const w1 = await b.leases.claim('w1', 3, TTL, at(100));
      assert.deepEqual(
        w1.map((l) => l.key),
        ['account:vip', 'account:a00', 'account:a01'],
      );
      assert.ok(w1.every((l) => l.fence === 1 && l.owner === 'w1'));
      assert.equal(w1[0]!.expiresAt, at(100 + TTL).toISOString());
      const w2 = await b.leases.claim('w2', 10, TTL, at(200));
      assert.deepEqual(
        w2.map((l) => l.key),
        ['account:a02', 'account:a03', 'account:a04'],
        'not the live ones of w1, not the one due later',
      );
      assert.deepEqual(await b.leases.claim('w3', 10, TTL, at(300)), []);
      const rows = await b.leases.list();
      assert.equal(rows.find((r) => r.key === 'account:late')!.owner, null);
      assert.equal(rows.find((r) => r.key === 'account:vip')!.owner, 'w1');
    });

    it('an expired lease is taken over with the next fence; the old owner can neither renew, release nor write', async () => {
      await seed(1);
      const [old] = await b.leases.claim('w1', 1, TTL, at(0));
      assert.ok(await b.leases.renew(old!, TTL, at(20_000)), 'renewed while live');
      assert.deepEqual(await b.leases.claim('w2', 1, TTL, at(TTL + 10_000)), [], 'the renewal moved the expiry');
      await b.guarded([old!], { account: 'a00' });
      const [next] = await b.leases.claim('w2', 1, TTL, at(20_000 + TTL + 1));
      assert.equal(next!.fence, 2);
      assert.equal(await b.leases.renew(old!, TTL, at(60_000)), false);
      await assert.rejects(b.guarded([old!], { account: 'a00' }), (err: unknown) => {
        assert.ok(err instanceof StaleFence && err instanceof LeaseLost);
        assert.equal(err.held, 1);
        assert.equal(err.current, 2);
        assert.match(err.message, /fence 1 is stale \(now 2\)/);
        return true;
      });
      assert.equal(await b.leases.release(old!, null), false, 'a stale release changes nothing');
      assert.equal((await b.leases.list())[0]!.owner, 'w2');
      await b.guarded([next!], { account: 'a00' });
    });

    it('release: due again at nextDueAt, records the poll; the released holder is refused (released)', async () => {
      await seed(1);
      const [l] = await b.leases.claim('w1', 1, TTL, at(0));
      assert.ok(
        await b.leases.release(l!, at(3_600_000).toISOString(), { at: at(5).toISOString(), calls: 4, found: 2 }),
      );
      let row = (await b.leases.list())[0]!;
      assert.equal(row.owner, null);
      assert.equal(row.expiresAt, null);
      assert.equal(row.nextDueAt, at(3_600_000).toISOString());
      assert.equal(row.lastPollAt, at(5).toISOString());
      assert.equal(row.idleStreak, 0);
      assert.equal(row.callsPerPoll, 4);
      assert.equal(row.polls, 1);
      await assert.rejects(b.guarded([l!], { account: 'a00' }), /fence 1 is stale \(now released\)/);
      assert.deepEqual(await b.leases.claim('w2', 1, TTL, at(3_599_999)), [], 'not due yet');
      const [l2] = await b.leases.claim('w2', 1, TTL, at(3_600_000));
      assert.equal(l2!.fence, 2);
      await b.leases.release(l2!, at(7_200_000).toISOString(), { at: at(3_600_001).toISOString(), calls: 1, found: 0 });
      row = (await b.leases.get('account:a00'))!;
      assert.equal(await b.leases.get('account:nope'), null);
      assert.equal(row.idleStreak, 1);
      assert.ok(Math.abs(row.callsPerPoll - (4 * 0.8 + 1 * 0.2)) < 1e-9);
      // a handover (null) keeps it due
      const [l3] = await b.leases.claim('w3', 1, TTL, at(7_200_000));
      await b.leases.release(l3!, null);
      assert.equal((await b.leases.claim('w4', 1, TTL, at(7_200_001)))[0]!.fence, 4);
    });

    it('kinds and priority 0: deliver lanes apart from detection; a paused account is never claimed', async () => {
      await b.leases.ensure(accountLeaseKey('a'), 'a', null, at(0).toISOString());
      await b.leases.ensure(deliverLeaseKey('a', 'hubspot'), 'a', 'hubspot', at(0).toISOString());
      await b.leases.ensure(accountLeaseKey('p'), 'p', null, at(0).toISOString(), 0);
      const d = await b.leases.claim('w1', 10, TTL, at(1), ['deliver']);
      assert.deepEqual(
        d.map((l) => l.key),
        ['deliver:a:hubspot'],
      );
      const a = await b.leases.claim('w1', 10, TTL, at(1), ['account']);
      assert.deepEqual(
        a.map((l) => l.key),
        ['account:a'],
      );
      await b.leases.ensure(accountLeaseKey('p'), 'p', null, at(0).toISOString()); // no priority: unchanged
      await b.leases.ensure(accountLeaseKey('q'), 'q', null, at(0).toISOString(), 3);
      const [q] = await b.leases.claim('w1', 1, TTL, at(1));
      await b.leases.release(q!, at(10).toISOString(), { at: at(1).toISOString(), calls: 2, found: 5 });
      // a (never polled: weight 1) + q (priority 3, just found opt-outs: weight 2); the paused p is left out
      assert.deepEqual(await b.leases.summary(), { accounts: 2, prioritySum: 4, weightSum: 1 + 3 * 2 });
      assert.deepEqual(await b.leases.claim('w1', 10, TTL, at(2)), []);
      await b.leases.forget('a');
      assert.deepEqual(
        (await b.leases.list()).map((r) => r.key),
        ['account:p', 'account:q'],
      );
    });

    it('the guard checks the deliver lease of the write target when held, else the account lease', async () => {
      await b.leases.ensure(accountLeaseKey('a'), 'a', null, at(0).toISOString());
      await b.leases.ensure(deliverLeaseKey('a', 'hubspot'), 'a', 'hubspot', at(0).toISOString());
      const [acc] = await b.leases.claim('w1', 1, TTL, at(0), ['account']);
      const [del] = await b.leases.claim('w2', 1, TTL, at(0), ['deliver']);
      await b.guarded([del!], { account: 'a', target: 'hubspot' });
      await assert.rejects(b.guarded([del!], { account: 'b', target: 'hubspot' }), /no lease is held for account b/);
      await b.guarded([acc!], { account: 'a', target: 'salesforce' });
      // the deliver lease moves on: a write to hubspot under it is refused even though the account lease holds
      await b.leases.claim('w3', 1, TTL, at(TTL + 1), ['deliver']);
      await b.leases.renew(acc!, TTL, at(TTL));
      await assert.rejects(b.guarded([acc!, del!], { account: 'a', target: 'hubspot' }), StaleFence);
      await b.guarded([acc!, del!], { account: 'a' });
    });

    it('names the problem in bad input', async () => {
      await assert.rejects(
        b.leases.ensure('account:x', 'y', null, at(0).toISOString()),
        /lease key "account:x": expected "account:y"/,
      );
      await assert.rejects(b.leases.ensure('account:x', 'x', null, 'soon'), /dueAt: "soon" is not an ISO-8601 instant/);
      await assert.rejects(b.leases.claim('w', 1, 0, at(0)), /ttlMs must be a positive number/);
    });
  });
}

suite('PostgreSQL', pgBackend, pgSkipped);
suite('SQLite', sqliteBackend, () => false);

describe('fleet leases: PostgreSQL concurrency and the database clock', function () {
  this.timeout(60_000);
  let db: { url: string; drop: () => Promise<void> };
  const pools: Pool[] = [];
  before(async function () {
    if (pgSkipped()) this.skip();
    db = await freshDatabase('leases_conc');
    for (let i = 0; i < 6; i++) pools.push(openPgPool(db.url, { max: 2 }));
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db?.drop();
  });

  it('six workers claiming at once get disjoint keys and together all of them', async () => {
    const setup = createPgLeases(pools[0]!);
    const now = new Date();
    for (let i = 0; i < 60; i++) await setup.ensure(accountLeaseKey(`c${i}`), `c${i}`, null, new Date(0).toISOString());
    const got = await Promise.all(
      pools.map(async (p, w) => {
        const l = createPgLeases(p);
        const mine: string[] = [];
        for (let round = 0; round < 6; round++)
          mine.push(...(await l.claim(`w${w}`, 4, 30_000, now)).map((x) => x.key));
        return mine;
      }),
    );
    const all = got.flat();
    assert.equal(new Set(all).size, all.length, 'no key claimed twice');
    assert.equal(all.length, 60);
    const rows = await setup.list();
    assert.ok(rows.every((r) => r.fence === 1 && r.owner !== null));
  });

  it('runs on the database clock: the passed now is ignored for expiry', async () => {
    const l = createPgLeases(pools[0]!);
    await l.ensure(accountLeaseKey('clock'), 'clock', null, new Date(0).toISOString());
    const far = new Date('2099-01-01T00:00:00Z'); // a worker whose clock is far ahead
    const claimed = (await l.claim('fast', 100, 30_000, far)).find((x) => x.key === 'account:clock');
    assert.ok(claimed, 'claimed');
    assert.ok(Math.abs(Date.parse(claimed.expiresAt) - (Date.now() + 30_000)) < 10_000, claimed.expiresAt);
    // the far-ahead clock does not make it look expired to another worker
    assert.deepEqual(
      (await l.claim('other', 100, 30_000, far)).filter((x) => x.key === 'account:clock'),
      [],
    );
  });

  it('a guarded write in progress holds the row: a takeover skips it until the write commits', async () => {
    const l = createPgLeases(pools[1]!, { time: 'caller' });
    await l.ensure(accountLeaseKey('held'), 'held', null, at(0).toISOString());
    const [mine] = (await l.claim('w1', 100, 1000, at(0))).filter((x) => x.key === 'account:held');
    const c = await pools[2]!.connect();
    try {
      await c.query('BEGIN');
      await l.guard([mine!]).check(c, { account: 'held' });
      const during = await createPgLeases(pools[3]!, { time: 'caller' }).claim('w2', 100, 1000, at(5000));
      assert.deepEqual(
        during.filter((x) => x.key === 'account:held'),
        [],
        'not taken while the write holds it',
      );
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    const after = await createPgLeases(pools[3]!, { time: 'caller' }).claim('w2', 100, 1000, at(5000));
    assert.equal(after.find((x) => x.key === 'account:held')!.fence, 2);
  });
});
