#!/usr/bin/env node
/**
 * The command line: a thin shell over the engine and the store (commander for parsing, cli-progress for
 * the backfill bar). Exit codes: 0 all delivered, 3 some records still queued or parked (or detection
 * incomplete), 2 config error, 1 fatal.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command, Option } from 'commander';
import { MultiBar, Presets, SingleBar } from 'cli-progress';
import { AsyncApp, openAppAsync } from './app';
import { ConfigError, DEFAULT_CONFIG_PATH } from './config';
import {
  PlanEntry,
  ProgressEvent,
  RunSummary,
  SOURCE_KV,
  CHECKPOINT_WINDOW,
  CHECKPOINT_LAST_FULL,
  UnknownTarget,
  outcomeColumns,
} from './engine';
import { packageRoot } from './registry';
import { createLogger, redact } from './log';
import { RunLocked } from './store/types';
import { pidAlive } from './store/sqlite';
import { ReauthorizationRequired } from './source/types';
import { intOption, register as registerCommands } from './commands';
import { auditExport, registerRunsCommand } from './history';
import { registerServiceCommands } from './service/cli';
import { registerConnectorCommands } from './connector-commands';
import { CommandHelpers, EXIT, ExitError, GlobalOpts, out } from './cli-output';
import { exampleConfig } from './init';
import { createRegistry } from './registry';
import { toCsv } from './csv';
import { writePrivateFile } from './private-file';
import { accountStatus, accountStatusLines, registerAccountCommands, withAccount } from './accounts-commands';
import { DEFAULT_ACCOUNT } from './store/backend';

export { EXIT };

export type Context = AsyncApp;

/** `--config` must name a file (or a path where `init` may create one), never a directory. */
export function checkConfigOption(file: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file);
  } catch {
    return; // missing: the config loader (or init) says so
  }
  if (st.isDirectory())
    throw new ExitError(
      EXIT.config,
      `--config ${file}: is a directory; expected the config file (e.g. ${path.join(file, DEFAULT_CONFIG_PATH)})`,
    );
}

/** Every name given with `--target` must be a configured target (exit 2 naming it). */
export function checkTargets(ctx: Pick<Context, 'config'>, names: readonly string[] | undefined): void {
  const configured = ctx.config.targets.map((t) => t.name);
  for (const n of names ?? [])
    if (!configured.includes(n)) throw new ExitError(EXIT.config, new UnknownTarget(n, configured).message);
}

export function openContext(
  g: GlobalOpts,
  onProgress?: (e: ProgressEvent) => void,
  requireSecrets = true,
): Promise<Context> {
  checkConfigOption(g.config);
  const logger = createLogger({ format: g.logFormat, level: g.logLevel });
  return withAccount(g, (account) =>
    openAppAsync({
      configFile: g.config,
      env: process.env,
      logger,
      onProgress,
      requireSecrets,
      store: g.store,
      account,
    }),
  );
}

function fmtCounts(c: Partial<Record<string, number>>): string {
  const parts = outcomeColumns()
    .filter((k) => (c[k] ?? 0) > 0)
    .map((k) => `${k} ${c[k]}`);
  return parts.length ? parts.join(', ') : 'nothing to deliver';
}

/** Plan entries a dry run prints on the terminal; `--output FILE` writes them all. */
export const PLAN_SHOWN = 20;

