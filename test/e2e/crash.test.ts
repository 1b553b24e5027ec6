/**
 * End to end through the compiled CLI: a `backfill` child process killed with SIGKILL in the middle of
 * delivery, then run again, loses nothing, repeats no delivered write and skips nothing.
 */
import { strict as assert } from 'assert';
import { Emulators } from '../../src/emulators';
import { RunSummary } from '../../src/engine';
import type { EmuResponse } from '../../src/emulators/http';
import {
  CliChild,
  Harness,
  assertVerified,
  expectedOutcomes,
  parseJsonOut,
  runCli,
  runOnce,
  spawnCli,
  startHarness,
  waitFor,
  writeRequests,
} from './helpers';
import { AuditRow } from '../../src/store/types';

interface KillPoint {
  hsWrites: Map<string, number>;
  /** Address-level writes to addresses a HubSpot contact holds only as a secondary address (hs_additional_emails). */
  hsSecondaryWrites: Map<string, number>;
  sfWrites: Map<string, number>;
  notSuppressed: { hubspot: number; salesforce: number };
}

function snapshot(emu: Emulators): KillPoint {
  const v = emu.verify();
  return {
    hsWrites: new Map(emu.world.hsWrites),
    hsSecondaryWrites: new Map(emu.world.hsSecondaryStatusWrites),
    sfWrites: new Map(emu.world.sfWrites),
    notSuppressed: { hubspot: v.hubspot.notSuppressed.length, salesforce: v.salesforce.notSuppressed.length },
  };
}

/** Requests already inside the emulators when the child died still take effect: wait until nothing moves. */
async function quiesce(emu: Emulators): Promise<void> {
  let last = -1;
  let stableSince = Date.now();
  await waitFor(
    () => {
      const c = emu.requestCounts();
      const n = [c.cc, c.hubspot, c.salesforce].reduce(
        (a, m) => a + Object.values(m).reduce((x, e) => x + e.total, 0),
        0,
      );
      const w = emu.verify();
      const sig = n * 1e6 + w.hubspot.writes * 1e3 + w.salesforce.writes;
      if (sig !== last) {
        last = sig;
        stableSince = Date.now();
      }
      return Date.now() - stableSince >= 600;
    },
    { timeoutMs: 30_000, intervalMs: 50, what: 'the emulators to finish requests in flight' },
  );
}

/** After the kill: rerun backfill (CLI, --json), check the outcome against the ground truth and the kill point. */
async function rerunAndCheck(
  h: Harness,
  kill: KillPoint,
  command: 'backfill' | 'sync' = 'backfill',
): Promise<{ rerun: RunSummary; audit: AuditRow[] }> {
  h.emu.faults.reset();
  const r = await runCli(h, ['--json', '--no-progress', command], { env: { CC_OPTOUT_DEBUG: '1' } });
  assert.equal(r.code, 0, `rerun exit ${r.code}\n${r.stderr.slice(-3000)}`);
  const rerun = parseJsonOut(r);
  assert.equal(rerun.exitCode, 0);
  for (const [name, t] of Object.entries(rerun.targets)) {
    assert.equal(t.queued, 0, `${name} still queued`);
    assert.equal(t.parked, 0, `${name} parked`);
    assert.equal(t.halted, undefined);
  }
  // loses nothing, repeats nothing
  assertVerified(h.emu);
  const audit = await runOnce(h, async (p) => p.store.audit(null));
  // skips nothing: every opted-out email has a final outcome for both targets, consistent with the ground truth;
  // an email expected "applied" may show "already-suppressed" only if the killed run had written it
  const truth = h.emu.truth();
  const exp = expectedOutcomes(h.emu, truth);
  for (const target of ['hubspot', 'salesforce'] as const) {
    const rows = audit.filter((x) => x.target === target);
    assert.deepEqual(rows.map((x) => x.email).sort(), truth.optedOutEmails, `${target}: one row per opted-out email`);
    for (const row of rows) {
      const want = exp[target].get(row.email)!;
      if (row.outcome === want) continue;
      const writtenBeforeKill =
        target === 'hubspot'
          ? (kill.hsWrites.get(h.emu.world.hsByNorm.get(row.email)?.id ?? '') ?? 0) > 0 ||
            (kill.hsSecondaryWrites.get(row.email) ?? 0) > 0
          : (h.emu.world.sfByNorm.get(row.email) ?? []).some((x) => (kill.sfWrites.get(x.Id) ?? 0) > 0);
      assert.ok(
        want === 'applied' && row.outcome === 'already-suppressed' && writtenBeforeKill,
        `${target} ${row.email}: ${row.outcome}, expected ${want}`,
      );
    }
  }
  // the other command afterwards finds nothing to do and writes nothing
  const w0 = writeRequests(h.emu);
  const s = await runCli(h, ['--json', '--no-progress', command === 'backfill' ? 'sync' : 'backfill']);
  assert.equal(s.code, 0, s.stderr);
  const ss = parseJsonOut(s);
  for (const t of Object.values(ss.targets)) assert.deepEqual(t.outcomes, {});
  assert.deepEqual(writeRequests(h.emu), w0);
  assertVerified(h.emu);
  return { rerun, audit };
}

