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
import { OptOut } from '../../src/domain';

const NOW = '2026-06-01T00:00:00.000Z';

function optOut(email: string): OptOut {
  return { email, contactId: `c-${email}`, optedOutAt: '2026-05-01T00:00:00.000Z', source: 'Contact', reason: null, deleted: false };
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
    assert.deepStrictEqual(fs.readdirSync(path.dirname(file)).filter((f) => !f.startsWith('state.db')), []);
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
    assert.throws(() => new SqliteStateStore(file), storeError(file, /not writable \(mode 0400\).*never changes a mode/));
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o400, 'mode unchanged');
    assert.ok(fs.readFileSync(file).equals(before), 'content unchanged');
  });

  it('a zero-byte state.db is an error naming the path, not a new empty store', () => {
    const file = path.join(dir, 'state.db');
    fs.writeFileSync(file, '');
    assert.throws(() => new SqliteStateStore(file), storeError(file, /empty file \(0 bytes\).*refusing to start a new store/));
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

  it('an unwritable folder is an error naming the path (as a non-root user)', function () {
    if (process.getuid?.() === 0) this.skip(); // root writes into a 0500 folder
    const ro = path.join(dir, 'ro');
    fs.mkdirSync(ro, { mode: 0o500 });
    const file = path.join(ro, 'state.db');
    assert.throws(() => new SqliteStateStore(file), storeError(file, /not writable/));
  });
});

describe('store hardening: the delivery history is append-only evidence', () => {
  const policy = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };
  const T1 = '2026-06-01T01:00:00.000Z';
  const T2 = '2026-06-02T01:00:00.000Z';

  it('a redelivery keeps the first write (written_at, outcome applied, record ids) and adds to the history', () => {
    const s = new SqliteStateStore(':memory:');
    s.commitDetection({ runId: 1, added: [optOut('a@x.com'), optOut('b@x.com')], resubscribed: [], targets: ['hs'], now: NOW });
    s.recordOutcomes({ runId: 1, target: 'hs', now: new Date(T1), policy, outcomes: [
      { email: 'a@x.com', kind: 'applied', recordIds: ['101'] },
      { email: 'b@x.com', kind: 'not-found', recordIds: [] },
    ] });
    assert.strictEqual(s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: true, now: T2 }), 2);
    s.recordOutcomes({ runId: 2, target: 'hs', now: new Date(T2), policy, outcomes: [
      { email: 'a@x.com', kind: 'already-suppressed', recordIds: ['101', '102'] },
      { email: 'b@x.com', kind: 'applied', recordIds: ['201'] },
    ] });
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
    assert.deepStrictEqual(s.deliveryHistory(T2).map((e) => e.email).sort(), ['a@x.com', 'b@x.com']);
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
      old.exec(`INSERT INTO opt_outs (email, contact_id, opted_out_at, first_seen_at, last_seen_at) VALUES ('a@x.com', 'c1', '${NOW}', '${NOW}', '${NOW}')`);
      old.exec(`INSERT INTO outbox (target, email, state, enqueued_at, next_attempt_at, outcome, record_ids, completed_at, attempts)
                VALUES ('hs', 'a@x.com', 'done', '${NOW}', '${NOW}', 'already-suppressed', '["1"]', '${T2}', 1)`);
      old.exec(`INSERT INTO outcomes (run_id, target, email, kind, record_ids, at) VALUES (1, 'hs', 'a@x.com', 'applied', '["1"]', '${T1}')`);
      old.exec(`INSERT INTO outcomes (run_id, target, email, kind, record_ids, at) VALUES (2, 'hs', 'a@x.com', 'already-suppressed', '["1"]', '${T2}')`);
      old.close();
      const s = new SqliteStateStore(file);
      assert.deepStrictEqual(s.deliveryHistory(null).map((e) => [e.attempt, e.outcome]), [[1, 'applied'], [2, 'already-suppressed']]);
      const [row] = s.audit(null);
      assert.strictEqual(row!.writtenAt, T1, 'a redelivery done before the upgrade no longer hides the write');
      assert.strictEqual(row!.outcome, 'applied');
      s.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
