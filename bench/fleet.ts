/**
 * Benchmark: 1,000 Constant Contact accounts under ONE application's 10,000/day budget, scheduled by the fleet
 * (src/fleet: leases, the shared budget, the fair scheduler) on a real PostgreSQL (the private throwaway cluster
 * of test/support/postgres), with N worker PROCESSES of L lanes each. Prints numbers; asserts nothing.
 *
 * A simulated clock runs one UTC day (00:00 -> 24:00) in `--day-seconds` of wall time; the leases and the budget
 * run on it (`time: 'caller'`), so the per-second slots (3.5/s) and the daily ledger are the real SQL, in
 * simulated time. A poll is simulated, not sent: it costs 1 call when it finds nothing, 2 (+1 per 100 found)
 * when it finds opt-outs; `--active` of the accounts (every 1/active-th) find opt-outs on half their polls, the
 * others on 2%. Each call reserves from the shared budget and waits for its slot; after the poll the account's
 * next poll is `nextPollDelayMs` (remaining budget, accounts, priority/activity weights via `summary()`, a
 * jitter from a hash of the account and its poll count).
 *
 * Printed: the budget-optimal interval (every account polled equally, the day's budget spent in full, at the
 * measured calls per poll), the achieved intervals (mean, median, p95, spread), total calls against the limit,
 * the most calls in any simulated second, and CPU and peak RSS per worker process.
 *
 *   npm run build && node dist/bench/fleet.js [--accounts 1000] [--daily 10000] [--workers 3] [--lanes 8]
 *                                             [--day-seconds 40] [--active 0.03] [--seed 7] [--scenario both]
 *   --scenario cold: every account new and due at 00:00; warm: the steady state (idle streaks carried over,
 *   first polls spread over the optimal interval); both (default): one day of each.
 *   BENCH_FLEET_DUMP=<file>: also write every poll and grant (simulated ms) per worker as JSON, for plotting.
 */
import { mulberry32 } from '../src/emulators/prng';
import { fork } from 'child_process';
import * as fs from 'fs';
import { Pool } from 'pg';
import { accountLeaseKey, createPgBudget, createPgLeases, LeaseSummary, SharedBudgetExhausted } from '../src/fleet';
import { budgetOptimalIntervalMs, DAY_MS, hash32, nextPollDelayMs } from '../src/fleet/scheduler';
import { openPgPool } from '../src/store/pg/pool';
import { freshDatabase } from '../test/support/postgres';
import { argNumber, argText, header, int, machine, mb, table } from './lib/harness';

const APP = 'bench-app';
const SIM_START = Date.parse('2026-12-01T00:00:00Z');
/** 30 simulated minutes (under a second of wall time): a poll takes a few simulated seconds. */
const TTL_SIM_MS = 30 * 60_000;
const MIN_INTERVAL_MS = 60_000;
const MAX_INTERVAL_MS = 12 * 3_600_000;

interface WorkerCfg {
  url: string;
  owner: string;
  wallStart: number;
  speed: number;
  lanes: number;
  seed: number;
  activeEvery: number;
}

interface WorkerResult {
  owner: string;
  /** Simulated ms of every grant. */
  grants: number[];
  /** [account index, simulated ms] of every poll. */
  polls: [number, number][];
  found: number;
  refused: number;
  /** Leases that expired under a poll (another lane may have polled the account again). */
  lost: number;
  cpuMs: number;
  peakRss: number;
  wallMs: number;
}

const rng = mulberry32;

/** Opt-outs a poll of account `idx` finds (its `polls`-th poll). */
function simulatedFound(idx: number, polls: number, cfg: WorkerCfg): number {
  const r = rng(cfg.seed * 1_000_003 + idx * 7919 + polls * 104_729);
  const active = idx % cfg.activeEvery === 0;
  if (r() >= (active ? 0.5 : 0.02)) return 0;
  return 1 + Math.floor(r() * (active ? 40 : 3));
}

