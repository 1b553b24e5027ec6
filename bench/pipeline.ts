/**
 * Benchmark: a whole `backfill` (scan + delivery to HubSpot and Salesforce) with detection and delivery
 * pipelined (`npm run bench` runs it). Prints numbers; asserts nothing.
 *
 * What runs: the real engine, Constant Contact source, SQLite store and connectors against the emulators in a
 * child process, at the vendors' real limits: Constant Contact 4 requests/s, HubSpot 100 requests / 10 s with
 * batch writes (the Enterprise path). For C contacts, a fresh store and fresh emulators, one `backfill`:
 * - wall: the run, start to summary;
 * - each vendor's floor: the time its own work takes, whatever the others do: for Constant Contact the scan
 *   (its pages are read one after the other), for a CRM the time inside its deliver() calls (requests, their
 *   latency and its rate limiter's waits), and never less than what the rate limit alone costs for the calls
 *   made (Constant Contact (ceil(calls/4) - 1) s, HubSpot (ceil(calls/100) - 1) x 10 s; Salesforce's emulator
 *   has no rate limit). A sequential scan-then-deliver run costs about scan + the slowest CRM; a pipelined one
 *   approaches the slowest vendor;
 * - per CRM: how long it idled before its first call (sequential: the whole scan), and in all (wall minus the
 *   time inside its deliver() calls).
 * With --million, also 1,000,000 contacts with the limits lifted on both sides (1000 CC requests/s,
 * 100,000 HubSpot requests / 10 s): the connector's own cost.
 *
 *   npm run build && node dist/bench/pipeline.js [--contacts 20000,100000] [--seed 7] [--million]
 */
import * as fs from 'fs';
import { GroundTruth } from '../src/emulators';
import { RunSummary } from '../src/engine';
import {
  EmulatorProcess,
  header,
  int,
  machine,
  measure,
  openBenchEngine,
  sec,
  table,
  tmpDir,
  writeBenchConfig,
  argText,
} from './lib/harness';
import { probeHubSpot } from './lib/hubspot-probe';

const SIZES = argText('contacts', '20000,100000').split(',').map(Number);
const SEED = Number(argText('seed', '7'));
const MILLION = process.argv.includes('--million');

interface Limits {
  ccPerSecond: number;
  hubspotPer10s: number;
}
const REAL: Limits = { ccPerSecond: 4, hubspotPer10s: 100 };
const LIFTED: Limits = { ccPerSecond: 1000, hubspotPer10s: 100_000 };

interface Row {
  contacts: number;
  limits: string;
  optOuts: number;
  wallMs: number;
  scanMs: number;
  /** Rate-limit floors. */
  floors: Record<'constant-contact' | 'hubspot' | 'salesforce', number>;
  /** Time inside each CRM's deliver() calls. */
  busy: Record<string, number>;
  calls: Record<string, number>;
  idleBefore: Record<string, number>;
  idleTotal: Record<string, number>;
  exitCode: number;
  outcomes: string;
}

const floorMs = (calls: number, perWindow: number, windowMs: number): number =>
  Math.max(0, Math.ceil(calls / perWindow) - 1) * windowMs;

