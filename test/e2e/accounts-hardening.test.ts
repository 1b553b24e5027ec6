/**
 * What a new user's trial of the multi-account commands found (SQLite and PostgreSQL): `accounts remove` while a
 * fleet worker holds one of the account's leases, the re-authorise hint of an added account, `accounts set
 * default`, `--replace` with another application or refresh token, two accounts sharing one refresh token, the
 * place `accounts add` names, and `check --account`.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { CliResult, Harness, runCli, spawnCli, startHarness, waitFor } from './helpers';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { openBackend } from '../../src/store/open';
import { fleetTablesOf } from '../../src/service/fleet-cli';
import { deliverLeaseKey } from '../../src/fleet/types';
import { SOURCE_KV } from '../../src/engine';
import { maskUrl } from '../../src/store/pg/pool';

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

/** A fleet worker on another host holding acme's hubspot outbox lease (unexpired), as `run --workers 2` does. */
async function holdDeliverLease(spec: string, account: string): Promise<void> {
  const backend = await openBackend(spec);
  try {
    const { leases } = await fleetTablesOf(backend);
    const now = new Date();
    await leases.ensure(
      deliverLeaseKey(account, 'hubspot'),
      account,
      'hubspot',
      new Date(now.getTime() - 1000).toISOString(),
      1,
    );
    const held = await leases.claim('host-b:4242:w1', 1, 600_000, now, ['deliver']);
    assert.equal(held.length, 1);
  } finally {
    await backend.close();
  }
}

async function storedRefreshToken(spec: string, account: string): Promise<string | null> {
  const backend = await openBackend(spec);
  try {
    return (await (await backend.account(account)).kv(SOURCE_KV)).get('refresh_token');
  } finally {
    await backend.close();
  }
}

async function seedTokens(spec: string, account: string): Promise<void> {
  const backend = await openBackend(spec);
  try {
    const kv = await (await backend.account(account)).kv(SOURCE_KV);
    kv.set('refresh_token', 'stored-rotated-rt');
    kv.set('access_token', 'stored-access');
    await kv.flush?.();
  } finally {
    await backend.close();
  }
}

