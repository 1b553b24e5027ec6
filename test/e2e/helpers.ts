/**
 * Shared helpers for the end-to-end tests: emulators + a config for them, the engine in-process (as
 * src/demo.ts runs it) or the compiled CLI as a child process, request taps on the emulators, polling
 * with deadlines, and expectations derived from the emulators' ground truth.
 *
 * Everything runs on 127.0.0.1 (test/setup.ts disables every other host) through the product's real
 * clients: axios for Constant Contact, @hubspot/api-client for HubSpot, jsforce for Salesforce.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { EmulatorOptions, Emulators, GroundTruth, startEmulators } from '../../src/emulators';
import type { EmuRequest, EmuResponse, Route } from '../../src/emulators/http';
import { EmulatorConfig, EmulatorConfigOptions, writeEmulatorConfig } from '../../src/demo';
import { Engine, RunSummary } from '../../src/engine';
import { Config } from '../../src/config';
import { packageRoot } from '../../src/plugin';
import { StateStore } from '../../src/store/types';
import { memoryLogger } from '../../src/log';
import { openApp } from '../../src/app';

export const CLI = path.join(packageRoot(), 'dist', 'src', 'cli.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `pred` every `intervalMs` until it returns a truthy value or `timeoutMs` passes (then throw, naming `what`). */
export async function waitFor<T>(
  pred: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what: string },
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${opts.timeoutMs ?? 30_000} ms waiting for ${opts.what}`);
    await sleep(opts.intervalMs ?? 50);
  }
}

// ------------------------------------------------------------------------------------- request taps

export interface TokenCall {
  grant: string | null;
  /** The refresh token the client presented (refresh_token grant). */
  refreshToken: string | null;
  status: number;
  /** OAuth error code of a failed call (invalid_grant, ...). */
  error: string | null;
  /** Refresh token issued in the response (rotation). */
  issuedRefreshToken: string | null;
}

/** What the tests see of the emulators' traffic beyond the per-endpoint counts. */
export interface Taps {
  /** Query strings of every GET /v3/contacts that reached the handler (after auth and rate limits). */
  ccContactQueries: URLSearchParams[];
  /** Constant Contact token endpoint calls. */
  ccTokenCalls: TokenCall[];
  /** Every token (access and refresh) any emulator issued: none may ever be printed. */
  issuedSecrets: Set<string>;
}

function findRoute(routes: readonly Route[], name: string): Route {
  const r = routes.find((x) => x.name === name);
  if (!r) throw new Error(`emulator route "${name}" not found (have: ${routes.map((x) => x.name).join(', ')})`);
  return r;
}

function wrap(
  route: Route,
  after: (req: EmuRequest, res: EmuResponse) => void,
  before?: (req: EmuRequest) => void,
): void {
  const inner = route.handler;
  route.handler = async (req) => {
    before?.(req);
    const res = await inner(req);
    after(req, res);
    return res;
  };
}

function tap(emu: Emulators): Taps {
  const taps: Taps = { ccContactQueries: [], ccTokenCalls: [], issuedSecrets: new Set() };
  const noteTokens = (res: EmuResponse): void => {
    const b = res.body as Record<string, unknown> | undefined;
    if (b && typeof b === 'object') {
      for (const k of ['access_token', 'refresh_token', 'id_token'])
        if (typeof b[k] === 'string') taps.issuedSecrets.add(b[k] as string);
    }
  };
  // credentials the clients send to the token endpoints (JWT assertions, client secrets) are secrets too
  const noteForm = (req: EmuRequest): void => {
    const form = new URLSearchParams(req.body.toString('utf8'));
    for (const k of ['assertion', 'client_secret', 'refresh_token', 'code_verifier']) {
      const v = form.get(k);
      if (v) taps.issuedSecrets.add(v);
    }
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && /^Basic /i.test(auth)) taps.issuedSecrets.add(auth.slice(6).trim());
  };
  wrap(
    findRoute(emu.servers.cc.router.routes, 'GET /v3/contacts'),
    () => undefined,
    (req) => taps.ccContactQueries.push(new URLSearchParams(req.query)),
  );
  wrap(findRoute(emu.servers.cc.router.routes, 'POST /oauth2/default/v1/token'), (req, res) => {
    const form = new URLSearchParams(req.body.toString('utf8'));
    const b = (res.body ?? {}) as Record<string, unknown>;
    taps.ccTokenCalls.push({
      grant: form.get('grant_type'),
      refreshToken: form.get('refresh_token'),
      status: res.status,
      error: typeof b.error === 'string' ? b.error : null,
      issuedRefreshToken: typeof b.refresh_token === 'string' ? b.refresh_token : null,
    });
    noteForm(req);
    noteTokens(res);
  });
  wrap(findRoute(emu.servers.salesforce.router.routes, 'POST /services/oauth2/token'), (req, res) => {
    noteForm(req);
    noteTokens(res);
  });
  for (const name of [
    'POST /oauth/v1/token',
    'POST /oauth/2026-09/token',
    'POST /oauth/2026-03/token',
    'POST /oauth/2026-09/token/introspect',
    'POST /oauth/2026-03/token/introspect',
  ]) {
    wrap(findRoute(emu.servers.hubspot.router.routes, name), (req, res) => {
      noteForm(req);
      noteTokens(res);
    });
  }
  return taps;
}

// ------------------------------------------------------------------------------------------ harness

export interface HarnessOptions extends Omit<EmulatorConfigOptions, 'dir'> {
  contacts: number;
  seed: number;
  emulator?: Omit<EmulatorOptions, 'contacts' | 'seed'>;
  /** Authenticate to HubSpot as a public OAuth app (its access tokens expire) instead of a private app. */
  hubspotOAuth?: boolean;
}

export interface Harness {
  emu: Emulators;
  dir: string;
  cfg: EmulatorConfig;
  /** Environment the config needs (writeEmulatorConfig's env plus any extras). */
  env: Record<string, string>;
  taps: Taps;
  storePath: string;
  stop(): Promise<void>;
}

let dirCounter = 0;

/** Start the emulators with a small seeded dataset and write a config (secrets in `env`) into a fresh temp dir. */
export async function startHarness(o: HarnessOptions): Promise<Harness> {
  const emu = await startEmulators({ ...(o.emulator ?? {}), contacts: o.contacts, seed: o.seed });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cc-e2e-${process.pid}-${dirCounter++}-`));
  const extraEnv: Record<string, string> = {};
  let hubspot = o.hubspot;
  if (o.hubspotOAuth) {
    extraEnv.HUBSPOT_CLIENT_ID = emu.hubspot.clientId;
    extraEnv.HUBSPOT_CLIENT_SECRET = emu.hubspot.clientSecret;
    extraEnv.HUBSPOT_REFRESH_TOKEN = emu.hubspot.refreshToken;
    hubspot = {
      auth: {
        type: 'oauth',
        clientId: '${HUBSPOT_CLIENT_ID}',
        clientSecret: '${HUBSPOT_CLIENT_SECRET}',
        refreshToken: '${HUBSPOT_REFRESH_TOKEN}',
      },
      ...(o.hubspot ?? {}),
    };
  }
  const cfg = writeEmulatorConfig(emu, {
    dir,
    targets: o.targets,
    detection: o.detection,
    delivery: o.delivery,
    hubspot,
    salesforce: o.salesforce,
  });
  const taps = tap(emu);
  return {
    emu,
    dir,
    cfg,
    env: { ...cfg.env, ...extraEnv },
    taps,
    storePath: path.join(dir, 'state.db'),
    stop: async () => {
      await emu.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------ in-process run

export interface InProcess {
  engine: Engine;
  store: StateStore;
  config: Config;
  logLines: string[];
  close(): Promise<void>;
}

/** The engine wired exactly as src/demo.ts and the CLI wire it (real source, real connectors, system clock). */
export function openEngine(h: Harness): InProcess {
  const logger = memoryLogger('info');
  const app = openApp({ configFile: h.cfg.file, env: { ...process.env, ...h.env }, logger });
  return { engine: app.engine, store: app.store, config: app.config, logLines: logger.lines, close: app.close };
}

/** One engine call with a fresh engine + store (like one CLI invocation), closed afterwards. */
export async function runOnce<T>(h: Harness, fn: (p: InProcess) => Promise<T>): Promise<T> {
  const p = openEngine(h);
  try {
    return await fn(p);
  } finally {
    await p.close();
  }
}

// ------------------------------------------------------------------------------------------ the CLI

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliChild {
  child: ChildProcess;
  /** Resolves when the process has exited (whatever the code). */
  done: Promise<CliResult>;
  stdout(): string;
  stderr(): string;
}

/**
 * Start `node dist/src/cli.js --config <file> ...args` with only the config's environment (asynchronously:
 * the emulators live in this process's event loop, so a synchronous spawn would deadlock).
 */
export function spawnCli(
  h: Harness,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): CliChild {
  const child = spawn(process.execPath, [CLI, '--config', h.cfg.file, ...args], {
    cwd: h.dir,
    env: { PATH: process.env.PATH ?? '', HOME: h.dir, ...h.env, ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `cli ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${out.slice(-2000)}\nstderr: ${err.slice(-2000)}`,
        ),
      );
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return { child, done, stdout: () => out, stderr: () => err };
}

export function runCli(
  h: Harness,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  return spawnCli(h, args, opts).done;
}

/** Parse the single JSON object a `--json` command prints on stdout. */
export function parseJsonOut<T = RunSummary>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch (e) {
    throw new Error(
      `stdout is not one JSON object (${(e as Error).message}): exit ${r.code}\nstdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr.slice(-2000)}`,
    );
  }
}

// ------------------------------------------------------------------------------- ground truth helpers

/** Endpoint labels (requestCounts) that change CRM state. */
export const WRITE_ENDPOINTS = {
  hubspot: [
    // numeric versions (legacy) and the date versions
    ...['/crm/v3/objects/contacts', '/crm/objects/2026-09/contacts', '/crm/objects/2026-03/contacts'].map(
      (b) => `POST ${b}/batch/update`,
    ),
    ...['v4', '2026-09', '2026-03'].flatMap((v) => [
      `POST /communication-preferences/${v}/statuses/batch/unsubscribe-all`,
      `POST /communication-preferences/${v}/statuses/batch/write`,
      `POST /communication-preferences/${v}/statuses/{subscriberIdString}/unsubscribe-all`,
      `POST /communication-preferences/${v}/statuses/{subscriberIdString}`,
    ]),
    ...['v3', '2026-09', '2026-03'].map((v) => `POST /communication-preferences/${v}/unsubscribe`),
  ],
  salesforce: [
    'PATCH /services/data/vXX.X/composite/sobjects',
    'PATCH /services/data/vXX.X/sobjects/{type}/{id}',
    'POST /services/data/vXX.X/jobs/ingest',
    'PUT /services/data/vXX.X/jobs/ingest/{id}/batches',
    'PATCH /services/data/vXX.X/jobs/ingest/{id}',
  ],
} as const;

/** Totals per endpoint label and vendor, copied (requestCounts() hands out live objects). */
export function countsSnapshot(emu: Emulators): {
  cc: Record<string, number>;
  hubspot: Record<string, number>;
  salesforce: Record<string, number>;
} {
  const c = emu.requestCounts();
  const flat = (m: Record<string, { total: number }>): Record<string, number> =>
    Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v.total]));
  return { cc: flat(c.cc), hubspot: flat(c.hubspot), salesforce: flat(c.salesforce) };
}

