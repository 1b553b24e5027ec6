/**
 * End to end through the CLI (issue 8): the audit trail survives `backfill --redeliver` (every delivery is kept,
 * the first write stays the first write), audit files are written 0600, and store path problems exit 2 naming
 * store.path before anything is written.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { parse as parseCsv } from 'csv-parse/sync';
import {
  CliResult,
  Harness,
  assertVerified,
  expectedOutcomes,
  parseJsonOut,
  runCli,
  startHarness,
  writeRequests,
} from './helpers';
import { AuditRow, DeliveryEvent } from '../../src/store/types';

function ok(r: CliResult): CliResult {
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  return r;
}

describe('e2e: the audit trail is evidence (backfill --redeliver keeps the first write and every delivery)', function () {
  this.timeout(180_000);
  let h: Harness;
  before(async () => {
    h = await startHarness({ contacts: 1200, seed: 811, delivery: { batchSize: 100 } });
  });
  after(() => h?.stop());

  it('after --redeliver, applied rows keep written_at, outcome applied and their record ids; the history lists both deliveries', async () => {
    ok(await runCli(h, ['--json', '--no-progress', 'backfill']));
    assertVerified(h.emu);
    const before = JSON.parse(ok(await runCli(h, ['audit', '--format', 'json'])).stdout) as { rows: AuditRow[] };
    const applied = before.rows.filter((r) => r.outcome === 'applied');
    assert.ok(applied.length > 20, `the dataset has applied rows (${applied.length})`);
    for (const r of applied) assert.ok(r.writtenAt, `${r.target} ${r.email}: written_at`);

    const w0 = writeRequests(h.emu);
    const re = parseJsonOut(ok(await runCli(h, ['--json', '--no-progress', 'backfill', '--redeliver'])));
    assert.equal(re.exitCode, 0);
    assert.ok(
      (re.targets.hubspot!.outcomes['already-suppressed'] ?? 0) > 0,
      'the redelivery found records already suppressed',
    );
    assert.deepEqual(writeRequests(h.emu), w0, 'the redelivery wrote nothing (all already suppressed)');

    const after = JSON.parse(ok(await runCli(h, ['audit', '--format', 'json'])).stdout) as { rows: AuditRow[] };
    const byKey = new Map(after.rows.map((r) => [`${r.target} ${r.email}`, r]));
    const truth = h.emu.truth();
    const exp = expectedOutcomes(h.emu, truth);
    let lost = 0;
    for (const b of applied) {
      const a = byKey.get(`${b.target} ${b.email}`)!;
      if (a.writtenAt !== b.writtenAt || a.outcome !== 'applied') lost++;
      assert.equal(a.writtenAt, b.writtenAt, `${b.target} ${b.email}: first write time kept`);
      assert.equal(a.outcome, 'applied', `${b.target} ${b.email}: outcome of the first write kept`);
      assert.deepEqual(a.recordIds, b.recordIds, `${b.target} ${b.email}: record ids of the write kept`);
      assert.equal(a.lagSeconds, b.lagSeconds);
      assert.equal(a.lastOutcome, 'already-suppressed', 'the latest delivery is shown too');
      assert.equal(a.deliveries, 2);
    }
    assert.equal(lost, 0);
    // the CSV agrees: as many rows with a write time as before
    const csv = (parseCsv(ok(await runCli(h, ['audit', '--format', 'csv'])).stdout) as string[][])
      .slice(1)
      .filter((x) => x[2] !== '-');
    assert.equal(csv.filter((x) => x[5] !== '').length, applied.length, 'rows with written_at');
    for (const x of csv)
      if (x[9] === 'applied')
        assert.equal(exp[x[2] as 'hubspot' | 'salesforce'].get(x[0]!), 'applied', `${x[2]} ${x[0]}`);

    // the history: one event per delivery, numbered, with how it was queued and in which run
    const hist = JSON.parse(ok(await runCli(h, ['audit', '--history', '--format', 'json'])).stdout) as {
      history: DeliveryEvent[];
    };
    const sample = applied[0]!;
    const mine = hist.history.filter((e) => e.target === sample.target && e.email === sample.email);
    assert.deepEqual(
      mine.map((e) => [e.attempt, e.origin === 'redeliver', e.outcome, e.runKind]),
      [
        [1, false, 'applied', 'backfill'],
        [2, true, 'already-suppressed', 'backfill'],
      ],
    );
    assert.equal(mine[0]!.at, sample.writtenAt);
    assert.deepEqual(mine[0]!.recordIds, sample.recordIds);
    assert.ok(mine[1]!.runId! > mine[0]!.runId!);
    assert.equal(hist.history.length, 2 * before.rows.length, 'two deliveries per (email, target)');
    const hcsv = parseCsv(ok(await runCli(h, ['audit', '--history', '--format', 'csv'])).stdout) as string[][];
    assert.deepEqual(hcsv[0], [
      'delivered_at',
      'run_id',
      'run_kind',
      'target',
      'email',
      'cc_contact_id',
      'attempt',
      'origin',
      'outcome',
      'crm_record_ids',
      'message',
    ]);
    assert.equal(hcsv.length - 1, hist.history.length);
  });

  it('audit --output replaces an existing 0644 file with a 0600 one (also with --history)', async () => {
    for (const extra of [[], ['--history']]) {
      const file = path.join(h.dir, `audit${extra.length}.csv`);
      fs.writeFileSync(file, 'old content\n', { mode: 0o644 });
      fs.chmodSync(file, 0o644);
      const r = ok(await runCli(h, ['audit', ...extra, '--output', file]));
      assert.match(r.stdout, /wrote \d+ /);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600, `${file} is owner-only`);
      assert.match(fs.readFileSync(file, 'utf8'), /^(email|delivered_at),/);
      assert.deepEqual(
        fs.readdirSync(h.dir).filter((f) => f.includes('.tmp-')),
        [],
        'no temporary file left',
      );
    }
    const r = await runCli(h, ['audit', '--output', path.join(h.dir, 'no', 'such', 'dir', 'a.csv')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--output .*no\/such\/dir\/a\.csv/);
  });

  it('store path problems exit 2 naming store.path and the path; the file is left as it was', async () => {
    const cfg = JSON.parse(fs.readFileSync(h.cfg.file, 'utf8')) as { store: { path: string } };
    const plain = path.join(h.dir, 'plain.txt');
    fs.writeFileSync(plain, 'x');
    const empty = path.join(h.dir, 'empty.db');
    fs.writeFileSync(empty, '');
    const foreign = path.join(h.dir, 'foreign.db');
    fs.writeFileSync(foreign, 'hello, not sqlite\n');
    const cases: [string, RegExp][] = [
      [h.dir, /is a directory/],
      [path.join(plain, 'state.db'), /regular file, not a directory/],
      [empty, /empty file \(0 bytes\)/],
      [foreign, /not a SQLite database/],
    ];
    const w0 = writeRequests(h.emu);
    for (const [storePath, re] of cases) {
      const file = path.join(h.dir, 'bad-store.json');
      fs.writeFileSync(file, JSON.stringify({ ...cfg, store: { path: storePath } }));
      for (const cmd of [['sync'], ['status'], ['audit']]) {
        const r = await runCli(h, ['--config', file, ...cmd]);
        assert.equal(r.code, 2, `${storePath} ${cmd}: exit ${r.code}\n${r.stderr}`);
        assert.ok(r.stderr.includes(`store.path: ${storePath}`), r.stderr);
        assert.match(r.stderr, re);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      }
    }
    assert.equal(fs.statSync(empty).size, 0);
    assert.equal(fs.readFileSync(foreign, 'utf8'), 'hello, not sqlite\n');
    // a read-only store: mode kept, nothing written
    const store = h.storePath;
    fs.chmodSync(store, 0o400);
    try {
      const r = await runCli(h, ['sync']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /store\.path: .*state\.db: is not writable \(mode 0400\)/);
      assert.equal(fs.statSync(store).mode & 0o777, 0o400);
    } finally {
      fs.chmodSync(store, 0o600);
    }
    assert.deepEqual(writeRequests(h.emu), w0, 'nothing was written to any CRM');
  });
});
