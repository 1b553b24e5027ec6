/**
 * Benchmark: delivery of M opt-outs to the HubSpot and Salesforce emulators (`npm run bench` runs it after
 * bench/detect.ts). Prints API calls used against the theoretical minimum, wall time, and a rerun.
 *
 * The outbox is seeded straight from the emulator's ground truth (every opted-out email queued for both
 * targets, window checkpoint set to now), so that each run measures delivery: its detection step is one
 * empty opt-out window (1 Constant Contact call, listed apart). Then the real engine delivers through the
 * real connectors (@hubspot/api-client, jsforce) to the emulators hosted in a child process.
 *
 * Scenario A (fresh emulators): HubSpot v4 batch unsubscribe-all at HubSpot's real limit (100 requests /
 * 10 s), rerun; Salesforce sObject Collections (engine batches of 1000), rerun. A rerun queues every delivered
 * email again (`backfill --redeliver`): it must cost lookups only, 0 writes.
 * Scenario B (fresh emulators, same data): HubSpot without batch (emulator `batchAllowed: false`: the
 * connector falls back to one request per email after one refused batch call), rate limits raised on both
 * sides; Salesforce with engine batches of 5000 so that objects above `bulkThreshold` (2000) go through
 * Bulk API 2.0.
 *
 * Minimum (token requests apart): HubSpot ceil(M/100) lookups + ceil(F/100) searches on hs_additional_emails
 * (F = opt-outs without a primary contact per the ground truth; only when the emulator serves the 2026-09 paths,
 * see bench/lib/hubspot-probe.ts, else the connector runs legacy paths without search) + ceil(K/100) batch
 * writes, or + K per-email writes (bench/hubspot.ts breaks this down per engine batch); Salesforce ceil(M/100) queries per mapped object (Contact, Lead) + ceil(K/200) collection calls, a
 * Bulk job counting 5 requests (create, upload, close, one poll, successful results). K = records to write.
 *
 *   npm run build && node dist/bench/deliver.js [--contacts 40700] [--seed 7]
 */
import * as fs from 'fs';
import { performance } from 'perf_hooks';
import { GroundTruth, Verification } from '../src/emulators';
import { RunSummary } from '../src/engine';
import {
  BenchConfig,
  EmulatorProcess,
  RequestCounts,
  countsDelta,
  header,
  int,
  machine,
  mb,
  measure,
  openBenchEngine,
  sec,
  seedOutbox,
  table,
  tmpDir,
  writeBenchConfig,
  argNumber,
} from './lib/harness';
import { probeHubSpot } from './lib/hubspot-probe';

const CONTACTS = argNumber('contacts', 40_700); // seed 7: M = 4,995 opt-outs (one Bulk-sized batch of 5000)
const SEED = argNumber('seed', 7);
const RAISED = 100_000;
const HS_CHUNK = 100;
/** The naive minimum: one query per 200 addresses (what a lookup URL permits) per object, one Collections call per 200 records. */
const SF_QUERY_CHUNK = 200;
/** Salesforce backfills measured on their own (contacts): `--sf-sizes 20000,100000,1000000`. */
const SF_SIZES = (() => {
  const i = process.argv.indexOf('--sf-sizes');
  const v = i > 0 ? (process.argv[i + 1] ?? '') : '20000,100000';
  return v
    .split(',')
    .map(Number)
    .filter((n) => Number.isFinite(n) && n > 0);
})();
const ONLY_SF = process.argv.includes('--only-salesforce');
const SF_COLLECTION = 200;
const SF_BULK_THRESHOLD = 2000;
const BULK_JOB_MIN = 5;

type Vendor = 'hubspot' | 'salesforce';

interface Row {
  run: string;
  target: Vendor;
  m: number;
  k: number;
  outcomes: string;
  used: number;
  token: number;
  min: number;
  lookups: number;
  writes: number;
  bulk: number;
  composite: number;
  refused: number;
  throttled: number;
  ccCalls: number;
  deliverWallMs: number;
  runWallMs: number;
  connectorMs: number;
  batches: number;
  cpuMs: number;
  peakRss: number;
  /** What the same calls cost at the vendor's real rate limit (HubSpot 100/10 s; Salesforce: our own 20/s). */
  floorMs: number;
  warnings: string[];
}

