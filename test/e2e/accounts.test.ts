/**
 * Many accounts in one store, through the compiled CLI against the emulators: `accounts add` checks an account
 * file before it writes it, `--account <id>` opens that account's config and state, and each account's
 * status, audit and run history show only its own records.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { RunSummary } from '../../src/engine';
import { CliResult, Harness, parseJsonOut, runCli, startHarness } from './helpers';
import { openBackend } from '../../src/store/open';
import { fleetTablesOf } from '../../src/service/fleet-cli';
import { accountLeaseKey } from '../../src/fleet/types';
import { activityWeight } from '../../src/fleet/scheduler';
import { FLEET_KV, POLL_RECORD_KEY } from '../../src/fleet/worker';
import type { AccountStatus } from '../../src/accounts-commands';

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

interface Listing {
  fleet?: { lastPollAt: string | null; nextPollAt: string; callsToday: number; share: number } | null;
  id: string;
  priority: number;
  targets: string[];
  createdAt: string | null;
  lastRun: { kind: string } | null;
}

interface StatusJson {
  account: AccountStatus;
  optOuts: { active: number; left: number };
  targets: { target: string; queued: number; done: Record<string, number> }[];
  lastRuns: { kind: string }[];
}

describe('e2e accounts: several accounts in one store', function () {
  this.timeout(180_000);
  let h: Harness;
  /** The account document: the emulator config's source, targets and delivery. */
  let accountFile: string;
  before(async () => {
    h = await startHarness({ contacts: 300, seed: 1313 });
    const { source, targets, delivery } = h.cfg.config as Record<string, unknown>;
    accountFile = path.join(h.dir, 'acme.account.json');
    fs.writeFileSync(
      accountFile,
      "// an account: the config file's source, targets and delivery\n" +
        JSON.stringify({ source, targets, delivery }, null, 2),
    );
  });
  after(() => h?.stop());

  it('adds two accounts; an invalid file is refused naming the field, and writes nothing', async () => {
    const bad = path.join(h.dir, 'bad.account.json');
    const { source, targets } = h.cfg.config as { source: Record<string, unknown>; targets: unknown[] };
    fs.writeFileSync(bad, JSON.stringify({ source: { ...source, clientId: '' }, targets, store: { path: 'x' } }));
    const r = ok(await runCli(h, ['accounts', 'add', 'bad', '--from', bad]), 2);
    assert.match(r.stderr, /^accounts add bad: source\.clientId: got "", expected/m);
    assert.match(r.stderr, /^accounts add bad: store: not allowed in an account/m);
    assert.match(
      ok(await runCli(h, ['accounts', 'add', 'Bad!', '--from', accountFile]), 2).stderr,
      /accounts add Bad!: id: got "Bad!"/,
    );

    ok(await runCli(h, ['accounts', 'add', 'acme', '--from', accountFile]));
    ok(await runCli(h, ['accounts', 'add', 'beta', '--from', accountFile, '--priority', '3']));
    // the same id again: refused without --replace
    assert.match(
      ok(await runCli(h, ['accounts', 'add', 'acme', '--from', accountFile]), 2).stderr,
      /accounts add acme: the account exists .*--replace/,
    );
    const list = parseJsonOut<Listing[]>(ok(await runCli(h, ['--json', 'accounts', 'list'])));
    assert.deepEqual(
      list.map((a) => [a.id, a.priority]),
      [
        ['default', 1],
        ['acme', 1],
        ['beta', 3],
      ],
    );
    assert.deepEqual(list[1]!.targets, ['hubspot', 'salesforce']);
    assert.ok(list[1]!.createdAt);
    // the stored document keeps the references unresolved
    assert.ok(!ok(await runCli(h, ['accounts', 'list'])).stdout.includes(h.env.CC_CLIENT_SECRET!));
  });

  it('--account: backfill one account; status, audit and runs of each show only its own records', async () => {
    const s = parseJsonOut<RunSummary>(ok(await runCli(h, ['--json', '--account', 'acme', 'backfill'])));
    const delivered = Object.values(s.targets).reduce((n, t) => n + (t.outcomes.applied ?? 0), 0);
    assert.ok(delivered > 0, 'acme delivered something');

    const acme = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', '--account', 'acme', 'status'])));
    assert.ok(acme.optOuts.active > 0);
    assert.equal(acme.lastRuns[0]?.kind, 'backfill');
    const beta = parseJsonOut<StatusJson>(await runCli(h, ['--json', '--account', 'beta', 'status']));
    assert.equal(beta.optOuts.active, 0, "beta has none of acme's opt-outs");
    assert.deepEqual(beta.lastRuns, []);

    const acmeAudit = JSON.parse(ok(await runCli(h, ['--account', 'acme', 'audit', '--format', 'json'])).stdout) as {
      rows: unknown[];
    };
    assert.ok(acmeAudit.rows.length >= acme.optOuts.active);
    const betaAudit = JSON.parse(ok(await runCli(h, ['--account', 'beta', 'audit', '--format', 'json'])).stdout) as {
      rows: unknown[];
    };
    assert.deepEqual(betaAudit.rows, []);
    assert.equal(parseJsonOut<unknown[]>(ok(await runCli(h, ['--json', '--account', 'beta', 'runs']))).length, 0);
    assert.equal(parseJsonOut<unknown[]>(ok(await runCli(h, ['--json', '--account', 'acme', 'runs']))).length, 1);
    // the default account (the config file's) ran nothing either
    const def = await runCli(h, ['--json', 'status']);
    if (def.code === 0 || def.code === 3) assert.equal(parseJsonOut<StatusJson>(def).optOuts.active, 0);
    else assert.match(def.stderr, /no state store here/);

    const list = parseJsonOut<Listing[]>(ok(await runCli(h, ['--json', 'accounts', 'list'])));
    assert.equal(list.find((a) => a.id === 'acme')?.lastRun?.kind, 'backfill');
    assert.equal(list.find((a) => a.id === 'beta')?.lastRun, null);
  });

  it("auth constant-contact --account: the account's own source, tokens stored in its own state", async () => {
    const { source, targets } = h.cfg.config as { source: Record<string, unknown>; targets: unknown[] };
    const file = path.join(h.dir, 'gamma.account.json');
    const { refreshToken: _seed, ...rest } = source;
    fs.writeFileSync(file, JSON.stringify({ source: { ...rest, clientSecret: '${GAMMA_CC_SECRET}' }, targets }));
    const added = ok(await runCli(h, ['accounts', 'add', 'gamma', '--from', file]));
    assert.match(added.stdout, /not set in this environment .*\$\{GAMMA_CC_SECRET\}/);
    // the config file's secret is unset: only the account's own reference can make this work
    const env = { CC_CLIENT_SECRET: '', GAMMA_CC_SECRET: h.env.CC_CLIENT_SECRET! };
    const r = ok(await runCli(h, ['--account', 'gamma', 'auth', 'constant-contact', '--device'], { env }));
    assert.match(r.stdout, /Constant Contact authorised; tokens stored in .*refresh token stored/);
    assert.ok(!r.stdout.includes(h.env.CC_CLIENT_SECRET!));
    const s = parseJsonOut<RunSummary>(
      ok(await runCli(h, ['--json', '--account', 'gamma', 'sync', '--dry-run'], { env })),
    );
    assert.ok(s.detection.complete, 'gamma detects with its own stored tokens');
    ok(await runCli(h, ['accounts', 'remove', 'gamma', '--yes']));
  });

  it('an unknown --account exits 2 naming it and the known ids, on every command', async () => {
    for (const cmd of [['status'], ['audit'], ['backfill'], ['sync'], ['check'], ['runs'], ['requeue']]) {
      const r = ok(await runCli(h, ['--account', 'nope', ...cmd]), 2);
      assert.match(r.stderr, /--account nope: no such account; known accounts: default, acme, beta/, cmd.join(' '));
    }
    assert.match(ok(await runCli(h, ['--account', 'NO PE', 'status']), 2).stderr, /--account NO PE: got "NO PE"/);
    // run serves every account itself: an account picked for it is refused, not ignored
    assert.match(
      ok(await runCli(h, ['--account', 'acme', 'run']), 2).stderr,
      /--account acme: run serves every account/,
    );
  });

  it('status and accounts list: per account the last and next poll, calls today and share of the budget once a fleet ran', async () => {
    // before any fleet worker ran: the account line says so, with the last run (no fleet table is created)
    const before = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', '--account', 'acme', 'status'])));
    assert.equal(before.account.id, 'acme');
    assert.equal(before.account.fleet, null);
    assert.ok(before.account.lastRunAt);
    assert.match(
      ok(await runCli(h, ['--account', 'beta', 'status'])).stdout,
      /^account beta: not polled by a fleet worker yet .*; last run never$/m,
    );
    // what a fleet worker leaves behind: lease rows with their polls, the poll record in the account's store
    const backend = await openBackend(h.storePath);
    const now = new Date();
    const lastPoll = new Date(now.getTime() - 60_000).toISOString();
    const nextAcme = new Date(now.getTime() + 600_000).toISOString();
    const nextBeta = new Date(now.getTime() + 300_000).toISOString();
    try {
      const { leases } = await fleetTablesOf(backend);
      await leases.ensure(accountLeaseKey('acme'), 'acme', null, lastPoll, 1);
      await leases.ensure(accountLeaseKey('beta'), 'beta', null, lastPoll, 3);
      const held = await leases.claim('test-worker', 2, 30_000, now, ['account']);
      assert.equal(held.length, 2);
      for (const l of held)
        await leases.release(l, l.key.endsWith('acme') ? nextAcme : nextBeta, { at: lastPoll, calls: 4, found: 0 });
      const kv = await (await backend.account('acme')).kv(FLEET_KV);
      await kv.set(
        POLL_RECORD_KEY,
        JSON.stringify({ day: now.toISOString().slice(0, 10), callsToday: 7, failures: 0, lastPollAt: lastPoll }),
      );
      await kv.flush?.();
    } finally {
      await backend.close();
    }
    // both polled once without an opt-out: the same activity weight, so the shares follow the priorities 1 : 3
    const w = activityWeight(1);
    const acme = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', '--account', 'acme', 'status']))).account;
    assert.equal(acme.fleet?.lastPollAt, lastPoll);
    assert.equal(acme.fleet?.nextPollAt, nextAcme);
    assert.equal(acme.fleet?.callsToday, 7);
    assert.ok(Math.abs(acme.fleet!.share - w / (w + 3 * w)) < 1e-9, String(acme.fleet?.share));
    assert.equal(acme.budget?.app, h.env.CC_CLIENT_ID);
    const text = ok(await runCli(h, ['--account', 'beta', 'status'])).stdout;
    assert.match(
      text,
      new RegExp(`^account beta: last poll ${lastPoll}, next poll ${nextBeta}; share of the budget 75\\.0%`, 'm'),
    );
    const list = parseJsonOut<Listing[]>(ok(await runCli(h, ['--json', 'accounts', 'list'])));
    const byId = new Map(list.map((a) => [a.id, a]));
    assert.equal(byId.get('acme')?.fleet?.nextPollAt, nextAcme);
    assert.equal(byId.get('acme')?.fleet?.callsToday, 7);
    assert.equal(byId.get('beta')?.fleet?.nextPollAt, nextBeta);
    assert.equal(byId.get('default')?.fleet, null, "no fleet worker has seen the config file's account");
  });

  it('set changes the priority; remove needs --yes, names what it deletes, and deletes only that account', async () => {
    ok(await runCli(h, ['accounts', 'set', 'beta', '--priority', '0']));
    // the fleet's lease row follows at once: beta is paused, acme gets the whole share
    const acmeShare = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', '--account', 'acme', 'status']))).account;
    assert.equal(acmeShare.fleet?.share, 1);
    const r = ok(await runCli(h, ['accounts', 'remove', 'acme']), 2);
    assert.match(r.stderr, /accounts remove acme: would delete the account acme .* known opt-outs.*pass --yes/);
    assert.match(ok(await runCli(h, ['accounts', 'remove', 'default', '--yes']), 2).stderr, /config file's account/);
    ok(await runCli(h, ['accounts', 'remove', 'acme', '--yes']));
    const list = parseJsonOut<Listing[]>(ok(await runCli(h, ['--json', 'accounts', 'list'])));
    assert.deepEqual(
      list.map((a) => [a.id, a.priority]),
      [
        ['default', 1],
        ['beta', 0],
      ],
    );
    assert.match(
      ok(await runCli(h, ['--account', 'acme', 'status']), 2).stderr,
      /--account acme: no such account; known accounts: default, beta/,
    );
    const backend = await openBackend(h.storePath);
    try {
      const rows = await (await fleetTablesOf(backend)).leases.list();
      assert.deepEqual(
        rows.map((r) => r.account),
        ['beta'],
        "the removed account's lease rows are gone",
      );
    } finally {
      await backend.close();
    }
    // re-adding starts from an empty state
    ok(await runCli(h, ['accounts', 'add', 'acme', '--from', accountFile]));
    const again = parseJsonOut<StatusJson>(await runCli(h, ['--json', '--account', 'acme', 'status']));
    assert.equal(again.optOuts.active, 0);
  });
});
