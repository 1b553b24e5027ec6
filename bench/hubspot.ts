/**
 * Benchmark: HubSpot delivery on HubSpot's 2026 platform (issue 9). For E opted-out addresses of which F are
 * nobody's primary address and K need a write, the minimum is
 *   ceil(E/100) batch reads + ceil(F/100) searches (hs_additional_emails, one IN filter of <= 100 values)
 *   + ceil(K/100) batch writes (Enterprise) + ceil(S/100) address status reads for the S secondary matches
 *   (statuses/batch/unsubscribe-all/read: a secondary address's own status is in no lookup), or + K
 *   per-address writes (no batch endpoints: no status read, so every secondary match is written).
 * The engine hands the connector batches (maxBatch 1000), so the achievable minimum is that sum per batch;
 * both are printed. Counted twice: by the engine (calls the connector made) and by the emulator (by endpoint),
 * which also shows how many calls went to numeric-version (v1-v4) paths.
 *
 * Robust to the emulator's generation: it first asks the emulator whether it serves the 2026-09 paths and
 * search (bench/lib/hubspot-probe.ts); if not, it runs legacy paths without search and says so.
 *
 *   npm run build && node dist/bench/hubspot.js [--contacts 20000] [--seed 7]
 */
import * as fs from 'fs';
import { GroundTruth, Verification } from '../src/emulators';
import {
  EmulatorProcess,
  RequestCounts,
  countsDelta,
  header,
  int,
  machine,
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

const CONTACTS = argNumber('contacts', 20_000);
/** Contact counts for the per-address run at HubSpot's real limit (100 / 10 s): `--real 20000,100000`, `--real 0` skips it. */
const REAL_SIZES = (() => {
  const i = process.argv.indexOf('--real');
  const v = i > 0 ? (process.argv[i + 1] ?? '') : '20000,100000';
  return v
    .split(',')
    .map(Number)
    .filter((n) => Number.isFinite(n) && n > 0);
})();
const ONLY_REAL = process.argv.includes('--only-real');
/** HubSpot's limit for private apps and Service Keys on Free/Starter: 100 requests per rolling 10 s. */
const REAL_LIMIT = 100;
const SEED = argNumber('seed', 7);
const RAISED = 100_000;
const CHUNK = 100;
const MAX_BATCH = 1000;
const NUMERIC = /\/(crm|communication-preferences|oauth)\/(objects\/|properties\/)?v[1-4]\//;

interface Counted {
  reads: number;
  searches: number;
  statusReads: number;
  writes: number;
  other: number;
  numeric: number;
  throttled: number;
}

function classify(counts: ReturnType<typeof countsDelta>): Counted {
  const c: Counted = { reads: 0, searches: 0, statusReads: 0, writes: 0, other: 0, numeric: 0, throttled: 0 };
  for (const [label, n] of Object.entries(counts)) {
    c.throttled += n.byStatus['429'] ?? 0;
    if (NUMERIC.test(label)) c.numeric += n.total;
    if (/\/search/.test(label)) c.searches += n.total;
    else if (/statuses\/batch\/(unsubscribe-all\/)?read/.test(label)) c.statusReads += n.total;
    else if (/batch\/read/.test(label)) c.reads += n.total;
    else if (/^POST .*(statuses|unsubscribe|batch\/write)/.test(label)) c.writes += n.total - (n.byStatus['403'] ?? 0);
    else c.other += n.total;
  }
  return c;
}

interface Row {
  run: string;
  e: number;
  f: number;
  k: number;
  secondary: number;
  used: number;
  minimum: number;
  perBatchMinimum: number;
  c: Counted;
  ms: number;
  /** Wall time the ten-secondly limit alone imposes on the counted non-search calls (0 when the limit was raised). */
  floorMs: number;
}

/** Per engine batch (in outbox order, which follows opt-out date): the minimum for that batch. */
function perBatch(
  emails: string[],
  notPrimary: Set<string>,
  toWrite: Set<string>,
  batchWrites: boolean,
  secondary: Set<string>,
): number {
  let n = 0;
  for (let i = 0; i < emails.length; i += MAX_BATCH) {
    const b = emails.slice(i, i + MAX_BATCH);
    const f = b.filter((e) => notPrimary.has(e)).length;
    const k = b.filter((e) => toWrite.has(e)).length;
    const s = b.filter((e) => secondary.has(e)).length;
    n +=
      Math.ceil(b.length / CHUNK) +
      Math.ceil(f / CHUNK) +
      (batchWrites ? Math.ceil(s / CHUNK) + Math.ceil(k / CHUNK) : k);
  }
  return n;
}

/** n requests under a rolling limit of `per` per 10 s: the last one cannot start before (ceil(n/per) - 1) windows. */
function floorMs(n: number, per: number): number {
  return Math.max(0, Math.ceil(n / per) - 1) * 10_000;
}

async function scenario(
  batchWrites: boolean,
  opts: { contacts?: number; realLimit?: boolean; rerun?: boolean } = {},
): Promise<{ rows: Row[]; verify: string; note: string }> {
  const contacts = opts.contacts ?? CONTACTS;
  const limit = opts.realLimit ? REAL_LIMIT : RAISED;
  const emu = await EmulatorProcess.start({
    contacts,
    seed: SEED,
    hubspot: { knobs: { tenSecondLimit: limit, ...(batchWrites ? {} : { batchAllowed: false }) } },
  });
  const dir = tmpDir('bench-hubspot');
  try {
    const conn = emu.connection;
    const platform = await probeHubSpot(conn.hubspot.baseUrl, conn.hubspot.accessToken);
    const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
    const cfg = writeBenchConfig(conn, {
      dir,
      targets: ['hubspot'],
      hubspot: {
        ...platform.settings,
        rateLimit: { per10Seconds: opts.realLimit ? REAL_LIMIT : 1000 },
        suppression: { type: 'unsubscribe-all', batch: batchWrites ? 'always' : 'never' },
      },
    });
    const seeding = openBenchEngine(cfg);
    await seedOutbox(seeding.store, truth, ['hubspot']);
    await seeding.close();
    const rows: Row[] = [];
    for (const rerun of opts.rerun === false ? [false] : [false, true]) {
      const open = openBenchEngine(cfg);
      try {
        if (rerun)
          await open.store.enqueueKnown({
            runId: await open.store.startRun('bench-requeue', false, new Date().toISOString()),
            targets: ['hubspot'],
            since: null,
            redeliver: true,
            now: new Date().toISOString(),
          });
        const queued = (await open.store.queuedOutbox('hubspot', 1_000_000, 0)).map((r) => r.optOut.email);
        const before = await emu.call<RequestCounts>({ cmd: 'requestCounts' });
        const r = await measure(() => open.engine.sync({ targets: ['hubspot'] }));
        const after = await emu.call<RequestCounts>({ cmd: 'requestCounts' });
        const c = classify(countsDelta(after, before, 'hubspot'));
        const o = r.value.targets.hubspot?.outcomes ?? {};
        // How each address was matched, from the audit (closed rows say "matched by ...").
        const audit = (await open.store.audit(null)).filter((x) => x.target === 'hubspot');
        const primary = new Set(audit.filter((x) => x.message === 'matched by primary').map((x) => x.email));
        const secondaryEmails = new Set(
          audit.filter((x) => x.message === 'matched by additional-email').map((x) => x.email),
        );
        const secondary = secondaryEmails.size;
        const notPrimary = new Set(queued.filter((e) => !primary.has(e)));
        // A rerun needs no write, except (without batch endpoints, so without the status read) every secondary match.
        const k = rerun ? (batchWrites ? 0 : secondary) : (o.applied ?? 0);
        const applied = new Set(
          rerun
            ? batchWrites
              ? []
              : [...secondaryEmails]
            : audit.filter((x) => x.outcome === 'applied').map((x) => x.email),
        );
        const searchTerm = platform.dateVersioned ? Math.ceil(notPrimary.size / CHUNK) : 0;
        const statusReadTerm = batchWrites ? Math.ceil(secondary / CHUNK) : 0;
        const minimum =
          Math.ceil(queued.length / CHUNK) + searchTerm + statusReadTerm + (batchWrites ? Math.ceil(k / CHUNK) : k);
        const perBatchMin = platform.dateVersioned
          ? perBatch(queued, notPrimary, applied, batchWrites, secondaryEmails)
          : perBatch(queued, new Set(), applied, batchWrites, new Set());
        rows.push({
          run: `${batchWrites ? 'batch' : 'per-address'}${rerun ? ' rerun (redeliver)' : ''}${opts.realLimit ? `, ${int(contacts)} contacts at ${REAL_LIMIT}/10 s` : ''}`,
          e: queued.length,
          f: notPrimary.size,
          k,
          secondary: rerun ? 0 : secondary,
          used: (r.value.apiCalls.hubspot ?? 0) - c.other,
          minimum,
          perBatchMinimum: perBatchMin,
          c,
          ms: r.ms,
          floorMs: opts.realLimit ? floorMs(c.reads + c.statusReads + c.writes, REAL_LIMIT) : 0,
        });
      } finally {
        await open.close();
      }
    }
    const v = (await emu.call<Verification>({ cmd: 'verify' })).hubspot;
    const verify = `${v.ok ? 'OK' : 'FAILED'}: ${int(v.expected - v.notSuppressed.length)}/${int(v.expected)} suppressed, ${v.repeatedWrites.length} written twice, ${v.unexpectedlyChanged.length} wrongly changed`;
    return { rows, verify, note: platform.note };
  } finally {
    await emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runHubSpot(): Promise<void> {
  header(`cc-optout HubSpot 2026 benchmark: ${int(CONTACTS)} contacts, seed ${SEED}`);
  process.stdout.write(`${machine()}; emulators in a child process on 127.0.0.1\n`);
  const a = ONLY_REAL ? null : await scenario(true);
  const b = ONLY_REAL ? null : await scenario(false);
  const real: Awaited<ReturnType<typeof scenario>>[] = [];
  for (const n of REAL_SIZES) real.push(await scenario(false, { contacts: n, realLimit: true, rerun: false }));
  process.stdout.write(`${(a ?? real[0])?.note ?? ''}\n\n`);
  const rows = [...(a?.rows ?? []), ...(b?.rows ?? []), ...real.flatMap((x) => x.rows)];
  process.stdout.write(
    table(
      [
        'run',
        'E',
        'F (not primary)',
        'K (written)',
        'secondary matches',
        'calls used / minimum',
        'per-batch minimum',
        'reads',
        'searches',
        'status reads',
        'writes',
        'numeric-version calls',
        '429',
        'wall',
        'floor @100/10 s',
        'wall / floor',
      ],
      rows.map((r) => [
        r.run,
        int(r.e),
        int(r.f),
        int(r.k),
        int(r.secondary),
        `${int(r.used)} / ${int(r.minimum)}`,
        int(r.perBatchMinimum),
        r.c.reads,
        r.c.searches,
        r.c.statusReads,
        r.c.writes,
        r.c.numeric,
        r.c.throttled,
        sec(r.ms),
        r.floorMs > 0 ? sec(r.floorMs) : '-',
        r.floorMs > 0 ? `${(r.ms / r.floorMs).toFixed(3)}x` : '-',
      ]),
    ) + '\n',
  );
  process.stdout.write(
    [
      '',
      'minimum = ceil(E/100) reads + ceil(F/100) searches + ceil(S/100) status reads of the S secondary matches + ceil(K/100) batch writes',
      '(or K per-address writes, no status read, without batch endpoints), over the whole queue;',
      `per-batch minimum = the same per engine batch of ${MAX_BATCH} (the connector sees one batch at a time). Token calls are not counted.`,
      'calls used = counted by the engine, token/other calls apart; reads/searches/writes = as the emulator counted them.',
      `floor @${REAL_LIMIT}/10 s (runs marked "at ${REAL_LIMIT}/10 s": emulator and config at HubSpot's real limit) = (ceil(C/${REAL_LIMIT}) - 1) x 10 s for the C calls under the`,
      '  ten-secondly window (reads + status reads + writes; searches have their own 5/s limit); wall includes detection and commits.',
      '  1,000,000 contacts per-address are not run: ~90,000 writes need ~150 min at 100/10 s whatever the connector does.',
      ...(a && b ? [`ground truth after the batch runs: ${a.verify}; after the per-address runs: ${b.verify}`] : []),
      ...real.map(
        (x, i) =>
          `ground truth after the per-address run at the real limit (${int(REAL_SIZES[i]!)} contacts): ${x.verify}`,
      ),
    ].join('\n') + '\n',
  );
}

if (require.main === module) {
  runHubSpot().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`hubspot benchmark failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
