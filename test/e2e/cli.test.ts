/**
 * End to end through the compiled CLI (`node dist/src/cli.js`, a child process with only the config's
 * environment): dry runs write nothing, secrets never leave the process, and the CLI's contract (JSON
 * summary, exit codes, status, audit CSV) holds when a target hits its daily limit and after it is lifted.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { parse as parseCsv } from 'csv-parse/sync';
import { PlanEntry, RunSummary } from '../../src/engine';
import { TargetStatus } from '../../src/store/types';
import {
  CliResult,
  Harness,
  assertNoLegacyHubSpotCalls,
  assertVerified,
  countsSince,
  countsSnapshot,
  expectedOutcomes,
  parseJsonOut,
  runCli,
  runOnce,
  startHarness,
  waitFor,
  writeRequests,
} from './helpers';

interface StatusJson {
  optOuts: { active: number; left: number };
  checkpoints: { windowBefore: string | null; lastFullReconcile: string | null };
  targets: TargetStatus[];
  lastRuns: { id: number; kind: string; dryRun: boolean; exitCode: number | null }[];
}

function ok(r: CliResult, code = 0): CliResult {
  assert.equal(
    r.code,
    code,
    `exit ${r.code} (expected ${code})\nstdout: ${r.stdout.slice(0, 1500)}\nstderr: ${r.stderr.slice(-3000)}`,
  );
  return r;
}

/** The plan, per target: email -> kind. */
function planByTarget(plan: readonly PlanEntry[]): Record<string, Map<string, string>> {
  const out: Record<string, Map<string, string>> = {};
  for (const p of plan) {
    const m = (out[p.target] ??= new Map());
    assert.ok(!m.has(p.email), `${p.target} ${p.email} planned twice`);
    m.set(p.email, p.kind);
  }
  return out;
}