/** Requests per endpoint since `before` (a countsSnapshot). */
export function countsSince(
  emu: Emulators,
  before: ReturnType<typeof countsSnapshot>,
): ReturnType<typeof countsSnapshot> {
  const now = countsSnapshot(emu);
  const diff = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
    Object.fromEntries(
      Object.entries(a)
        .map(([k, v]) => [k, v - (b[k] ?? 0)])
        .filter(([, v]) => (v as number) > 0),
    );
  return {
    cc: diff(now.cc, before.cc),
    hubspot: diff(now.hubspot, before.hubspot),
    salesforce: diff(now.salesforce, before.salesforce),
  };
}

/** Requests that reached each write endpoint (any status). */
export function writeRequests(emu: Emulators): {
  hubspot: number;
  salesforce: number;
  byEndpoint: Record<string, number>;
} {
  const c = emu.requestCounts();
  const byEndpoint: Record<string, number> = {};
  let hubspot = 0;
  let salesforce = 0;
  for (const e of WRITE_ENDPOINTS.hubspot) {
    const n = c.hubspot[e]?.total ?? 0;
    if (n) byEndpoint[e] = n;
    hubspot += n;
  }
  for (const e of WRITE_ENDPOINTS.salesforce) {
    const n = c.salesforce[e]?.total ?? 0;
    if (n) byEndpoint[e] = n;
    salesforce += n;
  }
  return { hubspot, salesforce, byEndpoint };
}