interface Classified {
  lookups: number;
  writes: number;
  bulk: number;
  token: number;
  refused: number;
  throttled: number;
  /** POST /composite calls (each one API call carrying up to 5 queries or Collections updates). */
  composite: number;
}

/** Sort the emulator's per-endpoint counts into lookups, writes, Bulk API, token; 403s = refused batch calls. */
function classify(counts: ReturnType<typeof countsDelta>): Classified {
  const c: Classified = { lookups: 0, writes: 0, bulk: 0, token: 0, refused: 0, throttled: 0, composite: 0 };
  for (const [label, n] of Object.entries(counts)) {
    c.throttled += n.byStatus['429'] ?? 0;
    if (/token/.test(label)) c.token += n.total;
    else if (/\/composite$/.test(label)) c.composite += n.total;
    else if (/batch\/read|\/query|\/search/.test(label))
      c.lookups += n.total; // CRM search on hs_additional_emails is a lookup
    else if (/jobs\/ingest/.test(label)) c.bulk += n.total;
    else {
      const refused = n.byStatus['403'] ?? 0;
      c.refused += refused;
      c.writes += n.total - refused;
    }
  }
  return c;
}

function outcomeText(s: RunSummary, target: Vendor): string {
  const o = s.targets[target]?.outcomes ?? {};
  const failed = (o['failed-retryable'] ?? 0) + (o['failed-permanent'] ?? 0);
  return `${o.applied ?? 0}/${o['already-suppressed'] ?? 0}/${o['not-found'] ?? 0}/${failed}`;
}

async function deliverRun(
  emu: EmulatorProcess,
  cfg: BenchConfig,
  target: Vendor,
  run: string,
  k: number,
  min: number,
  floor: (calls: number) => number,
  redeliver: boolean,
): Promise<Row> {
  const open = openBenchEngine(cfg);
  try {
    if (redeliver)
      await open.store.enqueueKnown({
        runId: await open.store.startRun('bench-requeue', false, new Date().toISOString()),
        targets: [target],
        since: null,
        redeliver: true,
        now: new Date().toISOString(),
      });
    const m = (await open.store.targetStatus([target], new Date()))[0]!.due;
    const before = await emu.call<RequestCounts>({ cmd: 'requestCounts' });
    open.probe.reset();
    const r = await measure(() => open.engine.sync({ targets: [target] }));
    const endAt = performance.now();
    const after = await emu.call<RequestCounts>({ cmd: 'requestCounts' });
    const c = classify(countsDelta(after, before, target));
    const s = r.value;
    const used = s.apiCalls[target] ?? 0;
    return {
      run,
      target,
      m,
      k,
      outcomes: outcomeText(s, target),
      used,
      token: c.token,
      min,
      lookups: c.lookups,
      writes: c.writes,
      bulk: c.bulk,
      composite: c.composite,
      refused: c.refused,
      throttled: c.throttled,
      ccCalls: s.apiCalls['constant-contact'] ?? 0,
      deliverWallMs: open.probe.firstDeliverAt === null ? 0 : endAt - open.probe.firstDeliverAt,
      runWallMs: r.ms,
      connectorMs: open.probe.deliverMs,
      batches: open.probe.deliverCalls,
      cpuMs: r.cpuMs,
      peakRss: r.peakRss,
      floorMs: floor(used - c.token),
      warnings: [...open.warnings],
    };
  } finally {
    await open.close();
  }
}

const SF_MINIMUM_NOTE =
  'Salesforce min (naive) = 2 x ceil(M/200) queries (Contact, Lead; 200 addresses per SOQL IN list, what the URL permits) + ceil(K/200)\n' +
  '  Collections calls (+ 5 per Bulk job): one API call per query or update. The connector sends them five to a Composite call\n' +
  '  (one API call toward the org limit), so used/min can fall to ~0.2x; the target is <= 0.3x.';

/** n requests under a rolling limit of `per` per `windowMs`. */
const floorAt = (per: number, windowMs: number) => (n: number) => Math.max(0, Math.ceil(n / per) - 1) * windowMs;
const HS_FLOOR = floorAt(100, 10_000);
const SF_FLOOR = floorAt(20, 1000);