export function renderSummary(s: RunSummary, planFile?: string): string {
  const lines: string[] = [];
  lines.push(
    `${s.command}${s.dryRun ? ' (dry run: nothing written to any CRM)' : ''}, run #${s.runId}, ${(s.durationMs / 1000).toFixed(1)} s, exit ${s.exitCode}`,
  );
  const d = s.detection;
  if (d.mode === 'skipped') lines.push('detection: skipped');
  else {
    const win = d.window ? ` ${d.window.after} .. ${d.window.before}` : '';
    lines.push(
      `detection: ${d.mode === 'full' ? 'full reconcile of the unsubscribed set' : 'opt-out window' + win}; ${d.pages} pages, ` +
        `${d.contactsSeen} contacts, ${d.optOutsSeen} opted out, ${d.newOptOuts} new, ${d.resubscribed} left the unsubscribed set ` +
        `(reported only), ${d.skippedNoEmail} without email skipped, ${d.quarantined} quarantined${d.complete ? '' : ' — INCOMPLETE'}`,
    );
    if (d.unsubscribedCount !== undefined && d.unsubscribedCount !== null)
      lines.push(`  Constant Contact reports ${d.unsubscribedCount} unsubscribed contacts`);
  }
  for (const [name, t] of Object.entries(s.targets)) {
    lines.push(
      `target ${name}: ${fmtCounts(t.outcomes)}; still queued ${t.queued}, parked ${t.parked}${t.halted ? `; STOPPED: ${t.halted}` : ''}`,
    );
    const named = t.parkedRecords ?? [];
    const parkedNow = t.outcomes['failed-permanent'] ?? named.length;
    if (named.length > 0) {
      lines.push(`  parked by this run (${parkedNow}; fix the cause, then \`cc-optout requeue --target ${name}\`):`);
      for (const r of named) lines.push(`    ${r.email}: ${r.message}`);
      if (parkedNow > named.length)
        lines.push(`    ... and ${parkedNow - named.length} more (\`cc-optout audit\` lists every one)`);
    }
  }
  const calls = Object.entries(s.apiCalls).map(([k, v]) => `${k} ${v}`);
  lines.push(`API calls: ${calls.length ? calls.join(', ') : 'none'}`);
  if (s.quarantined > 0)
    lines.push(`quarantined records in the store: ${s.quarantined} (see \`cc-optout quarantine\`)`);
  for (const m of s.messages) lines.push(`note: ${m}`);
  if (s.plan && planFile) {
    lines.push(`plan: ${s.plan.length} entries written to ${planFile}`);
  } else if (s.plan) {
    lines.push(
      `plan (${s.plan.length} entries${s.plan.length > PLAN_SHOWN ? `, first ${PLAN_SHOWN} shown; --output FILE writes them all` : ''}):`,
    );
    for (const p of s.plan.slice(0, PLAN_SHOWN)) {
      lines.push(
        `  ${p.target}\t${p.email}\t${p.kind}${p.action ? `\t${p.action}` : ''}${p.message ? `\t${p.message}` : ''}`,
      );
    }
  }
  if (s.interrupted) lines.push('stopped early on request: the batch in hand was recorded, the rest stays queued');
  return lines.join('\n');
}

/** What the bars write to: a TTY stream (stderr by default; tests pass a fake one). */
export type BarStream = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/**
 * Progress on a terminal: one multi-bar, one line per phase and per target (the scan bar sized by the count
 * Constant Contact reports, when it does). `stop()` restores the cursor and line wrap and leaves the cursor on
 * a fresh line, so whatever is printed next (the summary) starts on its own line; it is safe to call twice,
 * and a later event starts a new set of bars (the demo runs backfill, then sync).
 */
export function progressBar(
  enabled: boolean,
  stream: BarStream = process.stderr,
): { onProgress?: (e: ProgressEvent) => void; stop: () => void } {
  if (!enabled || !stream.isTTY) return { stop: () => undefined };
  let multi: MultiBar | null = null;
  let scanBar: SingleBar | null = null;
  let scanSized = false;
  const bars = new Map<string, SingleBar>();
  // after a signal the terminal is restored for good: the batch in hand finishing must not draw again
  let disabled = false;
  const open = (): MultiBar =>
    (multi ??= new MultiBar(
      { stream, hideCursor: true, clearOnComplete: false, autopadding: true, emptyOnZero: true },
      Presets.shades_classic,
    ));
  const stop = (): void => {
    if (!multi) return;
    multi.stop();
    multi = null;
    scanBar = null;
    scanSized = false;
    bars.clear();
  };
  const restore = (): void => {
    disabled = true;
    stop();
  };
  terminalRestorers.add(restore);
  return {
    onProgress: (e) => {
      if (disabled) return;
      const m = open();
      if (e.phase === 'scan') {
        const total = typeof e.total === 'number' && e.total > 0 ? Math.max(e.total, e.contacts) : null;
        if (!scanBar || (total !== null && !scanSized)) {
          if (scanBar) m.remove(scanBar);
          scanSized = total !== null;
          const format = scanSized
            ? 'scan         |{bar}| {value}/{total} contacts, {optOuts} opted out, {pages} pages'
            : 'scan         {value} contacts, {optOuts} opted out, {pages} pages (total not reported)';
          scanBar = m.create(total ?? 0, 0, { optOuts: 0, pages: 0 }, { format });
        }
        if (total !== null) scanBar.setTotal(total);
        scanBar.update(e.contacts, { optOuts: e.optOuts, pages: e.pages });
      } else {
        let bar = bars.get(e.target);
        if (!bar) {
          bar = m.create(
            e.total,
            0,
            {},
            { format: `${e.target.padEnd(12).slice(0, 12)} |{bar}| {value}/{total} {percentage}% eta {eta}s` },
          );
          bars.set(e.target, bar);
        }
        bar.setTotal(e.total);
        bar.update(e.done);
      }
    },
    stop: () => {
      stop();
      terminalRestorers.delete(restore);
    },
  };
}