export type Kind = 'applied' | 'already-suppressed' | 'not-found';

/**
 * What each target must answer for each opted-out email on a first, undisturbed delivery, from the ground
 * truth: HubSpot per contact (one per email); an address a contact holds only in hs_additional_emails is
 * 'already-suppressed' when that address was unsubscribed already (the connector reads the address statuses
 * in batch before writing) and 'applied' otherwise — except on a portal without the batch endpoints
 * (`{ hubspotBatch: false }`, emulator knob `batchAllowed: false`), where the status is not read and every
 * secondary address is written ('applied'). Salesforce per email over its Contacts and unconverted Leads.
 */
export function expectedOutcomes(
  emu: Emulators,
  truth: GroundTruth = emu.truth(),
  opts: { hubspotBatch?: boolean } = {},
): { hubspot: Map<string, Kind>; salesforce: Map<string, Kind> } {
  const w = emu.world;
  const hsTo = new Set(truth.hubspot.toSuppress);
  const hsAlready = new Set(truth.hubspot.alreadySuppressed);
  const sfTo = new Set([...truth.salesforce.toSuppress, ...truth.salesforce.personAccountsToSuppress]);
  const sfAlready = new Set(truth.salesforce.alreadySuppressed);
  const secondary = new Map(truth.hubspot.secondaryMatches.map((m) => [m.email, m]));
  const statusRead = opts.hubspotBatch !== false;
  const hubspot = new Map<string, Kind>();
  const salesforce = new Map<string, Kind>();
  for (const email of truth.optedOutEmails) {
    const h = w.hsByNorm.get(email);
    const sec = secondary.get(email);
    hubspot.set(
      email,
      h
        ? hsTo.has(h.id)
          ? 'applied'
          : hsAlready.has(h.id)
            ? 'already-suppressed'
            : ('?' as Kind)
        : sec
          ? sec.alreadyUnsubscribed && statusRead
            ? 'already-suppressed'
            : 'applied'
          : 'not-found',
    );
    const recs = (w.sfByNorm.get(email) ?? []).map((r) => r.Id);
    salesforce.set(
      email,
      recs.some((id) => sfTo.has(id))
        ? 'applied'
        : recs.some((id) => sfAlready.has(id))
          ? 'already-suppressed'
          : 'not-found',
    );
  }
  return { hubspot, salesforce };
}