function suite(label: string, pg: boolean): void {
  describe(`e2e accounts hardening (${label})`, function () {
    this.timeout(180_000);
    let h: Harness;
    let spec: string;
    let drop: (() => Promise<void>) | null = null;
    let file: string;
    const cli = (args: string[]): Promise<CliResult> => runCli(h, pg ? ['--store', spec, ...args] : args);
    before(async function () {
      if (pg && pgSkipped()) this.skip();
      h = await startHarness({ contacts: 100, seed: 4242 });
      if (pg) {
        const db = await freshDatabase('accounts-hardening');
        spec = db.url;
        drop = db.drop;
      } else spec = h.storePath;
      const { source, targets, delivery } = h.cfg.config as Record<string, unknown>;
      file = path.join(h.dir, 'acme.json');
      fs.writeFileSync(file, JSON.stringify({ source, targets, delivery }));
    });
    after(async () => {
      await h?.stop();
      await drop?.();
    });

    it('accounts add names where the account lives; warns of another account with the same refresh token', async () => {
      const r = ok(await cli(['accounts', 'add', 'acme', '--from', file]));
      const where = pg ? maskUrl(spec) : path.join(`${h.storePath}.accounts`, 'acme.db');
      assert.ok(r.stdout.includes(`) in ${where}\n`), r.stdout);
      const src = (h.cfg.config as { source: { refreshToken?: string } }).source;
      // same application and refresh token as acme: a warning naming acme, not a refusal
      const twin = ok(await cli(['accounts', 'add', 'twin', '--from', file]));
      assert.ok(src.refreshToken, 'the emulator config seeds a refresh token');
      assert.match(
        twin.stderr,
        /warning: accounts add twin: account acme uses the same Constant Contact clientId and refresh token/,
      );
      const other = path.join(h.dir, 'other.json');
      const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { source: Record<string, unknown> };
      fs.writeFileSync(other, JSON.stringify({ ...doc, source: { ...doc.source, refreshToken: 'another-rt' } }));
      const solo = ok(await cli(['accounts', 'add', 'solo', '--from', other]));
      assert.doesNotMatch(solo.stderr, /same Constant Contact clientId/);
    });

    it('--replace keeps the stored tokens unless clientId, authBaseUrl, apiBaseUrl or refreshToken changed', async () => {
      await seedTokens(spec, 'acme');
      const same = ok(await cli(['accounts', 'add', 'acme', '--from', file, '--replace']));
      assert.match(same.stdout, /stored Constant Contact tokens are kept/);
      assert.equal(await storedRefreshToken(spec, 'acme'), 'stored-rotated-rt');
      const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { source: Record<string, unknown> };
      const other = path.join(h.dir, 'acme-new-rt.json');
      fs.writeFileSync(other, JSON.stringify({ ...doc, source: { ...doc.source, refreshToken: 'a-new-grant' } }));
      const changed = ok(await cli(['accounts', 'add', 'acme', '--from', other, '--replace']));
      assert.match(changed.stdout, /source\.refreshToken changed: its stored Constant Contact tokens were cleared/);
      assert.ok(!(await storedRefreshToken(spec, 'acme')), 'the old grant is gone');
    });

    it('a refused refresh token names the account in the re-authorise hint; check names the account', async () => {
      const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { source: Record<string, unknown> };
      const bad = path.join(h.dir, 'bad.json');
      fs.writeFileSync(bad, JSON.stringify({ ...doc, source: { ...doc.source, refreshToken: 'bogus-refresh' } }));
      ok(await cli(['accounts', 'add', 'bad', '--from', bad]));
      const r = await cli(['--account', 'bad', 'check']);
      assert.notEqual(r.code, 0);
      assert.ok(r.stdout.includes('Re-authorise with `cc-optout --account bad auth constant-contact`'), r.stdout);
      assert.match(r.stdout, /^config .*, account bad: ok$/m);
    });

    it('accounts set default is refused (exit 2) the same way on every backend', async () => {
      // the config file's account has state here (as after its first run): PostgreSQL then lists it implicitly
      const backend = await openBackend(spec);
      try {
        const kv = await (await backend.account('default')).kv(SOURCE_KV);
        kv.set('daily_usage', '{}');
        await kv.flush?.();
      } finally {
        await backend.close();
      }
      const r = ok(await cli(['accounts', 'set', 'default', '--priority', '0']), 2);
      assert.match(
        r.stderr,
        /accounts set default: "default" is the config file's account; its priority is not stored/,
      );
    });

    it('accounts remove is refused (exit 3) while a fleet worker on any host holds a lease of the account', async () => {
      await holdDeliverLease(spec, 'twin');
      const r = ok(await cli(['accounts', 'remove', 'twin', '--yes']), 3);
      assert.match(
        r.stderr,
        /accounts remove twin: a fleet worker holds deliver:twin:hubspot \(owner host-b:4242:w1, expires [0-9T:.Z-]+\); nothing removed/,
      );
      assert.match(r.stderr, /accounts set twin --priority 0/);
      const list = ok(await cli(['--json', 'accounts', 'list']));
      assert.match(list.stdout, /"id": "twin"/, 'nothing was removed');
      ok(await cli(['accounts', 'remove', 'solo', '--yes']));
    });

    it('a fleet worker logs the re-authorise hint of the account it polled', async () => {
      const p = spawnCli(h, pg ? ['--store', spec, 'run', '--workers', '1'] : ['run', '--workers', '1']);
      try {
        await waitFor(() => (p.stdout() + p.stderr()).includes('`cc-optout --account bad auth constant-contact`'), {
          timeoutMs: 40_000,
          intervalMs: 200,
          what: "account bad's re-authorise hint in the worker's log",
        });
        assert.ok(!(p.stdout() + p.stderr()).includes('Re-authorise with `cc-optout auth constant-contact`'));
      } finally {
        p.child.kill('SIGTERM');
        await p.done.catch(() => undefined);
      }
    });
  });
}

suite('SQLite', false);
suite('PostgreSQL', true);