describe('e2e CLI: dry run leaves the CRMs untouched', function () {
  this.timeout(120_000);
  let h: Harness;
  before(async () => {
    h = await startHarness({ contacts: 2000, seed: 707 });
  });
  after(() => h?.stop());

  function assertPlanMatchesTruth(plan: readonly PlanEntry[], emails?: ReadonlySet<string>): void {
    const truth = h.emu.truth();
    const exp = expectedOutcomes(h.emu, truth);
    const by = planByTarget(plan);
    for (const t of ['hubspot', 'salesforce'] as const) {
      const want = new Map(
        [...exp[t]].filter(([e]) => !emails || emails.has(e)).map(([e, k]) => [e, k === 'applied' ? 'planned' : k]),
      );
      assert.ok(want.size > 0);
      const got = by[t] ?? new Map();
      assert.deepEqual(
        [...got.keys()].sort(),
        [...want.keys()].sort(),
        `${t}: the plan lists every opted-out email once`,
      );
      const wrong = [...got]
        .filter(([e, k]) => want.get(e) !== k)
        .map(([e, k]) => `${e}: ${k} (expected ${want.get(e)})`);
      assert.deepEqual(wrong, [], `${t}: planned / already-suppressed / not-found as the ground truth says`);
      const kinds = new Set(got.values());
      if (!emails)
        for (const k of ['planned', 'already-suppressed', 'not-found']) assert.ok(kinds.has(k), `${t}: plan has ${k}`);
    }
    for (const p of plan.filter((x) => x.kind === 'planned'))
      assert.ok(
        p.recordIds.length > 0 && p.action,
        `${p.target} ${p.email}: planned entries name records and the action`,
      );
  }

  function assertNothingWritten(before: ReturnType<typeof countsSnapshot>): void {
    const v = h.emu.verify();
    assert.equal(v.hubspot.writes, 0, 'no HubSpot write');
    assert.equal(v.salesforce.writes, 0, 'no Salesforce write');
    assert.equal(v.hubspot.notSuppressed.length, v.hubspot.expected, 'nothing suppressed in HubSpot');
    assert.equal(v.salesforce.notSuppressed.length, v.salesforce.expected, 'nothing suppressed in Salesforce');
    assert.deepEqual(
      writeRequests(h.emu),
      { hubspot: 0, salesforce: 0, byEndpoint: {} },
      'no write endpoint was called',
    );
    const d = countsSince(h.emu, before);
    assert.ok(
      Object.keys(d.hubspot).length > 0 && Object.keys(d.salesforce).length > 0,
      'the dry run did look the emails up',
    );
    assert.equal(h.emu.world.hsOrphanStatusWrites.size, 0);
  }

  it('sync --dry-run --json on a fresh install: plan of every opt-out, nothing written, nothing committed', async () => {
    const before = countsSnapshot(h.emu);
    const r = ok(await runCli(h, ['--json', 'sync', '--dry-run']));
    const s = parseJsonOut(r);
    assert.equal(s.dryRun, true);
    assert.equal(s.detection.mode, 'full');
    assert.ok(s.plan && s.plan.length > 0);
    assertPlanMatchesTruth(s.plan!);
    assertNothingWritten(before);
    // nothing committed: no opt-out known, no checkpoint, nothing queued
    const st = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', 'status'])));
    assert.equal(st.optOuts.active, 0);
    assert.equal(st.checkpoints.windowBefore, null);
    for (const t of st.targets) assert.equal(t.queued, 0);
    assert.equal(st.lastRuns[0]!.dryRun, true);
  });

  it('backfill --dry-run --json: the same plan, still nothing written', async () => {
    const before = countsSnapshot(h.emu);
    const s = parseJsonOut(ok(await runCli(h, ['--json', 'backfill', '--dry-run'])));
    assert.equal(s.dryRun, true);
    assertPlanMatchesTruth(s.plan!);
    assertNothingWritten(before);
    // the text form prints the plan too
    const text = ok(await runCli(h, ['backfill', '--dry-run', '--no-progress']));
    assert.match(text.stdout, /dry run: nothing written to any CRM/);
    assert.match(text.stdout, /plan \(\d+ entries(, first \d+ shown; --output FILE writes them all)?\):/);
  });

  it('after a real backfill, sync --dry-run plans exactly the new opt-outs and writes nothing', async () => {
    ok(await runCli(h, ['--json', 'backfill']));
    assertVerified(h.emu);
    const w0 = h.emu.verify();
    const added = h.emu.addOptOuts(6);
    const before = countsSnapshot(h.emu);
    const s = parseJsonOut(ok(await runCli(h, ['--json', 'sync', '--dry-run'])));
    assert.equal(s.detection.mode, 'window');
    assertPlanMatchesTruth(s.plan!, new Set(added.map((a) => a.email)));
    const w1 = h.emu.verify();
    assert.equal(w1.hubspot.writes, w0.hubspot.writes);
    assert.equal(w1.salesforce.writes, w0.salesforce.writes);
    assert.deepEqual(
      countsSince(h.emu, before).hubspot['POST /communication-preferences/2026-09/statuses/batch/unsubscribe-all'],
      undefined,
    );
    assert.deepEqual(countsSince(h.emu, before).salesforce['PATCH /services/data/vXX.X/composite/sobjects'], undefined);
    // and the real sync then delivers them
    const real = parseJsonOut(ok(await runCli(h, ['--json', 'sync'])));
    assert.equal(real.detection.newOptOuts, added.length);
    assertVerified(h.emu);
  });
});