/** Stops every live progress display (a signal handler calls these first, so the terminal is restored). */
const terminalRestorers = new Set<() => void>();

/**
 * SIGINT/SIGTERM during a run: restore the terminal at once, let the engine stop after the batch in hand
 * (it checks `signal` between batches and detection pages), then the command prints the summary and
 * "interrupted: rerun to resume" and exits 130 (SIGINT) or 143 (SIGTERM). A second signal exits at once.
 */
export function interruptible(
  stderr: NodeJS.WritableStream = process.stderr,
  graceful = true,
): { signal: AbortSignal; received: () => NodeJS.Signals | null; dispose: () => void } {
  const controller = new AbortController();
  let received: NodeJS.Signals | null = null;
  const handler = (sig: NodeJS.Signals): void => {
    for (const restore of [...terminalRestorers]) restore();
    if (received || !graceful) {
      stderr.write(received ? 'interrupted again: exiting now; rerun to resume\n' : 'interrupted: rerun to resume\n');
      process.exit(exitCodeForSignal(sig));
    }
    received = sig;
    stderr.write(
      `${sig}: stopping after the batch in hand (${sig === 'SIGINT' ? 'press Ctrl-C again' : 'send it again'} to exit at once)\n`,
    );
    controller.abort(sig);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    received: () => received,
    dispose: () => {
      process.removeListener('SIGINT', handler);
      process.removeListener('SIGTERM', handler);
    },
  };
}

export function exitCodeForSignal(sig: NodeJS.Signals): number {
  return sig === 'SIGTERM' ? 143 : 130;
}

/** Write a dry run's plan to FILE (CSV or JSON, from --format or the file's extension). */
export function writePlan(file: string, plan: readonly PlanEntry[], format?: 'csv' | 'json'): void {
  const fmt = format ?? (/\.json$/i.test(file) ? 'json' : 'csv');
  const text =
    fmt === 'json'
      ? JSON.stringify(plan, null, 2) + '\n'
      : toCsv([
          ['target', 'email', 'kind', 'crm_record_ids', 'action', 'message'],
          ...plan.map((p) => [p.target, p.email, p.kind, p.recordIds.join(' '), p.action ?? '', p.message ?? '']),
        ]);
  try {
    writePrivateFile(file, redact(text));
  } catch (err) {
    throw new ExitError(EXIT.config, `--output ${file}: cannot write the plan (${(err as Error).message})`);
  }
}

/** Fail before a run spends API calls when `--output`'s folder cannot take the file. */
function checkOutputFolder(file: string): void {
  const dir = path.dirname(path.resolve(file));
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error(`${dir} is not a folder`);
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (err) {
    throw new ExitError(EXIT.config, `--output ${file}: its folder cannot take the file (${(err as Error).message})`);
  }
}

