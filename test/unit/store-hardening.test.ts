/**
 * Store hardening (issue 8): the store file's mode is never changed, an empty or foreign file is never silently
 * replaced by a new store, and path problems are StoreOpenErrors (exit 2) naming store.path and the path.
 */
import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SqliteStateStore, MIGRATIONS } from '../../src/store/sqlite';
import { StoreOpenError } from '../../src/store/types';
import { ConfigError } from '../../src/config';
import { OptOut, ObservedContact } from '../../src/domain';
import { holdRunLock } from '../../src/store/lease';
import { Engine } from '../../src/engine';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { SourcePage, ScanStats } from '../../src/source/types';
import { FakeSource, contact, testConfig, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const NOW = '2026-06-01T00:00:00.000Z';

function optOut(email: string): OptOut {
  return {
    email,
    contactId: `c-${email}`,
    optedOutAt: '2026-05-01T00:00:00.000Z',
    source: 'Contact',
    reason: null,
    deleted: false,
  };
}

function storeError(file: string, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StoreOpenError, `a StoreOpenError, got ${(e as Error).name}: ${(e as Error).message}`);
    assert.ok(e instanceof ConfigError, 'mapped to exit 2 like a config error');
    assert.ok(e.message.startsWith(`store.path: ${file}`), `names store.path and the path: ${e.message}`);
    assert.match(e.message, re);
    return true;
  };
}

describe('store hardening: file modes, empty and foreign files, path problems', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-store-h-'));
  });
  afterEach(() => {
    fs.chmodSync(dir, 0o700);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a new store is created 0600 with the schema, and no temporary file is left behind', () => {
    const file = path.join(dir, 'a', 'state.db');
    const s = new SqliteStateStore(file);
    assert.strictEqual(s.schemaVersion, MIGRATIONS.length);
    s.close();
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepStrictEqual(
      fs.readdirSync(path.dirname(file)).filter((f) => !f.startsWith('state.db')),
      [],
    );
    assert.ok(fs.statSync(file).size > 0, 'the file holds the schema as soon as it exists');
  });

  it('never changes a mode the owner set on an existing store (0640 stays 0640)', () => {
    const file = path.join(dir, 'state.db');
    new SqliteStateStore(file).close();
    fs.chmodSync(file, 0o640);
    const s = new SqliteStateStore(file);
    s.commitDetection({ runId: 1, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
    s.close();
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o640);
  });

  it('a store set to 0400 is neither chmodded nor written: a clear error naming the path', () => {
    const file = path.join(dir, 'state.db');
    const s0 = new SqliteStateStore(file);
    s0.commitDetection({ runId: 1, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
    s0.close();
    fs.chmodSync(file, 0o400);
    const before = fs.readFileSync(file);
    assert.throws(
      () => new SqliteStateStore(file),
      storeError(file, /not writable \(mode 0400\).*never changes a mode/),
    );
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o400, 'mode unchanged');
    assert.ok(fs.readFileSync(file).equals(before), 'content unchanged');
  });

  it('a zero-byte state.db is an error naming the path, not a new empty store', () => {
    const file = path.join(dir, 'state.db');
    fs.writeFileSync(file, '');
    assert.throws(
      () => new SqliteStateStore(file),
      storeError(file, /empty file \(0 bytes\).*refusing to start a new store/),
    );
    assert.strictEqual(fs.statSync(file).size, 0, 'left as it was');
  });

  it('a file that is not SQLite is an error naming the path', () => {
    const file = path.join(dir, 'state.db');
    fs.writeFileSync(file, '{"not": "a database"}\n');
    assert.throws(() => new SqliteStateStore(file), storeError(file, /not a SQLite database/));
    assert.strictEqual(fs.readFileSync(file, 'utf8'), '{"not": "a database"}\n');
  });

  it('a SQLite file that is corrupt past its header is an error naming the path', () => {
    const file = path.join(dir, 'state.db');
    fs.writeFileSync(file, Buffer.concat([Buffer.from('SQLite format 3\0', 'latin1'), Buffer.alloc(600, 0xff)]));
    assert.throws(() => new SqliteStateStore(file), storeError(file, /cannot be opened as a cc-optout state store/));
  });

  it('store.path naming a directory is an error naming the path', () => {
    assert.throws(() => new SqliteStateStore(dir), storeError(dir, /is a directory/));
  });

  it('store.path under a regular file is an error naming the path', () => {
    const plain = path.join(dir, 'plain.txt');
    fs.writeFileSync(plain, 'x');
    const file = path.join(plain, 'state.db');
    assert.throws(() => new SqliteStateStore(file), storeError(file, /regular file, not a directory/));
    const deeper = path.join(plain, 'sub', 'state.db');
    assert.throws(() => new SqliteStateStore(deeper), storeError(deeper, /regular file, not a directory/));
  });

  it('an unwritable folder is an error naming the path (checked as an unprivileged user)', function () {
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, { mode: 0o555 });
    fs.chmodSync(dir, 0o755);
    const file = path.join(ro, 'state.db');
    if (process.getuid?.() !== 0) {
      assert.throws(() => new SqliteStateStore(file), storeError(file, /its folder .* is not writable/));
      return;
    }
    // root writes anywhere: open the store as `nobody` in a child process
    const script = `const { SqliteStateStore } = require(${JSON.stringify(require.resolve('../../src/store/sqlite'))});
      try { new SqliteStateStore(${JSON.stringify(file)}); console.log('OPENED'); } catch (e) { console.log(e.name + ' ' + e.message); }`;
    const r = require('child_process').spawnSync(process.execPath, ['-e', script], {
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
    });
    if (r.error || /EACCES.*sqlite|Cannot find module/.test(r.stderr + r.stdout)) this.skip(); // the build is not readable by nobody
    assert.match(
      r.stdout,
      new RegExp(
        `^StoreOpenError store\\.path: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: its folder .* is not writable`,
      ),
      r.stdout + r.stderr,
    );
    assert.strictEqual(fs.readdirSync(ro).length, 0);
  });
});

