/**
 * `cc-optout run`: the service command (registered on the program by one call in src/cli.ts).
 */
import * as fs from 'fs';
import { Command, Option } from 'commander';
import type { CommandHelpers } from '../cli';
import { openAppAsync } from '../app';
import {
  Config,
  ConfigError,
  ResolvedService,
  loadConfig,
  parseListen,
  scheduleOf,
  serviceProblems,
  resolveService,
} from '../config';
import { createRegistry } from '../plugin';
import { createLogger, LogLevel } from '../log';
import { untilStoreOpens } from './store-wait';
import { cronProblem, parseEvery } from './schedule';
import type { ServiceRunner } from './runner';
import type { FleetRunner } from './fleet-runner';
import {
  FLEET_DEFAULTS,
  FleetRunOpts,
  FleetSettings,
  checkFleetOptions,
  fleetModeWanted,
  fleetTablesOf,
  fleetWorkerOptions,
  openRunBackend,
} from './fleet-cli';
import type { StoreBackend } from '../store/backend';
import type { Registry } from '../registry';
import type { Logger } from '../log';

interface GlobalOpts {
  config: string;
  json?: boolean;
  logFormat: 'text' | 'json';
  logLevel: LogLevel;
  progress: boolean;
  store?: string;
}

interface RunOpts extends FleetRunOpts {
  every?: string;
  cron?: string;
  listen?: string;
}

/** `--every`, `--cron`, `--listen` checked before anything is opened (exit 2 naming the option). */
export function checkRunOptions(o: RunOpts): string[] {
  const problems: string[] = [];
  if (o.every !== undefined && o.cron !== undefined) problems.push('--every and --cron: give one of them, not both');
  if (o.every !== undefined) {
    const s = parseEvery(o.every);
    if (typeof s === 'string') problems.push(`--every: ${s}`);
  }
  if (o.cron !== undefined) {
    const p = cronProblem(o.cron);
    if (p) problems.push(`--cron: ${p}`);
  }
  if (o.listen !== undefined && parseListen(o.listen) === null)
    problems.push(
      `--listen: got ${JSON.stringify(o.listen)}, expected host:port such as 127.0.0.1:9464 (port 0 = any free port)`,
    );
  return problems;
}

