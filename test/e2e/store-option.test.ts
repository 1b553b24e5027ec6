/**
 * `--store` (issue 13): every command that uses the state store goes through the asynchronous store backend, and
 * `--store <path>` points all of them at another SQLite file than the config's store.path (which is then never
 * created). A postgres:// URL's password never reaches the output.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { RunSummary } from '../../src/engine';
import axios from 'axios';
import { CliResult, Harness, parseJsonOut, runCli, spawnCli, startHarness, waitFor } from './helpers';

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

describe('e2e: --store selects the state store for every command', () => {
  let h: Harness;
  let other: string;
  before(async () => {
    h = await startHarness({ contacts: 300, seed: 1313 });
    other = path.join(h.dir, 'elsewhere', 'other.db');
  });
  after(async () => h?.stop());

  it('status on a store that does not exist exits 2 naming it, creating nothing', async () => {
    const r = ok(await runCli(h, ['--store', other, 'status']), 2);
    assert.match(r.stderr, new RegExp(`${other.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no state store here`));
    assert.ok(!fs.existsSync(other));
    assert.ok(!fs.existsSync(h.storePath));
  });

  it('check, sync, backfill, status, runs and audit all use the --store file; store.path is never created', async () => {
    ok(await runCli(h, ['--store', other, '--json', 'check']));
    const syncRun = await runCli(h, ['--store', other, '--json', 'sync']);
    assert.ok(syncRun.code === 0 || syncRun.code === 3, syncRun.stderr);
    const sync = parseJsonOut<RunSummary>(syncRun);
    assert.ok(sync.detection.newOptOuts > 0);
    const applied = Object.values(sync.targets).reduce((n, t) => n + (t.outcomes.applied ?? 0), 0);
    assert.ok(applied > 0, 'delivered');
    const planRun = await runCli(h, ['--store', other, '--json', 'backfill', '--dry-run']);
    assert.ok(planRun.code === 0 || planRun.code === 3, planRun.stderr);
    assert.equal(parseJsonOut<RunSummary>(planRun).dryRun, true);
    const status = parseJsonOut<{ optOuts: { active: number }; lastRuns: { kind: string }[] }>(
      await runCli(h, ['--store', other, '--json', 'status']),
    );
    assert.equal(status.optOuts.active, sync.detection.newOptOuts);
    assert.deepEqual(
      status.lastRuns.map((r) => r.kind),
      ['backfill', 'sync', 'check'],
    );
    const runs = parseJsonOut<{ kind: string; status: string }[]>(
      ok(await runCli(h, ['--store', other, '--json', 'runs'])),
    );
    assert.deepEqual(
      runs.map((r) => r.kind),
      ['backfill', 'sync', 'check'],
    );
    assert.equal(runs[2]!.status, 'ok');
    assert.equal(runs[1]!.status, sync.exitCode === 0 ? 'ok' : 'incomplete');
    const audit = JSON.parse(ok(await runCli(h, ['--store', other, 'audit', '--format', 'json'])).stdout) as {
      rows: { outcome: string }[];
    };
    assert.equal(audit.rows.filter((r) => r.outcome === 'applied').length, applied);
    assert.ok(fs.existsSync(other));
    assert.ok(!fs.existsSync(h.storePath), 'the config store.path was never created');
    // without --store the config's store is used: nothing has run there
    ok(await runCli(h, ['status']), 2);
  });

  it('run (the service) syncs into the --store file and stops cleanly on SIGTERM', async function () {
    this.timeout(120_000);
    // the --store file holds the rotated Constant Contact refresh token (the configured one was used up by then)
    const before = parseJsonOut<unknown[]>(ok(await runCli(h, ['--store', other, '--json', 'runs']))).length;
    const svc = spawnCli(
      h,
      ['--store', other, '--log-format', 'json', 'run', '--every', '1h', '--listen', '127.0.0.1:0'],
      {
        timeoutMs: 110_000,
      },
    );
    try {
      const listening = await waitFor(
        () =>
          svc
            .stderr()
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l) as { msg?: string; address?: string })
            .find((l) => l.msg === 'service listening'),
        { timeoutMs: 30_000, what: 'the service to listen' },
      );
      let last: unknown = null;
      await waitFor(
        async () => {
          const r = await axios.get(`${listening.address}/readyz`, { validateStatus: () => true });
          last = r.data;
          return r.status === 200;
        },
        { timeoutMs: 60_000, intervalMs: 200, what: '/readyz 200 after the first run' },
      ).catch((err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(last)}\n${svc.stderr().slice(-3000)}`);
      });
      svc.child.kill('SIGTERM');
      const done = await svc.done;
      assert.equal(done.code, 0, done.stderr.slice(-2000));
    } finally {
      if (svc.child.exitCode === null) svc.child.kill('SIGKILL');
    }
    const runs = parseJsonOut<{ kind: string; status: string }[]>(
      ok(await runCli(h, ['--store', other, '--json', 'runs'])),
    );
    // one run at least (a loaded machine can make the first one incomplete, and the service then retries it soon)
    assert.ok(
      runs.length >= before + 1,
      `the service recorded its run in the --store file (${before} -> ${runs.length})`,
    );
    for (const r of runs.slice(0, runs.length - before)) assert.equal(r.kind, 'sync');
    assert.ok(!fs.existsSync(h.storePath), 'the config store.path was never created');
  });

  it('a postgres:// --store fails without showing its password', async () => {
    const r = await runCli(h, ['--store', 'postgres://cc:hunter2-secret@127.0.0.1:1/cc', '--json', 'status']);
    assert.notEqual(r.code, 0);
    assert.ok(!r.stdout.includes('hunter2-secret') && !r.stderr.includes('hunter2-secret'), r.stderr);
  });
});