function verifyText(v: Verification, target: Vendor): string {
  const t = v[target];
  return (
    `${target === 'hubspot' ? 'HubSpot' : 'Salesforce'} ${t.ok ? 'OK' : 'FAILED'}: ${int(t.expected - t.notSuppressed.length)}/${int(t.expected)} suppressed, ` +
    `${t.repeatedWrites.length} records written twice, ${t.unnecessaryWrites.length} unnecessary writes, ${t.unexpectedlyChanged.length} wrongly changed`
  );
}

interface Scenario {
  rows: Row[];
  verify: string[];
  m: number;
}

async function scenarioA(): Promise<Scenario & { truth: GroundTruth; note: string }> {
  const emu = await EmulatorProcess.start({ contacts: CONTACTS, seed: SEED });
  const dir = tmpDir('deliver-a');
  try {
    const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
    const platform = await probeHubSpot(emu.connection.hubspot.baseUrl, emu.connection.hubspot.accessToken);
    const real = writeBenchConfig(emu.connection, { dir, name: 'real.json', hubspot: { ...platform.settings } });
    const fast = writeBenchConfig(emu.connection, {
      dir,
      name: 'fast.json',
      hubspot: { ...platform.settings, rateLimit: { per10Seconds: RAISED } },
    });
    const seeding = openBenchEngine(real);
    const m = (await seedOutbox(seeding.store, truth, ['hubspot', 'salesforce'])).length;
    await seeding.close();
    const kHs = truth.hubspot.emailsToUnsubscribe.length;
    const kSf = truth.salesforce.toSuppress.length;
    const lookupsHs =
      Math.ceil(m / HS_CHUNK) + (platform.dateVersioned ? Math.ceil(truth.hubspot.missingEmails.length / HS_CHUNK) : 0);
    const lookupsSf = 2 * Math.ceil(m / SF_QUERY_CHUNK);
    const rows: Row[] = [];
    rows.push(
      await deliverRun(
        emu,
        real,
        'hubspot',
        'batch, at the real limit 100/10 s',
        kHs,
        lookupsHs + Math.ceil(kHs / HS_CHUNK),
        HS_FLOOR,
        false,
      ),
    );
    await emu.call({ cmd: 'faults', arg: { hubspot: { tenSecondLimit: RAISED } } });
    rows.push(await deliverRun(emu, fast, 'hubspot', 'rerun (redeliver)', 0, lookupsHs, HS_FLOOR, true));
    rows.push(
      await deliverRun(
        emu,
        real,
        'salesforce',
        'Collections (engine batches of 1000)',
        kSf,
        lookupsSf + Math.ceil(kSf / SF_COLLECTION),
        SF_FLOOR,
        false,
      ),
    );
    rows.push(await deliverRun(emu, real, 'salesforce', 'rerun (redeliver)', 0, lookupsSf, SF_FLOOR, true));
    const v = await emu.call<Verification>({ cmd: 'verify' });
    return { rows, verify: [verifyText(v, 'hubspot'), verifyText(v, 'salesforce')], m, truth, note: platform.note };
  } finally {
    await emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function scenarioB(): Promise<Scenario> {
  const emu = await EmulatorProcess.start({
    contacts: CONTACTS,
    seed: SEED,
    hubspot: { knobs: { batchAllowed: false, tenSecondLimit: RAISED } },
  });
  const dir = tmpDir('deliver-b');
  try {
    const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
    const platform = await probeHubSpot(emu.connection.hubspot.baseUrl, emu.connection.hubspot.accessToken);
    const cfg = writeBenchConfig(emu.connection, {
      dir,
      hubspot: { ...platform.settings, rateLimit: { per10Seconds: RAISED } },
      delivery: { batchSize: 5000 },
    });
    const seeding = openBenchEngine(cfg);
    const m = (await seedOutbox(seeding.store, truth, ['hubspot', 'salesforce'])).length;
    await seeding.close();
    const kHs = truth.hubspot.emailsToUnsubscribe.length;
    const kSf = truth.salesforce.toSuppress.length;
    const byObject = {
      Contact: truth.salesforce.toSuppress.filter((id) => id.startsWith('003')).length,
      Lead: truth.salesforce.toSuppress.filter((id) => id.startsWith('00Q')).length,
    };
    // One deliver() call holds every opt-out (batch 5000 >= M): objects above the threshold go through Bulk.
    const bulkJobs = Object.values(byObject).filter((n) => n > SF_BULK_THRESHOLD).length;
    const viaCollections = Object.values(byObject)
      .filter((n) => n <= SF_BULK_THRESHOLD)
      .reduce((a, b) => a + b, 0);
    const lookupsHs =
      Math.ceil(m / HS_CHUNK) + (platform.dateVersioned ? Math.ceil(truth.hubspot.missingEmails.length / HS_CHUNK) : 0);
    const lookupsSf = 2 * Math.ceil(m / SF_QUERY_CHUNK);
    const rows: Row[] = [];
    rows.push(
      await deliverRun(
        emu,
        cfg,
        'hubspot',
        'per-email (batchAllowed=false), limit raised',
        kHs,
        lookupsHs + kHs,
        HS_FLOOR,
        false,
      ),
    );
    rows.push(await deliverRun(emu, cfg, 'hubspot', 'per-email rerun (redeliver)', 0, lookupsHs, HS_FLOOR, true));
    rows.push(
      await deliverRun(
        emu,
        cfg,
        'salesforce',
        `Bulk 2.0 for ${Object.entries(byObject)
          .filter(([, n]) => n > SF_BULK_THRESHOLD)
          .map(([o, n]) => `${o} (${int(n)})`)
          .join(', ')} (batch 5000)`,
        kSf,
        lookupsSf + bulkJobs * BULK_JOB_MIN + Math.ceil(viaCollections / SF_COLLECTION),
        SF_FLOOR,
        false,
      ),
    );
    rows.push(await deliverRun(emu, cfg, 'salesforce', 'Bulk rerun (redeliver)', 0, lookupsSf, SF_FLOOR, true));
    const v = await emu.call<Verification>({ cmd: 'verify' });
    return { rows, verify: [verifyText(v, 'hubspot'), verifyText(v, 'salesforce')], m };
  } finally {
    await emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A Salesforce backfill of `contacts` on its own (engine batches of 1000, the default), then a rerun. */
async function scenarioSf(contacts: number): Promise<Scenario> {
  const emu = await EmulatorProcess.start({
    contacts,
    seed: SEED,
    salesforce: { knobs: { dailyApiLimit: 10_000_000 } },
  });
  const dir = tmpDir('deliver-sf');
  try {
    const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
    const cfg = writeBenchConfig(emu.connection, { dir, targets: ['salesforce'] });
    const seeding = openBenchEngine(cfg);
    const m = (await seedOutbox(seeding.store, truth, ['salesforce'])).length;
    await seeding.close();
    const kSf = truth.salesforce.toSuppress.length;
    const lookupsSf = 2 * Math.ceil(m / SF_QUERY_CHUNK);
    const rows: Row[] = [];
    rows.push(
      await deliverRun(
        emu,
        cfg,
        'salesforce',
        `backfill, ${int(contacts)} contacts (Composite)`,
        kSf,
        lookupsSf + Math.ceil(kSf / SF_COLLECTION),
        SF_FLOOR,
        false,
      ),
    );
    rows.push(
      await deliverRun(
        emu,
        cfg,
        'salesforce',
        `rerun (redeliver), ${int(contacts)} contacts`,
        0,
        lookupsSf,
        SF_FLOOR,
        true,
      ),
    );
    const v = await emu.call<Verification>({ cmd: 'verify' });
    return { rows, verify: [`${int(contacts)} contacts: ${verifyText(v, 'salesforce')}`], m };
  } finally {
    await emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function deliverTable(rows: Row[]): string {
  return table(
    [
      'target',
      'run',
      'M',
      'K',
      'appl/already/nf/fail',
      'calls used/min',
      'used/min',
      'lookups',
      'writes',
      'composite',
      'bulk',
      '403',
      'token',
      'deliver wall',
      'in connector',
      'batches',
      'CPU',
      'floor @real limit',
      'peak RSS',
    ],
    rows.map((r) => [
      r.target,
      r.run,
      r.m,
      r.k,
      r.outcomes,
      `${r.used - r.token} / ${r.min}${r.throttled ? ` (${r.throttled} x 429)` : ''}`,
      r.min > 0 ? `${((r.used - r.token) / r.min).toFixed(2)}x` : '-',
      r.lookups,
      r.writes,
      r.composite,
      r.bulk,
      r.refused,
      r.token,
      sec(r.deliverWallMs),
      sec(r.connectorMs),
      r.batches,
      sec(r.cpuMs),
      sec(r.floorMs),
      mb(r.peakRss),
    ]),
  );
}

export async function runDeliver(): Promise<void> {
  const t0 = performance.now();
  header(
    ONLY_SF
      ? `cc-optout delivery benchmark: Salesforce backfills (${SF_SIZES.map(int).join(', ')} contacts, seed ${SEED})`
      : `cc-optout delivery benchmark: HubSpot and Salesforce emulators (${int(CONTACTS)} contacts, seed ${SEED}; Salesforce backfills of ${SF_SIZES.map(int).join(', ')})`,
  );
  process.stdout.write(`${machine()}; emulators in a child process on 127.0.0.1\n`);
  const sf: Scenario[] = [];
  for (const n of SF_SIZES) sf.push(await scenarioSf(n));
  if (ONLY_SF) {
    process.stdout.write(deliverTable(sf.flatMap((x) => x.rows)) + '\n');
    process.stdout.write(`\n${SF_MINIMUM_NOTE}\n${sf.flatMap((x) => x.verify).join('\n')}\n`);
    return;
  }
  const a = await scenarioA();
  process.stdout.write(`HubSpot: ${a.note}\n`);
  const b = await scenarioB();
  const t = a.truth;
  process.stdout.write(
    `M = ${int(a.m)} opt-outs queued per target. HubSpot: K = ${int(t.hubspot.emailsToUnsubscribe.length)} emails with an unsuppressed contact, ` +
      `${int(t.hubspot.alreadySuppressed.length)} already suppressed, ${int(t.hubspot.missingEmails.length)} without a contact. Salesforce: K = ${int(t.salesforce.toSuppress.length)} ` +
      `records to write (${int(t.salesforce.toSuppress.filter((id) => id.startsWith('003')).length)} Contacts, ${int(t.salesforce.toSuppress.filter((id) => id.startsWith('00Q')).length)} Leads), ` +
      `${int(t.salesforce.alreadySuppressed.length)} already opted out, ${int(t.salesforce.convertedLeads.length)} converted Leads (not written), ${int(t.salesforce.missingEmails.length)} emails without a record.\n\n`,
  );
  const rows = [...a.rows, ...b.rows, ...sf.flatMap((x) => x.rows)];
  process.stdout.write(deliverTable(rows) + '\n');
  process.stdout.write(
    [
      '',
      'appl/already/nf/fail: outcomes per email (applied / already-suppressed / not-found / failed); for a rerun K = 0 by definition.',
      'calls used/min: requests the connector made (counted by the engine, token requests apart) against the theoretical minimum;',
      '  lookups / writes / bulk / 403 / token: the same requests as the emulator counted them, by kind (403 = refused batch call).',
      'deliver wall: from the first deliver() call to the end of the run (connector + SQLite outcome commits); in connector: time',
      '  inside deliver(); batches: deliver() calls (the engine hands over at most min(delivery.batchSize, connector maxBatch)).',
      "floor @real limit: what the same calls need at the vendor's rate limit alone: HubSpot 100 per 10 s (runs marked 'raised' went",
      '  faster because both the emulator and the config limit were raised); Salesforce has no per-second API limit, the floor is the',
      "  connector's own 20 requests/s. Each run also made 1 Constant Contact call (an empty opt-out window): not in these numbers.",
      SF_MINIMUM_NOTE,
      ...sf.flatMap((x) => x.verify).map((v) => `ground truth after the Salesforce backfill of ${v}`),
      '',
      `ground truth after scenario A (batch / Collections): ${a.verify.join('; ')}`,
      `ground truth after scenario B (per-email / Bulk):    ${b.verify.join('; ')}`,
    ].join('\n') + '\n',
  );
  const warned = rows.filter((r) => r.warnings.length > 0);
  for (const r of warned)
    process.stdout.write(
      `warnings during ${r.target} "${r.run}": ${r.warnings.length} (first: ${r.warnings[0]!.slice(0, 200)})\n`,
    );
  process.stdout.write(
    `\nprocess peak RSS (this process): ${mb(process.resourceUsage().maxRSS * 1024)}; delivery benchmark took ${sec(performance.now() - t0)}\n`,
  );
}

if (require.main === module) {
  runDeliver().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`deliver benchmark failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