describe('e2e: a backfill killed mid-run (SIGKILL) and rerun', function () {
  this.timeout(180_000);

  describe('killed while the emulators show writes in progress (polling)', () => {
    let h: Harness;
    after(() => h?.stop());

    it('loses nothing, repeats no delivered write, skips nothing, exits 0', async () => {
      h = await startHarness({ contacts: 3000, seed: 404, delivery: { batchSize: 25 } });
      const truth = h.emu.truth();
      assert.ok(truth.hubspot.toSuppress.length > 200);
      h.emu.faults.set({ hubspot: { latencyMs: 120 }, salesforce: { latencyMs: 120 } });
      const child: CliChild = spawnCli(h, ['--json', '--no-progress', 'backfill']);
      let exited = false;
      void child.done.then(
        () => (exited = true),
        () => (exited = true),
      );
      await waitFor(
        () => {
          if (exited) throw new Error(`backfill exited before any write was seen: ${child.stderr().slice(-2000)}`);
          const v = h.emu.verify();
          return v.hubspot.writes >= 50 && v.salesforce.writes >= 25;
        },
        { timeoutMs: 90_000, intervalMs: 20, what: 'HubSpot and Salesforce writes from the backfill child' },
      );
      child.child.kill('SIGKILL');
      const res = await child.done;
      assert.equal(res.signal, 'SIGKILL');
      await quiesce(h.emu);
      const kill = snapshot(h.emu);
      assert.ok(
        kill.notSuppressed.hubspot > 0 && kill.notSuppressed.salesforce > 0,
        `killed mid-delivery (still to do: ${JSON.stringify(kill.notSuppressed)})`,
      );

      const { rerun } = await rerunAndCheck(h, kill);
      assert.equal(rerun.detection.mode, 'skipped', 'the scan had completed: the rerun only delivers');
      assert.ok(
        rerun.messages.some((m) => /resuming backfill/.test(m)),
        JSON.stringify(rerun.messages),
      );
      assert.ok(
        (rerun.targets.hubspot!.outcomes.applied ?? 0) > 0 && (rerun.targets.salesforce!.outcomes.applied ?? 0) > 0,
        'the rerun delivered the rest',
      );
    });
  });

  describe('killed the instant a CRM write landed, before the response reached the process', () => {
    let h: Harness;
    after(() => h?.stop());

    it('a `sync` rerun finds the landed writes already suppressed and writes them no second time', async () => {
      h = await startHarness({ contacts: 2400, seed: 405, delivery: { batchSize: 30 } });
      h.emu.faults.set({ hubspot: { latencyMs: 60 }, salesforce: { latencyMs: 60 } });
      let child: CliChild | null = null;
      let killedAt: KillPoint | null = null;
      let hsWriteCalls = 0;
      let sfWriteCalls = 0;
      const killIfDue = (): void => {
        if (!killedAt && child && hsWriteCalls >= 2 && sfWriteCalls >= 1) {
          killedAt = snapshot(h.emu);
          child.child.kill('SIGKILL'); // the write is applied; its response is never read
        }
      };
      // wrap the write handlers: count, and kill the child right after a write took effect
      // wrap the write handlers: count, and kill the child right after a HubSpot write took effect
      const hook = (routes: typeof h.emu.servers.hubspot.router.routes, name: string, after: () => void): void => {
        const r = routes.find((x) => x.name === name)!;
        const inner = r.handler;
        r.handler = async (req): Promise<EmuResponse> => {
          const res = await inner(req);
          if (res.status < 300) after();
          return res;
        };
      };
      hook(
        h.emu.servers.hubspot.router.routes,
        'POST /communication-preferences/2026-09/statuses/batch/unsubscribe-all',
        () => {
          hsWriteCalls++;
          killIfDue();
        },
      );
      hook(
        h.emu.servers.salesforce.router.routes,
        'PATCH /services/data/vXX.X/composite/sobjects',
        () => sfWriteCalls++,
      );
      child = spawnCli(h, ['--json', '--no-progress', 'backfill']);
      const res = await child.done;
      assert.equal(
        res.signal,
        'SIGKILL',
        `the child was killed mid-write (exit ${res.code}): ${res.stderr.slice(-2000)}`,
      );
      assert.ok(killedAt);
      const atKill = killedAt as KillPoint;
      assert.ok(atKill.notSuppressed.hubspot > 0 && atKill.notSuppressed.salesforce > 0, 'killed before the end');
      await quiesce(h.emu);
      const kill = snapshot(h.emu);
      // at least one landed write was never recorded as delivered by the killed process
      const recorded = await runOnce(h, async (p) =>
        (await p.store.audit(null)).filter((x) => x.outcome === 'applied'),
      );
      const recordedHs = new Set(recorded.filter((x) => x.target === 'hubspot').map((x) => x.email));
      const landedUnrecorded = [...atKill.hsWrites.keys()].filter(
        (id) => !recordedHs.has(h.emu.world.hsById.get(id)!.norm),
      );
      assert.ok(landedUnrecorded.length > 0, 'the kill left HubSpot writes applied but not recorded');

      const { rerun, audit } = await rerunAndCheck(h, kill, 'sync');
      assert.equal(rerun.detection.mode, 'window', 'the killed backfill had completed its reconcile');
      for (const e of landedUnrecorded.map((id) => h.emu.world.hsById.get(id)!.norm)) {
        assert.equal(
          audit.find((x) => x.target === 'hubspot' && x.email === e)?.outcome,
          'already-suppressed',
          `${e}: found suppressed, not written again`,
        );
      }
    });
  });

  describe('killed during the reconcile scan (pages already committed)', () => {
    let h: Harness;
    after(() => h?.stop());

    it('the rerun scans again and delivers everything, once', async () => {
      h = await startHarness({ contacts: 3000, seed: 406, detection: { pageSize: 40 } });
      h.emu.faults.set({ cc: { latencyMs: 80 } });
      const child = spawnCli(h, ['--json', '--no-progress', 'backfill']);
      let exited = false;
      void child.done.then(
        () => (exited = true),
        () => (exited = true),
      );
      const pages = (): number => h.taps.ccContactQueries.length;
      await waitFor(
        () => {
          if (exited) throw new Error(`backfill exited before the kill: ${child.stderr().slice(-2000)}`);
          return pages() >= 3;
        },
        { timeoutMs: 60_000, intervalMs: 10, what: 'three pages of the reconcile' },
      );
      child.child.kill('SIGKILL');
      const res = await child.done;
      assert.equal(res.signal, 'SIGKILL');
      await quiesce(h.emu);
      const kill = snapshot(h.emu);
      assert.equal(h.emu.verify().hubspot.writes + h.emu.verify().salesforce.writes, 0, 'killed before any delivery');
      const committed = await runOnce(h, async (p) => ({
        known: (await p.store.countOptOuts()).active,
        checkpoint: p.store.getCheckpoint('cc.optout_window.before'),
      }));
      assert.ok(
        committed.known > 0 && committed.known < h.emu.truth().optedOutEmails.length,
        `some pages were committed (${committed.known})`,
      );
      assert.equal(committed.checkpoint, null, 'no window checkpoint before the scan completed');
      const { rerun } = await rerunAndCheck(h, kill);
      assert.equal(rerun.detection.mode, 'full', 'the interrupted scan is done again');
      assert.equal(rerun.detection.complete, true);
    });
  });
});
