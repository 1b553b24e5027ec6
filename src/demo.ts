/**
 * The built-in demo (`npm start` = `cc-optout demo`) and the config that points the connector at the local
 * emulators (also used by `cc-optout emulate` and the end-to-end tests).
 *
 * Demo: start the Constant Contact emulator and the emulator of every loaded connector (built-in and
 * `--plugin` ones: `connector.emulator()`) with ~20,000 generated contacts, write a config pointing at them, run
 * `backfill` (progress bar), create new opt-outs in Constant Contact (one of them the `updated_after` trap),
 * run `sync`, and print a report: opt-outs found, outcomes per CRM, API calls against the minimum, lag, and
 * the CRMs checked against the emulators' ground truth. No account, no network beyond 127.0.0.1.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Emulators, minimumCalls } from './emulators';
import { startConnectorEmulators } from './emulate';
import { Registry, createRegistry } from './registry';
import { ProgressEvent, RunSummary } from './engine';
import { App, openApp } from './app';
import { createLogger, LogLevel } from './log';

export interface EmulatorConfigOptions {
  /** Folder for the config file, the Salesforce key file and the state store. */
  dir: string;
  /** Which targets to include (default both). */
  targets?: ('hubspot' | 'salesforce')[];
  /** Detection tuning (the demo uses lagMinutes 0 so opt-outs made a second ago are visible at once). */
  detection?: Record<string, unknown>;
  delivery?: Record<string, unknown>;
  hubspot?: Record<string, unknown>;
  salesforce?: Record<string, unknown>;
}

export interface EmulatorConfig {
  file: string;
  /** Environment variables the config references (secrets are never written into the file). */
  env: Record<string, string>;
  config: Record<string, unknown>;
}

