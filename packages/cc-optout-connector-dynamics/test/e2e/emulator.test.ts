/**
 * End-to-end: the Dynamics connector through the real @azure/msal-node and axios against the package's
 * Dataverse + Entra emulator on 127.0.0.1 (Entra over https with a certificate made at test time).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isLeft } from 'fp-ts/Either';
import { isTargetHalt, Target } from 'cc-optout-connector/sdk';
import { World } from 'cc-optout-connector/sdk/emulator';
import { connector, openDynamics, DynamicsConfig } from '../../src';
import { DataverseEmulator, RunningDataverse, SECRET_ENV } from '../../src/emulator';
import { optOut, testCaps, TestCaps } from '../helpers';

function configFor(emu: DataverseEmulator, extra: Partial<DynamicsConfig> = {}, secret?: string): DynamicsConfig {
  const c = emu.connection();
  const raw = {
    url: c.url,
    auth: {
      type: 'client-credentials',
      tenantId: c.tenantId,
      clientId: c.clientId,
      clientSecret: secret ?? c.clientSecret,
      authorityHost: c.authorityHost,
      caPath: c.caFile,
    },
    emailFields: ['emailaddress1', 'emailaddress2', 'emailaddress3'],
    ...extra,
  };
  const d = connector.config.decode(raw);
  if (isLeft(d)) throw new Error(`config refused: ${JSON.stringify(d.left.map((e) => e.message))}`);
  return d.right;
}

describe('dynamics e2e (emulator, real MSAL + axios)', function () {
  this.timeout(60_000);
  let emu: DataverseEmulator;

  beforeEach(async () => {
    emu = await new DataverseEmulator({ seed: 11, contacts: 400 }).start();
  });
  afterEach(async () => {
    await emu.stop();
  });

  const open = (caps: TestCaps, extra: Partial<DynamicsConfig> = {}, secret?: string): Target =>
    openDynamics(configFor(emu, extra, secret), caps, { backoffBaseMs: 1 });

  it('check: token, WhoAmI, contacts and leads readable with every column; no MSAL discovery; the token never goes to Entra', async () => {
    const caps = testCaps();
    const report = await open(caps, { alsoSetDoNotEmail: true }).check();
    assert.equal(report.ok, true, JSON.stringify(report.items));
    assert.deepEqual(
      report.items.map((i) => i.name),
      [
        'token',
        'whoami',
        'contacts readable (emailaddress1, emailaddress2, emailaddress3, donotbulkemail, donotemail)',
        'leads readable (emailaddress1, emailaddress2, emailaddress3, donotbulkemail, donotemail, statecode)',
        'write privilege',
      ],
    );
    assert.deepEqual(emu.discoveryCalls, []);
    assert.equal(emu.requestCounts()['POST /{tenant}/oauth2/v2.0/token'].total, 1);
    assert.equal(emu.bearerSeenBy.entra, 0);
    assert.ok(emu.bearerSeenBy.dataverse >= 3);
  });

  it('apply: every contact and Open lead suppressed, closed leads untouched, one outcome per email; a rerun writes nothing', async () => {
    const caps = testCaps();
    const t = emu.truth();
    assert.ok(
      t.toSuppress.length > 20 && t.closedLeads.length > 0 && t.alreadySuppressed.length > 0 && t.missing.length > 0,
      JSON.stringify({ ...t, optedOut: t.optedOut.length }),
    );
    const target = open(caps);
    const batch = t.optedOut.map((e) => optOut(e));
    const r1 = await target.deliver(batch, 'apply');
    assert.equal(r1.outcomes.length, batch.length);
    const v = emu.verify();
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.equal(v.writes, t.toSuppress.length);
    for (const key of t.closedLeads)
      assert.equal(
        emu.records.get(key)!.fields.donotbulkemail,
        emu.records.get(key)!.initialBulk,
        `closed lead ${key} changed`,
      );
    const kinds = (k: string): string[] => r1.outcomes.filter((o) => o.kind === k).map((o) => o.email);
    assert.deepEqual(kinds('not-found').sort(), t.missing);
    assert.equal(kinds('failed-retryable').length + kinds('failed-permanent').length, 0);
    const batchesBefore = emu.requestCounts()['POST $batch'].total;
    assert.ok(batchesBefore >= 1 && batchesBefore <= Math.ceil(t.toSuppress.length / 200) + 1);
    // secondary-column matches are reported as such
    assert.ok(r1.outcomes.some((o) => o.kind === 'applied' && /emailaddress[23]/.test(o.matchedBy ?? '')));

    const r2 = await target.deliver(batch, 'apply');
    assert.equal(emu.requestCounts()['POST $batch'].total, batchesBefore, 'a rerun sends no $batch');
    assert.equal(r2.outcomes.filter((o) => o.kind === 'applied').length, 0);
    assert.equal(r2.outcomes.filter((o) => o.kind === 'already-suppressed').length, batch.length - t.missing.length);
  });

  it('plan mode writes nothing and says what it would write', async () => {
    const caps = testCaps();
    const t = emu.truth();
    const r = await open(caps, { alsoSetDoNotEmail: true }).deliver(
      t.optedOut.map((e) => optOut(e)),
      'plan',
    );
    assert.equal(emu.writes.size, 0);
    assert.equal(emu.requestCounts()['POST $batch'], undefined);
    const planned = r.outcomes.filter((o) => o.kind === 'planned');
    assert.ok(planned.length > 0);
    assert.match(planned[0].action ?? '', /^(contact|lead) [0-9a-f-]{36}: donotbulkemail=true, donotemail=true/);
  });

  it('429 service protection: Retry-After is honoured and the run completes', async () => {
    const caps = testCaps({ instantSleep: false });
    emu.setKnobs({ requestLimit: 4, windowSeconds: 1, retryAfterSeconds: 1, countBatchParts: false });
    const t = emu.truth();
    const r = await open(caps, { addressesPerQuery: 20 }).deliver(
      t.optedOut.map((e) => optOut(e)),
      'apply',
    );
    assert.equal(r.outcomes.filter((o) => o.kind.startsWith('failed')).length, 0);
    const throttled = Object.values(emu.requestCounts()).reduce((n, c) => n + (c.byStatus['429'] ?? 0), 0);
    assert.ok(throttled > 0, 'the emulator throttled');
    assert.ok(caps.sleeps.filter((ms) => ms === 1000).length >= throttled, `slept ${JSON.stringify(caps.sleeps)}`);
    assert.ok(caps.pauses.includes(1000), 'the limiter was paused for the Retry-After');
    assert.equal(emu.verify().ok, true);
  });

  it('a Retry-After longer than the cap stops the target with retryAt, nothing lost', async () => {
    const caps = testCaps();
    emu.setKnobs({ force429: 1, force429RetryAfter: 3600 });
    const t = emu.truth();
    await assert.rejects(
      open(caps).deliver(
        t.optedOut.map((e) => optOut(e)),
        'apply',
      ),
      (e: unknown) => {
        assert.ok(isTargetHalt(e));
        assert.equal(e.kind, 'rate-limit');
        assert.ok(e.retryAt && Date.parse(e.retryAt) - Date.now() > 3500_000, e.retryAt);
        return true;
      },
    );
    assert.equal(emu.writes.size, 0);
  });

  it('a wrong client secret: check names the token item, deliver halts as auth; the secret is never printed', async () => {
    const caps = testCaps();
    const secret = 'wrong-secret-value-123';
    const target = open(caps, {}, secret);
    const report = await target.check();
    assert.equal(report.ok, false);
    assert.equal(report.items[0].name, 'token');
    assert.match(report.items[0].detail, /invalid_client|AADSTS7000215/);
    await assert.rejects(target.deliver([optOut('a@example.com')], 'apply'), (e: unknown) => {
      assert.ok(isTargetHalt(e));
      assert.equal(e.kind, 'auth');
      assert.ok(!e.message.includes(secret));
      return true;
    });
    assert.ok(caps.registered.has(secret));
    assert.ok(!JSON.stringify(report).includes(secret));
  });

  it('an expired token (401) gets one fresh token from Entra, then the delivery goes on', async () => {
    const caps = testCaps();
    const target = open(caps);
    const t = emu.truth();
    await target.check();
    emu.expireTokens();
    const r = await target.deliver(
      t.optedOut.map((e) => optOut(e)),
      'apply',
    );
    assert.equal(r.outcomes.filter((o) => o.kind.startsWith('failed')).length, 0);
    assert.equal(emu.requestCounts()['POST /{tenant}/oauth2/v2.0/token'].total, 2);
    assert.equal(emu.verify().ok, true);
  });

  it('a change set that fails is rolled back and reported retryable; the other addresses are applied; the retry applies it', async () => {
    const caps = testCaps();
    const target = open(caps);
    const t = emu.truth();
    emu.setKnobs({ failBatchParts: 1 });
    const batch = t.optedOut.map((e) => optOut(e));
    const r = await target.deliver(batch, 'apply');
    const failed = r.outcomes.filter((o) => o.kind === 'failed-retryable');
    assert.equal(failed.length >= 1, true);
    assert.match(failed[0].message ?? '', /HTTP 500/);
    assert.ok(r.outcomes.filter((o) => o.kind === 'applied').length > 10);
    const again = await target.deliver(
      failed.map((o) => optOut(o.email)),
      'apply',
    );
    assert.ok(
      again.outcomes.every((o) => o.kind === 'applied'),
      JSON.stringify(again.outcomes),
    );
    assert.equal(emu.verify().ok, true, JSON.stringify(emu.verify()));
  });
});

describe('dynamics e2e: the emulator() hook over the shared World', function () {
  this.timeout(60_000);
  let running: RunningDataverse | null = null;
  let dir = '';
  afterEach(async () => {
    await running?.stop();
    running = null;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('seeds Dynamics records from the world, hands a target config with ${ENV} secrets, and the opt-outs the world adds are suppressed', async () => {
    const world = new World({ seed: 5, contacts: 600 });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dyn-hook-'));
    running = (await connector.emulator!().start(world, { dir })) as RunningDataverse;
    const { config, env } = running.targetConfig();
    const cfg = config as { auth: { clientSecret: string; caPath: string } };
    assert.equal(cfg.auth.clientSecret, `\${${SECRET_ENV}}`);
    assert.ok(cfg.auth.caPath.startsWith(dir));
    const resolved = JSON.parse(JSON.stringify(config).split(`\${${SECRET_ENV}}`).join(env[SECRET_ENV]));
    const d = connector.config.decode(resolved);
    assert.ok(!isLeft(d));
    const caps = testCaps();
    const target = connector.open((d as { right: DynamicsConfig }).right, caps);
    const before = world.truth().optedOutEmails;
    await target.deliver(
      before.map((e) => optOut(e)),
      'apply',
    );
    assert.equal(running.verify().ok, true, JSON.stringify(running.verify()));
    const added = world.addOptOuts(10).map((a) => a.email);
    const r = await target.deliver(
      added.map((e) => optOut(e)),
      'apply',
    );
    assert.equal(r.outcomes.length, 10);
    const v = running.verify();
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.ok(v.expected > 0);
    const counts = running.requestCounts!();
    assert.ok(counts['POST $batch'].total >= 1);
  });
});