async function withContext<T>(
  g: GlobalOpts,
  fn: (ctx: Context) => Promise<T>,
  onProgress?: (e: ProgressEvent) => void,
  requireSecrets = true,
): Promise<T> {
  const ctx = await openContext(g, onProgress, requireSecrets);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/** For commands that only read or fix the store (status, audit, quarantine, requeue, unlock): no secret needed. */
function withStoreContext<T>(g: GlobalOpts, fn: (ctx: Context) => Promise<T>): Promise<T> {
  return withContext(g, fn, undefined, false);
}

interface RunOutput {
  output?: string;
  format?: 'csv' | 'json';
  dryRun?: boolean;
}

function printRun(g: GlobalOpts, s: RunSummary, o: RunOutput = {}, received: NodeJS.Signals | null = null): never {
  let planFile: string | undefined;
  if (s.plan && o.output) {
    writePlan(o.output, s.plan, o.format);
    planFile = o.output;
  }
  // an interrupted run exits with the signal's code: the summary says the same
  const interrupted = received || s.interrupted ? exitCodeForSignal(received ?? 'SIGINT') : null;
  const shown = interrupted === null ? s : { ...s, exitCode: interrupted };
  if (g.json)
    out(
      JSON.stringify(planFile ? { ...shown, plan: undefined, planFile, planEntries: s.plan!.length } : shown, null, 2),
    );
  else out(renderSummary(shown, planFile));
  if (interrupted !== null) throw new ExitError(interrupted, 'interrupted: rerun to resume', true);
  throw new ExitError(s.exitCode, '', true);
}

/** A delivery run (sync, backfill): progress bars and signal handling around it. */
async function runCommand(
  g: GlobalOpts,
  o: RunOutput,
  run: (ctx: Context, signal: AbortSignal) => Promise<RunSummary>,
  targets?: readonly string[],
): Promise<void> {
  if (o.output && !o.dryRun)
    throw new ExitError(
      EXIT.config,
      `--output ${o.output}: --output writes a dry run's plan; add --dry-run (a real run's record is \`cc-optout audit\`)`,
    );
  if (o.output && o.format === undefined && !/\.(csv|json)$/i.test(o.output)) {
    throw new ExitError(EXIT.config, `--output ${o.output}: name a .csv or .json file, or pass --format csv|json`);
  }
  if (o.output) checkOutputFolder(o.output);
  const bar = progressBar(g.progress && !g.json);
  const control = interruptible();
  try {
    await withContext(
      g,
      async (ctx) => {
        checkTargets(ctx, targets);
        const s = await run(ctx, control.signal);
        bar.stop();
        printRun(g, s, o, control.received());
      },
      bar.onProgress,
    );
  } finally {
    bar.stop();
    control.dispose();
  }
}

function targetOption(description: string): Option {
  // variadic: `--target a b` and `--target a --target b` both give [a, b]
  return new Option('--target <name...>', `${description} (repeat, or list several)`);
}

function planOptions(cmd: Command): Command {
  return cmd
    .option('--output <file>', 'dry run: write the plan to this file (.csv or .json) instead of the terminal')
    .addOption(
      new Option('--format <format>', 'dry run plan file format (default: from the --output extension)').choices([
        'csv',
        'json',
      ]),
    );
}

/** A stored connector value for people: `key value, key value`, nested objects in parentheses. */
export function readable(v: unknown): string {
  if (v === null || v === undefined) return 'none';
  if (Array.isArray(v)) return v.length ? v.map(readable).join(', ') : 'none';
  if (typeof v === 'object') {
    const parts = Object.entries(v as Record<string, unknown>).map(
      ([k, x]) =>
        `${k
          .replace(/([a-z])([A-Z])/g, '$1 $2')
          .replace(/_/g, ' ')
          .toLowerCase()} ${x !== null && typeof x === 'object' ? `(${readable(x)})` : readable(x)}`,
    );
    return parts.length ? parts.join(', ') : 'none';
  }
  return String(v);
}

function parseMaybeJson(v: string): unknown {
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v;
  }
}

/**
 * A calendar date (2024-06-01, UTC midnight) or an ISO date-time with a zone, as typed: no rolling over
 * (2026-02-30 is an error, not March 2) and not in the future.
 */
export function parseDate(v: string, flag: string, now: Date = new Date()): string {
  const bad = (why: string): never => {
    throw new ExitError(EXIT.config, `${flag}: got "${v}", ${why}`);
  };
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$/.exec(
    v.trim(),
  );
  if (!m) bad('expected a date such as 2024-06-01 or 2024-06-01T00:00:00Z');
  const [, y, mo, d, h, mi, sec, zone] = m!;
  if (h !== undefined && zone === undefined) bad('expected a time zone (Z or +02:00) on the time');
  const day = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (day.getUTCFullYear() !== Number(y) || day.getUTCMonth() !== Number(mo) - 1 || day.getUTCDate() !== Number(d))
    bad('which is not a date in the calendar');
  if (h !== undefined && (Number(h) > 23 || Number(mi) > 59 || Number(sec ?? 0) > 59))
    bad('which is not a time of day');
  const t = Date.parse(h === undefined ? `${y}-${mo}-${d}T00:00:00Z` : v.trim());
  if (Number.isNaN(t)) bad('expected a date such as 2024-06-01 or 2024-06-01T00:00:00Z');
  if (t > now.getTime()) bad('which is in the future');
  return new Date(t).toISOString();
}

