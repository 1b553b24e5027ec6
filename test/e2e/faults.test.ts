/**
 * End to end under injected faults: 5xx and 429 storms from all three vendors, and access tokens expiring
 * between and during runs (Constant Contact's refresh tokens rotate: a used one is dead).
 */
import { strict as assert } from 'assert';
import { Emulators } from '../../src/emulators';
import type { EmuResponse } from '../../src/emulators/http';
import { RunSummary } from '../../src/engine';
import {
  Harness,
  assertVerified,
  countsSince,
  countsSnapshot,
  parseJsonOut,
  runCli,
  runOnce,
  spawnCli,
  startHarness,
  syncUntilDelivered,
  waitFor,
} from './helpers';

/** Responses per status class for one vendor since a snapshot (every endpoint). */
function statuses(emu: Emulators, vendor: 'cc' | 'hubspot' | 'salesforce'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of Object.values(emu.requestCounts()[vendor]))
    for (const [s, n] of Object.entries(c.byStatus)) out[s] = (out[s] ?? 0) + n;
  return out;
}
const fiveXx = (s: Record<string, number>): number => (s['500'] ?? 0) + (s['502'] ?? 0) + (s['503'] ?? 0);

function assertEveryOptOutFinal(h: Harness, audit: { email: string; target: string; outcome: string }[]): void {
  const truth = h.emu.truth();
  for (const t of ['hubspot', 'salesforce']) {
    const rows = audit.filter((r) => r.target === t);
    assert.deepEqual(rows.map((r) => r.email).sort(), truth.optedOutEmails, `${t}: every opt-out has a row`);
    const notFinal = rows.filter((r) => !['applied', 'already-suppressed', 'not-found'].includes(r.outcome));
    assert.deepEqual(
      notFinal.map((r) => `${r.email}: ${r.outcome}`),
      [],
      `${t}: every row delivered`,
    );
  }
}

describe('e2e: 5xx and 429 injection', function () {
  this.timeout(180_000);

  describe('5xx before the write (nothing happens) and 429 storms, on all three vendors', () => {
    let h: Harness;
    let runs: RunSummary[];
    after(() => h?.stop());

    it('converges to the ground truth with no lost opt-out and no repeated write', async () => {
      h = await startHarness({
        contacts: 2500,
        seed: 505,
        delivery: { batchSize: 150, backoffBaseSeconds: 0.3, backoffMaxSeconds: 2 },
      });
      // each server answers its next 2 API requests with 429 (clients wait >= 1 s per retry), and 12% of all with a 5xx
      // and Salesforce fails 6% of record updates with UNABLE_TO_LOCK_ROW
      h.emu.faults.set({ fail5xxRate: 0.12, force429Storm: 2, salesforce: { lockRate: 0.06 } });
      const first = await runOnce(h, (p) => p.engine.backfill());
      runs = [first, ...(await syncUntilDelivered(h, 8, 90_000))];
      const last = runs[runs.length - 1]!;
      assert.equal(
        last.exitCode,
        0,
        `not delivered after ${runs.length} runs: ${JSON.stringify(runs.map((r) => r.targets))}`,
      );
      // the faults really fired, on every vendor
      for (const v of ['cc', 'hubspot', 'salesforce'] as const) {
        const s = statuses(h.emu, v);
        assert.ok(fiveXx(s) > 0, `${v}: 5xx served ${JSON.stringify(s)}`);
        assert.ok((s['429'] ?? 0) > 0, `${v}: 429 served ${JSON.stringify(s)}`);
      }
      assertVerified(h.emu);
      const audit = await runOnce(h, async (p) => p.store.audit(null));
      assertEveryOptOutFinal(h, audit);
    });
  });

  describe('5xx AFTER the write took effect (the client sees an error for a write that landed)', () => {
    let h: Harness;
    after(() => h?.stop());

    it('still converges: every expected record suppressed, nothing else touched, no opt-out lost', async () => {
      h = await startHarness({
        contacts: 2000,
        seed: 506,
        delivery: { batchSize: 80, backoffBaseSeconds: 0.3, backoffMaxSeconds: 2 },
      });
      h.emu.faults.set({ fail5xxRate: 0.15, fail5xxMode: 'after' });
      const runs = [await runOnce(h, (p) => p.engine.backfill())];
      h.emu.faults.set({ fail5xxRate: 0 });
      if (runs[0]!.exitCode !== 0) runs.push(...(await syncUntilDelivered(h, 6, 60_000)));
      assert.equal(runs[runs.length - 1]!.exitCode, 0, JSON.stringify(runs.map((r) => r.targets)));
      for (const v of ['hubspot', 'salesforce'] as const) assert.ok(fiveXx(statuses(h.emu, v)) > 0, `${v}: 5xx served`);
      // a write the vendor applied but answered with a 5xx may be sent again (the client cannot know): repeats allowed here
      assertVerified(h.emu, { allowRepeats: true });
      assertEveryOptOutFinal(h, await runOnce(h, async (p) => p.store.audit(null)));
    });
  });
});

