/**
 * End to end, in-process: a backfill against the three emulators suppresses exactly the records the ground
 * truth expects, through the right APIs, and nothing else.
 */
import { strict as assert } from 'assert';
import { RunSummary } from '../../src/engine';
import { AuditRow } from '../../src/store/types';
import {
  Harness,
  WRITE_ENDPOINTS,
  assertVerified,
  expectedOutcomes,
  runOnce,
  startHarness,
  writeRequests,
} from './helpers';

describe('e2e: backfill suppresses exactly the expected CRM records', function () {
  this.timeout(120_000);
  let h: Harness;
  let summary: RunSummary;
  let audit: AuditRow[];

  before(async () => {
    h = await startHarness({ contacts: 3000, seed: 101, delivery: { batchSize: 200 } });
    ({ summary, audit } = await runOnce(h, async (p) => {
      const s = await p.engine.backfill();
      return { summary: s, audit: await p.store.audit(null) };
    }));
  });
  after(() => h?.stop());

  it('exits 0 with nothing queued or parked, and the emulators verify clean (no missing, unexpected, unnecessary or repeated write)', () => {
    assert.equal(summary.exitCode, 0, JSON.stringify(summary.targets));
    for (const [name, t] of Object.entries(summary.targets)) {
      assert.equal(t.queued, 0, `${name} queued`);
      assert.equal(t.parked, 0, `${name} parked`);
      assert.equal(t.halted, undefined, `${name} halted: ${t.halted}`);
    }
    assertVerified(h.emu);
    const v = h.emu.verify();
    const truth = h.emu.truth();
    assert.equal(v.hubspot.writes, truth.hubspot.toSuppress.length, 'one HubSpot write per contact to suppress');
    assert.equal(
      v.salesforce.writes,
      truth.salesforce.toSuppress.length,
      'one Salesforce write per record to suppress',
    );
  });

  it('finds every opt-out in Constant Contact (deleted-after-opt-out included) and records one outcome per (email, target) matching the ground truth', () => {
    const truth = h.emu.truth();
    assert.equal(summary.detection.complete, true);
    assert.equal(summary.detection.newOptOuts, truth.optedOutEmails.length);
    const exp = expectedOutcomes(h.emu, truth);
    for (const target of ['hubspot', 'salesforce'] as const) {
      const rows = audit.filter((r) => r.target === target);
      assert.deepEqual(
        rows.map((r) => r.email).sort(),
        truth.optedOutEmails,
        `${target}: one audit row per opted-out email`,
      );
      const wrong = rows
        .filter((r) => r.outcome !== exp[target].get(r.email))
        .map((r) => `${r.email}: ${r.outcome} (expected ${exp[target].get(r.email)})`);
      assert.deepEqual(wrong, [], `${target} outcomes differ from the ground truth`);
      const counts: Record<string, number> = {};
      for (const k of exp[target].values()) counts[k] = (counts[k] ?? 0) + 1;
      assert.deepEqual(summary.targets[target]!.outcomes, counts, `${target}: summary counts`);
    }
    // the deleted-not-unsubscribed and resubscribed contacts are not opt-outs
    const known = new Set(audit.map((r) => r.email));
    for (const e of [...truth.notOptOuts.deletedNotUnsubscribed, ...truth.notOptOuts.resubscribed])
      assert.ok(!known.has(e), `${e} is not an opt-out`);
  });

  it('HubSpot: suppression only through Communication Preferences unsubscribe-all, never a property write; the comm-pref status says so', () => {
    const counts = h.emu.requestCounts().hubspot;
    const hit = WRITE_ENDPOINTS.hubspot.filter((e) => (counts[e]?.total ?? 0) > 0);
    assert.ok(hit.length > 0, 'HubSpot was written to');
    assert.deepEqual(
      hit.filter((e) => !e.includes('/unsubscribe-all')),
      [],
      `only unsubscribe-all endpoints write to HubSpot: ${JSON.stringify(writeRequests(h.emu).byEndpoint)}`,
    );
    assert.equal(
      counts['POST /crm/objects/2026-09/contacts/batch/update']?.total ?? 0,
      0,
      'hs_email_optout is read-only: no CRM property write',
    );
    const truth = h.emu.truth();
    const state = h.emu.world.hubspotState();
    const unsub = new Set(state.unsubscribedEmails);
    for (const id of truth.hubspot.toSuppress) {
      const c = h.emu.world.hsById.get(id)!;
      assert.equal(c.props.hs_email_optout, 'true');
      assert.ok(unsub.has(c.norm), `${c.norm}: unsubscribed from all email in Communication Preferences`);
    }
    // already-suppressed contacts got no write; the audit names the contact
    for (const id of truth.hubspot.alreadySuppressed)
      assert.equal(h.emu.world.hsWrites.get(id) ?? 0, 0, `already suppressed ${id} written`);
    const applied = audit.filter((r) => r.target === 'hubspot' && r.outcome === 'applied');
    const holders = new Map<string, string[]>();
    for (const m of truth.hubspot.secondaryMatches)
      holders.set(m.email, [...(holders.get(m.email) ?? []), m.contactId]);
    for (const r of applied) {
      const primary = h.emu.world.hsByNorm.get(r.email);
      // an address held only in hs_additional_emails: the audit names the contact(s) holding it
      const expected = primary ? [primary.id] : (holders.get(r.email) ?? []).sort();
      assert.ok(expected.length > 0, `${r.email}: applied, but no HubSpot contact holds it`);
      assert.deepEqual([...r.recordIds].sort(), expected, `${r.email}: audit names its HubSpot contact`);
    }
    // mixed-case CRM emails were matched
    const mixedToSuppress = truth.hardCases.mixedCaseHubSpot.filter((id) => truth.hubspot.toSuppress.includes(id));
    assert.ok(mixedToSuppress.length > 0, 'the dataset has mixed-case HubSpot contacts to suppress');
  });

  it('Salesforce: Contacts and unconverted Leads suppressed (duplicates too); converted Leads untouched and never attempted', () => {
    const truth = h.emu.truth();
    const w = h.emu.world;
    const types = new Set(truth.salesforce.toSuppress.map((id) => w.sfById.get(id)!.type));
    assert.deepEqual([...types].sort(), ['Contact', 'Lead']);
    for (const id of truth.salesforce.toSuppress) assert.equal(w.sfById.get(id)!.fields.HasOptedOutOfEmail, true, id);
    // every duplicate of an opted-out email (two Contacts, Contact + Lead) is suppressed
    const dupes = [...truth.hardCases.sfContactAndLead, ...truth.hardCases.sfTwoContacts].filter((e) =>
      truth.optedOutEmails.includes(e),
    );
    assert.ok(dupes.length > 0, 'dataset has opted-out CRM duplicates');
    for (const e of dupes) {
      const recs = (w.sfByNorm.get(e) ?? []).filter((r) => !(r.type === 'Lead' && r.fields.IsConverted === true));
      assert.ok(recs.length >= 2);
      for (const r of recs) assert.equal(r.fields.HasOptedOutOfEmail, true, `${e}: ${r.type} ${r.Id}`);
    }
    // converted Leads of opted-out emails: never written, flag unchanged, not in any audit row, no CANNOT_UPDATE_CONVERTED_LEAD
    assert.ok(truth.salesforce.convertedLeads.length > 0, 'dataset has converted Leads of opted-out emails');
    for (const id of truth.salesforce.convertedLeads) {
      const r = w.sfById.get(id)!;
      assert.equal(w.sfWrites.get(id) ?? 0, 0, `converted Lead ${id} written`);
      assert.equal(r.fields.HasOptedOutOfEmail === true, r.initialOptOut, `converted Lead ${id} changed`);
    }
    const converted = new Set(truth.salesforce.convertedLeads);
    const sfRows = audit.filter((r) => r.target === 'salesforce');
    assert.ok(!sfRows.some((r) => r.recordIds.some((id) => converted.has(id))), 'no audit row names a converted Lead');
    assert.ok(
      !sfRows.some((r) => /CANNOT_UPDATE_CONVERTED_LEAD/.test(r.message ?? '')),
      'the connector never tried to update a converted Lead',
    );
    // audit record ids: exactly the records that needed the write
    const toSuppress = new Set(truth.salesforce.toSuppress);
    const written = sfRows.filter((r) => r.outcome === 'applied').flatMap((r) => [...r.recordIds]);
    assert.deepEqual(written.sort(), [...toSuppress].sort());
    for (const r of sfRows.filter((x) => x.outcome === 'applied'))
      assert.ok(r.writtenAt && r.lagSeconds !== null, `${r.email}: write time and lag recorded`);
  });

  it('a second backfill repeats no write: everything is already delivered', async () => {
    const before = writeRequests(h.emu);
    const s = await runOnce(h, (p) => p.engine.backfill());
    assert.equal(s.exitCode, 0);
    for (const t of Object.values(s.targets)) assert.deepEqual(t.outcomes, {}, 'nothing queued again');
    assert.deepEqual(writeRequests(h.emu), before, 'no write request');
    assertVerified(h.emu);
  });
});

