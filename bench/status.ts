/**
 * Benchmark: `cc-optout status` on a store holding 1,000,000 opt-outs (`npm run bench` runs it). Prints
 * numbers; asserts nothing.
 *
 * The store is built straight through the store API (no emulator): N opt-outs detected for two targets in
 * transactions of 20,000, then outcomes for most of them (applied, already suppressed, not found, parked,
 * retrying), some left the unsubscribed set. Then, median of several runs each on a freshly opened store:
 * - the reads `status` makes (targetStatus, countOptOuts, checkpoints, usage, resubscribes, quarantine, runs);
 * - the same answers counted the way status did before the kept counts (GROUP BY over the outbox and the
 *   opt-outs, every event read into JS and filtered there), for comparison;
 * - the whole command, `node dist/src/cli.js status --json`, as a child process (Node start-up included).
 *
 *   npm run build && node dist/bench/status.js [--opt-outs 1000000] [--runs 7]
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { performance } from 'perf_hooks';
import { OptOut, Outcome } from '../src/domain';
import { CHECKPOINT_LAST_FULL, CHECKPOINT_WINDOW, SOURCE_KV } from '../src/engine';
import { SqliteStateStore } from '../src/store/sqlite';
import { header, int, machine, mb, sec, table, tmpDir, argNumber } from './lib/harness';

const N = argNumber('opt-outs', 1_000_000);
const RUNS = argNumber('runs', 7);
const CHUNK = 20_000;
const TARGETS = ['hubspot', 'salesforce'];
const POLICY = { maxAttempts: 12, backoffBaseSeconds: 60, backoffMaxSeconds: 21600 };

function optOut(i: number): OptOut {
  return {
    email: `person${i}@example.com`,
    contactId: `c-${i}`,
    optedOutAt: new Date(Date.UTC(2020, 0, 1) + i * 1000).toISOString(),
    source: 'Contact',
    reason: null,
    deleted: i % 97 === 0,
  };
}

/** 80% applied, 10% already suppressed, 7% not found, 1% parked, 2% retrying (still queued). */
function outcomeFor(email: string, i: number): Outcome {
  const k = i % 100;
  if (k < 80) return { email, kind: 'applied', recordIds: [`r${i}`] };
  if (k < 90) return { email, kind: 'already-suppressed', recordIds: [`r${i}`] };
  if (k < 97) return { email, kind: 'not-found', recordIds: [] };
  if (k < 98) return { email, kind: 'failed-permanent', recordIds: [], message: 'INVALID_EMAIL_ADDRESS' };
  return { email, kind: 'failed-retryable', recordIds: [], message: 'HTTP 503' };
}

function build(file: string): { ms: number; bytes: number } {
  const t0 = performance.now();
  const store = new SqliteStateStore(file);
  // building only: no fsync per commit (status, measured afterwards, opens the store as the product does)
  store.db.pragma('synchronous = OFF');
  const now = new Date(Date.UTC(2026, 5, 1)).toISOString();
  const runId = store.startRun('backfill', false, now);
  for (let i = 0; i < N; i += CHUNK) {
    const added = Array.from({ length: Math.min(CHUNK, N - i) }, (_, j) => optOut(i + j));
    store.commitDetection({ runId, added, resubscribed: [], targets: TARGETS, now });
    for (const target of TARGETS) {
      // 3% of the salesforce rows are still waiting for their first delivery
      const delivered = target === 'salesforce' ? added.filter((_, j) => (i + j) % 100 >= 3) : added;
      store.recordOutcomes({
        runId,
        target,
        outcomes: delivered.map((o, j) => outcomeFor(o.email, i + j)),
        now: new Date(now),
        policy: POLICY,
        random: () => 0.5,
      });
    }
    if ((i / CHUNK) % 10 === 9)
      process.stdout.write(`  built ${int(i + CHUNK)} opt-outs (${sec(performance.now() - t0)})\n`);
  }
  // 0.5% left the unsubscribed set (resubscribed or deleted in Constant Contact)
  const leavers = Array.from({ length: Math.floor(N / 200) }, (_, k) => optOut(k * 200 + 7).email);
  store.commitDetection({
    runId,
    added: [],
    resubscribed: leavers,
    targets: TARGETS,
    now,
    checkpoints: { [CHECKPOINT_WINDOW]: now, [CHECKPOINT_LAST_FULL]: now },
  });
  store.kv(SOURCE_KV).set('daily_usage', JSON.stringify({ day: now.slice(0, 10), used: 28 }));
  store.finishRun(runId, 0, { built: N }, now);
  store.close();
  const bytes = ['', '-wal'].reduce((n, s) => n + (fs.existsSync(file + s) ? fs.statSync(file + s).size : 0), 0);
  return { ms: performance.now() - t0, bytes };
}

/** The reads `cc-optout status` makes (src/cli.ts), on a freshly opened store. */
function statusReads(file: string): unknown {
  const store = new SqliteStateStore(file);
  try {
    return {
      optOuts: store.countOptOuts(),
      checkpoints: [store.getCheckpoint(CHECKPOINT_WINDOW), store.getCheckpoint(CHECKPOINT_LAST_FULL)],
      usage: store.kv(SOURCE_KV).get('daily_usage'),
      targets: store.targetStatus(TARGETS, new Date()),
      resubscribed: store.events(null, ['left-unsubscribed-set']).map((e) => ({ email: e.email, at: e.at })).length,
      quarantined: store.countQuarantined(),
      runs: store.recentRuns(5).length,
    };
  } finally {
    store.close();
  }
}