for (const mode of ['service-key', 'private-app', 'oauth'] as const) {
  describe(`e2e CLI: secrets never appear in output, logs or audit files (HubSpot ${mode})`, function () {
    this.timeout(120_000);
    let h: Harness;
    const outputs: { what: string; text: string }[] = [];
    after(() => h?.stop());

    async function record(what: string, args: string[], code: number): Promise<CliResult> {
      const r = ok(await runCli(h, args), code);
      outputs.push({ what: `${what} stdout`, text: r.stdout }, { what: `${what} stderr`, text: r.stderr });
      // --log-format json: every stderr line is one JSON object (the final error line of a failed command aside)
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      for (const line of code === 0 || code === 3 ? lines : lines.slice(0, -1)) {
        assert.doesNotThrow(() => JSON.parse(line), `${what}: stderr line is not JSON: ${line.slice(0, 200)}`);
      }
      return r;
    }

    it('runs backfill, sync, status, check and audit at debug level with JSON logs', async () => {
      h = await startHarness({
        contacts: 1500,
        seed: mode === 'oauth' ? 809 : mode === 'private-app' ? 808 : 807,
        delivery: { batchSize: 100 },
        hubspotOAuth: mode === 'oauth',
        // the emulator config uses a Service Key (what new HubSpot accounts can create); the legacy private app too
        ...(mode === 'private-app'
          ? { hubspot: { auth: { type: 'private-app', accessToken: '${HUBSPOT_TOKEN}' } } }
          : {}),
      });
      const dbg = ['--log-level', 'debug', '--log-format', 'json'];
      await record('backfill', [...dbg, '--json', 'backfill'], 0);
      h.emu.addOptOuts(3);
      h.emu.faults.expireTokens(); // refreshes in the next run too
      await record('sync', [...dbg, 'sync'], 0);
      await record('status', [...dbg, 'status'], 0);
      await record('status --json', [...dbg, '--json', 'status'], 0);
      await record('check', [...dbg, 'check'], 0);
      // HubSpot's numeric versions end in 2027: a default run (backfill, sync, check) calls none of them. A
      // private-app token's check still asks the private-app token-info endpoint (no dated version exists) for its scopes.
      if (mode !== 'private-app') assertNoLegacyHubSpotCalls(h.emu);
      await record('audit csv', [...dbg, 'audit', '--format', 'csv'], 0);
      await record('audit json', [...dbg, 'audit', '--format', 'json'], 0);
      await record(
        'audit --output',
        [...dbg, 'audit', '--format', 'csv', '--output', path.join(h.dir, 'audit.csv')],
        0,
      );
      outputs.push({ what: 'audit file', text: fs.readFileSync(path.join(h.dir, 'audit.csv'), 'utf8') });
      assert.ok(
        outputs.some((o) => o.what === 'backfill stderr' && /"level":"debug"/.test(o.text)),
        'debug logging was on',
      );
      const audit = outputs.find((o) => o.what === 'audit csv stdout')!.text;
      assert.ok(audit.split('\n').length > 100, 'the audit has rows');
    });

    it('a revoked Constant Contact refresh token: exit 1, naming `cc-optout auth constant-contact`, still without secrets', async () => {
      h.emu.servers.cc.revokeRefreshTokens();
      h.emu.faults.expireTokens();
      const r = await record('sync after revocation', ['--log-level', 'debug', '--log-format', 'json', 'sync'], 1);
      assert.match(r.stderr, /cc-optout auth constant-contact/);
      assert.ok(
        h.taps.ccTokenCalls.some((c) => c.error === 'invalid_grant'),
        'the emulator refused the refresh token',
      );
    });

    it('no secret value appears anywhere: configured secrets, the Salesforce private key, tokens issued at run time', () => {
      const secrets: { name: string; value: string }[] = [];
      const keys = [
        'CC_CLIENT_SECRET',
        'CC_REFRESH_TOKEN',
        ...(mode === 'oauth'
          ? ['HUBSPOT_CLIENT_SECRET', 'HUBSPOT_REFRESH_TOKEN']
          : mode === 'service-key'
            ? ['HUBSPOT_SERVICE_KEY']
            : ['HUBSPOT_TOKEN']),
      ];
      for (const k of keys) {
        assert.ok(h.env[k], k);
        secrets.push({ name: k, value: h.env[k]! });
      }
      const pem = h.emu.salesforce.privateKeyPem;
      secrets.push({ name: 'Salesforce private key', value: pem.trim() });
      pem
        .split('\n')
        .filter((l) => l.length >= 40 && !l.startsWith('-----'))
        .forEach((l, i) => secrets.push({ name: `Salesforce private key line ${i + 1}`, value: l }));
      for (const t of h.taps.issuedSecrets) secrets.push({ name: `run-time credential ${t.slice(0, 6)}...`, value: t });
      assert.ok(
        h.taps.issuedSecrets.size >= (mode === 'oauth' ? 8 : 6),
        `tokens were issued at run time (${h.taps.issuedSecrets.size})`,
      );
      const leaks: string[] = [];
      for (const o of outputs)
        for (const s of secrets) if (s.value && o.text.includes(s.value)) leaks.push(`${s.name} in ${o.what}`);
      assert.deepEqual(leaks, []);
    });

    it('identifiers that come from the environment (client ids) stay out of the output too', () => {
      const leaks: string[] = [];
      for (const k of ['CC_CLIENT_ID', 'SF_CLIENT_ID', ...(mode === 'oauth' ? ['HUBSPOT_CLIENT_ID'] : [])]) {
        for (const o of outputs) if (o.text.includes(h.env[k]!)) leaks.push(`${k} in ${o.what}`);
      }
      assert.deepEqual(leaks, []);
    });

    it('the state store and the audit file are created with mode 0600', () => {
      const files = fs.readdirSync(h.dir).filter((x) => x.startsWith('state.db'));
      assert.ok(files.includes('state.db'));
      for (const f of files) assert.equal(fs.statSync(path.join(h.dir, f)).mode & 0o777, 0o600, `${f} mode`);
      assert.equal(fs.statSync(path.join(h.dir, 'audit.csv')).mode & 0o777, 0o600, 'audit file mode');
    });
  });
}

