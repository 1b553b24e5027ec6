/**
 * End to end, in-process: after a backfill, `sync` reads only the opt-out window (status=all&optout_after=..)
 * and delivers new opt-outs, with their lag in the audit; the `updated_after` trap, unsubscribed-then-deleted,
 * deleted-not-unsubscribed and SMS-only contacts are each handled right, in the backfill and in the window.
 */
import { strict as assert } from 'assert';
import axios from 'axios';
import { AddedOptOut } from '../../src/emulators';
import { RunSummary } from '../../src/engine';
import { AuditRow } from '../../src/store/types';
import {
  Harness,
  assertVerified,
  countsSince,
  countsSnapshot,
  crmSuppressed,
  deleteContactNow,
  expectedOutcomes,
  runOnce,
  startHarness,
  subscribedInBothCrms,
  writeRequests,
} from './helpers';

describe('e2e: incremental sync after new opt-outs', function () {
  this.timeout(120_000);
  let h: Harness;
  let backfill: RunSummary;
  let sync: RunSummary;
  let added: AddedOptOut[];
  let audit: AuditRow[];
  let syncQueries: URLSearchParams[];
  let syncCcCounts: Record<string, number>;
  let checkpointBefore: string;

  before(async () => {
    h = await startHarness({ contacts: 2000, seed: 202 });
    backfill = await runOnce(h, (p) => p.engine.backfill());
    checkpointBefore = await runOnce(h, async (p) => (await p.store.getCheckpoint('cc.optout_window.before'))!);
    added = h.emu.addOptOuts(15);
    const q0 = h.taps.ccContactQueries.length;
    const c0 = countsSnapshot(h.emu);
    sync = await runOnce(h, async (p) => {
      const s = await p.engine.sync();
      audit = await p.store.audit(null);
      return s;
    });
    syncQueries = h.taps.ccContactQueries.slice(q0);
    syncCcCounts = countsSince(h.emu, c0).cc;
  });
  after(() => h?.stop());

  it('the backfill delivered everything first', () => {
    assert.equal(backfill.exitCode, 0);
    assert.ok(checkpointBefore, 'the backfill set the window checkpoint');
  });

  it('reads only the opt-out window: status=all with optout_after/optout_before, no full scan, no updated_after', () => {
    assert.equal(sync.detection.mode, 'window');
    assert.ok(sync.detection.window);
    const { after: wAfter, before: wBefore } = sync.detection.window!;
    assert.equal(
      Date.parse(wAfter),
      Date.parse(checkpointBefore) - 10 * 60_000,
      'window starts at the checkpoint minus the overlap',
    );
    for (const a of added)
      assert.ok(
        a.optOutDate >= wAfter && Date.parse(a.optOutDate) <= Date.parse(wBefore),
        `${a.email} opted out inside the window`,
      );
    const firstPages = syncQueries.filter((q) => !q.has('cursor'));
    assert.equal(firstPages.length, 1, `one window query: ${syncQueries.map((q) => q.toString()).join(' | ')}`);
    const q = firstPages[0]!;
    assert.equal(q.get('status'), 'all');
    assert.equal(Date.parse(q.get('optout_after')!), Date.parse(wAfter));
    assert.equal(Date.parse(q.get('optout_before')!), Date.parse(wBefore));
    assert.ok(!q.has('updated_after'), 'never filters on updated_after');
    assert.ok(!syncQueries.some((x) => /unsubscribed/.test(x.get('status') ?? '')), 'no full reconcile');
    assert.equal(syncCcCounts['GET /v3/contacts'], 1, 'one page: the window holds a few contacts, not the account');
    assert.equal(syncCcCounts['GET /v3/contacts/counts'] ?? 0, 0, 'no reconcile count check');
    assert.equal(sync.apiCalls['constant-contact'], 1);
  });

  it('delivers exactly the new opt-outs to both CRMs', () => {
    assert.equal(sync.exitCode, 0, JSON.stringify(sync.targets));
    assert.equal(sync.detection.newOptOuts, added.length);
    const exp = expectedOutcomes(h.emu);
    for (const t of ['hubspot', 'salesforce'] as const) {
      const want: Record<string, number> = {};
      for (const a of added) want[exp[t].get(a.email)!] = (want[exp[t].get(a.email)!] ?? 0) + 1;
      assert.ok((want.applied ?? 0) >= added.length - 3, 'most new opt-outs need a write');
      assert.deepEqual(sync.targets[t]!.outcomes, want, `${t}: ${JSON.stringify(sync.targets[t])}`);
      for (const a of added)
        assert.equal(
          audit.find((r) => r.email === a.email && r.target === t)?.outcome,
          exp[t].get(a.email),
          `${t} ${a.email}`,
        );
    }
    for (const a of added)
      assert.deepEqual(crmSuppressed(h.emu, a.email), { hubspot: true, salesforce: true }, a.email);
    assertVerified(h.emu);
  });

  it('reports the lag from opt-out to CRM write in the audit', () => {
    let applied = 0;
    for (const a of added) {
      for (const t of ['hubspot', 'salesforce']) {
        const r = audit.find((x) => x.email === a.email && x.target === t);
        assert.ok(r, `${a.email} -> ${t} audited`);
        if (r.outcome !== 'applied') continue; // already suppressed in that CRM: nothing written, no lag
        applied++;
        assert.equal(
          Date.parse(r.optedOutAt),
          Date.parse(a.optOutDate),
          "opted-out-at is Constant Contact's opt-out date",
        );
        assert.ok(r.writtenAt, 'written at');
        assert.ok(Date.parse(r.writtenAt) >= Date.parse(a.optOutDate));
        assert.equal(typeof r.lagSeconds, 'number');
        assert.ok(r.lagSeconds! >= 0 && r.lagSeconds! < 120, `lag ${r.lagSeconds}`);
        assert.ok(
          Math.abs(r.lagSeconds! - (Date.parse(r.writtenAt) - Date.parse(r.optedOutAt)) / 1000) <= 1,
          'lag = written - opted out',
        );
      }
    }
    assert.ok(applied >= 2 * added.length - 4, `lag reported for the written ones (${applied})`);
  });

  it('a sync with nothing new reads the window again and writes nothing', async () => {
    const w0 = writeRequests(h.emu);
    const q0 = h.taps.ccContactQueries.length;
    const s = await runOnce(h, (p) => p.engine.sync());
    assert.equal(s.exitCode, 0);
    assert.equal(s.detection.mode, 'window');
    assert.equal(s.detection.newOptOuts, 0);
    assert.deepEqual(writeRequests(h.emu), w0);
    const qs = h.taps.ccContactQueries.slice(q0);
    assert.ok(qs.length <= 1 && qs.every((q) => q.get('status') === 'all' && q.has('optout_after')));
  });
});