describe('e2e: token expiry with rotating Constant Contact refresh tokens', function () {
  this.timeout(180_000);
  let h: Harness;
  after(() => h?.stop());

  /** Every refresh presented the token issued by the previous refresh, never a used one, never invalid_grant. */
  function assertRotationChain(): void {
    const calls = h.taps.ccTokenCalls.filter((c) => c.grant === 'refresh_token');
    assert.ok(calls.length >= 3, `several refreshes happened (${calls.length})`);
    assert.deepEqual(
      calls.filter((c) => c.status !== 200).map((c) => `${c.status} ${c.error}`),
      [],
      'no failed refresh (invalid_grant = a reused refresh token)',
    );
    const presented = calls.map((c) => c.refreshToken);
    assert.equal(new Set(presented).size, presented.length, 'no refresh token was presented twice');
    assert.equal(presented[0], h.emu.cc.refreshToken, 'the first refresh uses the configured token');
    for (let i = 1; i < calls.length; i++)
      assert.equal(
        presented[i],
        calls[i - 1]!.issuedRefreshToken,
        `refresh #${i + 1} presents the token rotated in by #${i}`,
      );
    for (const t of presented)
      assert.equal(h.emu.servers.cc.isRefreshTokenValid(t!), false, 'used refresh tokens are dead');
    assert.equal(
      h.emu.servers.cc.isRefreshTokenValid(calls[calls.length - 1]!.issuedRefreshToken!),
      true,
      'the newest one is alive',
    );
  }

  it('tokens expired between runs: each CLI run refreshes with the rotated token from the store (the configured one is dead)', async () => {
    h = await startHarness({
      contacts: 2000,
      seed: 606,
      hubspotOAuth: true,
      delivery: { batchSize: 100 },
      detection: { pageSize: 60 },
    });
    const before = countsSnapshot(h.emu);
    const b = await runCli(h, ['--json', 'backfill']);
    assert.equal(b.code, 0, b.stderr);
    for (let i = 0; i < 2; i++) {
      h.emu.faults.expireTokens();
      h.emu.addOptOuts(5);
      const s = await runCli(h, ['--json', 'sync']); // CC_REFRESH_TOKEN in the env is the original, already-used token
      assert.equal(s.code, 0, `sync ${i + 1}: ${s.stderr}`);
      const sum = parseJsonOut(s);
      assert.equal(sum.detection.newOptOuts, 5);
    }
    assertRotationChain();
    const d = countsSince(h.emu, before);
    assert.ok(
      (d.hubspot['POST /oauth/2026-09/token'] ?? 0) >= 2,
      `HubSpot OAuth refreshed after expiry: ${JSON.stringify(d.hubspot)}`,
    );
    assert.ok(
      (d.salesforce['POST /services/oauth2/token'] ?? 0) >= 2,
      `Salesforce re-authenticated after expiry: ${JSON.stringify(d.salesforce)}`,
    );
    assertVerified(h.emu);
  });

  it('tokens expired in the middle of a run (during the scan and during delivery): the run succeeds without reusing a refresh token', async () => {
    h.emu.faults.expireTokens();
    // expire everything after the 2nd page of the reconcile and after the first HubSpot write of the run
    const ccRoute = h.emu.servers.cc.router.routes.find((r) => r.name === 'GET /v3/contacts')!;
    const hsRoute = h.emu.servers.hubspot.router.routes.find(
      (r) => r.name === 'POST /communication-preferences/2026-09/statuses/batch/unsubscribe-all',
    )!;
    const ccInner = ccRoute.handler;
    const hsInner = hsRoute.handler;
    let pages = 0;
    let hsWrites = 0;
    let expiries = 0;
    ccRoute.handler = async (req): Promise<EmuResponse> => {
      const res = await ccInner(req);
      if (++pages === 2) {
        h.emu.faults.expireTokens();
        expiries++;
      }
      return res;
    };
    hsRoute.handler = async (req): Promise<EmuResponse> => {
      const res = await hsInner(req);
      if (++hsWrites === 1) {
        h.emu.faults.expireTokens();
        expiries++;
      }
      return res;
    };
    try {
      const calls0 = h.taps.ccTokenCalls.length;
      const before = countsSnapshot(h.emu);
      h.emu.addOptOuts(150);
      const s = await runOnce(h, (p) => p.engine.sync({ full: true }));
      assert.equal(s.exitCode, 0, JSON.stringify(s.targets));
      assert.equal(expiries, 2, 'tokens expired during the scan and during delivery');
      assert.ok(s.detection.pages >= 3, 'the reconcile read several pages');
      assert.ok(h.taps.ccTokenCalls.length - calls0 >= 2, 'Constant Contact refreshed twice within the run');
      const d = countsSince(h.emu, before);
      const st = (v: 'hubspot' | 'salesforce'): number =>
        Object.values(h.emu.requestCounts()[v]).reduce((a, c) => a + (c.byStatus['401'] ?? 0), 0);
      assert.ok(st('hubspot') > 0 && st('salesforce') > 0, 'HubSpot and Salesforce answered 401 to expired tokens');
      assert.ok(
        (d.hubspot['POST /oauth/2026-09/token'] ?? 0) >= 1 && (d.salesforce['POST /services/oauth2/token'] ?? 0) >= 1,
        JSON.stringify(d),
      );
    } finally {
      ccRoute.handler = ccInner;
      hsRoute.handler = hsInner;
    }
    assertRotationChain();
    assertVerified(h.emu);
  });
});

