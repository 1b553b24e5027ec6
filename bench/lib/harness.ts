/**
 * Shared pieces of the benchmarks (bench/detect.ts, bench/deliver.ts): the emulators in a child process,
 * an engine opened on an emulator config with timing probes around the store and the source, a
 * detection-only "null" target, an RSS sampler and a table printer.
 *
 * Nothing here changes how the product works: the engine, the Constant Contact source (axios), the SQLite
 * store and the CRM connectors are the real ones; the probes only time calls as they pass through.
 */
import { ChildProcess, fork } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { performance } from 'perf_hooks';
import * as v8 from 'v8';
import * as vm from 'vm';
import * as t from 'io-ts';
import { writeEmulatorConfig } from '../../src/demo';
import { EmulatorOptions, Emulators } from '../../src/emulators';
import { CHECKPOINT_LAST_FULL, CHECKPOINT_WINDOW, Engine } from '../../src/engine';
import type { GroundTruth } from '../../src/emulators/world';
import type { OptOut } from '../../src/domain';
import { createLogger } from '../../src/log';
import { Registry, createRegistry } from '../../src/registry';
import { Connector, TargetHalt } from '../../src/sdk';
import { OptOutSource, SourcePage } from '../../src/source/types';
import { StateStore } from '../../src/store/types';
import { openApp } from '../../src/app';
import type { ConstantContactSourceOptions } from '../../src/source/constant-contact';
import type { HostCommand, HostConnection } from './emulator-host';

// ------------------------------------------------------------------------------------------ emulators

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