describe('e2e: the updated_after trap and the deleted / SMS-only cases', function () {
  this.timeout(120_000);
  let h: Harness;
  let audit: AuditRow[];
  let added: AddedOptOut[];
  let addedDeleted: AddedOptOut[];
  let deletedNow: string[];
  let checkpoint: string;

  before(async () => {
    h = await startHarness({ contacts: 2500, seed: 303 });
    const b = await runOnce(h, (p) => p.engine.backfill());
    assert.equal(b.exitCode, 0);
    checkpoint = await runOnce(h, async (p) => (await p.store.getCheckpoint('cc.optout_window.before'))!);
    // In the window: new traps (personal details untouched), one unsubscribed-then-deleted, a brand-new contact
    // with a messy address, and two deleted-NOT-unsubscribed contacts (their deletion shows as an opt_out_date).
    const pool = subscribedInBothCrms(h.emu, 6);
    added = h.emu.addOptOuts(8);
    addedDeleted = h.emu.addOptOuts([
      { contactId: pool[0]!.contactId, deleteAfter: true },
      { email: '  Trap.NewPerson@Example.COM ', salesforce: 'lead' },
    ]);
    deletedNow = [deleteContactNow(h.emu, pool[1]!.contactId), deleteContactNow(h.emu, pool[2]!.contactId)];
    const s = await runOnce(h, async (p) => {
      const r = await p.engine.sync();
      audit = await p.store.audit(null);
      return r;
    });
    assert.equal(s.exitCode, 0, JSON.stringify(s.targets));
    assert.equal(s.detection.mode, 'window');
  });
  after(() => h?.stop());

  it('the trap is real: updated_after from the checkpoint misses every new opt-out', async () => {
    const truth = h.emu.truth();
    const newOnes = [...added, ...addedDeleted];
    for (const a of newOnes) {
      const t = truth.optOuts.find((o) => o.contactId === a.contactId)!;
      assert.equal(t.trap, true, `${a.email}: updated_at older than the opt-out`);
    }
    // what an `updated_after` sync would have read (status=all so deleted ones count too)
    // the token endpoint allows about 1 request/s (bursts of 2 in 2 s): a fast backfill and sync may have just used it
    const tokenRequest = () =>
      axios.post(
        `${h.emu.cc.authBaseUrl}/token`,
        new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: h.emu.servers.cc.newRefreshToken('contact_data offline_access'),
        }).toString(),
        {
          auth: { username: h.emu.cc.clientId, password: h.emu.cc.clientSecret },
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          validateStatus: () => true,
        },
      );
    let tr = await tokenRequest();
    for (let i = 0; i < 5 && tr.status === 429; i++)
      tr = await new Promise<void>((r) => setTimeout(r, 2100)).then(tokenRequest);
    assert.equal(tr.status, 200, JSON.stringify(tr.data));
    const token = tr.data.access_token as string;
    const list = () =>
      axios.get(`${h.emu.cc.apiBaseUrl}/contacts`, {
        params: {
          status: 'all',
          updated_after: new Date(Date.parse(checkpoint) - 10 * 60_000).toISOString(),
          limit: 500,
        },
        headers: { authorization: `Bearer ${token}` },
        validateStatus: () => true,
      });
    // 4 requests/s per application: wait out a window another request of this run just filled
    let r = await list();
    for (let i = 0; i < 5 && r.status === 429; i++)
      r = await new Promise<void>((res) => setTimeout(res, 1100)).then(list);
    assert.equal(r.status, 200, JSON.stringify(r.data));
    const seen = new Set((r.data.contacts as Array<{ contact_id: string }>).map((c) => c.contact_id));
    for (const a of newOnes) assert.ok(!seen.has(a.contactId), `${a.email} is invisible to updated_after`);
  });

  it('every updated_after-trap contact (dataset and new) is suppressed in both CRMs', () => {
    const truth = h.emu.truth();
    assert.ok(truth.hardCases.updatedAfterTrap.length > 100, 'most opt-outs are traps');
    assert.ok(truth.hardCases.recentTrap.length >= added.length, 'recent traps include the new ones');
    const auditEmails = new Set(
      audit
        .filter((r) => r.outcome === 'applied' || r.outcome === 'already-suppressed' || r.outcome === 'not-found')
        .map((r) => `${r.target} ${r.email}`),
    );
    let checked = 0;
    for (const ref of truth.hardCases.updatedAfterTrap) {
      const e = ref.email!;
      const s = crmSuppressed(h.emu, e);
      if (s.hubspot !== null) assert.equal(s.hubspot, true, `HubSpot ${e}`);
      if (s.salesforce !== null) assert.equal(s.salesforce, true, `Salesforce ${e}`);
      assert.ok(
        auditEmails.has(`hubspot ${e}`) && auditEmails.has(`salesforce ${e}`),
        `${e} has a final outcome for both targets`,
      );
      checked += s.hubspot !== null || s.salesforce !== null ? 1 : 0;
    }
    assert.ok(checked > 100);
    const newTrap = h.emu.world.hsByNorm.get('trap.newperson@example.com');
    assert.equal(newTrap?.props.hs_email_optout, 'true', 'brand-new messy address matched after normalising');
    assertVerified(h.emu);
  });

  it('unsubscribed-then-deleted contacts (dataset and in the window) are suppressed', () => {
    const truth = h.emu.truth();
    const utd = truth.hardCases.unsubscribedThenDeleted;
    assert.ok(utd.length > 5);
    assert.ok(
      utd.some((r) => r.contactId === addedDeleted[0]!.contactId),
      'the in-window one is in the ground truth',
    );
    for (const ref of utd) {
      const s = crmSuppressed(h.emu, ref.email!);
      if (s.hubspot !== null) assert.equal(s.hubspot, true, `HubSpot ${ref.email}`);
      if (s.salesforce !== null) assert.equal(s.salesforce, true, `Salesforce ${ref.email}`);
      assert.ok(truth.optedOutEmails.includes(ref.email!));
    }
    assert.deepEqual(crmSuppressed(h.emu, addedDeleted[0]!.email), { hubspot: true, salesforce: true });
  });

  it('deleted-not-unsubscribed contacts (dataset and in the window) stay untouched', () => {
    const truth = h.emu.truth();
    const dnu = truth.hardCases.deletedNotUnsubscribed;
    assert.ok(dnu.length > 5);
    for (const e of deletedNow)
      assert.ok(
        dnu.some((r) => r.email === e),
        `${e} is in the ground truth as deleted-not-unsubscribed`,
      );
    const auditEmails = new Set(audit.map((r) => r.email));
    for (const ref of dnu) {
      assert.ok(!auditEmails.has(ref.email!), `${ref.email} must not be treated as an opt-out`);
      const h0 = h.emu.world.hsByNorm.get(ref.email!);
      if (h0) {
        assert.equal(h0.props.hs_email_optout === 'true', h0.initialOptOut, `HubSpot ${ref.email} changed`);
        assert.equal(h.emu.world.hsWrites.get(h0.id) ?? 0, 0);
      }
      for (const r of h.emu.world.sfByNorm.get(ref.email!) ?? []) {
        assert.equal(r.fields.HasOptedOutOfEmail === true, r.initialOptOut, `Salesforce ${r.Id} changed`);
        assert.equal(h.emu.world.sfWrites.get(r.Id) ?? 0, 0);
      }
    }
    for (const e of deletedNow) assert.deepEqual(crmSuppressed(h.emu, e), { hubspot: false, salesforce: false }, e);
  });

  it('SMS-only contacts are skipped: no outcome, no CRM write', () => {
    const truth = h.emu.truth();
    const sms = new Set(truth.hardCases.smsOnly.map((r) => r.contactId));
    assert.ok(sms.size > 5);
    assert.ok(!audit.some((r) => sms.has(r.contactId)), 'no audit row for an SMS-only contact');
    assert.ok(!audit.some((r) => r.email === '' || !r.email.includes('@')));
  });
});