function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string })
      .version;
  } catch {
    return 'unknown';
  }
}

/** The command line: global options, then each group of commands (one registration call each). */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('cc-optout')
    .description('Propagate Constant Contact unsubscribes to HubSpot and Salesforce, durably.')
    .option('-c, --config <path>', 'config file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print one JSON summary object on stdout')
    .option(
      '--store <path|url>',
      "the state store: a SQLite file path, or a postgres:// URL (instead of the config's store.path / store.url)",
    )
    .option('--account <id>', 'the account to work on (`cc-optout accounts list`)', DEFAULT_ACCOUNT)
    .addOption(
      new Option('--log-format <format>', 'log format (logs go to stderr)').choices(['text', 'json']).default('text'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('warn'),
    )
    .option('--no-progress', 'no progress bar')
    .version(packageVersion(), '-V, --version', 'print the version')
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError()
    .exitOverride(); // set before subcommands are added so they inherit it: usage errors exit 2, not 1

  const g = (): GlobalOpts => program.opts<GlobalOpts>();

  registerInit(program, g);
  registerCheck(program, g);
  registerRuns(program, g);
  registerStatus(program, g);
  registerAudit(program, g);
  registerStoreFixes(program, g);
  registerConnectorCommands(program, g);

  // commands that live in their own module (auth, emulate, demo; runs; run)
  registerCommands(program, g, { out, ExitError, progressBar, interruptible });
  registerRunsCommand(program, g, withStoreContext, out);
  registerServiceCommands(program, g, { out, ExitError, progressBar, interruptible });
  registerAccountCommands(program, g, { out, ExitError, progressBar, interruptible });
  return program;
}

/** `init`: write the example config (each connector gives its own example target). */
function registerInit(program: Command, g: () => GlobalOpts): void {
  program
    .command('init')
    .description('write a commented example config')
    .option('--force', 'overwrite an existing file')
    .action((o: { force?: boolean }) => {
      const file = g().config;
      checkConfigOption(file);
      if (fs.existsSync(file) && !o.force)
        throw new ExitError(EXIT.config, `${file} exists; pass --force to overwrite`);
      fs.writeFileSync(file, JSON.stringify(exampleConfig(createRegistry()), null, 2) + '\n', { mode: 0o600 });
      if (g().json) out(JSON.stringify({ wrote: file }));
      else
        out(
          `wrote ${file}\nnext: set the environment variables it references, run \`cc-optout auth constant-contact\`, then \`cc-optout check\``,
        );
    });
}

/** `check`: config, credentials, connectivity, every target (nothing written). */
function registerCheck(program: Command, g: () => GlobalOpts): void {
  program
    .command('check')
    .description('check config, credentials, connectivity and each target (nothing is written)')
    .action(async () =>
      withContext(g(), async (ctx) => {
        const r = await ctx.engine.check();
        if (g().json) out(JSON.stringify(r, null, 2));
        else {
          out(`config ${ctx.config.file}${ctx.account === DEFAULT_ACCOUNT ? '' : `, account ${ctx.account}`}: ok`);
          for (const i of r.source.items) out(`${i.ok ? 'ok  ' : 'FAIL'} constant-contact ${i.name}: ${i.detail}`);
          for (const [name, rep] of Object.entries(r.targets))
            for (const i of rep.items) out(`${i.ok ? 'ok  ' : 'FAIL'} ${name} ${i.name}: ${i.detail}`);
        }
        throw new ExitError(r.ok ? EXIT.ok : EXIT.fatal, '');
      }),
    );
}