async function worker(cfg: WorkerCfg): Promise<void> {
  const pool = openPgPool(cfg.url, { max: cfg.lanes + 1 });
  const leases = createPgLeases(pool, { time: 'caller' });
  const budget = createPgBudget(pool, { time: 'caller' });
  const simEnd = SIM_START + DAY_MS;
  const simNow = (): Date => new Date(SIM_START + (Date.now() - cfg.wallStart) * cfg.speed);
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
  const out: WorkerResult = {
    owner: cfg.owner,
    grants: [],
    polls: [],
    found: 0,
    refused: 0,
    lost: 0,
    cpuMs: 0,
    peakRss: 0,
    wallMs: 0,
  };
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 50);
  // the application-wide inputs, refreshed at most every 200 ms of wall time (minutes of simulated time)
  let cached: { at: number; summary: LeaseSummary; remaining: number } | null = null;
  const inputs = async (): Promise<{ summary: LeaseSummary; remaining: number }> => {
    if (!cached || Date.now() - cached.at > 200) {
      const [summary, state] = await Promise.all([leases.summary(), budget.state(APP, simNow())]);
      cached = { at: Date.now(), summary, remaining: state.remaining };
    }
    return cached;
  };
  await sleep(cfg.wallStart - Date.now());
  const cpu0 = process.cpuUsage();
  const wall0 = Date.now();
  const lane = async (): Promise<void> => {
    while (simNow().getTime() < simEnd) {
      const [lease] = await leases.claim(cfg.owner, 1, TTL_SIM_MS, simNow(), ['account']);
      if (!lease) {
        await sleep(10);
        continue;
      }
      const row = (await leases.get(lease.key))!;
      const idx = Number(row.account.slice('acct-'.length));
      const pollAt = simNow().getTime();
      const found = simulatedFound(idx, row.polls, cfg);
      const calls = found > 0 ? 2 + Math.floor(found / 100) : 1;
      let spent = 0;
      let exhausted = false;
      for (let c = 0; c < calls; c++) {
        if (simNow().getTime() >= simEnd) break; // the day is over: no call on tomorrow's ledger
        try {
          const g = await budget.reserve(APP, simNow());
          out.grants.push(g.at.getTime());
          spent += 1;
          await sleep(g.waitMs / cfg.speed);
        } catch (err) {
          if (!(err instanceof SharedBudgetExhausted)) throw err;
          exhausted = true;
          out.refused += 1;
          break;
        }
      }
      const { summary, remaining } = await inputs();
      const idleStreak = exhausted ? row.idleStreak : found > 0 ? 0 : row.idleStreak + 1;
      const delay = nextPollDelayMs({
        now: simNow(),
        remaining: exhausted ? 0 : remaining,
        accounts: summary.accounts,
        callsPerPoll: row.polls > 0 ? row.callsPerPoll : Math.max(1, spent),
        priority: row.priority,
        prioritySum: summary.prioritySum,
        idleStreak,
        minIntervalMs: MIN_INTERVAL_MS,
        maxIntervalMs: MAX_INTERVAL_MS,
        weightSum: summary.weightSum,
        jitter: hash32(`${row.account}:${row.polls}`) / 2 ** 32,
      });
      if (!exhausted) {
        out.polls.push([idx, pollAt]);
        out.found += found;
      }
      const ours = await leases.release(
        lease,
        new Date(simNow().getTime() + delay).toISOString(),
        exhausted ? undefined : { at: new Date(pollAt).toISOString(), calls: spent, found },
      );
      if (!ours) out.lost += 1;
    }
  };
  await Promise.all(Array.from({ length: cfg.lanes }, lane));
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  out.cpuMs = (cpu.user + cpu.system) / 1000;
  out.peakRss = Math.max(peakRss, process.memoryUsage.rss());
  out.wallMs = Date.now() - wall0;
  await pool.end();
  await new Promise<void>((r) => process.send!(out, () => r()));
}

// ------------------------------------------------------------------------------------------ statistics

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

interface Stats {
  n: number;
  mean: number;
  median: number;
  p5: number;
  p95: number;
  min: number;
  max: number;
  cv: number;
}

function stats(values: readonly number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / Math.max(1, s.length);
  const sd = Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, s.length));
  return {
    n: s.length,
    mean,
    median: quantile(s, 0.5),
    p5: quantile(s, 0.05),
    p95: quantile(s, 0.95),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
    cv: mean > 0 ? sd / mean : NaN,
  };
}

/** Most grants in any window [t, t + 1000) of simulated time. */
function maxPerSecond(times: readonly number[]): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= 1000) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

/** Calls in each simulated hour of the day: min / median / max (how bursty the schedule is). */
function perHour(times: readonly number[]): string {
  const counts = new Array<number>(24).fill(0);
  for (const t of times) {
    const h = Math.floor((t - SIM_START) / 3_600_000);
    if (h >= 0 && h < 24) counts[h]! += 1;
  }
  const s = [...counts].sort((a, b) => a - b);
  return `${s[0]} / ${quantile(s, 0.5)} / ${s[23]}`;
}

