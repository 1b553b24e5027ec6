/**
 * The connector's `emulator()` hook: a Dataverse + Entra emulator seeded from the core's shared World (every
 * Constant Contact address becomes a candidate Dynamics person, so the demo's opt-outs match Dynamics
 * records), for `cc-optout demo` / `emulate` and the end-to-end tests.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { EmulatorFactory, EmulatorStartOptions, RunningEmulator } from 'cc-optout-connector/sdk';
import type { World } from 'cc-optout-connector/sdk/emulator';
import { DataverseEmulator, DataverseEmulatorOptions, DataverseVerification, VerifyOptions } from './server';
import { Person } from './dataset';

export {
  DataverseEmulator,
  startDataverseEmulator,
  DATAVERSE_DEFAULTS,
  API_PATH,
  MAX_URL_LENGTH,
  MAX_BATCH_REQUESTS,
} from './server';
export type {
  DataverseConnection,
  DataverseEmulatorOptions,
  DataverseKnobs,
  DataverseTruth,
  DataverseVerification,
  VerifyOptions,
} from './server';
export type { Person, DvRecord } from './dataset';

/** The env variable the emulator's target config names for the client secret. */
export const SECRET_ENV = 'DYNAMICS_CLIENT_SECRET';

/** People of the shared world: every Constant Contact address, opted out or not. */
export function peopleFromWorld(world: World): Person[] {
  const out: Person[] = [];
  for (const c of world.data.cc) {
    if (!c.email) continue;
    out.push({ email: c.email.raw, optedOut: c.email.permission === 'unsubscribed' && c.email.optOutMs !== null });
  }
  return out;
}

export interface RunningDataverse extends RunningEmulator {
  readonly emulator: DataverseEmulator;
  verify(opts?: VerifyOptions): DataverseVerification;
}

export function dataverseEmulatorFactory(extra: Partial<DataverseEmulatorOptions> = {}): EmulatorFactory {
  return {
    async start(world: World, opts: EmulatorStartOptions): Promise<RunningDataverse> {
      const emu = await new DataverseEmulator({
        seed: world.data.seed,
        people: peopleFromWorld(world),
        optedOutNow: () => world.truth().optedOutEmails,
        host: opts.host,
        ports: { dataverse: opts.port ?? 0 },
        ...extra,
      }).start();
      const c = emu.connection();
      fs.mkdirSync(opts.dir, { recursive: true });
      // absolute: the config naming it may live elsewhere than the working directory
      const caPath = path.resolve(opts.dir, 'dynamics-entra-ca.pem');
      fs.copyFileSync(c.caFile, caPath);
      fs.chmodSync(caPath, 0o600);
      const running: RunningDataverse = {
        url: c.url,
        emulator: emu,
        targetConfig: () => ({
          config: {
            url: c.url,
            auth: {
              type: 'client-credentials',
              tenantId: c.tenantId,
              clientId: c.clientId,
              clientSecret: `\${${SECRET_ENV}}`,
              authorityHost: c.authorityHost,
              caPath,
            },
            emailFields: ['emailaddress1', 'emailaddress2', 'emailaddress3'],
            entities: { contact: true, lead: true },
          },
          env: { [SECRET_ENV]: c.clientSecret },
        }),
        requestCounts: () => emu.requestCounts(),
        verify: (v) => emu.verify(v),
        stop: () => emu.stop(),
      };
      return running;
    },
  };
}