/** `sync` and `backfill`: the delivery runs. */
function registerRuns(program: Command, g: () => GlobalOpts): void {
  const sync = program
    .command('sync')
    .description("detect new opt-outs, then deliver every target's outbox")
    .option('--full', 'reconcile the whole unsubscribed set now')
    .option('--dry-run', 'write nothing to any CRM; print the plan')
    .addOption(targetOption('deliver only to this target'));
  planOptions(sync).action(async (o: { full?: boolean; dryRun?: boolean; target?: string[] } & RunOutput) =>
    runCommand(
      g(),
      o,
      (ctx, signal) => ctx.engine.sync({ full: o.full, dryRun: o.dryRun, targets: o.target, signal }),
      o.target,
    ),
  );

  const backfill = program
    .command('backfill')
    .description('deliver every current opt-out (resumable: a rerun continues without repeating delivered work)')
    .option('--since <date>', 'only opt-outs on or after this date (reads only those from Constant Contact)')
    .addOption(targetOption('only this target'))
    .option('--dry-run', 'write nothing to any CRM; print the plan')
    .option('--redeliver', 'queue again emails already delivered to the target (after a CRM import)');
  planOptions(backfill).action(
    async (o: { since?: string; target?: string[]; dryRun?: boolean; redeliver?: boolean } & RunOutput) => {
      const since = o.since ? parseDate(o.since, '--since') : null;
      await runCommand(
        g(),
        o,
        (ctx, signal) =>
          ctx.engine.backfill({ since, targets: o.target, dryRun: o.dryRun, redeliver: o.redeliver, signal }),
        o.target,
      );
    },
  );
}

/** `status`: the outbox, checkpoints, last runs, API usage. */
function registerStatus(program: Command, g: () => GlobalOpts): void {
  program
    .command('status')
    .description('outbox per target, checkpoints, last runs, resubscribes, quarantine, API usage')
    .action(async () =>
      withStoreContext(g(), async (ctx) => {
        const now = new Date();
        const targets = await ctx.store.targetStatus(
          ctx.config.targets.map((t) => t.name),
          now,
        );
        const usage: Record<string, unknown> = {};
        for (const t of ctx.config.targets) {
          // what each connector asks `status` to show (manifest capabilities.statusKeys): API usage, decisions
          const kv = await ctx.store.kv(`target:${t.name}`);
          for (const key of ctx.registry.entry(t.connector)?.capabilities.statusKeys ?? []) {
            const v = kv.get(key);
            if (v !== null) usage[`${t.name} ${key}`] = parseMaybeJson(v);
          }
        }
        const ccDaily = (await ctx.store.kv(SOURCE_KV)).get('daily_usage');
        const status = {
          account: await accountStatus(ctx),
          optOuts: await ctx.store.countOptOuts(),
          checkpoints: {
            windowBefore: await ctx.store.getCheckpoint(CHECKPOINT_WINDOW),
            lastFullReconcile: await ctx.store.getCheckpoint(CHECKPOINT_LAST_FULL),
          },
          constantContactDailyUsage: ccDaily ? (JSON.parse(ccDaily) as unknown) : null,
          targets,
          apiUsage: usage,
          resubscribed: (await ctx.store.events(null, ['left-unsubscribed-set'])).map((e) => ({
            email: e.email,
            at: e.at,
          })),
          quarantined: await ctx.store.countQuarantined(),
          lastRuns: (await ctx.store.recentRuns(5)).map((r) => ({
            id: r.id,
            kind: r.kind,
            dryRun: r.dryRun,
            startedAt: r.startedAt,
            finishedAt: r.finishedAt,
            exitCode: r.exitCode,
            status: r.status,
          })),
        };
        if (g().json) {
          out(JSON.stringify(status, null, 2));
        } else {
          for (const l of accountStatusLines(status.account)) out(l);
          out(`opt-outs known: ${status.optOuts.active} active, ${status.optOuts.left} left the unsubscribed set`);
          out(
            `window checkpoint: ${status.checkpoints.windowBefore ?? 'none (next sync reconciles fully)'}; last full reconcile: ${status.checkpoints.lastFullReconcile ?? 'never'}`,
          );
          if (status.constantContactDailyUsage)
            out(`Constant Contact requests today (per application): ${readable(status.constantContactDailyUsage)}`);
          for (const t of targets) {
            out(
              `target ${t.target}: queued ${t.queued} (due ${t.due}), parked ${t.parked}, delivered: ${fmtCounts(t.done)}` +
                `${t.oldestQueuedOptOutAt ? `; oldest queued opt-out ${t.oldestQueuedOptOutAt}` : ''}${t.lastDeliveredAt ? `; last delivery ${t.lastDeliveredAt}` : ''}`,
            );
          }
          for (const [k, v] of Object.entries(usage)) out(`${k}: ${readable(v)}`);
          out(
            `left the unsubscribed set (resubscribed or deleted in Constant Contact; never propagated): ${status.resubscribed.length}`,
          );
          for (const r of status.resubscribed.slice(-10)) out(`  ${r.email} at ${r.at}`);
          out(`quarantined records: ${status.quarantined}`);
          for (const r of status.lastRuns)
            out(
              `run #${r.id} ${r.kind}${r.dryRun ? ' (dry)' : ''} ${r.startedAt} ${r.status}${r.exitCode !== null ? ` exit ${r.exitCode}` : ''}`,
            );
        }
        const pending = targets.some((t) => t.queued > 0 || t.parked > 0);
        throw new ExitError(pending ? EXIT.incomplete : EXIT.ok, '');
      }),
    );
}