const hours = (ms: number): string => (Number.isFinite(ms) ? `${(ms / 3_600_000).toFixed(2)} h` : '-');

function intervalRows(label: string, s: Stats): (string | number)[] {
  return [label, s.n, hours(s.mean), hours(s.median), hours(s.p95), hours(s.p5), hours(s.max), s.cv.toFixed(2)];
}

// ------------------------------------------------------------------------------------------ main

/** Every account due at 00:00 (a cold start), or spread over the first `spreadMs` by a hash of its id. */
async function seedLeases(pool: Pool, accounts: number, spreadMs: number): Promise<void> {
  const leases = createPgLeases(pool, { time: 'caller' });
  await leases.list(); // migrate
  const ids = Array.from({ length: accounts }, (_, i) => `acct-${String(i).padStart(4, '0')}`);
  const due = ids.map((id) => new Date(SIM_START + Math.floor((hash32(id) / 2 ** 32) * spreadMs)).toISOString());
  await pool.query(
    `INSERT INTO cc_leases (key, account, target, next_due_at, priority)
     SELECT 'account:' || a, a, NULL, d, 1 FROM unnest($1::text[], $2::timestamptz[]) AS x(a, d)`,
    [ids, due],
  );
  if (accounts > 0 && (await leases.get(accountLeaseKey(ids[0]!))) === null) throw new Error('seeding failed');
}

interface DayOptions {
  accounts: number;
  daily: number;
  workers: number;
  lanes: number;
  speed: number;
  active: number;
  seed: number;
  warm: boolean;
}

async function main(): Promise<void> {
  const accounts = argNumber('accounts', 1000);
  const daily = argNumber('daily', 10_000);
  const workers = argNumber('workers', 3);
  const lanes = argNumber('lanes', 8);
  const daySeconds = argNumber('day-seconds', 40);
  const active = argNumber('active', 0.03);
  const seed = argNumber('seed', 7);
  const scenario = argText('scenario', 'both');
  if (!['cold', 'warm', 'both'].includes(scenario)) throw new Error(`--scenario: cold, warm or both (got ${scenario})`);
  const speed = DAY_MS / (daySeconds * 1000);

  header(`Fleet: ${int(accounts)} accounts, one application, ${int(daily)} calls/day, ${workers} worker processes`);
  process.stdout.write(`${machine()}\n`);
  process.stdout.write(
    `one simulated UTC day in ${daySeconds} s of wall time (x${Math.round(speed)}); ${lanes} lanes per worker; ` +
      `${(active * 100).toFixed(0)}% active accounts; PostgreSQL: the private test cluster\n`,
  );
  for (const warm of scenario === 'both' ? [false, true] : [scenario === 'warm']) {
    process.stdout.write(
      warm
        ? '\n--- warm: a day in the steady state (idle streaks carried over from earlier days, first polls spread over the optimal interval)\n'
        : '\n--- cold start: every account new and due at 00:00\n',
    );
    await runDay({ accounts, daily, workers, lanes, speed, active, seed, warm });
  }
}

