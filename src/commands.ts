/**
 * Commands with their own dependencies: `auth constant-contact`, `emulate`, `demo`.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import * as fs from 'fs';
import * as os from 'os';
import type { CommandHelpers } from './cli-output';
import { loadSourceConfig } from './config';
import { createLogger } from './log';
import { describeStore, openBackend, storeSpecFor } from './store/open';
import { DEFAULT_ACCOUNT } from './store/backend';
import { Lease, holdRunLock } from './store/lease';
import { SOURCE_KV } from './engine';
import { systemClock } from './http/clock';
import { MIN_CONTACTS } from './emulators/dataset';
import { authorizeWithDeviceFlow, authorizeWithPkce } from './source/constant-contact/authorize';

interface GlobalOpts {
  config: string;
  json?: boolean;
  logFormat: 'text' | 'json';
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  progress: boolean;
  store?: string;
  account?: string;
}

/** A whole-number option in [min, max]; anything else is a usage error (exit 2) naming the option. */
export function intOption(flag: string, description: string, min: number, max: number, dflt?: number): Option {
  const o = new Option(flag, description).argParser((v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}, got "${v}"`);
    }
    return n;
  });
  return dflt === undefined ? o : o.default(dflt);
}

export function register(program: Command, g: () => GlobalOpts, h: CommandHelpers): void {
  const auth = program.command('auth').description('obtain and store credentials');
  auth
    .command('constant-contact')
    .description(
      'authorise Constant Contact once (authorization code + PKCE on a loopback redirect, or --device) and store the tokens',
    )
    .option('--device', 'use the device flow (no browser on this machine)')
    .addOption(
      intOption('--port <n>', 'loopback redirect port (must match the redirect URI registered for the app)', 0, 65535),
    )
    .action(async (o: { device?: boolean; port?: number }) => {
      // Only the source and store sections are needed (and checked): CRM credentials may not exist yet.
      // (`--account ID`: that account's source from the store; the config file's own secrets are not needed)
      const { storeSpecOf, withAccount } = await import('./accounts-commands');
      const { accountSource } = await import('./accounts');
      const added = (g().account ?? DEFAULT_ACCOUNT) !== DEFAULT_ACCOUNT;
      const cfg = added ? null : loadSourceConfig(g().config, process.env, { ignoreStore: !!g().store });
      const spec = cfg ? storeSpecFor(cfg, g().store) : storeSpecOf(g());
      const storePath = describeStore(spec);
      const backend = await openBackend(spec);
      // `--account`: an added account's own source (from the registry), tokens stored in that account's state
      const { store, accountSourceConfig } = await withAccount(g(), async (id) => ({
        store: await backend.account(id),
        accountSourceConfig:
          id === DEFAULT_ACCOUNT ? null : accountSource(id, await backend.getAccount(id), process.env),
      })).catch(async (err: unknown) => {
        await backend.close();
        throw err;
      });
      const ccSource = accountSourceConfig ?? cfg!.source;
      const owner = `auth-${process.pid}`;
      const logger = createLogger({ format: g().logFormat, level: g().logLevel });
      let lease: Lease | null = null;
      try {
        // the same lock as runs (a lease, renewed while the person authorises): a sync must not refresh with the
        // token this command is replacing
        lease = await holdRunLock(
          store,
          { owner, pid: process.pid, host: os.hostname(), command: 'auth' },
          { now: () => new Date(), onLost: (m) => logger.error(m) },
        );
        const source = { ...ccSource, redirectPort: o.port ?? ccSource.redirectPort };
        const deps = { clock: systemClock, logger, kv: await store.kv(SOURCE_KV) };
        // with --json the instructions go to stderr and stdout carries one JSON object
        const io = { print: (m: string) => (g().json ? process.stderr.write(m + '\n') : h.out(m)) };
        const r = o.device
          ? await authorizeWithDeviceFlow(source, deps, io)
          : await authorizeWithPkce(source, deps, io);
        if (g().json)
          h.out(
            JSON.stringify({
              authorised: true,
              store: storePath,
              accessTokenExpiresAt: r.expiresAt.toISOString(),
              refreshTokenStored: !!r.refreshToken,
            }),
          );
        else
          h.out(
            `Constant Contact authorised; tokens stored in ${storePath} (access token valid until ${r.expiresAt.toISOString()}` +
              `${r.refreshToken ? ', refresh token stored' : '; NO refresh token: add the offline_access scope to the app'}).`,
          );
        if (!r.refreshToken) throw new h.ExitError(1, '');
      } finally {
        try {
          if (lease) await lease.release();
          else await store.releaseRunLock(owner);
        } finally {
          await backend.close();
        }
      }
    });
  registerEmulation(program, g, h);
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];
const PLUGIN_HELP =
  'also load this connector plugin (package name or path, repeatable) and start its emulator; the config names it in "plugins"';

/** The built-in connectors plus `--plugin` ones (a plugin that does not load is a usage error naming it, exit 2). */
async function emulationRegistry(
  plugins: readonly string[],
  h: CommandHelpers,
): Promise<import('./registry').Registry> {
  const { createRegistry, PluginError } = await import('./registry');
  const registry = createRegistry();
  try {
    registry.usePlugins(plugins, process.cwd());
  } catch (err) {
    if (err instanceof PluginError) throw new h.ExitError(2, `--plugin: ${err.message}`);
    throw err;
  }
  return registry;
}

export function registerEmulation(program: Command, g: () => GlobalOpts, h: CommandHelpers): void {
  program
    .command('emulate')
    .description(
      "start local emulators of the Constant Contact API and of each connector's CRM (those with an emulator) and write a config for them",
    )
    .addOption(intOption('--contacts <n>', 'generated contacts', MIN_CONTACTS, 1_000_000, 20000))
    .addOption(intOption('--seed <n>', 'dataset seed', 0, 2 ** 32 - 1, 42))
    .option('--dir <path>', 'where to write the config, key and state', '.cc-optout-emulator')
    .addOption(
      intOption(
        '--port <n>',
        'first port (Constant Contact; then +1, +2, ... per connector in id order: HubSpot, Salesforce); 0 = ephemeral',
        0,
        65533,
        0,
      ),
    )
    .option('--plugin <name-or-path>', PLUGIN_HELP, collect, [] as string[])
    .action(async (o: { contacts: number; seed: number; dir: string; port: number; plugin: string[] }) => {
      // the Constant Contact emulator, and each connector's own (connector.emulator()), over one dataset
      const { startConnectorEmulators } = await import('./emulate');
      const registry = await emulationRegistry(o.plugin, h);
      const emu = await startConnectorEmulators(registry, {
        contacts: o.contacts,
        seed: o.seed,
        dir: o.dir,
        port: o.port,
        plugins: o.plugin,
      });
      const cfg = { file: emu.file, env: emu.env };
      const env = Object.entries(cfg.env)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      // throw-away emulator credentials, for the person trying the CLI against the emulators (0600, never printed);
      // written before anything is printed, so whoever reads the printed config finds the file
      fs.writeFileSync(`${o.dir}/emulator.env`, env.split(' ').join('\n') + '\n', { mode: 0o600 });
      if (g().json) {
        h.out(
          JSON.stringify({
            cc: emu.cc.apiBaseUrl,
            ...Object.fromEntries(emu.targets.map((t) => [t.id, t.url])),
            config: cfg.file,
          }),
        );
      } else {
        h.out(
          `${'Constant Contact'.padEnd(17)}${emu.cc.apiBaseUrl}  (inspect: ${emu.cc.origin}/__emulator/state?summary=1)`,
        );
        for (const t of emu.targets) h.out(`${t.id.padEnd(17)}${t.url}`);
        if (emu.withoutEmulator.length)
          h.out(`(no emulator, left out of the config: ${emu.withoutEmulator.join(', ')})`);
        h.out(`config: ${cfg.file}; its secrets are emulator-only values in ${o.dir}/emulator.env`);
        h.out(`try:   set -a; . ${o.dir}/emulator.env; set +a; node dist/src/cli.js --config ${cfg.file} backfill`);
        h.out('Ctrl-C stops the emulators.');
      }
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await emu.stop();
    });

  program
    .command('demo')
    .description('the built-in demo: emulators, backfill, new opt-outs, sync, and a report (no accounts, no network)')
    .addOption(intOption('--contacts <n>', 'generated contacts', MIN_CONTACTS, 1_000_000, 20000))
    .addOption(intOption('--seed <n>', 'dataset seed', 0, 2 ** 32 - 1, 42))
    .addOption(intOption('--new-opt-outs <n>', 'opt-outs created between backfill and sync', 0, 10_000, 25))
    .option('--dir <path>', 'where the demo keeps its config, state and audit', '.demo')
    .option('--plugin <name-or-path>', PLUGIN_HELP, collect, [] as string[])
    .action(async (o: { contacts: number; seed: number; newOptOuts: number; dir: string; plugin: string[] }) => {
      const { runDemo } = await import('./demo');
      const registry = await emulationRegistry(o.plugin, h);
      const bar = h.progressBar(g().progress && !g().json);
      // Ctrl-C: restore the terminal (stop the bars) and exit 130 at once; the demo's state is throw-away
      const control = h.interruptible?.(process.stderr, false);
      try {
        const r = await runDemo({
          contacts: o.contacts,
          seed: o.seed,
          newOptOuts: o.newOptOuts,
          dir: o.dir,
          registry,
          plugins: o.plugin,
          progress: bar.onProgress,
          print: (l) => {
            bar.stop();
            // with --json, stdout carries only the JSON result; the report goes to stderr
            if (g().json) process.stderr.write(l + '\n');
            else h.out(l);
          },
          logLevel: g().logLevel,
        });
        if (g().json) h.out(JSON.stringify(r, null, 2));
        throw new h.ExitError(
          r.ok ? 0 : 3,
          r.ok ? '' : 'demo: the CRMs do not match the ground truth (see the report above)',
        );
      } finally {
        bar.stop();
        control?.dispose();
      }
    });
}