/** The three emulators in a forked child process, driven over IPC. */
export class EmulatorProcess {
  private next = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(
    private readonly child: ChildProcess,
    readonly connection: HostConnection,
  ) {
    child.on('message', (raw: unknown) => {
      const m = raw as { id?: number; ok?: boolean; value?: unknown; error?: string };
      if (typeof m.id !== 'number') return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(`emulator host: ${m.error}`));
    });
  }

  static async start(opts: EmulatorOptions): Promise<EmulatorProcess> {
    const child = fork(path.join(__dirname, 'emulator-host.js'), [JSON.stringify(opts)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const connection = await new Promise<HostConnection>((resolve, reject) => {
      const onMessage = (raw: unknown): void => {
        const m = raw as { ready?: boolean; connection?: HostConnection };
        if (m.ready && m.connection) {
          child.off('exit', onExit);
          child.off('message', onMessage);
          resolve(m.connection);
        }
      };
      const onExit = (code: number | null): void => reject(new Error(`emulator host exited early (code ${code})`));
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
    return new EmulatorProcess(child, connection);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  call<T>(c: HostCommand): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, ...c });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    await this.call({ cmd: 'stop' }).catch(() => undefined);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

/**
 * `writeEmulatorConfig` (src/demo.ts) reads only the connection details of an `Emulators`, which the child
 * process sends over IPC; the control methods stay in the child.
 */
export function connectionAsEmulators(c: HostConnection): Emulators {
  return { cc: c.cc, hubspot: c.hubspot, salesforce: c.salesforce } as unknown as Emulators;
}

/** Sum of request counts per vendor and endpoint label (e.g. "GET /v3/contacts"). */
export type RequestCounts = Record<
  'cc' | 'hubspot' | 'salesforce',
  Record<string, { total: number; byStatus: Record<string, number> }>
>;

/** Per-endpoint difference between two snapshots of one vendor. */
export function countsDelta(
  after: RequestCounts,
  before: RequestCounts,
  vendor: keyof RequestCounts,
): Record<string, { total: number; byStatus: Record<string, number> }> {
  const out: Record<string, { total: number; byStatus: Record<string, number> }> = {};
  for (const [label, a] of Object.entries(after[vendor])) {
    const b = before[vendor][label];
    const total = a.total - (b?.total ?? 0);
    if (total === 0) continue;
    const byStatus: Record<string, number> = {};
    for (const [s, n] of Object.entries(a.byStatus)) {
      const d = n - (b?.byStatus[s] ?? 0);
      if (d > 0) byStatus[s] = d;
    }
    out[label] = { total, byStatus };
  }
  return out;
}

// ------------------------------------------------------------------------------------------ probes

/** Where the time of one engine run went (all in ms, `performance.now()` based). */
export class Probe {
  /** Store: commitDetection (one SQLite transaction each). */
  commitMs = 0;
  commits = 0;
  /** Store: knownOptOuts lookups. */
  lookupMs = 0;
  /** The engine's per-page work (store lookup + computeDelta + commit), measured around its onPage. */
  onPageMs = 0;
  pages = 0;
  /** Last detection event (source call end, commit end) seen before the first deliver call. */
  lastDetectAt = 0;
  firstDeliverAt: number | null = null;
  /** Time inside targets' deliver() calls (the connector, its HTTP and the CRM emulator). */
  deliverMs = 0;
  deliverCalls = 0;
  startedAt = 0;
  /** When the source's last scan call ended (whatever delivery did meanwhile). */
  scanEndAt = 0;
  /** Per target: its first deliver() call, and the time spent inside its deliver() calls. */
  firstDeliverByTarget = new Map<string, number>();
  busyMsByTarget = new Map<string, number>();

  reset(): void {
    Object.assign(this, new Probe());
    this.startedAt = performance.now();
  }

  private mark(at: number): void {
    if (this.firstDeliverAt === null) this.lastDetectAt = at;
  }

  /** Wall time of detection: from the run's start to the last detection step before delivery began. */
  detectMs(): number {
    return this.lastDetectAt - this.startedAt;
  }

  store(store: StateStore): StateStore {
    const probe = this;
    return new Proxy(store, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (prop === 'commitDetection') {
          return (c: Parameters<StateStore['commitDetection']>[0]) => {
            const s = performance.now();
            try {
              return target.commitDetection(c);
            } finally {
              const e = performance.now();
              probe.commitMs += e - s;
              probe.commits += 1;
              probe.mark(e);
            }
          };
        }
        if (prop === 'knownOptOuts') {
          return (emails: readonly string[]) => {
            const s = performance.now();
            try {
              return target.knownOptOuts(emails);
            } finally {
              probe.lookupMs += performance.now() - s;
            }
          };
        }
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  source(s: OptOutSource): OptOutSource {
    const probe = this;
    const timed =
      (onPage: (p: SourcePage) => Promise<void> | void) =>
      async (page: SourcePage): Promise<void> => {
        const t0 = performance.now();
        await onPage(page);
        const t1 = performance.now();
        probe.onPageMs += t1 - t0;
        probe.pages += 1;
        probe.mark(t1);
      };
    const end = <T>(p: Promise<T>): Promise<T> =>
      p.finally(() => {
        probe.mark(performance.now());
        probe.scanEndAt = performance.now();
      });
    return {
      scanWindow: (after, before, onPage) => end(s.scanWindow(after, before, timed(onPage))),
      scanUnsubscribed: (onPage, plan) => end(s.scanUnsubscribed(timed(onPage), plan)),
      unsubscribedCount: () => end(s.unsubscribedCount()),
      check: () => s.check(),
    };
  }

  onDeliver(): void {
    if (this.firstDeliverAt === null) this.firstDeliverAt = performance.now();
  }

  /** The same connector, with each deliver() call timed. */
  connector(c: Connector<unknown>): Connector<unknown> {
    const probe = this;
    return {
      ...c,
      open: (config, caps) => {
        const target = c.open(config, caps);
        return {
          ...target,
          check: () => target.check(),
          close: target.close ? () => target.close!() : undefined,
          deliver: async (batch, mode) => {
            probe.onDeliver();
            const t0 = performance.now();
            if (!probe.firstDeliverByTarget.has(caps.targetName)) probe.firstDeliverByTarget.set(caps.targetName, t0);
            try {
              return await target.deliver(batch, mode);
            } finally {
              const ms = performance.now() - t0;
              probe.deliverMs += ms;
              probe.deliverCalls += 1;
              probe.busyMsByTarget.set(caps.targetName, (probe.busyMsByTarget.get(caps.targetName) ?? 0) + ms);
            }
          },
        };
      },
    };
  }
}

/** A target that delivers nothing: detection-only benchmarks queue for it, and it stops at once. */
export function nullConnector(probe: Probe): Connector<Record<string, unknown>> {
  return {
    id: 'bench-null',
    config: t.UnknownRecord,
    schema: { type: 'object' },
    capabilities: { dryRun: true, backfill: true, suppressionModes: [] },
    maxBatch: 1000,
    open: () => ({
      check: async () => ({ ok: true, items: [] }),
      deliver: async () => {
        probe.onDeliver();
        // Target-wide stop with a retry time in the past: the rows stay queued and due, nothing is written.
        throw new TargetHalt('unavailable', 'bench: detection only', { retryAt: new Date(0).toISOString() });
      },
    }),
  };
}

/** The manifest's connectors (each deliver() timed by `probe`) plus `extra`. */
function registryWith(probe: Probe, extra: Connector<unknown>[]): Registry {
  const base = createRegistry();
  const all = new Map<string, Connector<unknown>>();
  for (const id of base.ids()) all.set(id, probe.connector(base.get(id)!));
  for (const c of extra) all.set(c.id, c);
  return createRegistry({ connectorsDir: null, connectors: [...all.values()] });
}

// ------------------------------------------------------------------------------------------ engine

export interface BenchConfigOptions {
  dir: string;
  /** Constant Contact requests per second on OUR side (config source.rateLimit.perSecond). */
  ccPerSecond?: number;
  ccDailyBudget?: number;
  /** Detection-only: two null targets named like the real ones (rows are queued for both). */
  nullTargets?: boolean;
  targets?: ('hubspot' | 'salesforce')[];
  detection?: Record<string, unknown>;
  delivery?: Record<string, unknown>;
  hubspot?: Record<string, unknown>;
  salesforce?: Record<string, unknown>;
  /** Config file name (several configs may share one store). */
  name?: string;
}

export interface BenchConfig {
  file: string;
  env: Record<string, string>;
}

/** The demo's emulator config (src/demo.ts writeEmulatorConfig) with the benchmark's overrides. */
export function writeBenchConfig(conn: HostConnection, o: BenchConfigOptions): BenchConfig {
  const { file, env, config } = writeEmulatorConfig(connectionAsEmulators(conn), {
    dir: o.dir,
    targets: o.targets,
    detection: o.detection,
    delivery: o.delivery,
    hubspot: o.hubspot,
    salesforce: o.salesforce,
  });
  const source = config.source as Record<string, unknown>;
  source.rateLimit = { perSecond: o.ccPerSecond ?? 4, dailyBudget: o.ccDailyBudget ?? 10_000 };
  if (o.nullTargets) {
    config.targets = [
      { name: 'hubspot', connector: 'bench-null', config: {} },
      { name: 'salesforce', connector: 'bench-null', config: {} },
    ];
  }
  const out = o.name ? path.join(o.dir, o.name) : file;
  fs.writeFileSync(out, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  return { file: out, env };
}

export interface BenchEngine {
  engine: Engine;
  store: StateStore;
  probe: Probe;
  /** Log lines at warn level and above (retries, throttles, count mismatches). */
  warnings: string[];
  close(): Promise<void>;
}

export function openBenchEngine(cfg: BenchConfig, sourceOptions?: ConstantContactSourceOptions): BenchEngine {
  const probe = new Probe();
  const warnings: string[] = [];
  let raw: StateStore | null = null;
  const app = openApp({
    configFile: cfg.file,
    env: { ...process.env, ...cfg.env },
    // BENCH_TRACE=<file>: every log line (debug: one per request) with its time, for finding where time goes
    logger: process.env.BENCH_TRACE
      ? createLogger({
          format: 'text',
          level: 'debug',
          write: (line) => {
            fs.appendFileSync(process.env.BENCH_TRACE!, `${Date.now()} ${line}\n`);
            if (/\b(WARN|ERROR|warn|error)\b/.test(line.slice(0, 40))) warnings.push(line);
          },
        })
      : createLogger({ format: 'text', level: 'warn', write: (line) => warnings.push(line) }),
    registry: registryWith(probe, [nullConnector(probe) as Connector<unknown>]),
    wrapStore: (s: StateStore) => {
      raw = s;
      return probe.store(s);
    },
    wrapSource: (s: OptOutSource) => probe.source(s),
    sourceOptions,
  });
  return { engine: app.engine, store: raw!, probe, warnings, close: app.close };
}

// ------------------------------------------------------------------------------------------ measuring

/** Samples this process's RSS every few ms while async work runs (synchronous work: call `sample()`). */
export class RssSampler {
  peak = 0;
  private timer: NodeJS.Timeout | null = null;

  start(): this {
    this.peak = process.memoryUsage.rss();
    this.timer = setInterval(() => this.sample(), 5);
    this.timer.unref();
    return this;
  }

  sample(): void {
    const r = process.memoryUsage.rss();
    if (r > this.peak) this.peak = r;
  }

  stop(): number {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return this.peak;
  }
}

export interface Measured<T> {
  value: T;
  ms: number;
  cpuMs: number;
  peakRss: number;
  rssStart: number;
}

// A full GC before each measurement, so that "RSS start" is not the previous run's garbage (`node` runs
// without --expose-gc under `npm run bench`; this is the documented way to reach gc() at run time).
v8.setFlagsFromString('--expose_gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Wall time, this process's CPU time (user + system) and sampled peak RSS of `fn` (after a full GC). */
export async function measure<T>(fn: () => Promise<T> | T): Promise<Measured<T>> {
  gc();
  const rss = new RssSampler().start();
  const rssStart = rss.peak;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { value, ms, cpuMs: (cpu.user + cpu.system) / 1000, peakRss: rss.stop(), rssStart };
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `cc-optout-bench-${prefix}-`));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------ printing

export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
export const sec = (ms: number): string =>
  ms === 0
    ? '0 s'
    : ms >= 10_000
      ? `${(ms / 1000).toFixed(1)} s`
      : ms >= 1000
        ? `${(ms / 1000).toFixed(2)} s`
        : `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;
export const int = (n: number): string => n.toLocaleString('en-US');

/** A plain text table: first column left-aligned, the others right-aligned. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? int(c) : c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function header(title: string): void {
  process.stdout.write(`\n${title}\n${'='.repeat(title.length)}\n`);
}

export function machine(): string {
  const cpus = os.cpus();
  return `node ${process.version}, ${cpus.length} x ${cpus[0]?.model.trim() ?? 'cpu'}, ${os.platform()} ${os.release()}, ${mb(os.totalmem())} RAM`;
}

/** Every opted-out email of the ground truth queued for `targets`, checkpoints at now (a backfill's scan, done). */
export async function seedOutbox(store: StateStore, truth: GroundTruth, targets: readonly string[]): Promise<OptOut[]> {
  const now = new Date().toISOString();
  const runId = await store.startRun('bench-seed', false, now);
  const added: OptOut[] = truth.optOuts.map((o) => ({
    email: o.email,
    contactId: o.contactId,
    optedOutAt: new Date(o.optOutDate).toISOString(),
    source: o.source,
    reason: o.reason,
    deleted: o.deleted,
  }));
  await store.commitDetection({
    runId,
    added,
    resubscribed: [],
    targets,
    now,
    checkpoints: { [CHECKPOINT_WINDOW]: now, [CHECKPOINT_LAST_FULL]: now },
  });
  await store.finishRun(runId, 0, { seeded: added.length }, now);
  return added;
}

/** The value after `--name` on the command line, or `def`. */
export function argText(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

/** The number after `--name` on the command line, or `def`. */
export function argNumber(name: string, def: number): number {
  const v = argText(name, '');
  if (v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name}: expected a number, got ${JSON.stringify(v)}`);
  return n;
}