describe('e2e CLI: JSON summary, exit codes, status and audit', function () {
  this.timeout(120_000);

  describe('Salesforce daily API limit (REQUEST_LIMIT_EXCEEDED), then lifted', () => {
    let h: Harness;
    let halted: RunSummary;
    after(() => h?.stop());

    it('backfill --json: exit 3, Salesforce halted with its outbox kept, HubSpot delivered everything', async () => {
      h = await startHarness({ contacts: 2000, seed: 909, delivery: { batchSize: 50 } });
      h.emu.faults.set({ salesforce: { dailyApiLimit: 7 } });
      const r = ok(await runCli(h, ['--json', 'backfill']), 3);
      halted = parseJsonOut(r);
      assert.equal(halted.exitCode, 3);
      // summary shape: counts per target and outcome, API calls per vendor, quarantined, duration
      assert.equal(halted.command, 'backfill');
      assert.equal(typeof halted.durationMs, 'number');
      assert.ok(halted.durationMs >= 0);
      assert.equal(typeof halted.quarantined, 'number');
      for (const v of ['constant-contact', 'hubspot', 'salesforce'])
        assert.ok((halted.apiCalls[v] ?? 0) > 0, `apiCalls.${v}`);
      assert.deepEqual(Object.keys(halted.targets).sort(), ['hubspot', 'salesforce']);
      const hs = halted.targets.hubspot!;
      const sf = halted.targets.salesforce!;
      assert.equal(hs.queued, 0);
      assert.equal(hs.halted, undefined);
      assert.match(sf.halted ?? '', /REQUEST_LIMIT_EXCEEDED|request limit/i);
      assert.ok(sf.queued > 0, 'Salesforce outbox kept');
      assert.equal(sf.parked, 0);
      const truth = h.emu.truth();
      const hsTotal = Object.values(hs.outcomes).reduce((a, n) => a + (n ?? 0), 0);
      assert.equal(hsTotal, truth.optedOutEmails.length, 'HubSpot: one outcome per opt-out');
      const v = h.emu.verify();
      assert.equal(v.hubspot.ok, true, 'HubSpot fully delivered');
      assert.equal(v.salesforce.ok, false, 'Salesforce not (yet)');
      assert.ok(v.salesforce.writes > 0 || (sf.outcomes.applied ?? 0) === 0);
      const sfCounts = h.emu.requestCounts().salesforce;
      const refused = Object.values(sfCounts).reduce((n, c) => n + (c?.byStatus['403'] ?? 0), 0);
      assert.ok(refused > 0, 'Salesforce answered 403');
    });

    it('status --json shows the queued counts (exit 3 while anything is queued)', async () => {
      const st = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', 'status']), 3));
      const sf = st.targets.find((t) => t.target === 'salesforce')!;
      const hs = st.targets.find((t) => t.target === 'hubspot')!;
      assert.equal(sf.queued, halted.targets.salesforce!.queued);
      assert.ok(sf.oldestQueuedOptOutAt);
      assert.equal(hs.queued, 0);
      assert.equal(
        Object.values(hs.done).reduce((a, n) => a + (n ?? 0), 0),
        h.emu.truth().optedOutEmails.length,
      );
      assert.equal(st.lastRuns[0]!.exitCode, 3);
    });

    it('after lifting the limit, sync delivers the rest and exits 0; status then exits 0', async () => {
      h.emu.faults.set({ salesforce: { dailyApiLimit: 100_000 } });
      // the rows of the halted batch wait for their backoff (1 s in this config); the others are due at once
      await waitFor(
        async () => {
          const sf = parseJsonOut<StatusJson>(await runCli(h, ['--json', 'status'])).targets.find(
            (t) => t.target === 'salesforce',
          )!;
          return sf.due === sf.queued;
        },
        { timeoutMs: 30_000, intervalMs: 300, what: 'every queued Salesforce row to be due' },
      );
      const s = parseJsonOut(ok(await runCli(h, ['--json', 'sync'])));
      assert.equal(s.exitCode, 0);
      assert.ok((s.targets.salesforce!.outcomes.applied ?? 0) > 0);
      assert.equal(s.targets.salesforce!.queued, 0);
      assert.deepEqual(s.targets.hubspot!.outcomes, {}, 'HubSpot had nothing left');
      assertVerified(h.emu);
      const st = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', 'status'])));
      for (const t of st.targets) assert.equal(t.queued, 0);
    });

    it('audit --format csv: a header row and one row per (email, target), outcomes as the ground truth says', async () => {
      const r = ok(await runCli(h, ['audit', '--format', 'csv']));
      const rows = parseCsv(r.stdout, { relax_column_count: false }) as string[][];
      assert.deepEqual(rows[0], [
        'email',
        'cc_contact_id',
        'target',
        'opted_out_at',
        'detected_at',
        'written_at',
        'lag_seconds',
        'closed_at',
        'crm_record_ids',
        'outcome',
        'attempts',
        'message',
      ]);
      const body = rows.slice(1).filter((x) => x[2] !== '-');
      const truth = h.emu.truth();
      assert.equal(body.length, 2 * truth.optedOutEmails.length, 'one row per (email, target)');
      const keys = new Set(body.map((x) => `${x[2]} ${x[0]}`));
      assert.equal(keys.size, body.length, 'no duplicate (email, target)');
      const exp = expectedOutcomes(h.emu, truth);
      for (const x of body) {
        const [email, , target, optedOutAt, , writtenAt, lag, closedAt, ids, outcome] = x as [
          string,
          string,
          'hubspot' | 'salesforce',
          string,
          string,
          string,
          string,
          string,
          string,
          string,
        ];
        assert.ok(!Number.isNaN(Date.parse(closedAt)), `${target} ${email}: closed_at`);
        assert.equal(outcome, exp[target].get(email), `${target} ${email}`);
        assert.ok(!Number.isNaN(Date.parse(optedOutAt)));
        if (outcome === 'applied') {
          assert.ok(writtenAt && lag !== '' && Number(lag) >= 0, `${target} ${email}: written_at and lag`);
          assert.ok(ids.length > 0, 'record ids');
        }
      }
      for (const x of body) assert.ok(Number(x[10]) >= 1, 'attempts counted');
      // JSON form: the same rows
      const j = JSON.parse(ok(await runCli(h, ['audit', '--format', 'json'])).stdout) as { rows: unknown[] };
      assert.equal(j.rows.length, body.length);
    });

    // store.audit() once filled written_at (and lag_seconds) for every finished row, so "not-found" and
    // "already-suppressed" rows claimed a CRM write that never happened.
    it('audit: written_at and lag_seconds only for rows that were actually written (not for not-found / already-suppressed)', async () => {
      const rows = (parseCsv(ok(await runCli(h, ['audit', '--format', 'csv'])).stdout) as string[][])
        .slice(1)
        .filter((x) => x[2] !== '-');
      const unwritten = rows.filter((x) => x[9] === 'not-found' || x[9] === 'already-suppressed');
      assert.ok(unwritten.length > 0, 'the dataset has rows without a write');
      const claimed = unwritten.filter((x) => x[5] !== '' || x[6] !== '');
      assert.deepEqual(
        claimed.slice(0, 3).map((x) => `${x[2]} ${x[0]}: outcome ${x[9]}, written_at ${x[5]}, lag_seconds ${x[6]}`),
        [],
        `${claimed.length} rows without any CRM write report a write time and a lag`,
      );
    });
  });

  describe('HubSpot daily limit (429 DAILY)', () => {
    let h: Harness;
    let halted: RunSummary;
    after(() => h?.stop());

    it('backfill --json: exit 3, HubSpot halted with its outbox kept, Salesforce delivered everything', async () => {
      h = await startHarness({ contacts: 2000, seed: 910, delivery: { batchSize: 50 } });
      h.emu.faults.set({ hubspot: { dailyLimit: 5 } });
      halted = parseJsonOut(ok(await runCli(h, ['--json', 'backfill']), 3));
      const hs = halted.targets.hubspot!;
      const sf = halted.targets.salesforce!;
      assert.match(hs.halted ?? '', /daily/i);
      assert.ok(hs.queued > 0, 'HubSpot outbox kept');
      assert.ok((hs.outcomes.applied ?? 0) > 0, 'HubSpot delivered what it could before the limit');
      assert.equal(sf.queued, 0);
      assert.equal(sf.halted, undefined);
      const v = h.emu.verify();
      assert.equal(v.salesforce.ok, true, 'Salesforce fully delivered');
      assert.equal(v.hubspot.ok, false);
      assert.deepEqual(v.hubspot.repeatedWrites, []);
      const st = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', 'status']), 3));
      assert.equal(st.targets.find((t) => t.target === 'hubspot')!.queued, hs.queued);
      await runOnce(h, async (p) => {
        const open = (await p.store.audit(null)).filter(
          (x) => x.target === 'hubspot' && !['applied', 'already-suppressed', 'not-found'].includes(x.outcome),
        );
        assert.equal(open.length, hs.queued, 'the kept HubSpot rows are in the audit as not yet delivered');
      });
    });

    // Once, only the rows of the batch in hand were deferred to the reset (00:00 UTC); every other queued row
    // stayed due, so each later run (e.g. a 5-minute cron) spent a HubSpot request into the spent daily limit.
    it('until the limit resets, the whole HubSpot outbox waits: status shows nothing due and a rerun sends HubSpot no request', async () => {
      const st = parseJsonOut<StatusJson>(ok(await runCli(h, ['--json', 'status']), 3));
      const hst = st.targets.find((t) => t.target === 'hubspot')!;
      const before = countsSnapshot(h.emu);
      const again = parseJsonOut(ok(await runCli(h, ['--json', 'sync']), 3)); // the emulator's daily limit is still spent
      const spent = countsSince(h.emu, before).hubspot;
      assert.equal(again.targets.hubspot!.queued, halted.targets.hubspot!.queued, 'outbox kept');
      assert.deepEqual(
        { due: hst.due, hubspotRequestsOnRerun: spent },
        { due: 0, hubspotRequestsOnRerun: {} },
        `HubSpot said "deliveries to this target stop until the limit resets", yet ${hst.due} of ${hst.queued} rows are due and the rerun sent ${JSON.stringify(spent)}`,
      );
    });
  });
});