/**
 * Is every CRM record of `email` suppressed (HubSpot contact, or the address itself when a contact holds it
 * only in hs_additional_emails; Salesforce Contacts and unconverted Leads)?
 */
export function crmSuppressed(emu: Emulators, email: string): { hubspot: boolean | null; salesforce: boolean | null } {
  const w = emu.world;
  const h = w.hsByNorm.get(email);
  const secondary = !h && w.hsByAdditional.has(email);
  const recs = (w.sfByNorm.get(email) ?? []).filter(
    (r) => !r.deleted && (r.type === 'Contact' || (r.type === 'Lead' && r.fields.IsConverted !== true)),
  );
  return {
    hubspot: h ? h.props.hs_email_optout === 'true' : secondary ? w.hsAddressUnsubscribed(email) : null,
    salesforce: recs.length ? recs.every((r) => r.fields.HasOptedOutOfEmail === true) : null,
  };
}

/** Assert the emulators' verdict is clean: everything expected suppressed, nothing else changed or written. */
export function assertVerified(emu: Emulators, opts: { allowRepeats?: boolean } = {}): void {
  const v = emu.verify();
  for (const t of ['hubspot', 'salesforce'] as const) {
    const tv = v[t];
    const brief = (xs: string[]): string =>
      `${xs.length} [${xs.slice(0, 8).join(', ')}${xs.length > 8 ? ', ...' : ''}]`;
    assert.deepEqual(tv.notSuppressed, [], `${t}: expected records not suppressed: ${brief(tv.notSuppressed)}`);
    assert.deepEqual(
      tv.unexpectedlyChanged,
      [],
      `${t}: records changed although not opted out: ${brief(tv.unexpectedlyChanged)}`,
    );
    assert.deepEqual(
      tv.unnecessaryWrites,
      [],
      `${t}: writes to records that needed none: ${brief(tv.unnecessaryWrites)}`,
    );
    if (!opts.allowRepeats)
      assert.deepEqual(tv.repeatedWrites, [], `${t}: records written more than once: ${brief(tv.repeatedWrites)}`);
    assert.ok(tv.expected > 0, `${t}: the dataset must expect some suppressions for the test to mean anything`);
  }
  // Secondary addresses (hs_additional_emails), listed apart: a connector that matches primary addresses only misses these.
  const sec = v.hubspot.secondary;
  const brief = (xs: string[]): string => `${xs.length} [${xs.slice(0, 8).join(', ')}${xs.length > 8 ? ', ...' : ''}]`;
  assert.deepEqual(
    sec.notUnsubscribed,
    [],
    `hubspot: secondary-address opt-outs missed (opted-out addresses a contact holds only in hs_additional_emails, still not unsubscribed): ${brief(sec.notUnsubscribed)}`,
  );
  assert.deepEqual(
    sec.unnecessaryWrites,
    [],
    `hubspot: writes to secondary addresses that needed none: ${brief(sec.unnecessaryWrites)}`,
  );
  if (!opts.allowRepeats)
    assert.deepEqual(
      sec.repeatedWrites,
      [],
      `hubspot: secondary addresses written more than once: ${brief(sec.repeatedWrites)}`,
    );
  assert.equal(v.ok, true);
  assert.equal(
    emu.world.hsOrphanStatusWrites.size,
    0,
    'no HubSpot subscription write for an email without a contact (onlyExistingContacts)',
  );
}

