/**
 * `accounts add|list|set|remove` and `--account` on a PostgreSQL store (`--store postgres://...`) against the
 * emulators: two accounts in one database, one backfilled, each sees only its own records; the fleet's view in
 * `status` once lease rows exist; the URL's password never reaches the output.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { CliResult, Harness, parseJsonOut, runCli, startHarness } from './helpers';
import { openBackend } from '../../src/store/open';
import { fleetTablesOf } from '../../src/service/fleet-cli';
import { accountLeaseKey } from '../../src/fleet/types';
import type { AccountStatus } from '../../src/accounts-commands';

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

describe('e2e accounts on a PostgreSQL store', function () {
  this.timeout(180_000);
  let h: Harness;
  let db: { url: string; drop: () => Promise<void> };
  let url: string;
  const secret = 'pg-Acc0unts-e2e';
  before(async function () {
    if (pgSkipped()) this.skip();
    h = await startHarness({ contacts: 300, seed: 1515 });
    db = await freshDatabase('accounts');
    const u = new URL(db.url);
    u.password = secret; // the private cluster trusts loopback: the password is only there to be hidden
    url = u.toString();
  });
  after(async () => {
    await h?.stop();
    await db?.drop();
  });

  const cli = async (args: string[]): Promise<CliResult> => {
    const r = await runCli(h, ['--store', url, ...args]);
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), `the password leaked: ${r.stderr}`);
    return r;
  };

  it('add, --account backfill and status/audit per account, fleet view, set, remove', async () => {
    const { source, targets, delivery } = h.cfg.config as Record<string, unknown>;
    const file = path.join(h.dir, 'acme.json');
    fs.writeFileSync(file, JSON.stringify({ source, targets, delivery }));
    ok(await cli(['accounts', 'add', 'acme', '--from', file]));
    ok(await cli(['accounts', 'add', 'beta', '--from', file, '--priority', '2']));
    const list = parseJsonOut<{ id: string; priority: number }[]>(ok(await cli(['--json', 'accounts', 'list'])));
    assert.deepEqual(
      list.map((a) => [a.id, a.priority]),
      [
        ['default', 1],
        ['acme', 1],
        ['beta', 2],
      ],
    );
    ok(await cli(['--account', 'acme', 'backfill']));
    type S = { account: AccountStatus; optOuts: { active: number } };
    const acme = parseJsonOut<S>(await cli(['--json', '--account', 'acme', 'status']));
    assert.ok(acme.optOuts.active > 0);
    assert.equal(acme.account.fleet, null);
    const beta = parseJsonOut<S>(await cli(['--json', '--account', 'beta', 'status']));
    assert.equal(beta.optOuts.active, 0);
    const betaAudit = JSON.parse(ok(await cli(['--account', 'beta', 'audit', '--format', 'json'])).stdout) as {
      rows: unknown[];
    };
    assert.deepEqual(betaAudit.rows, []);
    assert.match(ok(await cli(['--account', 'nope', 'status']), 2).stderr, /known accounts: default, acme, beta/);

    // lease rows as a fleet worker leaves them: status shows the next poll and the share (priorities 1 : 2)
    const backend = await openBackend(url);
    const next = new Date(Date.now() + 600_000).toISOString();
    try {
      const { leases } = await fleetTablesOf(backend);
      await leases.ensure(accountLeaseKey('acme'), 'acme', null, next, 1);
      await leases.ensure(accountLeaseKey('beta'), 'beta', null, next, 2);
    } finally {
      await backend.close();
    }
    const fleet = parseJsonOut<S>(await cli(['--json', '--account', 'acme', 'status'])).account;
    assert.equal(fleet.fleet?.nextPollAt, next);
    assert.ok(Math.abs(fleet.fleet!.share - 1 / 3) < 1e-9, String(fleet.fleet?.share));

    ok(await cli(['accounts', 'set', 'beta', '--priority', '0']));
    assert.equal(parseJsonOut<S>(await cli(['--json', '--account', 'acme', 'status'])).account.fleet?.share, 1);
    assert.match(ok(await cli(['accounts', 'remove', 'acme']), 2).stderr, /would delete the account acme/);
    ok(await cli(['accounts', 'remove', 'acme', '--yes']));
    assert.match(ok(await cli(['--account', 'acme', 'status']), 2).stderr, /known accounts: default, beta/);
    ok(await cli(['accounts', 'add', 'acme', '--from', file]));
    assert.equal(parseJsonOut<S>(await cli(['--json', '--account', 'acme', 'status'])).optOuts.active, 0);
    assert.ok(!fs.existsSync(h.storePath), "the config file's store.path is never created");
  });
});
