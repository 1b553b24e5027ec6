/**
 * A real PostgreSQL for the tests, with nothing to set up by hand:
 * - `CC_OPTOUT_TEST_PG=postgres://...` uses that server (each test database is created and dropped there);
 * - otherwise a private throwaway cluster is started once per test process from Debian's `postgresql` package
 *   (initdb into a temporary folder, loopback only, a free port, fsync off), as the `postgres` user when the
 *   tests run as root (PostgreSQL refuses to run as root), and stopped when the process exits.
 * `.ci/run` installs the package when it is missing. Without it the tests fail (they never skip silently),
 * unless CC_OPTOUT_SKIP_POSTGRES=1 is set, which skips them (callers use `pgAvailable()` for that).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { Client } from 'pg';

// read once at load: test/setup.ts deletes CC_* variables from the environment after this module may load
const GIVEN_URL = process.env.CC_OPTOUT_TEST_PG ?? '';
const SKIP = process.env.CC_OPTOUT_SKIP_POSTGRES === '1';

export function pgSkipped(): boolean {
  return SKIP;
}

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs
        .readdirSync(root)
        .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      'no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql; or set CC_OPTOUT_TEST_PG=postgres://..., or CC_OPTOUT_SKIP_POSTGRES=1 to skip these tests)',
    );
  }
  return path.join(root, versions[0], 'bin');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

interface Cluster {
  readonly url: string;
  readonly proc: ChildProcess | null;
  readonly dir: string | null;
}

let cluster: Promise<Cluster> | null = null;

function asPostgresUser(): { uid?: number; gid?: number } {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

async function startCluster(): Promise<Cluster> {
  if (GIVEN_URL) return { url: GIVEN_URL, proc: null, dir: null };
  const bin = pgBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-optout-pg-'));
  const data = path.join(dir, 'data');
  const ids = asPostgresUser();
  if (ids.uid !== undefined) fs.chownSync(dir, ids.uid, ids.gid ?? ids.uid);
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'], {
    stdio: 'ignore',
    ...ids,
  });
  const port = await freePort();
  const proc = spawn(
    path.join(bin, 'postgres'),
    [
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=300',
    ],
    { stdio: 'ignore', ...ids },
  );
  proc.unref();
  const stop = (): void => {
    try {
      proc.kill('SIGQUIT');
    } catch {
      // already gone
    }
  };
  process.once('exit', () => {
    stop();
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // the server may still hold files for a moment
    }
  });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const c = new Client({ connectionString: url });
    try {
      await c.connect();
      await c.end();
      break;
    } catch (err) {
      await c.end().catch(() => undefined);
      if (proc.exitCode !== null || Date.now() > deadline) {
        stop();
        throw new Error(`the test PostgreSQL did not start: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url, proc, dir };
}

/** The server's admin URL (the `postgres` database). */
export async function pgServerUrl(): Promise<string> {
  cluster ??= startCluster();
  return (await cluster).url;
}

let counter = 0;

/** A new empty database on the test server; returns its URL and a function that drops it. */
export async function freshDatabase(label = 't'): Promise<{ url: string; drop: () => Promise<void> }> {
  const admin = await pgServerUrl();
  const name = `cc_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${process.pid}_${++counter}_${Date.now() % 100000}`;
  const c = new Client({ connectionString: admin });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE "${name}"`);
  } finally {
    await c.end();
  }
  const u = new URL(admin);
  u.pathname = `/${name}`;
  const url = u.toString();
  return {
    url,
    drop: async () => {
      const d = new Client({ connectionString: admin });
      await d.connect();
      try {
        await d.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await d.end();
      }
    },
  };
}