async function runDay(o: DayOptions): Promise<void> {
  const { accounts, daily, workers, lanes, speed, active, seed } = o;
  const db = await freshDatabase('bench_fleet');
  const pool = openPgPool(db.url);
  try {
    const activeEvery = Math.max(1, Math.round(1 / active));
    await seedLeases(pool, accounts, o.warm ? budgetOptimalIntervalMs(accounts, 1, daily) : 0);
    if (o.warm) {
      // yesterday's history: the idle accounts long idle (weight MIN_WEIGHT), the active ones just found some
      await pool.query(
        `UPDATE cc_leases SET polls = 10, calls_per_poll = 1,
           idle_streak = CASE WHEN (substring(account FROM 6)::int % $1) = 0 THEN 0 ELSE 10 END`,
        [activeEvery],
      );
    }
    const budget = createPgBudget(pool, { time: 'caller' });
    await budget.configure(APP, { dailyLimit: daily, perSecond: 3.5 });
    const reserve = (await budget.state(APP, new Date(SIM_START))).reserve;
    const wallStart = Date.now() + 1500;
    const results = await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const cfg: WorkerCfg = {
          url: db.url,
          owner: `worker-${w + 1}`,
          wallStart,
          speed,
          lanes,
          seed,
          activeEvery,
        };
        const child = fork(__filename, ['--worker', JSON.stringify(cfg)], {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        });
        return new Promise<WorkerResult>((resolve, reject) => {
          let got: WorkerResult | null = null;
          child.on('message', (m) => (got = m as WorkerResult));
          child.once('exit', (code) => (got ? resolve(got) : reject(new Error(`worker ${w + 1} exited ${code}`))));
        });
      }),
    );
    const end = await budget.state(APP, new Date(SIM_START + DAY_MS - 1));

    if (process.env.BENCH_FLEET_DUMP) {
      fs.writeFileSync(
        process.env.BENCH_FLEET_DUMP,
        JSON.stringify(results.map((r) => ({ polls: r.polls, grants: r.grants }))),
      );
    }
    const grants = results.flatMap((r) => r.grants);
    const polls = results.flatMap((r) => r.polls);
    const byAccount = new Map<number, number[]>();
    for (const [idx, at] of polls) byAccount.set(idx, [...(byAccount.get(idx) ?? []), at]);
    const all: number[] = [];
    const idle: number[] = [];
    const act: number[] = [];
    const perAccountMean: number[] = [];
    for (const [idx, times] of byAccount) {
      times.sort((a, b) => a - b);
      const gaps = times.slice(1).map((t, i) => t - times[i]!);
      all.push(...gaps);
      (idx % activeEvery === 0 ? act : idle).push(...gaps);
      if (gaps.length > 0 && idx % activeEvery !== 0)
        perAccountMean.push(gaps.reduce((a, b) => a + b, 0) / gaps.length);
    }
    const callsPerPoll = grants.length / Math.max(1, polls.length);
    const optimal = budgetOptimalIntervalMs(accounts, callsPerPoll, daily - reserve);

    process.stdout.write(
      `\nbudget-optimal interval: ${hours(optimal)} (${int(accounts)} accounts x ${callsPerPoll.toFixed(2)} calls/poll measured ` +
        `/ ${int(daily - reserve)} calls (limit ${int(daily)} - reserve ${int(reserve)}) x 24 h); ` +
        `at 1 call/poll and the whole ${int(daily)}: ${hours(budgetOptimalIntervalMs(accounts, 1, daily))}\n\n`,
    );
    process.stdout.write(
      table(
        ['poll intervals', 'n', 'mean', 'median', 'p95', 'p5', 'max', 'cv'],
        [
          intervalRows('all accounts', stats(all)),
          intervalRows(`idle accounts (${accounts - Math.ceil(accounts / activeEvery)})`, stats(idle)),
          intervalRows(`active accounts (${Math.ceil(accounts / activeEvery)})`, stats(act)),
          intervalRows('idle: per-account mean', stats(perAccountMean)),
        ],
      ) + '\n\n',
    );
    const never = accounts - byAccount.size;
    process.stdout.write(
      table(
        ['budget', 'value'],
        [
          ['polls', int(polls.length)],
          ['accounts never polled', int(never)],
          ['opt-outs found', int(results.reduce((n, r) => n + r.found, 0))],
          ['calls granted (all workers)', int(grants.length)],
          ['ledger used at 23:59:59', `${int(end.used)} of ${int(daily)} (reserve ${int(reserve)} untouched)`],
          ['polls refused (budget spent)', int(results.reduce((n, r) => n + r.refused, 0))],
          ['leases expired under a poll', int(results.reduce((n, r) => n + r.lost, 0))],
          ['max calls in any simulated second', String(maxPerSecond(grants))],
          ['calls per simulated hour: min / median / max', perHour(grants)],
        ],
      ) + '\n\n',
    );
    process.stdout.write(
      table(
        ['worker process', 'polls', 'calls', 'CPU', 'CPU/poll', 'peak RSS', 'wall'],
        results.map((r) => [
          r.owner,
          int(r.polls.length),
          int(r.grants.length),
          `${(r.cpuMs / 1000).toFixed(2)} s`,
          `${(r.cpuMs / Math.max(1, r.polls.length)).toFixed(2)} ms`,
          mb(r.peakRss),
          `${(r.wallMs / 1000).toFixed(1)} s`,
        ]),
      ) + '\n',
    );
  } finally {
    await pool.end();
    await db.drop();
  }
}

if (process.argv[2] === '--worker') {
  worker(JSON.parse(process.argv[3]!) as WorkerCfg).catch((err: unknown) => {
    process.stderr.write(`bench fleet worker: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
