/**
 * The CLI on a PostgreSQL state store (`--store postgres://...`, issue 13) against the emulators: check, sync,
 * backfill --dry-run, status, runs and audit all work on the database (the config's store.path is never created),
 * a second sync writes nothing to the CRMs again, and the URL's password never reaches the output.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import { Pool } from 'pg';
import { RunSummary } from '../../src/engine';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { CliResult, Harness, parseJsonOut, runCli, startHarness } from './helpers';

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

describe('e2e: the CLI on a PostgreSQL store (--store postgres://...)', function () {
  this.timeout(180_000);
  let h: Harness;
  let db: { url: string; drop: () => Promise<void> };
  let url: string;
  const secret = 'pg-Pa55-e2e';
  before(async function () {
    if (pgSkipped()) this.skip();
    h = await startHarness({ contacts: 300, seed: 1414 });
    db = await freshDatabase('cli');
    const u = new URL(db.url);
    u.password = secret; // the private cluster trusts loopback: the password is only there to be hidden
    url = u.toString();
  });
  after(async () => {
    await h?.stop();
    await db?.drop();
  });

  const cli = async (args: string[]): Promise<CliResult> => {
    const r = await runCli(h, ['--store', url, ...args]);
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `the password leaked: ${r.stderr}`);
    return r;
  };

  it('a server that cannot be reached exits 1 (not a config error) naming store.url (password masked) and what to check', async () => {
    const r = ok(await runCli(h, ['--store', `postgres://cc:${secret}@127.0.0.1:1/cc`, 'status']), 1);
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), r.stderr);
    assert.match(
      r.stderr,
      /store\.url: postgres:\/\/cc:\*\*\*@127\.0\.0\.1:1\/cc: cannot connect: nothing accepts connections/,
    );
    assert.ok(!fs.existsSync(h.storePath));
  });

  it('check, sync, backfill, status, runs and audit run on the database; a second sync writes nothing again', async () => {
    ok(await cli(['--json', 'check']));
    const syncRun = await cli(['--json', 'sync']);
    assert.ok(syncRun.code === 0 || syncRun.code === 3, syncRun.stderr);
    const sync = parseJsonOut<RunSummary>(syncRun);
    assert.ok(sync.detection.newOptOuts > 0);
    const applied = Object.values(sync.targets).reduce((n, t) => n + (t.outcomes.applied ?? 0), 0);
    assert.ok(applied > 0, 'delivered');
    // a hand-run command spends from the application's shared budget, as the fleet's workers do
    const pool = new Pool({ connectionString: db.url });
    try {
      const used = await pool.query<{ used: number }>('SELECT used FROM cc_budget');
      assert.equal(used.rows.length, 1, 'one application budget row');
      // the check before the sync spent its own call(s) too
      const calls = sync.apiCalls['constant-contact'] ?? 0;
      const spent = Number(used.rows[0]!.used);
      assert.ok(calls > 0 && spent >= calls && spent <= calls + 2, `${spent} reserved for ${calls} + check's calls`);
    } finally {
      await pool.end();
    }
    const planRun = await cli(['--json', 'backfill', '--dry-run']);
    assert.ok(planRun.code === 0 || planRun.code === 3, planRun.stderr);
    assert.equal(parseJsonOut<RunSummary>(planRun).dryRun, true);
    const again = parseJsonOut<RunSummary>(await cli(['--json', 'sync']));
    assert.equal(again.detection.newOptOuts, 0);
    for (const t of Object.values(again.targets)) assert.equal(t.outcomes.applied ?? 0, 0, 'nothing written twice');
    const status = parseJsonOut<{ optOuts: { active: number }; lastRuns: { kind: string }[] }>(
      ok(await cli(['--json', 'status'])),
    );
    assert.equal(status.optOuts.active, sync.detection.newOptOuts);
    assert.deepEqual(
      status.lastRuns.map((r) => r.kind),
      ['sync', 'backfill', 'sync', 'check'],
    );
    const runs = parseJsonOut<{ id: number; kind: string; status: string }[]>(ok(await cli(['--json', 'runs'])));
    assert.deepEqual(
      runs.map((r) => [r.id, r.kind]),
      [
        [4, 'sync'],
        [3, 'backfill'],
        [2, 'sync'],
        [1, 'check'],
      ],
    );
    assert.equal(runs[3]!.status, 'ok');
    const audit = JSON.parse(ok(await cli(['audit', '--format', 'json'])).stdout) as { rows: { outcome: string }[] };
    assert.equal(audit.rows.filter((r) => r.outcome === 'applied').length, applied);
    assert.ok(!fs.existsSync(h.storePath), 'the config store.path was never created');
  });
});