/** The same answers, counted as status did before migration 6 (per target GROUP BY; all events into JS). */
function countedReads(file: string): unknown {
  const store = new SqliteStateStore(file);
  const db = store.db;
  try {
    const now = new Date().toISOString();
    const targets = TARGETS.map((t) => ({
      counts: db
        .prepare(`SELECT state, outcome, COUNT(*) n FROM outbox WHERE target = ? GROUP BY state, outcome`)
        .all(t),
      due: db
        .prepare(`SELECT COUNT(*) FROM outbox WHERE target = ? AND state = 'queued' AND next_attempt_at <= ?`)
        .pluck()
        .get(t, now),
      oldest: db
        .prepare(
          `SELECT MIN(p.opted_out_at) FROM outbox o JOIN opt_outs p ON p.email = o.email WHERE o.target = ? AND o.state = 'queued'`,
        )
        .pluck()
        .get(t),
      last: db.prepare(`SELECT MAX(completed_at) FROM outbox WHERE target = ? AND state = 'done'`).pluck().get(t),
    }));
    const optOuts = db.prepare(`SELECT state, COUNT(*) n FROM opt_outs GROUP BY state`).all();
    const events = (
      db.prepare(`SELECT at, kind, email, detail FROM events ORDER BY id`).all() as { kind: string }[]
    ).filter((e) => e.kind === 'left-unsubscribed-set');
    return { targets, optOuts, resubscribed: events.length };
  } finally {
    store.close();
  }
}

function median(fn: () => unknown, runs: number): { med: number; min: number; max: number } {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { med: ms[Math.floor(ms.length / 2)]!, min: ms[0]!, max: ms[ms.length - 1]! };
}

export async function runStatus(): Promise<void> {
  header(`cc-optout status benchmark: ${int(N)} opt-outs x ${TARGETS.length} targets`);
  process.stdout.write(`${machine()}\n`);
  const dir = tmpDir('status');
  try {
    const file = path.join(dir, 'state.db');
    const built = build(file);
    if (process.env.KEEP_STORE) fs.copyFileSync(file, process.env.KEEP_STORE);
    process.stdout.write(
      `store built through the store API in ${sec(built.ms)}: ${int(N)} opt-outs, ${int(N * TARGETS.length)} outbox rows, db+wal ${mb(built.bytes)}\n\n`,
    );
    statusReads(file); // page cache warm, as for any later status
    const kept = median(() => statusReads(file), RUNS);
    const counted = median(() => countedReads(file), Math.max(3, Math.floor(RUNS / 2)));
    // the whole command: a config naming this store (status needs no secret)
    fs.mkdirSync(path.join(dir, 'cfg'));
    spawnSync(process.execPath, [path.join(__dirname, '..', 'src', 'cli.js'), 'init'], {
      cwd: path.join(dir, 'cfg'),
      encoding: 'utf8',
    });
    const cfgFile = path.join(dir, 'cfg', 'cc-optout.config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { store: { path: string } };
    cfg.store.path = file;
    fs.writeFileSync(cfgFile, JSON.stringify(cfg));
    const cli = median(() => {
      const r = spawnSync(
        process.execPath,
        [path.join(__dirname, '..', 'src', 'cli.js'), '--config', cfgFile, '--json', 'status'],
        { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } },
      );
      if (!r.stdout.includes('"targets"'))
        throw new Error(`status failed (exit ${r.status}): ${r.stderr.slice(0, 500)}`);
    }, 3);
    const boot = median(
      () =>
        spawnSync(process.execPath, [path.join(__dirname, '..', 'src', 'cli.js'), '--version'], { encoding: 'utf8' }),
      3,
    );
    process.stdout.write(
      table(
        ['what', 'median', 'min', 'max', 'runs'],
        [
          [
            'status reads (kept counts + indexes), store opened each run',
            sec(kept.med),
            sec(kept.min),
            sec(kept.max),
            RUNS,
          ],
          [
            'the same answers counted from the rows (before)',
            sec(counted.med),
            sec(counted.min),
            sec(counted.max),
            Math.max(3, Math.floor(RUNS / 2)),
          ],
          ['`cc-optout status --json` (child process)', sec(cli.med), sec(cli.min), sec(cli.max), 3],
          [
            '`cc-optout --version` (child process: Node start-up and module loading)',
            sec(boot.med),
            sec(boot.min),
            sec(boot.max),
            3,
          ],
        ],
      ) + '\n',
    );
    process.stdout.write(
      `\ntarget: status reads < 200 ms on ${int(N)} opt-outs: ${kept.med < 200 ? 'met' : 'NOT met'} (${sec(kept.med)}); the command's own cost is its wall time minus start-up (${sec(Math.max(0, cli.med - boot.med))})\n`,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  runStatus().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`status benchmark failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