async function backfillRun(contacts: number, limits: Limits, label: string): Promise<Row> {
  const lifted = limits === LIFTED;
  const emu = await EmulatorProcess.start({
    contacts,
    seed: SEED,
    cc: { knobs: { perSecondLimit: limits.ccPerSecond } },
    hubspot: { knobs: { tenSecondLimit: limits.hubspotPer10s } },
  });
  const dir = tmpDir(`pipeline-${contacts}`);
  try {
    const platform = await probeHubSpot(emu.connection.hubspot.baseUrl, emu.connection.hubspot.accessToken);
    const cfg = writeBenchConfig(emu.connection, {
      dir,
      ccPerSecond: limits.ccPerSecond,
      ccDailyBudget: lifted ? 1_000_000 : 10_000,
      hubspot: { ...platform.settings, rateLimit: { per10Seconds: limits.hubspotPer10s } },
    });
    const open = openBenchEngine(cfg);
    try {
      const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
      open.probe.reset();
      const m = await measure(() => open.engine.backfill());
      const s: RunSummary = m.value;
      const p = open.probe;
      const calls = { ...s.apiCalls };
      const cc = calls['constant-contact'] ?? 0;
      const hs = calls['hubspot'] ?? 0;
      const busy: Record<string, number> = {};
      const idleBefore: Record<string, number> = {};
      const idleTotal: Record<string, number> = {};
      for (const t of ['hubspot', 'salesforce']) {
        idleBefore[t] = (p.firstDeliverByTarget.get(t) ?? p.startedAt + m.ms) - p.startedAt;
        busy[t] = p.busyMsByTarget.get(t) ?? 0;
        idleTotal[t] = m.ms - busy[t]!;
      }
      const outcomes = Object.entries(s.targets)
        .map(
          ([t, x]) =>
            `${t} ${Object.entries(x.outcomes)
              .map(([k, n]) => `${k} ${int(n)}`)
              .join(', ')}${x.halted ? ` (halted: ${x.halted.slice(0, 80)})` : ''}`,
        )
        .join('; ');
      return {
        contacts,
        limits: label,
        optOuts: truth.optedOutEmails.length,
        wallMs: m.ms,
        scanMs: p.scanEndAt - p.startedAt,
        floors: {
          'constant-contact': floorMs(cc, limits.ccPerSecond, 1000),
          hubspot: floorMs(hs, limits.hubspotPer10s, 10_000),
          salesforce: 0,
        },
        calls,
        busy,
        idleBefore,
        idleTotal,
        exitCode: s.exitCode,
        outcomes,
      };
    } finally {
      await open.close();
    }
  } finally {
    await emu.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runPipeline(): Promise<void> {
  header(
    `cc-optout pipelined backfill benchmark: ${SIZES.map(int).join(' and ')} contacts${MILLION ? ' + 1,000,000 (limits lifted)' : ''} (seed ${SEED})`,
  );
  process.stdout.write(`${machine()}; emulators in a child process on 127.0.0.1\n`);
  const rows: Row[] = [];
  for (const c of SIZES) rows.push(await backfillRun(c, REAL, 'real (CC 4/s, HubSpot 100/10 s)'));
  if (MILLION) rows.push(await backfillRun(1_000_000, LIFTED, 'lifted (CC 1000/s, HubSpot 100k/10 s)'));
  process.stdout.write(
    table(
      [
        'contacts',
        'limits',
        'opt-outs',
        'wall',
        'CC scan (rate floor)',
        'HubSpot work (rate floor)',
        'Salesforce work',
        'slowest vendor',
        'wall / slowest',
        'sequential ~ scan + slowest CRM',
        'HubSpot idle before 1st / total',
        'Salesforce idle before 1st / total',
        'calls CC / HS / SF',
        'exit',
      ],
      rows.map((r) => {
        const cc = Math.max(r.scanMs, r.floors['constant-contact']);
        const hs = Math.max(r.busy.hubspot!, r.floors.hubspot);
        const sf = Math.max(r.busy.salesforce!, r.floors.salesforce);
        const slowest = Math.max(cc, hs, sf);
        return [
          int(r.contacts),
          r.limits,
          r.optOuts,
          sec(r.wallMs),
          `${sec(r.scanMs)} (${sec(r.floors['constant-contact'])})`,
          `${sec(r.busy.hubspot!)} (${sec(r.floors.hubspot)})`,
          sec(r.busy.salesforce!),
          sec(slowest),
          `${(r.wallMs / slowest).toFixed(2)}x`,
          sec(r.scanMs + Math.max(hs, sf)),
          `${sec(r.idleBefore.hubspot!)} / ${sec(r.idleTotal.hubspot!)}`,
          `${sec(r.idleBefore.salesforce!)} / ${sec(r.idleTotal.salesforce!)}`,
          `${r.calls['constant-contact'] ?? 0} / ${r.calls.hubspot ?? 0} / ${r.calls.salesforce ?? 0}`,
          r.exitCode,
        ];
      }),
    ) + '\n',
  );
  for (const r of rows) process.stdout.write(`${int(r.contacts)}: ${r.outcomes}\n`);
  process.stdout.write(
    [
      '',
      'wall: the whole backfill; CC scan: run start to the end of the Constant Contact scan; CRM work: time inside its deliver()',
      "  calls (requests, latency, its limiter's waits); in brackets the rate limit alone for the calls made (CC (ceil(calls/4)-1) s,",
      '  HubSpot (ceil(calls/100)-1) x 10 s; Salesforce unlimited here); slowest vendor: the largest of these, the floor of a',
      '  pipelined run (target wall <= 1.1x); a sequential run costs about scan + slowest CRM;',
      "  idle before 1st: run start to the CRM's first call (sequential: the whole scan); total: wall minus time inside its calls.",
    ].join('\n') + '\n',
  );
}

if (require.main === module) {
  runPipeline().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`pipeline benchmark failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