describe('store hardening: the delivery history is append-only evidence', () => {
  const policy = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };
  const T1 = '2026-06-01T01:00:00.000Z';
  const T2 = '2026-06-02T01:00:00.000Z';

  it('a redelivery keeps the first write (written_at, outcome applied, record ids) and adds to the history', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({
      runId: 1,
      added: [optOut('a@x.com'), optOut('b@x.com')],
      resubscribed: [],
      targets: ['hs'],
      now: NOW,
    });
    s.recordOutcomes({
      runId: 1,
      target: 'hs',
      now: new Date(T1),
      policy,
      outcomes: [
        { email: 'a@x.com', kind: 'applied', recordIds: ['101'] },
        { email: 'b@x.com', kind: 'not-found', recordIds: [] },
      ],
    });
    assert.strictEqual(s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: true, now: T2 }), 2);
    s.recordOutcomes({
      runId: 2,
      target: 'hs',
      now: new Date(T2),
      policy,
      outcomes: [
        { email: 'a@x.com', kind: 'already-suppressed', recordIds: ['101', '102'] },
        { email: 'b@x.com', kind: 'applied', recordIds: ['201'] },
      ],
    });
    const rows = new Map(s.audit(null).map((r) => [r.email, r]));
    const a = rows.get('a@x.com')!;
    assert.strictEqual(a.writtenAt, T1, 'first write kept');
    assert.strictEqual(a.outcome, 'applied');
    assert.deepStrictEqual(a.recordIds, ['101']);
    assert.strictEqual(a.lagSeconds, 31 * 86400 + 3600);
    assert.strictEqual(a.lastOutcome, 'already-suppressed');
    assert.strictEqual(a.lastDeliveryAt, T2);
    assert.strictEqual(a.deliveries, 2);
    assert.strictEqual(a.closedAt, T2);
    const b = rows.get('b@x.com')!;
    assert.strictEqual(b.writtenAt, T2, 'written when it was first applied');
    assert.strictEqual(b.outcome, 'applied');
    const hist = s.deliveryHistory(null).filter((e) => e.email === 'a@x.com');
    assert.deepStrictEqual(
      hist.map((e) => [e.attempt, e.runId, e.origin, e.outcome, e.at, e.recordIds]),
      [
        [1, 1, 'sync', 'applied', T1, ['101']],
        [2, 2, 'redeliver', 'already-suppressed', T2, ['101', '102']],
      ],
    );
    assert.deepStrictEqual(
      s
        .deliveryHistory(T2)
        .map((e) => e.email)
        .sort(),
      ['a@x.com', 'b@x.com'],
    );
    assert.throws(() => s.db.prepare(`UPDATE outcomes SET kind = 'applied'`).run(), /append-only/);
    assert.throws(() => s.db.prepare(`DELETE FROM outcomes`).run(), /append-only/);
  });

  it('migrates an existing store: its earlier deliveries are numbered and kept', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-store-m-'));
    try {
      const file = path.join(dir, 'state.db');
      // a store at schema version 2 (before this migration), written directly
      const Database = require('better-sqlite3') as typeof import('better-sqlite3');
      const old = new Database(file);
      old.exec(MIGRATIONS[0]!);
      old.exec(MIGRATIONS[1]!);
      old.pragma('user_version = 2');
      old.exec(
        `INSERT INTO opt_outs (email, contact_id, opted_out_at, first_seen_at, last_seen_at) VALUES ('a@x.com', 'c1', '${NOW}', '${NOW}', '${NOW}')`,
      );
      old.exec(`INSERT INTO outbox (target, email, state, enqueued_at, next_attempt_at, outcome, record_ids, completed_at, attempts)
                VALUES ('hs', 'a@x.com', 'done', '${NOW}', '${NOW}', 'already-suppressed', '["1"]', '${T2}', 1)`);
      old.exec(
        `INSERT INTO outcomes (run_id, target, email, kind, record_ids, at) VALUES (1, 'hs', 'a@x.com', 'applied', '["1"]', '${T1}')`,
      );
      old.exec(
        `INSERT INTO outcomes (run_id, target, email, kind, record_ids, at) VALUES (2, 'hs', 'a@x.com', 'already-suppressed', '["1"]', '${T2}')`,
      );
      old.close();
      const s = new SqliteStateStore(file);
      assert.deepStrictEqual(
        s.deliveryHistory(null).map((e) => [e.attempt, e.outcome]),
        [
          [1, 'applied'],
          [2, 'already-suppressed'],
        ],
      );
      const [row] = s.audit(null);
      assert.strictEqual(row!.writtenAt, T1, 'a redelivery done before the upgrade no longer hides the write');
      assert.strictEqual(row!.outcome, 'applied');
      s.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('store hardening: the run lock is a renewed lease', () => {
  const T = Date.parse('2026-06-01T00:00:00.000Z');
  const at = (ms: number) => new Date(T + ms).toISOString();
  const lock = (owner: string, pid: number, host: string, ms: number, leaseMs?: number) => ({
    owner,
    pid,
    host,
    command: 'sync',
    now: at(ms),
    leaseMs,
  });
  const alive = () => true;

  it('a live lease from another host blocks; renewals keep it; once not renewed for its lease it is taken over', () => {
    const s = new SqliteStateStore(':memory:');
    s.acquireRunLock(lock('a', 1, 'container-1', 0), alive);
    assert.strictEqual(s.runLock()!.expiresAt, at(90_000), 'the default lease is 3 x 30 s');
    assert.throws(
      () => s.acquireRunLock(lock('b', 2, 'container-2', 60_000), alive),
      (e: Error) => e.name === 'RunLocked' && /pid 1 on container-1.*valid until/.test(e.message),
    );
    // the holder renews every 30 s: still blocked long after 90 s
    for (let t = 30_000; t <= 300_000; t += 30_000) assert.ok(s.renewRunLock('a', at(t)));
    assert.throws(() => s.acquireRunLock(lock('b', 2, 'container-2', 380_000), alive), /RunLocked|another cc-optout/);
    // the holder dies (container restart): 90 s after its last renewal anyone may take it, whatever the host
    assert.throws(() => s.acquireRunLock(lock('b', 2, 'container-2', 390_000), alive));
    s.acquireRunLock(lock('b', 2, 'container-2', 390_001), alive);
    assert.strictEqual(s.runLock()!.owner, 'b');
    assert.strictEqual(s.renewRunLock('a', at(390_002)), false, 'the old holder can no longer renew');
    const ev = s.events(null, ['run-lock-taken-over']);
    assert.strictEqual(ev.length, 1);
    assert.match(ev[0]!.detail!, /"host":"container-1".*lease expired/);
  });

  it('the holder chooses its lease (short intervals for tests); same host + dead pid is taken at once', () => {
    const s = new SqliteStateStore(':memory:');
    s.acquireRunLock(lock('a', 1, 'h', 0, 300), alive);
    assert.throws(() => s.acquireRunLock(lock('b', 2, 'h', 200), alive));
    s.acquireRunLock(lock('b', 2, 'h', 301), alive);
    s.acquireRunLock(lock('c', 3, 'h', 302), (pid) => pid !== 2); // b is dead on this host: no waiting
    assert.strictEqual(s.runLock()!.owner, 'c');
  });

  it('releaseRunLock says whether (and which) lock was held', () => {
    const s = new SqliteStateStore(':memory:');
    assert.strictEqual(s.releaseRunLock(null), null);
    s.acquireRunLock(lock('a', 7, 'h1', 0), alive);
    assert.strictEqual(s.releaseRunLock('someone-else'), null);
    const held = s.releaseRunLock(null)!;
    assert.deepStrictEqual(
      [held.owner, held.pid, held.host, held.command, held.acquiredAt],
      ['a', 7, 'h1', 'sync', at(0)],
    );
    assert.strictEqual(s.runLock(), null);
  });

  it('a store whose lease was taken over refuses further commits (LeaseLost); nothing of it is written', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-lease-'));
    try {
      const file = path.join(dir, 'state.db');
      const first = new SqliteStateStore(file);
      const second = new SqliteStateStore(file);
      first.acquireRunLock(lock('first', 1, 'host-a', 0), alive);
      first.commitDetection({ runId: 1, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
      // first stalls (suspended VM, blocked loop) past its lease; second, on another host, takes over
      second.acquireRunLock(lock('second', 2, 'host-b', 100_000), alive);
      assert.throws(
        () =>
          first.commitDetection({
            runId: 1,
            added: [optOut('b@x.com')],
            resubscribed: [],
            targets: ['hs'],
            now: NOW,
            checkpoints: { k: 'v' },
          }),
        (e: Error) => e.name === 'LeaseLost' && /taken over by cc-optout sync \(pid 2 on host-b/.test(e.message),
      );
      assert.throws(
        () =>
          first.recordOutcomes({
            runId: 1,
            target: 'hs',
            now: new Date(NOW),
            policy: { maxAttempts: 3, backoffBaseSeconds: 1, backoffMaxSeconds: 1 },
            outcomes: [{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }],
          }),
        /taken over/,
      );
      assert.throws(() => first.setCheckpoint('k', 'v', NOW), /taken over/);
      assert.throws(() => first.finishRun(1, 0, {}, NOW), /taken over/);
      assert.deepStrictEqual(
        [...second.activeOptOutEmails()],
        ['a@x.com'],
        'only what was committed before the takeover',
      );
      assert.strictEqual(second.getCheckpoint('k'), null);
      assert.strictEqual(
        second.targetStatus(['hs'], new Date(NOW))[0]!.queued,
        1,
        'the row stays queued for the new holder',
      );
      // unlock removing a live run's lock also stops it
      second.releaseRunLock(null);
      assert.throws(() => second.setCheckpoint('k', 'v', NOW), /was removed/);
      first.close();
      second.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('store hardening: runs renew their lease and stop when it is taken over', () => {
  it('holdRunLock renews in the background (short interval) and reports a takeover once', async () => {
    const s = new SqliteStateStore(':memory:');
    let now = Date.parse(NOW);
    const lost: string[] = [];
    const lease = await holdRunLock(
      s,
      { owner: 'a', pid: 1, host: 'h1', command: 'sync' },
      { renewMs: 20, now: () => new Date(now), onLost: (m) => lost.push(m) },
    );
    assert.strictEqual(Date.parse(s.runLock()!.expiresAt) - now, 60, 'lease = 3 intervals');
    now += 1000;
    await sleep(80);
    assert.strictEqual(s.runLock()!.renewedAt, new Date(now).toISOString(), 'renewed by the timer');
    assert.strictEqual(lost.length, 0);
    s.acquireRunLock(
      { owner: 'b', pid: 2, host: 'h2', command: 'backfill', now: new Date(now + 61).toISOString() },
      () => true,
    );
    await sleep(80);
    assert.strictEqual(lost.length, 1, 'reported once');
    assert.match(lost[0]!, /taken over by cc-optout backfill \(pid 2 on h2\).*stops committing/);
    assert.strictEqual(lease.lost(), lost[0]);
    await lease.release();
    assert.strictEqual(s.runLock()!.owner, 'b', 'releasing a lost lease leaves the new holder alone');
  });

  it('a sync whose lease is taken over mid-scan fails with LeaseLost, logs an error and commits nothing more', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-lease-e-'));
    try {
      const file = path.join(dir, 'state.db');
      const store = new SqliteStateStore(file);
      const other = new SqliteStateStore(file);
      const registry = testRegistry();
      const crm = memoryCrm('lease-crm', ['a@x.com', 'b@x.com']);
      const config = testConfig(registry, [{ name: 'crm', crm: 'lease-crm' }]);
      const clock = fakeClock(new Date(NOW));
      const logger = memoryLogger();
      class StallingSource extends FakeSource {
        override async scanUnsubscribed(onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
          const list: ObservedContact[] = this.contacts;
          await onPage({ contacts: list.slice(0, 1), skippedNoEmail: 0, quarantined: 0 });
          // while this run waits on the network, its lease is taken over by a run on another host
          other.acquireRunLock({
            owner: 'other',
            pid: 99,
            host: 'elsewhere',
            command: 'sync',
            now: new Date(Date.parse(NOW) + 3600_000).toISOString(),
          });
          await sleep(100);
          await onPage({ contacts: list.slice(1), skippedNoEmail: 0, quarantined: 0 });
          return { pages: 2, contacts: list.length, skippedNoEmail: 0, quarantined: 0 };
        }
      }
      const src = new StallingSource();
      src.contacts = [
        contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
        contact('b@x.com', 'unsubscribed', '2026-05-02T00:00:00.000Z'),
      ];
      const engine = new Engine({
        config,
        store,
        registry,
        source: () => src,
        clock,
        logger,
        random: () => 0.5,
        leaseRenewMs: 20,
      });
      await assert.rejects(
        engine.sync(),
        (e: Error) => e.name === 'LeaseLost' && /taken over by cc-optout sync \(pid 99 on elsewhere\)/.test(e.message),
      );
      assert.ok(
        logger.lines.some((l) => /taken over/.test(JSON.stringify(l))),
        'an error is logged',
      );
      assert.deepStrictEqual(
        [...other.activeOptOutEmails()],
        ['a@x.com'],
        'the page after the takeover was not committed',
      );
      assert.strictEqual(crm.writes, 0, 'nothing delivered');
      assert.strictEqual(other.runLock()!.owner, 'other');
      await engine.close();
      assert.strictEqual(other.runLock()!.owner, 'other', 'closing the engine leaves the new holder alone');
      store.close();
      other.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
