/**
 * THREE worker OS processes (test/fixtures/fleet/worker.ts) against ONE PostgreSQL, on the database's clock:
 * - claims are disjoint at every moment: each (key, fence) has one owner, and a fence's successor was
 *   claimed only after it was released or had expired; every committed write was made under a fence no
 *   successor had claimed yet;
 * - a SIGKILLed worker's keys are taken over within one lease TTL (1.5 s) plus a claim poll (50 ms) or two;
 * - a worker paused (SIGSTOP) past its TTL and resumed (SIGCONT) has its guarded write refused (StaleFence)
 *   and nothing of it is written;
 * - three processes reserving the shared budget at once get exactly the daily limit of grants, spaced
 *   1000/3.5 ms apart (never more than 4 in any sliding 1000 ms window: Constant Contact allows 4/s).
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';
import { Pool } from 'pg';
import { accountLeaseKey, createPgBudget, createPgLeases, migrateFleet } from '../../src/fleet';
import { openPgPool } from '../../src/store/pg/pool';
import { freshDatabase, pgSkipped } from '../support/postgres';

const WORKER = path.join(__dirname, '..', 'fixtures', 'fleet', 'worker.js');
const TTL = 1500;
const POLL = 50;

interface Event {
  event: string;
  owner: string;
  keys?: { key: string; fence: number }[];
  key?: string;
  fence?: number;
  current?: number | null;
  granted?: number;
}

class Worker {
  readonly events: Event[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];
  readonly proc: ChildProcess;

  constructor(
    readonly owner: string,
    opts: Record<string, unknown>,
  ) {
    this.proc = spawn(process.execPath, [WORKER, JSON.stringify({ owner, ...opts })], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    readline.createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as Event);
      } catch {
        this.stderr.push(line);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.proc.stderr!.on('data', (d: Buffer) => this.stderr.push(d.toString()));
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }

  async waitFor(pred: (e: Event) => boolean, timeoutMs: number, what: string): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline)
        throw new Error(`${this.owner}: no ${what} within ${timeoutMs} ms (stderr: ${this.stderr.join('')})`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    return this.exited;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function setupDb(pool: Pool, accounts: number): Promise<void> {
  await migrateFleet(pool);
  await pool.query(`CREATE TABLE fleet_claims (
      key text, fence bigint, owner text NOT NULL, claimed_at timestamptz NOT NULL, live_until timestamptz NOT NULL,
      released_before timestamptz, PRIMARY KEY (key, fence))`);
  await pool.query('CREATE TABLE fleet_writes (key text, fence bigint, owner text, at timestamptz)');
  await pool.query('CREATE TABLE fleet_grants (owner text, at timestamptz)');
  const leases = createPgLeases(pool);
  for (let i = 0; i < accounts; i++) {
    const id = `acct-${String(i).padStart(2, '0')}`;
    await leases.ensure(accountLeaseKey(id), id, null, new Date(0).toISOString());
  }
}

interface ClaimRow {
  key: string;
  fence: string;
  owner: string;
  claimed_at: Date;
  live_until: Date;
  released_before: Date | null;
}

/** Disjointness: each fence's successor claimed after it ended (released or expired); writes inside their fence. */
async function checkDisjoint(pool: Pool): Promise<{ claims: number; writes: number; handovers: number }> {
  const claims = (await pool.query<ClaimRow>('SELECT * FROM fleet_claims ORDER BY key, fence')).rows;
  const byKey = new Map<string, ClaimRow[]>();
  for (const c of claims) byKey.set(c.key, [...(byKey.get(c.key) ?? []), c]);
  let handovers = 0;
  for (const [key, list] of byKey) {
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1]!;
      const next = list[i]!;
      assert.equal(Number(next.fence), Number(prev.fence) + 1, `${key}: fences in sequence`);
      const end = Math.min(prev.live_until.getTime(), prev.released_before?.getTime() ?? Infinity);
      assert.ok(
        next.claimed_at.getTime() >= end,
        `${key}: fence ${next.fence} (${next.owner}) claimed at ${next.claimed_at.toISOString()} while fence ${prev.fence} (${prev.owner}) was live until ${new Date(end).toISOString()}`,
      );
      if (next.owner !== prev.owner) handovers += 1;
    }
  }
  const writes = (
    await pool.query<{ key: string; fence: string; owner: string; at: Date }>('SELECT * FROM fleet_writes')
  ).rows;
  for (const w of writes) {
    const list = byKey.get(w.key) ?? [];
    const mine = list.find((c) => Number(c.fence) === Number(w.fence));
    assert.ok(mine && mine.owner === w.owner, `${w.key}: write by ${w.owner} under fence ${w.fence} matches its claim`);
    const successor = list.find((c) => Number(c.fence) === Number(w.fence) + 1);
    assert.ok(
      !successor || w.at.getTime() <= successor.claimed_at.getTime() + 1,
      `${w.key}: write under fence ${w.fence} at ${w.at.toISOString()} after fence ${Number(w.fence) + 1} was claimed`,
    );
  }
  return { claims: claims.length, writes: writes.length, handovers };
}

