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
