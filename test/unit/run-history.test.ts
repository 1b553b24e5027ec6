/**
 * Run history (issue 11 item 4): every run recorded with its kind, start, end, status, counts per target and
 * outcome, API calls per vendor, exit code and (redacted) error; a run that crashes or is killed never stays
 * `running`; `audit --run N` exports one run's evidence; `cc-optout runs` lists them without creating a store.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FakeSource, contact, runCliSync, testEngine } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { MIGRATIONS, SqliteStateStore } from '../../src/store/sqlite';
import { clearSecrets, registerSecret } from '../../src/log';
import { auditExport } from '../../src/history';
import { SourcePage, ScanStats } from '../../src/source/types';

/** A source whose full scan fails fatally after its first page, with a secret in the message. */
class FailingSource extends FakeSource {
  override async scanUnsubscribed(onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    await onPage({ contacts: this.contacts.slice(0, 1), skippedNoEmail: 0, quarantined: 0 });
    throw new Error('token endpoint said: invalid client secret sk-run-history-123');
  }
}

const HS = { name: 'hubspot', connector: 'hubspot', config: { auth: { type: 'service-key', serviceKey: 'k' } } };

describe('run history (issue 11 item 4)', () => {
  afterEach(() => clearSecrets());

  it('a run that fails fatally is recorded failed, with its redacted error, end time and what it did (was: stayed "running")', async () => {
    registerSecret('sk-run-history-123');
    const src = new FailingSource();
    src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
    memoryCrm('rh-fail', ['a@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'rh-fail' }], source: src });
    await assert.rejects(engine.sync(), /invalid client secret/);
    const [run] = store.recentRuns(1);
    assert.equal(run!.status, 'failed');
    assert.equal(run!.exitCode, 1);
    assert.ok(run!.finishedAt, 'the run has an end');
    assert.equal(run!.variant, 'reconcile');
    assert.match(run!.error!, /invalid client secret \[redacted\]/);
    assert.ok(!run!.error!.includes('sk-run-history-123'), run!.error!);
    // the run lease was released: the next run starts at once
    assert.equal(store.runLock(), null);
  });

  it('records counts per target and outcome, API calls per vendor, kind and variant of each run', async () => {
    const src = new FakeSource();
    src.contacts = [
      contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
      contact('b@x.com', 'unsubscribed', '2026-05-02T00:00:00.000Z'),
    ];
    memoryCrm('rh-a', ['a@x.com']);
    memoryCrm('rh-b', ['a@x.com', 'b@x.com']);
    const { engine, store, clock } = testEngine({
      targets: [
        { name: 'one', crm: 'rh-a' },
        { name: 'two', crm: 'rh-b' },
      ],
      source: src,
    });
    const s1 = await engine.sync();
    clock.advance(10 * 60_000);
    await engine.sync();
    await engine.backfill({ redeliver: true, targets: ['two'] });
    const runs = store.recentRuns(10);
    assert.deepEqual(
      runs.map((r) => [r.id, r.kind, r.variant, r.status, r.exitCode]),
      [
        [3, 'backfill', 'redeliver', 'ok', 0],
        [2, 'sync', 'window', 'ok', 0],
        [1, 'sync', 'reconcile', 'ok', 0],
      ],
    );
    const first = runs[2]!;
    assert.deepEqual(first.counts, { one: s1.targets.one!.outcomes, two: s1.targets.two!.outcomes });
    assert.deepEqual(first.counts.two, { applied: 2 });
    assert.deepEqual(first.counts.one, { applied: 1, 'not-found': 1 });
    assert.deepEqual(first.apiCalls, s1.apiCalls);
    assert.equal(first.pid, process.pid);
    assert.equal(first.host, os.hostname());
    assert.equal(first.error, null);
  });

  it('a run killed mid-way (no end recorded) reads abandoned once its lease is gone, and is marked so by the next run', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cc-rh-')), 'state.db');
    try {
      const s = new SqliteStateStore(file);
      // a run that took the lock and a run row, then died (SIGKILL): nothing ever finished it
      const dead = { owner: 'dead-owner', pid: 999_999_999, host: os.hostname(), command: 'sync' };
      s.acquireRunLock({ ...dead, now: new Date().toISOString() });
      const id = s.startRun('sync', false, new Date().toISOString(), dead);
      s.close();
      // a reader (status, runs, the status page) sees it abandoned without writing anything
      const r = new SqliteStateStore(file);
      assert.equal(r.getRun(id)!.status, 'abandoned');
      assert.equal(
        r.db.prepare('SELECT status FROM runs WHERE id = ?').pluck().get(id) as string,
        'running',
        'a read changes nothing',
      );
      r.close();
      // the next run takes over the dead holder's lock and marks the row
      const src = new FakeSource();
      memoryCrm('rh-kill', []);
      const { engine, store } = testEngine({
        targets: [{ name: 'crm', crm: 'rh-kill' }],
        source: src,
        storePath: file,
      });
      await engine.sync();
      const row = store.db.prepare('SELECT status, error FROM runs WHERE id = ?').get(id) as {
        status: string;
        error: string;
      };
      assert.equal(row.status, 'abandoned');
      assert.match(row.error, /ended without recording a result .* found by run #2/);
      assert.equal(store.getRun(2)!.status, 'ok');
      store.close();
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('a running run whose holder still has the lease reads running', () => {
    const s = new SqliteStateStore(':memory:');
    const me = { owner: 'me', pid: process.pid, host: os.hostname(), command: 'sync' };
    s.acquireRunLock({ ...me, now: new Date().toISOString() });
    const id = s.startRun('sync', false, new Date().toISOString(), me);
    assert.equal(s.getRun(id)!.status, 'running');
    // the lease lapses (not renewed for its 90 s): abandoned, whatever the host
    assert.equal(s.getRun(id, new Date(Date.now() + 10 * 60_000))!.status, 'abandoned');
    s.close();
  });

  it("audit --run N exports only that run's evidence; the append-only triggers still hold after the migration", async () => {
    const src = new FakeSource();
    src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
    memoryCrm('rh-audit', ['a@x.com', 'b@x.com']);
    const { engine, store, clock } = testEngine({ targets: [{ name: 'crm', crm: 'rh-audit' }], source: src });
    const r1 = await engine.sync();
    src.contacts.push(contact('b@x.com', 'unsubscribed', new Date(clock.now().getTime() - 60_000).toISOString()));
    clock.advance(10 * 60_000);
    const r2 = await engine.sync();
    assert.deepEqual(
      store.deliveryHistory(null, r1.runId).map((e) => e.email),
      ['a@x.com'],
    );
    assert.deepEqual(
      store.deliveryHistory(null, r2.runId).map((e) => e.email),
      ['b@x.com'],
    );
    assert.deepEqual(
      store.audit(null, r2.runId).map((r) => r.email),
      ['b@x.com'],
    );
    assert.equal(store.audit(null).length, 2);
    const csv = (await auditExport(store, { format: 'csv', runId: r2.runId, history: true })).text;
    assert.equal(csv.trim().split('\n').length, 2, csv);
    assert.match(csv, new RegExp(`^[^,]+,${r2.runId},sync,crm,b@x\\.com,`, 'm'));
    assert.equal(store.schemaVersion, MIGRATIONS.length);
    assert.throws(() => store.db.prepare(`UPDATE outcomes SET kind = 'x'`).run(), /append-only/);
    assert.throws(() => store.db.prepare(`DELETE FROM outcomes`).run(), /append-only/);
  });

  it('a store from before migration 5 keeps its runs: finished ones get a status, unfinished ones read abandoned', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cc-rh-')), 'old.db');
    try {
      const Database = require('better-sqlite3') as typeof import('better-sqlite3');
      const db = new Database(file);
      db.function('cc_sha256', (v: unknown) => String(v));
      for (let v = 0; v < 4; v++) db.exec(MIGRATIONS[v]!);
      db.pragma('user_version = 4');
      db.prepare(
        `INSERT INTO runs (kind, dry_run, started_at, finished_at, exit_code, summary) VALUES ('sync', 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:05Z', 3, ?)`,
      ).run(JSON.stringify({ targets: { hs: { outcomes: { applied: 4 } } }, apiCalls: { hubspot: 2 } }));
      db.prepare(`INSERT INTO runs (kind, dry_run, started_at) VALUES ('backfill', 0, '2026-01-02T00:00:00Z')`).run();
      db.close();
      const s = new SqliteStateStore(file);
      const [b, a] = s.recentRuns(5);
      assert.equal(a!.status, 'incomplete');
      assert.deepEqual(a!.counts, { hs: { applied: 4 } });
      assert.deepEqual(a!.apiCalls, { hubspot: 2 });
      assert.equal(b!.status, 'abandoned');
      s.close();
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  describe('cc-optout runs', () => {
    let dir: string;
    beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-runs-'))));
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('never creates a store (exit 2 naming store.path), and needs no secret', () => {
      const cfg = path.join(dir, 'c.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          store: { path: './state.db' },
          source: { type: 'constant-contact', clientId: '${CC_ID}' },
          targets: [HS],
        }),
      );
      const r = runCliSync(['--config', cfg, 'runs']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /store\.path: .*state\.db: no state store here/);
      assert.deepEqual(fs.readdirSync(dir), ['c.json']);
    });

    it('lists runs newest first (text and --json), --limit; audit --run of an unknown run exits 2', () => {
      const cfg = path.join(dir, 'c.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          store: { path: './state.db' },
          source: { type: 'constant-contact', clientId: '${CC_ID}' },
          targets: [HS],
        }),
      );
      const s = new SqliteStateStore(path.join(dir, 'state.db'));
      const who = { owner: 'o', pid: 1, host: 'elsewhere' };
      const a = s.startRun('sync', false, '2026-06-01T12:00:00.000Z', who);
      s.finishRun(a, 0, {}, '2026-06-01T12:00:03.000Z', {
        counts: { hubspot: { applied: 2 } },
        apiCalls: { hubspot: 3, 'constant-contact': 1 },
        variant: 'reconcile',
      });
      const b = s.startRun('backfill', false, '2026-06-01T13:00:00.000Z', who);
      s.failRun(b, 1, 'the Constant Contact refresh token was revoked', '2026-06-01T13:00:01.000Z', {
        counts: {},
        apiCalls: { 'constant-contact': 1 },
      });
      s.close();
      const t = runCliSync(['--config', cfg, 'runs']);
      assert.equal(t.code, 0, t.stderr);
      assert.match(
        t.stdout,
        /^run #2 backfill: failed, exit 1; started 2026-06-01T13:00:00.000Z, ended 2026-06-01T13:00:01.000Z \(1.0 s\)/,
      );
      assert.match(t.stdout, /error: the Constant Contact refresh token was revoked/);
      assert.match(
        t.stdout,
        /run #1 sync \(reconcile\): ok, exit 0.*\n {2}hubspot: applied 2\n {2}API calls: hubspot 3, constant-contact 1/,
      );
      const j = runCliSync(['--config', cfg, '--json', 'runs', '--limit', '1']);
      assert.equal(j.code, 0, j.stderr);
      const runs = JSON.parse(j.stdout) as { id: number; status: string; error: string; durationSeconds: number }[];
      assert.deepEqual(
        runs.map((r) => [r.id, r.status, r.durationSeconds]),
        [[2, 'failed', 1]],
      );
      const bad = runCliSync(['--config', cfg, 'audit', '--run', '99']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--run 99: no such run/);
      const ok = runCliSync(['--config', cfg, 'audit', '--history', '--run', '1']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^delivered_at,run_id/);
    });
  });
});