/** `audit`: per record and target, or every delivery (--history). */
function registerAudit(program: Command, g: () => GlobalOpts): void {
  program
    .command('audit')
    .description(
      'per record and target: opted out at, first written at, lag, CRM record ids, outcome (--history: every delivery)',
    )
    .addOption(
      new Option(
        '--format <format>',
        'output format (default: json with --json or an --output ending in .json, else csv)',
      ).choices(['csv', 'json']),
    )
    .option(
      '--since <date>',
      'rows whose opt-out or CRM write happened on or after this date (--history: deliveries since)',
    )
    .option(
      '--history',
      'every delivery event (append-only): time, run, target, email, attempt, origin, outcome, record ids, message',
    )
    .option('--output <file>', 'write to a file (created 0600) instead of stdout')
    .addOption(
      intOption(
        '--run <n>',
        'only the evidence of run N (`cc-optout runs` lists them): its deliveries, and the records it detected',
        1,
        Number.MAX_SAFE_INTEGER,
      ),
    )
    .action(async (o: { format?: 'csv' | 'json'; since?: string; history?: boolean; output?: string; run?: number }) =>
      withStoreContext(g(), async (ctx) => {
        const since = o.since ? parseDate(o.since, '--since') : null;
        const format = o.format ?? (g().json || (o.output && /\.json$/i.test(o.output)) ? 'json' : 'csv');
        if (o.run !== undefined && !(await ctx.store.getRun(o.run)))
          throw new ExitError(EXIT.config, `--run ${o.run}: no such run in this store (\`cc-optout runs\` lists them)`);
        const { text, count } = await auditExport(ctx.store, {
          format,
          since,
          history: o.history,
          runId: o.run ?? null,
        });
        if (o.output) {
          try {
            writePrivateFile(o.output, text);
          } catch (err) {
            throw new ExitError(EXIT.config, `--output ${o.output}: cannot write the file (${(err as Error).message})`);
          }
          if (g().json) out(JSON.stringify({ file: o.output, format, [o.history ? 'deliveryEvents' : 'rows']: count }));
          else out(`wrote ${count} ${o.history ? 'delivery events' : 'rows'} to ${o.output}`);
        } else out(text);
      }),
    );
}