export function registerServiceCommands(program: Command, g: () => GlobalOpts, h: CommandHelpers): void {
  program
    .command('run')
    .description(
      'run as a service: sync on a schedule, serve /healthz, /readyz and /metrics, send alerts (stops cleanly on SIGTERM/SIGINT)',
    )
    .option('--every <duration>', 'sync every duration: 30s, 5m, 1h, 1h30m (default: service.every, else 5m)')
    .option('--cron <pattern>', 'sync on a cron pattern instead, e.g. "*/5 * * * *" (default: service.cron)')
    .addOption(
      new Option(
        '--listen <host:port>',
        'HTTP address (default: service.listen, else 127.0.0.1:9464; port 0 = any free port)',
      ),
    )
    .option(
      '--fleet',
      "run every account of the store (the registry and the config file's own) with lease-sharing workers; on by itself once `accounts add` registered one, or with --workers",
    )
    .option(
      '--workers <n>',
      `fleet mode: workers in this process, each claiming due accounts and targets (default ${FLEET_DEFAULTS.workers}); more instances on one PostgreSQL share the work`,
    )
    .option(
      '--concurrency <n>',
      `fleet mode: leases one worker works on at once (default ${FLEET_DEFAULTS.concurrency})`,
    )
    .option(
      '--lease-ttl <duration>',
      `fleet mode: how long a lease lasts unrenewed (renewed every third of it): an instance killed outright has its accounts taken over after this (default ${FLEET_DEFAULTS.leaseTtlSeconds}s)`,
    )
    .action(async (o: RunOpts) => {
      const fleetOpts = checkFleetOptions(o);
      const problems = [...checkRunOptions(o), ...fleetOpts.problems];
      // run serves every account of the store (fleet mode) or the config file's own: never one picked account
      const account = (g() as { account?: string }).account;
      if (account !== undefined && account !== 'default')
        problems.push(
          `--account ${account}: run serves every account of the store (fleet mode, once one is added) or the config file's own; --account picks the account of the other commands`,
        );
      if (problems.length) throw new h.ExitError(2, problems.join('\n'));
      const opts = g();
      // a service logs its runs: info unless --log-level was given
      const level: LogLevel = program.getOptionValueSource('logLevel') === 'default' ? 'info' : opts.logLevel;
      const logger = createLogger({ format: opts.logFormat, level });
      // the service section with the options applied is checked before the store is opened (exit 2, nothing written)
      if (fs.existsSync(opts.config) && fs.statSync(opts.config).isDirectory())
        throw new h.ExitError(2, `--config ${opts.config}: is a directory; expected the config file`);
      const registry = createRegistry();
      const config = loadConfig(opts.config, process.env, registry, { serviceEnv: true, ignoreStore: !!opts.store });
      const base = config.service ?? resolveService(undefined);
      const service = {
        ...base,
        schedule: o.every !== undefined || o.cron !== undefined ? scheduleOf(o.every, o.cron) : base.schedule,
        listen: o.listen ? parseListen(o.listen)! : base.listen,
      };
      if (o.listen) {
        const p = serviceProblems({ listen: o.listen, token: service.token ?? undefined }, '--listen');
        if (p.length) throw new ConfigError(p, config.file ?? undefined);
      }
      // fleet mode (see ./fleet-cli): many accounts, leases shared with every instance on the same store
      // a PostgreSQL server not reachable yet (started late after a reboot) is waited for: not a config error
      const backend = await untilStoreOpens(() => openRunBackend(opts.store, config), logger);
      if (!backend) return;
      let fleet = false;
      try {
        fleet = fleetModeWanted(o, await backend.listAccounts());
        if (fleet && o.cron !== undefined)
          throw new h.ExitError(
            2,
            '--cron: fleet mode schedules every account itself (the fair scheduler); --every sets the shortest poll interval',
          );
      } catch (err) {
        await backend.close();
        throw err;
      }
      if (fleet) {
        await runFleet({
          backend,
          config,
          configFile: opts.config,
          registry,
          service,
          logger,
          settings: fleetOpts.settings,
          minIntervalMs: service.schedule.kind === 'every' ? service.schedule.seconds * 1000 : undefined,
          h,
        });
        return;
      }
      await backend.close();
      const app = await untilStoreOpens(
        () =>
          openAppAsync({
            configFile: opts.config,
            env: process.env,
            logger,
            registry,
            store: opts.store,
          }),
        logger,
      );
      if (!app) return;
      let runner: ServiceRunner;
      try {
        // loaded here, not at start-up: the HTTP server and the metrics client cost every other command ~0.3 s
        const { ServiceRunner: Runner } = await import('./runner');
        runner = new Runner({ app, service, logger });
      } catch (err) {
        await app.close();
        throw err;
      }
      let stopping: Promise<void> | null = null;
      let stopped!: () => void;
      const done = new Promise<void>((resolve) => (stopped = resolve));
      const onSignal = (sig: NodeJS.Signals): void => {
        if (stopping) {
          logger.warn('second signal: exiting now; queued rows stay queued, a restart resumes', { signal: sig });
          process.exit(sig === 'SIGTERM' ? 143 : 130);
        }
        logger.info('stopping: the run in hand finishes its batch, then the service exits', { signal: sig });
        stopping = runner.stop(sig).finally(stopped);
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      try {
        try {
          await runner.start();
        } catch (err) {
          const { host, port } = runner.listenAddress();
          throw new h.ExitError(
            2,
            `service.listen: cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port}: ${(err as Error).message}`,
          );
        }
        await done;
      } finally {
        await runner.stop();
        await app.close();
        process.removeListener('SIGTERM', onSignal);
        process.removeListener('SIGINT', onSignal);
      }
    });
}

/** Fleet mode: N workers and the HTTP side until SIGTERM/SIGINT (then every lease held is handed back due now). */
async function runFleet(a: {
  backend: StoreBackend;
  config: Config;
  configFile: string;
  registry: Registry;
  service: ResolvedService;
  logger: Logger;
  settings: FleetSettings;
  minIntervalMs?: number;
  h: CommandHelpers;
}): Promise<void> {
  let runner: FleetRunner;
  try {
    const tables = await fleetTablesOf(a.backend);
    const { FleetRunner: Runner } = await import('./fleet-runner');
    runner = new Runner({
      service: a.service,
      logger: a.logger,
      workers: a.settings.workers,
      worker: fleetWorkerOptions({ ...a, tables, env: process.env }),
      close: () => a.backend.close(),
    });
  } catch (err) {
    await a.backend.close();
    throw err;
  }
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) {
      a.logger.warn('second signal: exiting now; leases in hand expire after --lease-ttl', { signal: sig });
      process.exit(sig === 'SIGTERM' ? 143 : 130);
    }
    stopping = true;
    a.logger.info('stopping: the work in hand finishes its batch, every lease held is handed over', { signal: sig });
    void runner.stop(sig).finally(stopped);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    try {
      await runner.start();
    } catch (err) {
      const { host, port } = runner.listenAddress();
      throw new a.h.ExitError(
        2,
        `service.listen: cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port}: ${(err as Error).message}`,
      );
    }
    await done;
  } finally {
    await runner.stop();
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
  }
}
