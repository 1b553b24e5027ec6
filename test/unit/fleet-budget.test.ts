/**
 * The shared Constant Contact budget (src/fleet): per-second slots, the daily ledger with its reserve, the
 * token endpoint's slot, quota_exceeded for everyone; the same on PostgreSQL and SQLite.
 */
import { strict as assert } from 'assert';
import Database from 'better-sqlite3';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Pool } from 'pg';
import { createPgBudget, createSqliteBudget, SharedBudget, SharedBudgetExhausted } from '../../src/fleet';
import { openPgPool } from '../../src/store/pg/pool';
import { freshDatabase, pgSkipped } from '../support/postgres';

const T0 = new Date('2026-12-01T10:00:00Z');
const at = (ms: number): Date => new Date(T0.getTime() + ms);
const APP = 'client-id-1';

interface Backend {
  budget: SharedBudget;
  close(): Promise<void>;
}

function suite(name: string, factory: () => Promise<Backend>, skip: () => boolean): void {
  describe(`fleet budget: ${name}`, function () {
    this.timeout(60_000);
    let b: Backend;
    beforeEach(async function () {
      if (skip()) this.skip();
      b = await factory();
    });
    afterEach(async () => b?.close());

    it('spaces grants 1000/perSecond ms apart from now (3.5/s: 285.7 ms) and says how long to wait', async () => {
      await b.budget.configure(APP, { dailyLimit: 100, perSecond: 3.5, reserve: 0 });
      const grants = [];
      for (let i = 0; i < 8; i++) grants.push(await b.budget.reserve(APP, at(0)));
      const spacing = 1000 / 3.5;
      grants.forEach((g, i) => {
        assert.ok(Math.abs(g.at.getTime() - (T0.getTime() + i * spacing)) <= 1, `grant ${i} at ${g.at.toISOString()}`);
        assert.ok(Math.abs(g.waitMs - i * spacing) <= 1, `grant ${i} waits ${g.waitMs}`);
      });
      // sliding 1000 ms windows: never more than floor(1000 / 285.7) + 1 = 4 grants
      const times = grants.map((g) => g.at.getTime());
      for (const t of times) assert.ok(times.filter((u) => u >= t && u < t + 1000).length <= 4);
      // after a quiet spell the next grant is at once
      const later = await b.budget.reserve(APP, at(10_000));
      assert.equal(later.at.getTime(), at(10_000).getTime());
      assert.equal(later.waitMs, 0);
      assert.equal((await b.budget.state(APP, at(10_000))).used, 9);
    });

    it('never grants more than the daily limit; the reserve is for reserved calls only', async () => {
      await b.budget.configure(APP, { dailyLimit: 10, perSecond: 1000, reserve: 2 });
      for (let i = 0; i < 8; i++) await b.budget.reserve(APP, at(i));
      await assert.rejects(b.budget.reserve(APP, at(9)), (err: unknown) => {
        assert.ok(err instanceof SharedBudgetExhausted);
        assert.match(err.message, /client-id-1: today's request budget \(2026-12-01 UTC\) is spent/);
        return true;
      });
      let s = await b.budget.state(APP, at(9));
      assert.deepEqual(
        { used: s.used, limit: s.limit, reserve: s.reserve, remaining: s.remaining, spent: s.spent },
        { used: 8, limit: 10, reserve: 2, remaining: 0, spent: false },
      );
      await b.budget.reserve(APP, at(10), { reserved: true });
      await b.budget.reserve(APP, at(11), { reserved: true });
      await assert.rejects(b.budget.reserve(APP, at(12), { reserved: true }), SharedBudgetExhausted);
      s = await b.budget.state(APP, at(12));
      assert.equal(s.used, 10);
      // 00:00 UTC: a new day
      const tomorrow = new Date('2026-12-02T00:00:00Z');
      await b.budget.reserve(APP, tomorrow);
      s = await b.budget.state(APP, tomorrow);
      assert.equal(s.day, '2026-12-02');
      assert.equal(s.used, 1);
    });

    it('quota_exceeded marks the day spent for everyone until 00:00 UTC', async () => {
      await b.budget.configure(APP, { dailyLimit: 100, perSecond: 100 });
      await b.budget.reserve(APP, at(0));
      await b.budget.markSpent(APP, at(1));
      await assert.rejects(b.budget.reserve(APP, at(2)), SharedBudgetExhausted);
      await assert.rejects(b.budget.reserve(APP, at(3), { reserved: true }), SharedBudgetExhausted);
      const s = await b.budget.state(APP, at(4));
      assert.equal(s.spent, true);
      assert.equal(s.remaining, 0);
      assert.equal(s.reserve, 2, 'the default reserve is 2% of the limit');
      const g = await b.budget.reserve(APP, new Date('2026-12-02T00:00:01Z'));
      assert.equal(g.waitMs, 0);
      assert.equal((await b.budget.state(APP, new Date('2026-12-02T00:00:01Z'))).spent, false);
    });

    it('the token endpoint has its own 1/s slot and spends nothing of the day', async () => {
      const slots = [];
      for (let i = 0; i < 3; i++) slots.push(await b.budget.tokenSlot(APP, at(0)));
      assert.deepEqual(
        slots.map((s) => s.at.getTime() - T0.getTime()),
        [0, 1000, 2000],
      );
      assert.deepEqual(
        slots.map((s) => s.waitMs),
        [0, 1000, 2000],
      );
      const g = await b.budget.reserve(APP, at(0));
      assert.equal(g.waitMs, 0, 'API slots are apart from token slots');
      const s = await b.budget.state(APP, at(0));
      assert.equal(s.used, 1);
      assert.equal(s.limit, 10_000, 'an application nobody configured: the standard key');
      assert.equal(s.perSecond, 3.5);
    });

    it('configure names the bad field', async () => {
      await assert.rejects(b.budget.configure(APP, { dailyLimit: 0, perSecond: 3 }), /dailyLimit must be a positive/);
      await assert.rejects(b.budget.configure(APP, { dailyLimit: 10, perSecond: -1 }), /perSecond must be a positive/);
      await assert.rejects(
        b.budget.configure(APP, { dailyLimit: 10, perSecond: 1, reserve: 10 }),
        /reserve must be an integer from 0 to below dailyLimit/,
      );
    });
  });
}

suite(
  'PostgreSQL',
  async () => {
    const db = await freshDatabase('budget');
    const pool = openPgPool(db.url);
    return {
      budget: createPgBudget(pool, { time: 'caller' }),
      close: async () => {
        await pool.end();
        await db.drop();
      },
    };
  },
  pgSkipped,
);

suite(
  'SQLite',
  async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-fleet-budget-'));
    const db = new Database(path.join(dir, 'state.db'));
    return {
      budget: createSqliteBudget(db),
      close: async () => {
        db.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  },
  () => false,
);

describe('fleet budget: PostgreSQL, many workers at once, the database clock', function () {
  this.timeout(60_000);
  let db: { url: string; drop: () => Promise<void> };
  const pools: Pool[] = [];
  before(async function () {
    if (pgSkipped()) this.skip();
    db = await freshDatabase('budget_conc');
    for (let i = 0; i < 5; i++) pools.push(openPgPool(db.url, { max: 3 }));
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db?.drop();
  });

  it('60 concurrent reservations against a limit of 25: exactly 25 grants, each in its own slot', async () => {
    await createPgBudget(pools[0]!).configure('conc', { dailyLimit: 25, perSecond: 3.5, reserve: 0 });
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        createPgBudget(pools[i % pools.length]!)
          .reserve('conc', new Date())
          .then(
            (g) => g,
            (err: unknown) => (err instanceof SharedBudgetExhausted ? null : Promise.reject(err)),
          ),
      ),
    );
    const grants = results.filter((g) => g !== null);
    assert.equal(grants.length, 25);
    const times = grants.map((g) => g.at.getTime()).sort((a, b) => a - b);
    for (let i = 1; i < times.length; i++) assert.ok(times[i]! - times[i - 1]! >= 285, `gap ${i}`);
    const s = await createPgBudget(pools[0]!).state('conc', new Date());
    assert.equal(s.used, 25);
  });

  it('runs on the database clock: a worker clock far off changes neither the day nor the wait', async () => {
    const budget = createPgBudget(pools[1]!);
    const g = await budget.reserve('clock', new Date('2099-06-01T00:00:00Z'));
    assert.ok(Math.abs(g.at.getTime() - Date.now()) < 10_000, g.at.toISOString());
    assert.ok(g.waitMs < 1000);
    assert.equal((await budget.state('clock', new Date(0))).day, new Date().toISOString().slice(0, 10));
  });
});
