/**
 * `cc-optout emulate`: the Constant Contact emulator (the core's) plus every loaded connector's own emulator
 * (`connector.emulator()`), over one shared World, and a config pointing at them. The core names no CRM here:
 * a connector without an emulator is simply left out.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConstantContactEmulator } from './emulators/constant-contact';
import { World } from './emulators/world';
import type { Registry } from './registry';
import type { RunningEmulator } from './sdk';

export interface ConnectorEmulators {
  cc: ReturnType<ConstantContactEmulator['connection']>;
  targets: Array<{ id: string; url: string }>;
  /** The shared dataset (ground truth, new opt-outs at run time). */
  world: World;
  /** The running emulator of each connector, by id. */
  running: Array<{ id: string; emu: RunningEmulator }>;
  /** Loaded connectors left out because they have no emulator. */
  withoutEmulator: string[];
  /** The config written (also in `file`). */
  config: Record<string, unknown>;
  file: string;
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Start the emulators (ports: `port` for Constant Contact, then +1, +2, ... per connector in id order; 0 = ephemeral). */
export async function startConnectorEmulators(
  registry: Registry,
  o: {
    contacts: number;
    seed: number;
    dir: string;
    port: number;
    /**
     * The plugins loaded into `registry` (`--plugin`): written as the config's `plugins` (paths made absolute,
     * package names as given), so the config loads them again when it is run.
     */
    plugins?: readonly string[];
    /** Extra settings merged into the config (the demo's detection tuning). */
    detection?: Record<string, unknown>;
  },
): Promise<ConnectorEmulators> {
  const world = new World({ seed: o.seed, contacts: o.contacts });
  fs.mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const cc = await new ConstantContactEmulator(world, { port: o.port || undefined }).start();
  const running: Array<{ id: string; emu: RunningEmulator }> = [];
  const withoutEmulator: string[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all([cc.stop(), ...running.map((r) => r.emu.stop())]);
  };
  try {
    const ids = registry.ids().filter((id) => typeof registry.get(id)?.emulator === 'function');
    withoutEmulator.push(...registry.ids().filter((id) => !ids.includes(id)));
    for (const [i, id] of ids.entries()) {
      const emu = await registry.get(id)!.emulator!().start(world, {
        port: o.port ? o.port + 1 + i : undefined,
        dir: o.dir,
      });
      running.push({ id, emu });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const c = cc.connection();
  const env: Record<string, string> = {
    CC_CLIENT_ID: c.clientId,
    CC_CLIENT_SECRET: c.clientSecret,
    CC_REFRESH_TOKEN: c.refreshToken,
  };
  const targets = running.map(({ id, emu }) => {
    const t = emu.targetConfig();
    Object.assign(env, t.env);
    return { name: id, connector: id, config: t.config };
  });
  const plugins = (o.plugins ?? []).map((p) =>
    p.startsWith('./') || p.startsWith('../') || p === '.' || p === '..' ? path.resolve(p) : p,
  );
  const config: Record<string, unknown> = {
    '//': 'Points at local emulators (cc-optout emulate). Secrets come from the environment.',
    ...(plugins.length ? { plugins } : {}),
    store: { path: './state.db' },
    source: {
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      refreshToken: '${CC_REFRESH_TOKEN}',
      apiBaseUrl: c.apiBaseUrl,
      authBaseUrl: c.authBaseUrl,
      detection: { overlapMinutes: 10, lagMinutes: 0, ...(o.detection ?? {}) },
    },
    delivery: { maxAttempts: 12, backoffBaseSeconds: 1, backoffMaxSeconds: 60 },
    targets,
  };
  const file = path.join(o.dir, 'cc-optout.config.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
  return {
    cc: c,
    targets: running.map(({ id, emu }) => ({ id, url: emu.url })),
    world,
    running,
    withoutEmulator,
    config,
    file,
    env,
    stop,
  };
}
