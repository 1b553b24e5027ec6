/**
 * `cc-optout run` on the default SQLite store once an account is registered: fleet mode by itself (no flag), the
 * config file's own account (`default`) and the registered one both delivered by two workers in one process, the
 * fleet's tables in the store.path file, and SIGTERM exits 0 with every lease handed back.
 */
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { Emulators, startEmulators } from '../../src/emulators';
import { openBackend } from '../../src/store/open';
import { CLI, waitFor } from './helpers';

const APP_ID = 'cc-fleet-sqlite-app';
const APP_SECRET = 'cc-fleet-sqlite-app-secret-0123456789';

function doc(e: Emulators, i: number): Record<string, unknown> {
  return {
    source: {
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      refreshToken: `\${CC_REFRESH_TOKEN_${i}}`,
      apiBaseUrl: e.cc.apiBaseUrl,
      authBaseUrl: e.cc.authBaseUrl,
      rateLimit: { perSecond: 100, dailyBudget: 1_000_000 },
      detection: { overlapMinutes: 10, lagMinutes: 0 },
    },
    targets: [
      {
        name: 'hubspot',
        connector: 'hubspot',
        config: {
          baseUrl: e.hubspot.baseUrl,
          auth: { type: 'service-key', serviceKey: `\${HUBSPOT_SERVICE_KEY_${i}}` },
          onlyExistingContacts: true,
        },
      },
    ],
  };
}

describe('e2e: cc-optout run on SQLite with a registered account (fleet mode by itself)', function () {
  this.timeout(90_000);
  const worlds: Emulators[] = [];
  let dir = '';

  after(async () => {
    await Promise.all(worlds.map((w) => w.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs the file account and the registered one (one worker, the default); SIGTERM hands every lease back and exits 0', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-fleet-sqlite-'));
    for (let i = 0; i < 2; i++)
      worlds.push(
        await startEmulators({ contacts: 60, seed: 1400 + i, cc: { clientId: APP_ID, clientSecret: APP_SECRET } }),
      );
    const file = path.join(dir, 'cc-optout.config.json');
    const storePath = path.join(dir, 'state.db');
    fs.writeFileSync(file, JSON.stringify({ store: { path: './state.db' }, ...doc(worlds[0]!, 0) }));
    const backend = await openBackend(storePath);
    try {
      await backend.putAccount({ id: 'acme', config: doc(worlds[1]!, 1) }, new Date().toISOString());
    } finally {
      await backend.close();
    }
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      CC_CLIENT_ID: APP_ID,
      CC_CLIENT_SECRET: APP_SECRET,
    };
    worlds.forEach((w, i) => {
      env[`CC_REFRESH_TOKEN_${i}`] = w.cc.refreshToken;
      env[`HUBSPOT_SERVICE_KEY_${i}`] = w.hubspot.serviceKey;
    });
    const child = spawn(
      process.execPath,
      [
        CLI,
        '--config',
        file,
        '--log-format',
        'json',
        'run',
        '--every',
        '1s',
        '--lease-ttl',
        '3s',
        '--listen',
        '127.0.0.1:0',
      ],
      { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const delivered = (): boolean => worlds.every((w) => w.verify().hubspot.notSuppressed.length === 0);
    try {
      await waitFor(delivered, {
        timeoutMs: 45_000,
        intervalMs: 200,
        what: `both accounts delivered\n${err.slice(-2000)}`,
      });
      assert.match(err, /service listening \(fleet mode\)/);
      for (const w of worlds) w.addOptOuts(2);
      await waitFor(delivered, { timeoutMs: 30_000, intervalMs: 200, what: 'the new opt-outs delivered' });
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exit, 0, err.slice(-3000));
    for (const w of worlds) assert.deepEqual(w.verify().hubspot.repeatedWrites, []);
    const db = new Database(storePath, { readonly: true });
    try {
      const rows = db.prepare('SELECT key, owner FROM cc_leases ORDER BY key').all() as {
        key: string;
        owner: string | null;
      }[];
      assert.deepEqual(
        rows.map((r) => r.key),
        ['account:acme', 'account:default', 'deliver:acme:hubspot', 'deliver:default:hubspot'],
      );
      assert.ok(
        rows.every((r) => r.owner === null),
        'every lease handed back',
      );
    } finally {
      db.close();
    }
  });
});