describe('e2e: three fleet worker processes on one PostgreSQL', function () {
  this.timeout(120_000);
  let db: { url: string; drop: () => Promise<void> };
  let pool: Pool;
  let workers: Worker[] = [];
  beforeEach(async function () {
    if (pgSkipped()) this.skip();
    db = await freshDatabase('fleet_procs');
    pool = openPgPool(db.url);
  });
  afterEach(async () => {
    for (const w of workers) {
      if (w.proc.signalCode === null && w.proc.exitCode === null) w.proc.kill('SIGCONT');
      await w.stop();
    }
    workers = [];
    await pool?.end();
    await db?.drop();
  });

  it('disjoint claims at every moment; a SIGKILLed worker’s keys are taken over within one TTL', async () => {
    // 6 accounts, 3 processes x 4 lanes claiming one at a time: after the kill the survivors have idle lanes
    await setupDb(pool, 6);
    workers = ['w1', 'w2', 'w3'].map(
      (o) => new Worker(o, { mode: 'leases', url: db.url, ttlMs: TTL, holdMs: 400, pollMs: POLL, batch: 1, lanes: 4 }),
    );
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'ready', 20_000, 'ready')));
    await sleep(3000);
    // kill w1 while it holds keys: right after one of its claims
    const victim = workers[0]!;
    const before = victim.events.length;
    const hold = await victim.waitFor(
      (e) => e.event === 'holding' && victim.events.indexOf(e) >= before,
      10_000,
      'a claim to kill it in',
    );
    victim.proc.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.exited;
    // every key it held at the kill (its other lanes too)
    const held = (
      await pool.query<{ key: string; fence: string }>("SELECT key, fence FROM cc_leases WHERE owner = 'w1'")
    ).rows.map((r) => ({ key: r.key, fence: Number(r.fence) }));
    assert.ok(held.some((h) => h.key === hold.keys![0]!.key));
    // poll the lease table until every key it held is owned by someone else with a newer fence
    let takenAt = 0;
    while (Date.now() - killedAt < 10_000) {
      const r = await pool.query<{ key: string; owner: string | null; fence: string }>(
        'SELECT key, owner, fence FROM cc_leases WHERE key = ANY($1)',
        [held.map((h) => h.key)],
      );
      const taken = r.rows.every((row) => {
        const h = held.find((x) => x.key === row.key)!;
        return Number(row.fence) > h.fence;
      });
      if (taken) {
        takenAt = Date.now();
        break;
      }
      await sleep(20);
    }
    assert.ok(takenAt > 0, 'the killed worker’s keys were taken over');
    const takeoverMs = takenAt - killedAt;
    // the lease lapses at most one TTL after the kill (its last renewal was before it); an idle lane of a survivor
    // claims it within a poll or two of that (slack for a loaded 2-core machine)
    assert.ok(takeoverMs <= TTL + 1000, `taken over ${takeoverMs} ms after the SIGKILL (TTL ${TTL} ms)`);
    const successors = await pool.query<{ owner: string }>(
      'SELECT DISTINCT c.owner FROM fleet_claims c WHERE (c.key, c.fence) IN (SELECT key, fence FROM cc_leases WHERE key = ANY($1))',
      [held.map((h) => h.key)],
    );
    assert.ok(successors.rows.every((r) => r.owner !== 'w1'));
    await sleep(2000);
    for (const w of workers.slice(1)) assert.equal(await w.stop(), 0, w.stderr.join(''));
    const stats = await checkDisjoint(pool);
    assert.ok(stats.claims > 30 && stats.handovers >= 5, JSON.stringify(stats));
    assert.ok(stats.writes > 20, JSON.stringify(stats));
    // the survivors released everything on SIGTERM; only the killed worker's last claims may still be live rows
    const live = await pool.query("SELECT key FROM cc_leases WHERE owner IS NOT NULL AND owner <> 'w1'");
    assert.equal(live.rowCount, 0);
    process.stdout.write(
      `      takeover after SIGKILL: ${takeoverMs} ms (TTL ${TTL} ms); ${stats.claims} claims, ${stats.handovers} handovers, ${stats.writes} guarded writes, all disjoint\n`,
    );
  });

  it('a worker paused past its TTL and resumed has its guarded write refused (StaleFence); nothing of it is written', async () => {
    await setupDb(pool, 6);
    const sleeper = new Worker('sleeper', { mode: 'leases', url: db.url, ttlMs: TTL, holdMs: 1000, pollMs: POLL });
    await sleeper.waitFor((e) => e.event === 'ready', 20_000, 'ready');
    const hold = await sleeper.waitFor((e) => e.event === 'holding', 10_000, 'a claim');
    sleeper.proc.kill('SIGSTOP');
    const others = ['w2', 'w3'].map(
      (o) => new Worker(o, { mode: 'leases', url: db.url, ttlMs: TTL, holdMs: 300, pollMs: POLL }),
    );
    workers = [sleeper, ...others];
    const held = hold.keys!;
    // wait until the others took over every key the sleeper holds
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await pool.query<{ key: string; fence: string }>(
        'SELECT key, fence FROM cc_leases WHERE key = ANY($1)',
        [held.map((h) => h.key)],
      );
      if (r.rows.every((row) => Number(row.fence) > held.find((h) => h.key === row.key)!.fence)) break;
      assert.ok(Date.now() < deadline, 'the paused worker’s keys were taken over');
      await sleep(50);
    }
    sleeper.proc.kill('SIGCONT');
    for (const h of held) {
      const e = await sleeper.waitFor(
        (x) => x.event === 'stale' && x.key === h.key && x.fence === h.fence,
        10_000,
        `stale ${h.key}`,
      );
      assert.ok(typeof e.current === 'number' ? e.current > h.fence : e.current === null);
    }
    assert.ok(
      sleeper.events.some((e) => e.event === 'lost'),
      'its renew was refused too',
    );
    const written = await pool.query(
      'SELECT * FROM fleet_writes WHERE (key, fence) IN (SELECT unnest($1::text[]), unnest($2::bigint[]))',
      [held.map((h) => h.key), held.map((h) => h.fence)],
    );
    assert.equal(written.rowCount, 0, 'nothing written under the stale fences');
    await sleep(1000);
    for (const w of workers) assert.equal(await w.stop(), 0, w.stderr.join(''));
    await checkDisjoint(pool);
  });

  it('three processes reserving at once: exactly the daily limit granted, never more than 4 in any sliding second', async () => {
    await setupDb(pool, 0);
    const LIMIT = 24;
    await createPgBudget(pool).configure('shared-app', { dailyLimit: LIMIT, perSecond: 3.5, reserve: 0 });
    workers = ['b1', 'b2', 'b3'].map(
      (o) => new Worker(o, { mode: 'budget', url: db.url, app: 'shared-app', loops: 4 }),
    );
    const done = await Promise.all(workers.map((w) => w.waitFor((e) => e.event === 'exhausted', 60_000, 'exhausted')));
    for (const w of workers) assert.equal(await w.exited, 0, w.stderr.join(''));
    const total = done.reduce((n, e) => n + (e.granted ?? 0), 0);
    assert.equal(total, LIMIT, 'exactly the limit, across the three');
    const grants = (await pool.query<{ owner: string; at: Date }>('SELECT owner, at FROM fleet_grants ORDER BY at'))
      .rows;
    assert.equal(grants.length, LIMIT);
    assert.ok(new Set(grants.map((g) => g.owner)).size >= 2, 'the processes shared it');
    const t = grants.map((g) => g.at.getTime());
    let maxInSecond = 0;
    for (let i = 0; i < t.length; i++) {
      if (i > 0) assert.ok(t[i]! - t[i - 1]! >= 285, `grants ${i - 1} and ${i} ${t[i]! - t[i - 1]!} ms apart`);
      maxInSecond = Math.max(maxInSecond, t.filter((u) => u >= t[i]! && u <= t[i]! + 1000).length);
    }
    assert.ok(maxInSecond <= 4, `max ${maxInSecond} grants in a sliding second`);
    const s = await createPgBudget(pool).state('shared-app', new Date());
    assert.equal(s.used, LIMIT);
    process.stdout.write(
      `      ${LIMIT} grants over ${((t[t.length - 1]! - t[0]!) / 1000).toFixed(2)} s, max ${maxInSecond} in any sliding 1000 ms\n`,
    );
  });
});