describe('e2e: overlapping CLI runs (a scheduled sync while a backfill is still running)', function () {
  this.timeout(180_000);
  let h: Harness;
  after(() => h?.stop());

  it('the second run refuses to start (it would race the rotating refresh token); the first finishes clean', async () => {
    h = await startHarness({ contacts: 2000, seed: 607, delivery: { batchSize: 25 } });
    h.emu.faults.set({ hubspot: { latencyMs: 80 }, salesforce: { latencyMs: 80 } });
    const first = spawnCli(h, ['--json', '--no-progress', 'backfill']);
    await waitFor(() => h.emu.verify().hubspot.writes > 0, {
      timeoutMs: 60_000,
      intervalMs: 20,
      what: 'the backfill to be delivering',
    });
    // slow the CRMs down while the other commands try to start, so the backfill is surely still running
    // (on a loaded machine three CLI starts can outlast the rest of an 80 ms-latency backfill)
    h.emu.faults.set({ hubspot: { latencyMs: 1500 }, salesforce: { latencyMs: 1500 } });
    const tokenCalls = h.taps.ccTokenCalls.length;
    const before = countsSnapshot(h.emu);
    for (const args of [
      ['--json', 'sync'],
      ['--json', 'backfill'],
      ['--json', 'sync', '--dry-run'],
    ]) {
      const second = await runCli(h, args);
      assert.notEqual(second.code, 0, `${args.join(' ')} must not run alongside the backfill`);
      assert.notEqual(second.code, null);
      assert.match(second.stderr, /overlap|lock|running/i, second.stderr);
    }
    assert.equal(h.taps.ccTokenCalls.length, tokenCalls, 'the refused runs never touched the refresh token');
    assert.equal(countsSince(h.emu, before).cc['GET /v3/contacts'] ?? 0, 0, 'nor read Constant Contact');
    h.emu.faults.set({ hubspot: { latencyMs: 0 }, salesforce: { latencyMs: 0 } });
    const r = await first.done;
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    h.emu.faults.reset();
    assertVerified(h.emu);
    // the lock is released: the next scheduled run works
    const next = await runCli(h, ['--json', 'sync']);
    assert.equal(next.code, 0, next.stderr);
    assert.deepEqual(
      h.taps.ccTokenCalls.filter((c) => c.status !== 200),
      [],
    );
  });
});