/** Write `<dir>/cc-optout.config.json` for the running emulators; secrets go to `env`, the key to a 0600 file. */
export function writeEmulatorConfig(e: Emulators, opts: EmulatorConfigOptions): EmulatorConfig {
  fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  const keyFile = path.join(opts.dir, 'salesforce-jwt.key');
  fs.writeFileSync(keyFile, e.salesforce.privateKeyPem, { mode: 0o600 });
  const env: Record<string, string> = {
    CC_CLIENT_ID: e.cc.clientId,
    CC_CLIENT_SECRET: e.cc.clientSecret,
    CC_REFRESH_TOKEN: e.cc.refreshToken,
    HUBSPOT_TOKEN: e.hubspot.accessToken,
    HUBSPOT_SERVICE_KEY: e.hubspot.serviceKey,
    SF_CLIENT_ID: e.salesforce.clientId,
    SF_USERNAME: e.salesforce.username,
  };
  const targets = opts.targets ?? ['hubspot', 'salesforce'];
  const config: Record<string, unknown> = {
    '//': 'Points at local emulators (cc-optout emulate / demo). Secrets come from the environment.',
    store: { path: './state.db' },
    source: {
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      refreshToken: '${CC_REFRESH_TOKEN}',
      apiBaseUrl: e.cc.apiBaseUrl,
      authBaseUrl: e.cc.authBaseUrl,
      detection: { overlapMinutes: 10, lagMinutes: 0, ...(opts.detection ?? {}) },
    },
    delivery: { maxAttempts: 12, backoffBaseSeconds: 1, backoffMaxSeconds: 60, ...(opts.delivery ?? {}) },
    targets: [
      ...(targets.includes('hubspot')
        ? [
            {
              name: 'hubspot',
              connector: 'hubspot',
              config: {
                baseUrl: e.hubspot.baseUrl,
                auth: { type: 'service-key', serviceKey: '${HUBSPOT_SERVICE_KEY}' },
                suppression: { type: 'unsubscribe-all', batch: 'auto' },
                onlyExistingContacts: true,
                ...(opts.hubspot ?? {}),
              },
            },
          ]
        : []),
      ...(targets.includes('salesforce')
        ? [
            {
              name: 'salesforce',
              connector: 'salesforce',
              config: {
                loginUrl: e.salesforce.loginUrl,
                apiVersion: e.salesforce.apiVersion,
                auth: {
                  type: 'jwt',
                  clientId: '${SF_CLIENT_ID}',
                  username: '${SF_USERNAME}',
                  privateKeyPath: `./${path.basename(keyFile)}`,
                }, // relative to the config file, which is in the same folder
                objects: { Contact: { enabled: true }, Lead: { enabled: true } },
                ...(opts.salesforce ?? {}),
              },
            },
          ]
        : []),
    ],
  };
  const file = path.join(opts.dir, 'cc-optout.config.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  return { file, env, config };
}

export interface DemoOptions {
  contacts: number;
  seed: number;
  newOptOuts: number;
  dir: string;
  /** The connectors whose emulators the demo starts (default: the built-in ones). */
  registry?: Registry;
  /** Plugins loaded into `registry` (written to the config's `plugins`). */
  plugins?: readonly string[];
  progress?: (e: ProgressEvent) => void;
  print: (line: string) => void;
  logLevel?: LogLevel;
}

function openEngine(
  file: string,
  env: Record<string, string>,
  level: LogLevel,
  onProgress?: (e: ProgressEvent) => void,
): App {
  return openApp({
    configFile: file,
    env: { ...process.env, ...env },
    logger: createLogger({ format: 'text', level }),
    onProgress,
  });
}

function pct(n: number, d: number): string {
  return d === 0 ? '-' : `${((100 * n) / d).toFixed(0)}%`;
}

export interface DemoResult {
  backfill: RunSummary;
  sync: RunSummary;
  ok: boolean;
  seconds: number;
}

const NAMES: Record<string, string> = { hubspot: 'HubSpot', salesforce: 'Salesforce', dynamics: 'Dynamics 365' };
const nameOf = (id: string): string => NAMES[id] ?? id;

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  fs.rmSync(o.dir, { recursive: true, force: true });
  const registry = o.registry ?? createRegistry();
  const withEmulator = registry.ids().filter((id) => typeof registry.get(id)?.emulator === 'function');
  o.print(
    `Starting emulators of Constant Contact, ${withEmulator.map(nameOf).join(', ')} with ${o.contacts} contacts (seed ${o.seed}) ...`,
  );
  const emu = await startConnectorEmulators(registry, {
    contacts: o.contacts,
    seed: o.seed,
    dir: o.dir,
    port: 0,
    plugins: o.plugins,
  });
  try {
    const { file, env, world } = emu;
    const ids = emu.running.map((r) => r.id);
    const truth0 = world.truth();
    o.print(
      `  Constant Contact ${emu.cc.apiBaseUrl}, ${emu.targets.map((t) => `${nameOf(t.id)} ${t.url}`).join(', ')}`,
    );
    o.print(
      `  ${truth0.optedOutEmails.length} contacts have opted out so far; config written to ${path.relative(process.cwd(), file)}`,
    );
    o.print('');
    o.print(`1) backfill: every past opt-out, into ${ids.length === 2 ? 'both CRMs' : `all ${ids.length} CRMs`}`);
    const a = openEngine(file, env, o.logLevel ?? 'error', o.progress);
    const backfill = await a.engine.backfill();
    const minBackfill = minimumCalls(truth0, { hubspotBatchAllowed: true });
    o.print(
      `   found ${backfill.detection.optOutsSeen} opted-out contacts in ${backfill.detection.pages} pages; exit ${backfill.exitCode}`,
    );

    o.print('');
    o.print(
      `2) ${o.newOptOuts} people opt out now; their personal details (top-level updated_at) do not change, so an updated_after sync would miss every one`,
    );
    const added = world.addOptOuts(o.newOptOuts);
    await new Promise((r) => setTimeout(r, 1100)); // their opt-out timestamps are whole seconds: let "now" pass them
    const sync = await a.engine.sync();
    const truth1 = world.truth();
    const verify = world.verify();
    const checks = emu.running.map(({ id, emu: e }) => ({ id, v: e.verify?.() ?? null }));
    const audit = await a.store.audit(null);
    const addedEmails = new Set(added.map((x) => x.email.trim().toLowerCase()));
    const lags = audit.filter((r) => addedEmails.has(r.email) && r.writtenAt).map((r) => r.lagSeconds ?? 0);
    await a.close();

    const seconds = (Date.now() - t0) / 1000;
    const line = (s = '') => o.print(s);
    line('');
    line('==================================== report ====================================');
    line(
      `opt-outs in Constant Contact: ${truth1.optedOutEmails.length} (ground truth); found by backfill ${backfill.detection.newOptOuts}, by sync ${sync.detection.newOptOuts}`,
    );
    line(
      `  hard cases caught: ${truth1.hardCases.updatedAfterTrap.length} updated_after-trap contacts, ${truth1.hardCases.unsubscribedThenDeleted.length} unsubscribed-then-deleted;`,
    );
    line(
      `  ignored as they should be: ${truth1.hardCases.deletedNotUnsubscribed.length} deleted-not-unsubscribed, ${truth1.hardCases.smsOnly.length} SMS-only (skipped ${backfill.detection.skippedNoEmail})`,
    );
    for (const [name, s] of [
      ['backfill', backfill],
      ['sync', sync],
    ] as const) {
      for (const [t, ts] of Object.entries(s.targets)) {
        const c = ts.outcomes;
        line(
          `${name.padEnd(8)} ${t.padEnd(10)} applied ${c.applied ?? 0}, already-suppressed ${c['already-suppressed'] ?? 0}, not-found ${c['not-found'] ?? 0}, ` +
            `failed ${(c['failed-retryable'] ?? 0) + (c['failed-permanent'] ?? 0)}; queued ${ts.queued}, parked ${ts.parked}`,
        );
      }
    }
    const hasHs = ids.includes('hubspot');
    if (hasHs) {
      const hsRows = audit.filter((r) => r.target === 'hubspot' && r.closedAt);
      const secondary = hsRows.filter((r) => r.message === 'matched by additional-email').length;
      line(
        `HubSpot matches: ${hsRows.filter((r) => r.message === 'matched by primary').length} by primary address, ${secondary} by secondary address (hs_additional_emails)`,
      );
    }
    const calls = (s: RunSummary, v: string) => s.apiCalls[v] ?? 0;
    const minimum: Record<string, string> = {
      hubspot: ` / ${minBackfill.hubspot}`,
      salesforce: ` / ${minBackfill.salesforce} (+ token)`,
    };
    line('API calls (backfill): used / theoretical minimum');
    line(
      `  Constant Contact ${calls(backfill, 'constant-contact')} / ${minBackfill.cc} (the full reconcile also reads deleted contacts; + ${calls(backfill, 'constant-contact-auth')} token)`,
    );
    for (const id of ids) line(`  ${nameOf(id).padEnd(16)} ${calls(backfill, id)}${minimum[id] ?? ''}`);
    line(
      `API calls (sync of ${o.newOptOuts} new opt-outs): Constant Contact ${calls(sync, 'constant-contact')}, ` +
        ids.map((id) => `${nameOf(id)} ${calls(sync, id)}`).join(', '),
    );
    if (lags.length > 0) {
      const sorted = [...lags].sort((x, y) => x - y);
      line(
        `lag from opt-out to CRM write (sync): median ${sorted[Math.floor(sorted.length / 2)]} s, max ${sorted[sorted.length - 1]} s over ${lags.length} writes`,
      );
    }
    const detail = (id: string, v: { ok: boolean; expected: number; notSuppressed: readonly string[] }): string => {
      const base = `${v.expected - v.notSuppressed.length}/${v.expected}`;
      if (id === 'hubspot')
        return (
          `${base} primary-address contacts suppressed, ` +
          `${verify.hubspot.secondary.expected - verify.hubspot.secondary.notUnsubscribed.length}/${verify.hubspot.secondary.expected} secondary addresses unsubscribed, ` +
          `${verify.hubspot.unexpectedlyChanged.length} wrongly changed, ${verify.hubspot.repeatedWrites.length} repeated writes`
        );
      if (id === 'salesforce')
        return `${base}, ${verify.salesforce.unexpectedlyChanged.length} wrongly changed, ${verify.salesforce.repeatedWrites.length} repeated writes`;
      return `${base} suppressed`;
    };
    line(
      `check against ground truth: ` +
        checks
          .map(({ id, v }) =>
            v ? `${nameOf(id)} ${v.ok ? 'OK' : 'FAILED'} (${detail(id, v)})` : `${nameOf(id)} not checked`,
          )
          .join('; '),
    );
    const sec = verify.hubspot.secondary;
    if (hasHs)
      line(
        `HubSpot secondary-address opt-outs: ${sec.expected} required (opted-out addresses a contact holds only in hs_additional_emails), ` +
          `${sec.expected - sec.notUnsubscribed.length} unsubscribed, ${sec.notUnsubscribed.length} missed` +
          (sec.notUnsubscribed.length
            ? ` [${sec.notUnsubscribed.slice(0, 5).join(', ')}${sec.notUnsubscribed.length > 5 ? ', ...' : ''}]`
            : '') +
          `; ${truth1.hubspot.secondaryAlreadyUnsubscribed.length} already unsubscribed`,
      );
    const shares = checks.map(({ id, v }) => {
      if (!v) return `${nameOf(id)} -`;
      if (id === 'hubspot') {
        const done = v.expected - v.notSuppressed.length + sec.expected - sec.notUnsubscribed.length;
        return `HubSpot ${pct(done, v.expected + sec.expected)} (primary and secondary addresses)`;
      }
      return `${nameOf(id)} ${pct(v.expected - v.notSuppressed.length, v.expected)}`;
    });
    line(`suppressed: ${shares.join(', ')}; demo took ${seconds.toFixed(1)} s`);
    line(
      `state, config and audit trail are in ${path.relative(process.cwd(), o.dir) || '.'}; try: node dist/src/cli.js --config ${path.relative(process.cwd(), file)} status`,
    );
    line('(the config needs the emulators running: `cc-optout emulate` starts them on their own)');
    const allOk = checks.every(({ v }) => v === null || v.ok);
    return { backfill, sync, ok: allOk && backfill.exitCode === 0 && sync.exitCode === 0, seconds };
  } finally {
    await emu.stop();
  }
}
