/**
 * Salesforce target: sets the email opt-out checkbox (default `HasOptedOutOfEmail`) on every Contact,
 * unconverted Lead and (opt-in) Person Account whose email opted out of Constant Contact.
 *
 * Built on jsforce 3.10.16 (see README.md for config, API-NOTES for the jsforce traps handled in client.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  Capabilities,
  CheckReport,
  Connector,
  DeliveryMode,
  DeliveryReport,
  EmulatorFactory,
  OptOut,
  Target,
  TargetHalt,
  isTargetHalt,
} from '../../src/sdk';
import { SalesforceConfig, resolveConfig } from './config';
import { SalesforceClient, ClientOptions, KV_API_USAGE, safeMessage } from './client';
import { Delivery } from './deliver';
import { runCheck } from './check';
import spec from './spec.json';

export { SalesforceConfig } from './config';

/** A halt passes through; anything else thrown is a bug, reported as a fatal halt with a safe message. */
function asHalt(e: unknown): never {
  if (isTargetHalt(e)) throw e;
  throw new TargetHalt(
    'fatal',
    `Salesforce connector error: ${safeMessage(e instanceof Error ? e.message : String(e))}`,
  );
}

/** `open` with client options (tests shorten retry policies through this). */
export function openSalesforce(config: SalesforceConfig, caps: Capabilities, opts: ClientOptions = {}): Target {
  const cfg = resolveConfig(config);
  const client = new SalesforceClient(cfg, caps, opts);
  const delivery = new Delivery(client, cfg, caps);
  // One operation at a time per target: the client's error classification reads the last response.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <A>(task: () => Promise<A>): Promise<A> => {
    const next = queue.then(task, task);
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    check: (): Promise<CheckReport> => serial(() => runCheck(client, cfg, caps)).catch(asHalt),
    deliver: (batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> =>
      serial(() => delivery.run(batch, mode)).catch(asHalt),
    close: async () => {
      client.flushUsage();
    },
  };
}

export const connector: Connector<SalesforceConfig> = {
  id: 'salesforce',
  description: spec.description,
  config: SalesforceConfig,
  schema: spec,
  capabilities: {
    dryRun: true,
    backfill: true,
    suppressionModes: ['email-opt-out-field'],
    objects: ['Contact', 'Lead', 'PersonAccount'],
    statusKeys: [KV_API_USAGE],
  },
  // deliver() chunks lookups (~100 emails) and writes (200, or Bulk 2.0 above bulkThreshold) itself
  maxBatch: 5000,
  open: (config, caps) => openSalesforce(config, caps),
  example: () => ({
    '//': 'Salesforce: HasOptedOutOfEmail on Contacts and unconverted Leads. See connectors/salesforce/README.md.',
    loginUrl: 'https://login.salesforce.com',
    auth: {
      type: 'jwt',
      clientId: '${SF_CLIENT_ID}',
      username: '${SF_USERNAME}',
      privateKeyPath: '${SF_PRIVATE_KEY_PATH}',
    },
    objects: { Contact: { enabled: true }, Lead: { enabled: true } },
  }),
  emulator: (): EmulatorFactory => ({
    async start(world, opts) {
      const { SalesforceEmulator } = await import('./emulator');
      const server = await new SalesforceEmulator(world, { port: opts.port, host: opts.host }).start();
      const c = server.connection();
      // the JWT key the target config names, beside the config file (0600)
      fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
      const keyFile = path.join(opts.dir, 'salesforce-jwt.key');
      fs.writeFileSync(keyFile, c.privateKeyPem, { mode: 0o600 });
      return {
        url: c.instanceUrl,
        targetConfig: () => ({
          config: {
            loginUrl: c.loginUrl,
            apiVersion: c.apiVersion,
            // relative to the config file, written into the same folder
            auth: {
              type: 'jwt',
              clientId: '${SF_CLIENT_ID}',
              username: '${SF_USERNAME}',
              privateKeyPath: `./${path.basename(keyFile)}`,
            },
            objects: { Contact: { enabled: true }, Lead: { enabled: true } },
          },
          env: { SF_CLIENT_ID: c.clientId, SF_USERNAME: c.username },
        }),
        requestCounts: () => Object.fromEntries(server.counts),
        verify: () => world.verify().salesforce,
        stop: () => server.stop(),
      };
    },
  }),
};

export default connector;