describe('e2e: backfill on a HubSpot portal without batch subscription endpoints (403 on v4 batch)', function () {
  this.timeout(120_000);
  let h: Harness;
  after(() => h?.stop());

  it('falls back to one unsubscribe-all per email and still suppresses exactly the expected records', async () => {
    h = await startHarness({ contacts: 600, seed: 102, emulator: { hubspot: { knobs: { batchAllowed: false } } } });
    const s = await runOnce(h, (p) => p.engine.backfill());
    assert.equal(s.exitCode, 0, JSON.stringify(s.targets));
    assertVerified(h.emu);
    const c = h.emu.requestCounts().hubspot;
    const single =
      c['POST /communication-preferences/2026-09/statuses/{subscriberIdString}/unsubscribe-all']?.total ?? 0;
    const truth = h.emu.truth();
    // Primary matches are judged by hs_email_optout (already-unsubscribed ones need no write). A secondary
    // address's own status would need the batch status read, which this portal refuses (403) like the batch
    // writes: so EVERY secondary match is written once, the already-unsubscribed ones included (HubSpot answers
    // NO_STATUS_CHANGE). Per-email writes = contacts to suppress + all secondary matches, nothing more.
    assert.ok(
      truth.hubspot.secondaryMatches.some((m) => m.alreadyUnsubscribed),
      'the dataset has an already-unsubscribed secondary address',
    );
    assert.equal(
      single,
      truth.hubspot.toSuppress.length + truth.hubspot.secondaryMatches.length,
      'one per-email write per contact to suppress and per secondary address',
    );
    // The batch status read was tried once (403, remembered); the batch write once (403, remembered).
    assert.equal(c['POST /communication-preferences/2026-09/statuses/batch/unsubscribe-all/read']?.total ?? 0, 1);
    assert.equal(c['POST /communication-preferences/2026-09/statuses/batch/unsubscribe-all']?.total ?? 0, 1);
    const counts: Record<string, number> = {};
    for (const k of expectedOutcomes(h.emu, truth, { hubspotBatch: false }).hubspot.values())
      counts[k] = (counts[k] ?? 0) + 1;
    assert.deepEqual(
      s.targets.hubspot!.outcomes,
      counts,
      'secondary addresses are all applied (no status read on this portal)',
    );
    assert.equal(c['POST /crm/objects/2026-09/contacts/batch/update']?.total ?? 0, 0);
  });
});
