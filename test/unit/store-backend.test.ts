/**
 * Where the state lives (issue 13): `openBackend(spec)` (a path: the SQLite backend with its account registry and
 * one file per added account; a postgres:// URL: the PostgreSQL backend, its password never in a message), the
 * config's `store.url`, and `openAppAsync` (any backend, any account).
 */
import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { openAppAsync } from '../../src/app';
import { ConfigError, decodeConfig } from '../../src/config';
import { memoryLogger, redact } from '../../src/log';
import { openBackend, storeSpecFor, withoutPassword } from '../../src/store/open';
import { SqliteBackend, UnknownAccount } from '../../src/store/sqlite-backend';
import { MIGRATIONS } from '../../src/store/sqlite';
import { StoreOpenError } from '../../src/store/types';
import { FakeSource, MEMORY_PLUGIN, contact, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';

const NOW = '2026-06-01T12:00:00.000Z';

describe('store backends: openBackend and the SQLite backend', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-backend-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a path opens the SQLite backend: `default` is the file itself, as a single-account store always was', async () => {
    const file = path.join(dir, 'state.db');
    const b = await openBackend(file);
    try {
      assert.strictEqual(b.kind, 'sqlite');
      assert.strictEqual(b.location, file);
      const s = await b.account('default');
      await s.setCheckpoint('k', 'v', NOW);
      assert.strictEqual(await s.getCheckpoint('k'), 'v');
      assert.strictEqual(s.schemaVersion, MIGRATIONS.length);
      assert.strictEqual(await b.account('default'), s, 'one store per account');
      assert.deepStrictEqual(await b.listAccounts(), []);
    } finally {
      await b.close();
    }
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600);
    // the registry is a table of that file (a migration appended to the store's)
    const again = new SqliteBackend(file);
    const tables = (await again.account('default')).db
      .prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'accounts'`)
      .all();
    assert.strictEqual(tables.length, 1);
    assert.strictEqual(await (await again.account('default')).getCheckpoint('k'), 'v', 'the same file');
    await again.close();
  });

  it('an added account is its own file <path>.accounts/<id>.db (0600 in a 0700 folder); remove deletes file and row', async () => {
    const file = path.join(dir, 'state.db');
    const b = await openBackend(file);
    try {
      const rec = await b.putAccount({ id: 'acme', config: { source: { clientId: '${ACME_ID}' } }, priority: 2 }, NOW);
      assert.deepStrictEqual(rec, {
        id: 'acme',
        config: { source: { clientId: '${ACME_ID}' } },
        priority: 2,
        createdAt: NOW,
        updatedAt: NOW,
      });
      const acme = await b.account('acme');
      await acme.setCheckpoint('k', 'acme', NOW);
      const def = await b.account('default');
      assert.strictEqual(await def.getCheckpoint('k'), null, 'accounts do not share state');
      const accountFile = path.join(`${file}.accounts`, 'acme.db');
      assert.ok(fs.existsSync(accountFile));
      assert.strictEqual(fs.statSync(accountFile).mode & 0o777, 0o600);
      assert.strictEqual(fs.statSync(`${file}.accounts`).mode & 0o777, 0o700);
      // replacing keeps created_at
      const later = '2026-06-02T00:00:00.000Z';
      const replaced = await b.putAccount({ id: 'acme', config: { v: 2 } }, later);
      assert.strictEqual(replaced.createdAt, NOW);
      assert.strictEqual(replaced.updatedAt, later);
      assert.strictEqual(replaced.priority, 1);
      assert.deepStrictEqual(
        (await b.listAccounts()).map((a) => a.id),
        ['acme'],
      );
      assert.deepStrictEqual((await b.getAccount('acme'))!.config, { v: 2 });
      assert.strictEqual(await b.getAccount('other'), null);

      assert.strictEqual(await b.removeAccount('acme'), true);
      assert.ok(!fs.existsSync(accountFile), 'the file is gone');
      assert.strictEqual(await b.getAccount('acme'), null, 'and the row');
      assert.strictEqual(await b.removeAccount('acme'), false);
      await assert.rejects(b.removeAccount('default'), /cannot be removed/);
    } finally {
      await b.close();
    }
  });

  it('an unknown or malformed account id is a clear error naming it and `cc-optout accounts list`', async () => {
    const b = await openBackend(path.join(dir, 'state.db'));
    try {
      await assert.rejects(
        b.account('nobody'),
        (e: Error) =>
          e instanceof UnknownAccount &&
          /account "nobody" is not in this store.*cc-optout accounts list/.test(e.message),
      );
      await assert.rejects(b.account('Bad Id!'), /"Bad Id!" is not a valid account id.*cc-optout accounts list/);
      await assert.rejects(b.putAccount({ id: '../x', config: {} }, NOW), /not a valid account id/);
      await assert.rejects(b.putAccount({ id: 'x', config: {}, priority: -1 }, NOW), /priority must be a number of 0/);
      assert.ok(!fs.existsSync(path.join(dir, 'state.db.accounts')), 'nothing created for them');
    } finally {
      await b.close();
    }
  });

  it('mustExist (read-only commands): a missing store file is a StoreOpenError and nothing is created', async () => {
    const file = path.join(dir, 'sub', 'state.db');
    await assert.rejects(
      openBackend(file, { mustExist: true }),
      (e: Error) => e instanceof StoreOpenError && e.message.includes(file) && /no state store here/.test(e.message),
    );
    assert.ok(!fs.existsSync(path.join(dir, 'sub')));
  });

  it('a postgres:// URL selects the PostgreSQL backend; its password never appears in the error', async () => {
    const url = 'postgres://cc:pa55-word-XYZ@127.0.0.1:1/ccoptout';
    await assert.rejects(openBackend(url), (e: Error) => {
      assert.ok(!e.message.includes('pa55-word-XYZ'), e.message);
      assert.ok(!(e.stack ?? '').includes('pa55-word-XYZ'));
      return true;
    });
    assert.ok(!redact('x pa55-word-XYZ y').includes('pa55-word-XYZ'), 'the password is redacted from logs');
    assert.strictEqual(
      withoutPassword(`could not connect to ${url} as cc:pa55-word-XYZ`, url),
      'could not connect to postgres://cc:***@127.0.0.1:1/ccoptout as cc:***',
    );
    await assert.rejects(openBackend('mysql://u:p@h/db'), (e: Error) => e instanceof StoreOpenError);
  });

  it('storeSpecFor: --store wins (relative to the working folder), then store.url, then store.path (relative to the config)', () => {
    const cfg = { file: '/etc/cc/config.json', storePath: './state.db' };
    assert.strictEqual(storeSpecFor(cfg), '/etc/cc/state.db');
    assert.strictEqual(storeSpecFor({ ...cfg, storeUrl: 'postgres://h/db' }), 'postgres://h/db');
    assert.strictEqual(storeSpecFor({ ...cfg, storeUrl: 'postgres://h/db' }, 'other.db'), path.resolve('other.db'));
    assert.strictEqual(storeSpecFor(cfg, 'postgresql://h/x'), 'postgresql://h/x');
    assert.strictEqual(storeSpecFor(cfg, ':memory:'), ':memory:');
  });
});

describe('config: store.url', () => {
  const base = {
    source: { type: 'constant-contact', clientId: 'abc' },
    targets: [{ name: 'crm', connector: 'memory-crm', config: { crm: 'x' } }],
  };

  it('a postgres:// URL (from the environment) is the store; its password is redacted', () => {
    const c = decodeConfig(
      { ...base, store: { url: '${PG_URL}' } },
      { PG_URL: 'postgres://cc:s3cr3t-pw-77@db/cc' },
      testRegistry(),
    );
    assert.strictEqual(c.storeUrl, 'postgres://cc:s3cr3t-pw-77@db/cc');
    assert.ok(!redact('pw s3cr3t-pw-77').includes('s3cr3t-pw-77'));
    assert.strictEqual(decodeConfig(base, {}, testRegistry()).storeUrl, undefined, 'absent: the SQLite file');
  });

  it('store.path and store.url together, or a URL that is not postgres://, are config errors naming the field', () => {
    const problems = (store: unknown): string => {
      try {
        decodeConfig({ ...base, store }, {}, testRegistry());
      } catch (e) {
        assert.ok(e instanceof ConfigError);
        return e.message;
      }
      throw new Error('expected a ConfigError');
    };
    assert.match(problems({ path: './s.db', url: 'postgres://h/db' }), /store: give either store.path .* or store.url/);
    const m = problems({ url: 'mysql://u:topsecret@h/db' });
    assert.match(
      m,
      /store\.url: "mysql:\/\/u:\*\*\*@h\/db" is not a postgres:\/\/ URL \(a SQLite store is a file path\)/,
    );
    assert.ok(!m.includes('topsecret'), m);
    assert.match(problems({ url: '' }), /store\.url/);
  });
});

describe('openAppAsync: any backend, any account', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-appasync-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function writeConfig(crm: string): string {
    const file = path.join(dir, 'cc-optout.config.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        source: { type: 'constant-contact', clientId: 'abc' },
        targets: [{ name: 'crm', connector: 'memory-crm', config: { crm } }],
        store: { path: './state.db' },
        plugins: [MEMORY_PLUGIN],
      }),
    );
    return file;
  }

  const source = (): FakeSource => {
    const src = new FakeSource();
    src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
    return src;
  };

  it('opens the config store (or --store instead), runs a sync, and closes the backend it opened', async () => {
    const file = writeConfig('appasync-1');
    const crm = memoryCrm('appasync-1', ['a@x.com']);
    const src = source();
    const other = path.join(dir, 'elsewhere', 'other.db');
    const app = await openAppAsync({
      configFile: file,
      env: {},
      logger: memoryLogger(),
      store: other,
      wrapSource: () => src,
    });
    assert.strictEqual(app.backend.kind, 'sqlite');
    assert.strictEqual(app.backend.location, other);
    assert.strictEqual(app.account, 'default');
    const r = await app.engine.sync();
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 1 });
    assert.strictEqual(crm.writes, 1);
    await app.close();
    assert.ok(fs.existsSync(other), 'the --store file holds the state');
    assert.ok(!fs.existsSync(path.join(dir, 'state.db')), 'the config store.path was not touched');
    // a read-only open of the same store sees the run; of a store that does not exist creates nothing
    const ro = await openAppAsync({
      configFile: file,
      env: {},
      logger: memoryLogger(),
      store: other,
      requireSecrets: false,
    });
    assert.strictEqual((await ro.store.recentRuns(1))[0]!.status, 'ok');
    await ro.close();
    await assert.rejects(
      openAppAsync({ configFile: file, env: {}, logger: memoryLogger(), requireSecrets: false }),
      (e: Error) => e instanceof StoreOpenError,
    );
    assert.ok(!fs.existsSync(path.join(dir, 'state.db')));
  });

  it('an added account runs with the config from the registry, in its own file; an unknown one is refused', async () => {
    const file = writeConfig('appasync-default');
    memoryCrm('appasync-default', ['a@x.com']);
    const acme = memoryCrm('appasync-acme', ['a@x.com']);
    const backend = await openBackend(path.join(dir, 'state.db'));
    try {
      await backend.putAccount(
        {
          id: 'acme',
          config: {
            source: { type: 'constant-contact', clientId: 'acme-client' },
            targets: [{ name: 'acme-crm', connector: 'memory-crm', config: { crm: 'appasync-acme' } }],
          },
        },
        NOW,
      );
      const src = source();
      const app = await openAppAsync({
        configFile: file,
        env: {},
        logger: memoryLogger(),
        backend,
        account: 'acme',
        wrapSource: () => src,
      });
      assert.strictEqual(app.config.source.clientId, 'acme-client');
      assert.deepStrictEqual(
        app.config.targets.map((t) => t.name),
        ['acme-crm'],
      );
      const r = await app.engine.sync();
      assert.deepStrictEqual(r.targets['acme-crm']!.outcomes, { applied: 1 });
      assert.strictEqual(acme.writes, 1);
      await app.close();
      assert.deepStrictEqual(
        await (await backend.account('default')).recentRuns(5),
        [],
        'the default account is untouched',
      );
      assert.strictEqual((await (await backend.account('acme')).recentRuns(5)).length, 1);
      await assert.rejects(
        openAppAsync({ configFile: file, env: {}, logger: memoryLogger(), backend, account: 'ghost' }),
        /account "ghost" is not in this store.*cc-optout accounts list/,
      );
    } finally {
      await backend.close();
    }
  });
});