/** `requeue`, `unlock`, `quarantine`: read or fix the store. */
function registerStoreFixes(program: Command, g: () => GlobalOpts): void {
  program
    .command('requeue')
    .description('queue parked (failed-permanent) records again, e.g. after fixing a mapping')
    .addOption(targetOption('only this target'))
    .action(async (o: { target?: string[] }) =>
      withStoreContext(g(), async (ctx) => {
        checkTargets(ctx, o.target);
        const now = new Date().toISOString();
        let n = 0;
        if (o.target?.length) for (const t of o.target) n += await ctx.store.requeueParked(t, now);
        else n = await ctx.store.requeueParked(null, now);
        if (g().json) out(JSON.stringify({ requeued: n, targets: o.target ?? ctx.config.targets.map((t) => t.name) }));
        else out(`re-queued ${n} parked records; the next sync delivers them`);
      }),
    );

  program
    .command('unlock')
    .description(
      'remove the run lock now (runs take over a lock whose lease was not renewed for 90 s, or whose holder is dead on this host)',
    )
    .option('--force', 'remove it even when its holder is a live process on this host')
    .action(async (o: { force?: boolean }) =>
      withStoreContext(g(), async (ctx) => {
        // a holder alive on this host is certainly running: removing its lock would let two runs race the token
        const current = await ctx.store.runLock();
        if (current && !o.force && current.host === os.hostname() && pidAlive(current.pid)) {
          throw new ExitError(
            EXIT.incomplete,
            `the run lock is held by a live process: cc-optout ${current.command} (pid ${current.pid} on this host, since ${current.acquiredAt}); ` +
              `not removed. Stop that run first (it releases the lock), or pass --force if you are sure.`,
          );
        }
        const held = await ctx.store.releaseRunLock(null);
        if (g().json) out(JSON.stringify({ removed: held !== null, lock: held }, null, 2));
        else if (held) {
          out(
            `run lock removed: it was held by cc-optout ${held.command} (pid ${held.pid} on ${held.host}) since ${held.acquiredAt}, lease renewed ${held.renewedAt}`,
          );
        } else out('no run lock was held');
      }),
    );

  program
    .command('quarantine')
    .description('list malformed Constant Contact records kept aside, with their reasons')
    .addOption(intOption('--limit <n>', 'how many', 1, 100_000, 50))
    .action(async (o: { limit: number }) =>
      withStoreContext(g(), async (ctx) => {
        const rows = await ctx.store.quarantined(o.limit);
        if (g().json) out(JSON.stringify(rows, null, 2));
        else
          for (const r of rows)
            out(`#${r.id} ${r.at} ${r.source} ${r.recordId ?? '(no id)'}: ${r.reason}\n  ${JSON.stringify(r.raw)}`);
        if (rows.length === 0 && !g().json) out('no quarantined records');
      }),
    );
}

export type { CommandHelpers };
export { ExitError };

export async function main(argv: string[]): Promise<number> {
  const stderrWrite = process.stderr.write.bind(process.stderr);
  let lastError = '';
  const code = await runMain(argv, (text) => {
    lastError = text.trim();
    return stderrWrite(text);
  });
  // --json promises one object on stdout: a command that failed before printing its result says why there too
  if (code !== EXIT.ok && argv.includes('--json') && lastError)
    out(JSON.stringify({ error: lastError, exitCode: code }));
  return code;
}

async function runMain(argv: string[], writeError: (text: string) => boolean): Promise<number> {
  const program = buildProgram();
  const stderr = { write: writeError };
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof ExitError && err.summaryPrinted) {
      if (err.message) stderrWriteDirect(err.message);
      return err.code;
    }
    if (err instanceof ExitError) {
      if (err.message) stderr.write(redact(err.message) + '\n');
      return err.code;
    }
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
        return EXIT.ok;
      return EXIT.config;
    }
    if (err instanceof UnknownTarget) {
      stderr.write(redact(err.message) + '\n');
      return EXIT.config;
    }
    if (err instanceof ConfigError) {
      stderr.write(redact(err.message) + '\n');
      return EXIT.config;
    }
    if (err instanceof RunLocked) {
      // not a failure of this run: another one is doing the work; records may still be queued
      stderr.write(redact(`not started: ${err.message}`) + '\n');
      return EXIT.incomplete;
    }
    if (err instanceof ReauthorizationRequired) {
      stderr.write(redact(`error: ${err.message}`) + '\n');
      return EXIT.fatal;
    }
    stderr.write(redact(`error: ${(err as Error).message ?? String(err)}`) + '\n');
    if (process.env.CC_OPTOUT_DEBUG) stderr.write(redact((err as Error).stack ?? '') + '\n');
    return EXIT.fatal;
  }
}

function stderrWriteDirect(message: string): void {
  process.stderr.write(redact(message) + '\n');
}

/** `cc-optout status | head -1`: the reader went away; stop quietly (no EPIPE stack). */
export function exitQuietlyOnEpipe(
  stream: NodeJS.WritableStream,
  exit: (code: number) => void = (c) => process.exit(c),
): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') exit(EXIT.ok);
    else throw err;
  });
}

if (require.main === module) {
  exitQuietlyOnEpipe(process.stdout);
  exitQuietlyOnEpipe(process.stderr);
  // exit explicitly once stdout is flushed: SDK keep-alive sockets must not hold the process open
  main(process.argv).then(
    (code) => process.stdout.write('', () => process.exit(code)),
    (err: Error) => {
      process.stderr.write(redact(`fatal: ${err.message}`) + '\n');
      process.exit(EXIT.fatal);
    },
  );
}
