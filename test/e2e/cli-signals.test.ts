/**
 * The compiled CLI against the emulators (issue 8 items 16, 21, 22): Ctrl-C / SIGTERM mid-backfill stops after
 * the batch in hand, releases the lock, says "interrupted: rerun to resume", exits 130 / 143, and a rerun
 * completes without repeating a write; `status` into a closed pipe exits quietly; unknown targets, a directory
 * as --config, repeated --target, unlock, a dry-run plan file and not-found messages.
 */
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import Database from 'better-sqlite3';
import { PlanEntry, RunSummary } from '../../src/engine';
import {
  CLI,
  CliResult,
  Harness,
  assertVerified,
  parseJsonOut,
  runCli,
  spawnCli,
  startHarness,
  waitFor,
  writeRequests,
} from './helpers';

function expect(r: CliResult, code: number): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

function lockRows(h: Harness): number {
  const db = new Database(h.storePath, { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM run_lock').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

function runRows(h: Harness): { kind: string; finished_at: string | null }[] {
  if (!fs.existsSync(h.storePath)) return [];
  const db = new Database(h.storePath, { readonly: true });
  try {
    return db.prepare('SELECT kind, finished_at FROM runs').all() as { kind: string; finished_at: string | null }[];
  } finally {
    db.close();
  }
}

describe('e2e CLI: interrupted runs (SIGINT / SIGTERM)', function () {
  this.timeout(180_000);
  let h: Harness;
  beforeEach(async () => {
    // slow enough (latency, small batches) that a signal lands mid-delivery
    h = await startHarness({
      contacts: 2000,
      seed: 1616,
      delivery: { batchSize: 5 },
      emulator: { faults: { latencyMs: 40 } },
    });
  });
  afterEach(() => h?.stop());

  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${sig} mid-backfill: stops after the batch in hand, releases the lock, exits ${code}; a rerun completes with no write repeated`, async () => {
      const run = spawnCli(h, ['backfill', '--no-progress']);
      await waitFor(() => writeRequests(h.emu).hubspot + writeRequests(h.emu).salesforce >= 2, {
        timeoutMs: 60_000,
        what: 'the first CRM writes',
      });
      run.child.kill(sig);
      const r = expect(await run.done, code);
      assert.match(r.stderr, /interrupted: rerun to resume/);
      assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, 'no stack trace');
      assert.match(r.stdout, /^backfill, run #\d+/m, 'the summary of what was done is printed');
      assert.equal(lockRows(h), 0, 'the run lock is released');
      const runs = runRows(h);
      assert.ok(
        runs.every((x) => x.finished_at !== null),
        'the run row is finished, not left running',
      );

      const status = parseJsonOut<{ targets: { target: string; queued: number }[] }>(
        await runCli(h, ['--json', 'status']),
      );
      const queued = status.targets.reduce((n, t) => n + t.queued, 0);
      assert.ok(queued > 0, 'it stopped early: records are still queued');
      const writesBefore = writeRequests(h.emu);

      const again = expect(await runCli(h, ['--json', 'backfill', '--no-progress']), 0);
      const s = parseJsonOut<RunSummary>(again);
      assert.equal(s.interrupted, undefined);
      assert.ok(
        writeRequests(h.emu).hubspot + writeRequests(h.emu).salesforce > writesBefore.hubspot + writesBefore.salesforce,
        'the rerun wrote the rest',
      );
      assertVerified(h.emu); // every expected record suppressed, none written twice
    });
  }
});

describe('e2e CLI: consistency and saying why', function () {
  this.timeout(180_000);
  let h: Harness;
  before(async () => {
    h = await startHarness({ contacts: 1500, seed: 2121 });
  });
  after(() => h?.stop());

  it('an unknown --target exits 2 naming it on sync, backfill and requeue; sync leaves no run row', async () => {
    for (const args of [
      ['sync', '--target', 'nosuch'],
      ['backfill', '--target', 'hubspot', '--target', 'nosuch'],
      ['requeue', '--target', 'nosuch'],
    ]) {
      const r = expect(await runCli(h, args), 2);
      assert.match(r.stderr, /unknown target "nosuch" \(configured: hubspot, salesforce\)/, args.join(' '));
      assert.doesNotMatch(r.stdout, /re-queued/);
    }
    assert.deepEqual(runRows(h), [], 'no run was started');
    assert.equal(writeRequests(h.emu).hubspot + writeRequests(h.emu).salesforce, 0);
  });

  it('--config <directory> exits 2 naming the option', async () => {
    const child = spawn(process.execPath, [CLI, '--config', h.dir, 'status'], {
      env: { PATH: process.env.PATH ?? '', ...h.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 2, err);
    assert.match(err, /--config .*: is a directory/);
  });

  it('a dry run writes its plan to --output; not-found entries say why; the terminal gets a count and the path', async () => {
    const file = path.join(h.dir, 'plan.json');
    const r = expect(await runCli(h, ['backfill', '--dry-run', '--no-progress', '--output', file]), 0);
    const plan = JSON.parse(fs.readFileSync(file, 'utf8')) as PlanEntry[];
    assert.ok(plan.length > 50);
    assert.match(
      r.stdout,
      new RegExp(`plan: ${plan.length} entries written to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    );
    assert.ok(r.stdout.split('\n').length < 20, 'the plan is not printed line by line');
    for (const t of ['hubspot', 'salesforce']) {
      const nf = plan.filter((p) => p.target === t && p.kind === 'not-found');
      assert.ok(nf.length > 0, `${t} has not-found entries`);
      for (const p of nf) assert.ok(p.message && p.message.length > 5, `${t} ${p.email}: not-found carries a message`);
    }
    assert.match(
      plan.find((p) => p.target === 'salesforce' && p.kind === 'not-found')!.message!,
      /no Contact\/Lead with this email/,
    );
  });

  it('backfill --target a --target b delivers both; unlock says whether a lock was held; status into a closed pipe exits quietly', async () => {
    const r = parseJsonOut<RunSummary>(
      expect(
        await runCli(h, ['--json', 'backfill', '--no-progress', '--target', 'hubspot', '--target', 'salesforce']),
        0,
      ),
    );
    assert.deepEqual(Object.keys(r.targets).sort(), ['hubspot', 'salesforce']);
    assertVerified(h.emu);
    assert.match(expect(await runCli(h, ['unlock']), 0).stdout, /no run lock was held/);
    assert.deepEqual(parseJsonOut(expect(await runCli(h, ['--json', 'unlock']), 0)), { removed: false, lock: null });

    // the reader goes away before status writes (as `status | head -1` does once head has its line)
    const child = spawn(process.execPath, [CLI, '--config', h.cfg.file, 'status'], {
      env: { PATH: process.env.PATH ?? '', ...h.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy();
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.doesNotMatch(err, /EPIPE|Error|at /, `no stack: ${err}`);
    assert.equal(code, 0);

    const status = expect(await runCli(h, ['status']), 0).stdout;
    assert.doesNotMatch(status, /[{]"/, `status shows connector state as words, not JSON:\n${status}`);
  });
});
