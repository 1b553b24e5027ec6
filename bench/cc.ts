/**
 * Benchmark: Constant Contact calls of a full reconcile, by pages and by bulk export, at 20k, 100k and 1M
 * contacts (`npm run bench` runs it). Prints numbers; asserts nothing.
 *
 * The emulator runs in a child process with its limits lifted (1000 requests/s, a 10,000,000-request day) and so
 * does our side (rateLimit.perSecond 1000): the wall time is the connector's own cost; the 4 requests/s floor is
 * what Constant Contact's real limit alone would add ((ceil(calls/4) - 1) s).
 *
 * Per size: a cold reconcile (empty store: a first backfill) and a warm one (the daily reconcile: the store knows
 * every opt-out), by pages and by export; the minimum by pages is ceil(opt-outs/500) + 1 (/contacts/counts);
 * "before" is what the earlier reconcile read: status=unsubscribed,deleted, ceil((unsubscribed + every deleted
 * contact)/500) pages + 1. Then the daily-usage record written per request (usageFlushEvery 1, as before) against
 * the batched default, for a warm pages reconcile (detection CPU and wall).
 *
 *   npm run build && node dist/bench/cc.js [--sizes 20000,100000,1000000] [--seed 7]
 */
import axios from 'axios';
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

const SIZES = argText('sizes', '20000,100000,1000000').split(',').map(Number);
const SEED = Number(argText('seed', '7'));
const PAGE = 500;
const LIFTED = 1000;

const floorMs = (calls: number): number => Math.max(0, Math.ceil(calls / 4) - 1) * 1000;

interface Row {
  size: number;
  run: string;
  calls: number;
  min: number;
  wallMs: number;
  cpuMs: number;
  contacts: number;
  found: number;
  complete: boolean;
}

async function runs(
  emu: EmulatorProcess,
  size: number,
  via: 'pages' | 'export',
  truth: GroundTruth,
  flushEvery?: number,
): Promise<Row[]> {
  const dir = tmpDir(`cc-${via}-${size}`);
  try {
    const cfg = writeBenchConfig(emu.connection, {
      dir,
      nullTargets: true,
      ccPerSecond: LIFTED,
      ccDailyBudget: 10_000_000,
      detection: { reconcileVia: via, lagMinutes: 0 },
    });
    // a store of its own needs a refresh token of its own (they rotate): ask the emulator for one
    const res = await axios.post(`${emu.connection.cc.origin}/__emulator/refresh-token`, {}, { adapter: 'http' });
    cfg.env.CC_REFRESH_TOKEN = (res.data as { refresh_token: string }).refresh_token;
    const open = openBenchEngine(cfg, flushEvery !== undefined ? { usageFlushEvery: flushEvery } : undefined);
    const min = Math.ceil(truth.optedOutEmails.length / PAGE) + 1;
    const rows: Row[] = [];
    try {
      for (const label of ['cold', 'warm']) {
        open.probe.reset();
        const m = await measure(() => open.engine.sync({ full: true }));
        const s: RunSummary = m.value;
        rows.push({
          size,
          run: `${via}, ${label}${flushEvery !== undefined ? ` (usage written every ${flushEvery} request${flushEvery > 1 ? 's' : ''})` : ''}`,
          calls: s.apiCalls['constant-contact'] ?? 0,
          min,
          wallMs: open.probe.detectMs() || m.ms,
          cpuMs: m.cpuMs,
          contacts: s.detection.contactsSeen,
          found: (await open.store.countOptOuts()).active,
          complete: s.detection.complete,
        });
      }
    } finally {
      await open.close();
    }
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runCc(): Promise<void> {
  header(`cc-optout Constant Contact reconcile benchmark: ${SIZES.map(int).join(', ')} contacts (seed ${SEED})`);
  process.stdout.write(
    `${machine()}; emulator in a child process on 127.0.0.1, limits lifted to ${LIFTED}/s on both sides\n`,
  );
  const rows: Row[] = [];
  const before: string[] = [];
  for (const size of SIZES) {
    const emu = await EmulatorProcess.start({
      contacts: size,
      seed: SEED,
      cc: { knobs: { perSecondLimit: LIFTED, dailyQuota: 10_000_000, tokenRatePerSecond: 1000 } },
    });
    try {
      const truth = await emu.call<GroundTruth>({ cmd: 'truth' });
      const c = truth.counts;
      const oldCalls = Math.ceil((c.optedOut - c.optedOutDeleted + c.deleted) / PAGE) + 1;
      before.push(
        `${int(size)}: ${int(c.optedOut)} opt-outs (${int(c.optedOutDeleted)} deleted afterwards), ${int(c.deleted - c.optedOutDeleted)} deleted without opting out; before: ${oldCalls} calls by pages (status=unsubscribed,deleted), minimum ${Math.ceil(c.optedOut / PAGE) + 1}`,
      );
      rows.push(...(await runs(emu, size, 'pages', truth)));
      rows.push(...(await runs(emu, size, 'export', truth)));
      if (size <= 100_000) {
        rows.push(...(await runs(emu, size, 'pages', truth, 1)));
        rows.push(...(await runs(emu, size, 'pages', truth, 25)));
      }
    } finally {
      await emu.stop();
    }
  }
  process.stdout.write(before.join('\n') + '\n\n');
  process.stdout.write(
    table(
      [
        'contacts',
        'reconcile',
        'CC calls',
        'min by pages',
        'calls/min',
        'wall (lifted)',
        'CPU',
        'floor at 4/s',
        'contacts read',
        'opt-outs in store',
      ],
      rows.map((r) => [
        int(r.size),
        r.run + (r.complete ? '' : ' (INCOMPLETE)'),
        r.calls,
        r.min,
        (r.calls / r.min).toFixed(2),
        sec(r.wallMs),
        sec(r.cpuMs),
        sec(floorMs(r.calls)),
        r.contacts,
        r.found,
      ]),
    ) + '\n',
  );
  process.stdout.write(
    [
      '',
      'CC calls: every Constant Contact API request of the run (GET /contacts pages, /contacts/counts, the export POST, its polls',
      "  and the download), token refreshes not included; min by pages: ceil(opt-outs/500) + 1; wall: the run's detection with",
      '  the limits lifted; floor at 4/s: what the real per-second limit alone costs for that many calls.',
    ].join('\n') + '\n',
  );
}

if (require.main === module) {
  runCc().then(
    () => process.exit(0),
    (e: Error) => {
      process.stderr.write(`cc benchmark failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