/** Requests the HubSpot emulator received on numeric-version (v1-v4, legacy) paths: a default run makes none. */
export function assertNoLegacyHubSpotCalls(emu: Emulators): void {
  const legacy = emu.servers.hubspot.legacyCalls();
  assert.equal(legacy.count, 0, `HubSpot numeric-version (legacy) calls: ${JSON.stringify(legacy.byEndpoint)}`);
}

/** Mark a Constant Contact contact deleted now WITHOUT unsubscribing it (deleted-not-unsubscribed), as the dataset models it. */
export function deleteContactNow(emu: Emulators, contactId: string): string {
  const c = emu.world.ccById.get(contactId);
  if (!c || !c.email || c.deletedMs !== null || c.email.permission === 'unsubscribed')
    throw new Error(`contact ${contactId} cannot be deleted-not-unsubscribed`);
  const ms = Math.floor(emu.world.now() / 1000) * 1000;
  c.deletedMs = ms;
  // A deleted contact's email_address shows opt_out_source/opt_out_date (the deletion), per the swagger.
  c.email.optOutSource = 'Account';
  c.email.optOutMs = ms;
  c.email.updatedMs = ms;
  c.cases.push('deletedNotUnsubscribed');
  emu.world.version++;
  return c.email.norm;
}

/** Subscribed, undeleted contacts present in both CRMs (candidates for run-time changes). */
export function subscribedInBothCrms(
  emu: Emulators,
  n: number,
  skip: ReadonlySet<string> = new Set(),
): { contactId: string; email: string }[] {
  const w = emu.world;
  const out: { contactId: string; email: string }[] = [];
  for (const c of w.data.cc) {
    if (out.length >= n) break;
    if (
      !c.email ||
      c.deletedMs !== null ||
      c.email.permission === 'unsubscribed' ||
      c.cases.length > 0 ||
      skip.has(c.id)
    )
      continue;
    const h = w.hsByNorm.get(c.email.norm);
    const sf = (w.sfByNorm.get(c.email.norm) ?? []).filter(
      (r) => r.type === 'Contact' && r.fields.HasOptedOutOfEmail !== true,
    );
    if (!h || h.props.hs_email_optout === 'true' || sf.length === 0) continue;
    out.push({ contactId: c.id, email: c.email.norm });
  }
  if (out.length < n) throw new Error(`only ${out.length} subscribed contacts in both CRMs`);
  return out;
}

/** Run `sync` in-process until it exits 0 (failed-retryable rows wait for their backoff), at most `maxRuns` times. */
export async function syncUntilDelivered(h: Harness, maxRuns: number, timeoutMs = 60_000): Promise<RunSummary[]> {
  const runs: RunSummary[] = [];
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < maxRuns; i++) {
    const s = await runOnce(h, (p) => p.engine.sync());
    runs.push(s);
    if (s.exitCode === 0) return runs;
    // wait until something is due again (backoff), or the deadline
    await waitFor(
      () =>
        runOnce(
          h,
          async (p) =>
            (
              await p.store.targetStatus(
                p.config.targets.map((t) => t.name),
                new Date(),
              )
            ).some((t) => t.due > 0) || Date.now() > deadline,
        ),
      { timeoutMs: Math.max(1000, deadline - Date.now() + 1000), intervalMs: 200, what: 'a queued row to become due' },
    );
  }
  return runs;
}
