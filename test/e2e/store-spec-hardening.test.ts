/**
 * `--store` / `store.url` / `store.path` hardening: a URL of another scheme than postgres:// is a config error
 * (exit 2, nothing created, password masked); `--store` replaces the config's store section entirely (its unset
 * `${ENV}` references do not matter); a server that asks for a password the URL lacks says so.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { ConfigError } from '../../src/domain';
import { storeSpecFor } from '../../src/store/open';
import { openPgBackend } from '../../src/store/postgres';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { CliResult, Harness, runCli, startHarness } from './helpers';

function code(r: CliResult, expected: number): CliResult {
  assert.equal(r.code, expected, `exit ${r.code} (expected ${expected})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

/** Every file under `dir` (relative paths). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p).map((f) => path.join(e.name, f)));
    else out.push(e.name);
  }
  return out.sort();
}

describe('store spec hardening: other URL schemes are refused', () => {
  it('storeSpecFor names --store, store.url and store.path, masking the password', () => {
    const cfg = { storePath: 'state.db', file: '/tmp/x/cc-optout.config.json' };
    assert.throws(
      () => storeSpecFor(cfg, 'mysql://u:p@h/x'),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.includes('--store: "mysql://u:***@h/x" is not a postgres:// URL (a SQLite store is a file path)'),
    );
    assert.throws(
      () => storeSpecFor(cfg, 'postgresql+x://u:secretpw@h/db'),
      (e: Error) => e instanceof ConfigError && /--store: "postgresql\+x:\/\/u:\*\*\*@h\/db"/.test(e.message),
    );
    assert.throws(
      () => storeSpecFor({ ...cfg, storeUrl: 'mysql://u:secretpw@h/x' }),
      (e: Error) => e instanceof ConfigError && e.message.includes('store.url: "mysql://u:***@h/x" is not a postgres'),
    );
    assert.throws(
      () => storeSpecFor({ ...cfg, storePath: 'sqlite://u:secretpw@h/x' }),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.includes('store.path: "sqlite://u:***@h/x" is not a postgres') &&
        !e.message.includes('secretpw'),
    );
    // paths and postgres URLs are still fine
    assert.equal(storeSpecFor(cfg, 'postgres://u:p@h/db'), 'postgres://u:p@h/db');
    assert.equal(storeSpecFor(cfg, '/tmp/a:b.db'), '/tmp/a:b.db');
  });

  describe('through the CLI', () => {
    let h: Harness;
    before(async () => {
      h = await startHarness({ contacts: 60, seed: 4242 });
    });
    after(async () => h?.stop());

    for (const args of [
      ['--store', 'postgresql+x://u:secretpw@h/db', 'check'],
      ['--store', 'mysql://u:secretpw@h/x', 'accounts', 'list'],
      ['--store', 'mysql://u:secretpw@h/x', 'status'],
      ['--store', 'mysql://u:secretpw@h/x', 'run'],
    ]) {
      it(`${args.join(' ')} exits 2 naming --store, creating nothing`, async () => {
        const before = filesUnder(h.dir);
        const r = code(await runCli(h, args, { timeoutMs: 30_000 }), 2);
        assert.match(r.stderr, /--store: "[a-z+]+:\/\/u:\*\*\*@h\/[a-z]+" is not a postgres:\/\/ URL/);
        assert.ok(!`${r.stdout}${r.stderr}`.includes('secretpw'), r.stderr);
        assert.deepEqual(filesUnder(h.dir), before);
      });
    }

    it('a config store.url with another scheme exits 2 naming store.url', async () => {
      const raw = JSON.parse(fs.readFileSync(h.cfg.file, 'utf8')) as Record<string, unknown>;
      const file = path.join(h.dir, 'mysql.config.json');
      fs.writeFileSync(file, JSON.stringify({ ...raw, store: { url: 'mysql://u:${DBPW}@h/x' } }));
      const before = filesUnder(h.dir);
      const r = code(await runCli(h, ['--config', file, 'check'], { env: { DBPW: 'secretpw' } }), 2);
      assert.match(r.stderr, /store\.url: "mysql:\/\/u:\*\*\*@h\/x" is not a postgres:\/\/ URL/);
      assert.ok(!r.stderr.includes('secretpw'));
      assert.deepEqual(filesUnder(h.dir), before);
    });

    it('--store replaces the config store section: its unset ${ENV} does not matter', async function () {
      if (pgSkipped()) this.skip();
      const db = await freshDatabase('storeoverride');
      try {
        const raw = JSON.parse(fs.readFileSync(h.cfg.file, 'utf8')) as Record<string, unknown>;
        const file = path.join(h.dir, 'unset.config.json');
        fs.writeFileSync(
          file,
          JSON.stringify({ ...raw, store: { url: 'postgres://cc:${CC_OPTOUT_DB_PASSWORD}@db.invalid/cc' } }),
        );
        const r = code(await runCli(h, ['--config', file, '--store', db.url, 'accounts', 'list']), 0);
        assert.ok(!r.stderr.includes('CC_OPTOUT_DB_PASSWORD'), r.stderr);
        const s = code(await runCli(h, ['--config', file, '--store', db.url, 'status']), 0);
        assert.ok(!s.stderr.includes('CC_OPTOUT_DB_PASSWORD'), s.stderr);
        // without --store the unset variable is still reported
        const w = await runCli(h, ['--config', file, 'status']);
        assert.equal(w.code, 2);
        assert.match(w.stderr, /CC_OPTOUT_DB_PASSWORD is not set/);
      } finally {
        await db.drop();
      }
    });
  });
});

/** A server that speaks just enough of the PostgreSQL protocol to ask for SCRAM-SHA-256 authentication. */
async function scramOnlyServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    let seen = 0;
    s.on('error', () => undefined);
    s.on('data', () => {
      seen++;
      const msg = (body: Buffer): Buffer => {
        const head = Buffer.alloc(5);
        head.write('R', 0);
        head.writeInt32BE(body.length + 4, 1);
        return Buffer.concat([head, body]);
      };
      if (seen === 1) {
        const code10 = Buffer.alloc(4);
        code10.writeInt32BE(10);
        s.write(msg(Buffer.concat([code10, Buffer.from('SCRAM-SHA-256\0\0')])));
      } else if (seen === 2) {
        const code11 = Buffer.alloc(4);
        code11.writeInt32BE(11);
        s.write(msg(Buffer.concat([code11, Buffer.from('r=abcdef,s=c2FsdA==,i=4096')])));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('store spec hardening: a server that wants a password the URL lacks', () => {
  it('says so (put it in the URL or set PGPASSWORD), not the raw SASL message', async () => {
    const srv = await scramOnlyServer();
    const saved = process.env.PGPASSWORD;
    delete process.env.PGPASSWORD;
    try {
      await assert.rejects(
        openPgBackend(`postgres://cc@127.0.0.1:${srv.port}/cc`, { connectTimeoutMs: 5000 }),
        (e: Error) => {
          assert.match(e.message, /the server asks for a password for user cc/);
          assert.match(e.message, /PGPASSWORD/);
          assert.match(e.message, /\$\{ENV\} reference in store\.url/);
          assert.doesNotMatch(e.message, /SCRAM-SERVER-FIRST-MESSAGE/);
          return true;
        },
      );
    } finally {
      if (saved !== undefined) process.env.PGPASSWORD = saved;
      await srv.close();
    }
  });
});
