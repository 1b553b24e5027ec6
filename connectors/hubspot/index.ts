/**
 * HubSpot target: opt-outs land in HubSpot's subscription status (Communication Preferences API),
 * never in `hs_email_optout` (read-only). See README.md beside this file.
 *
 * The folder is the whole connector: code, spec.json (the config's JSON Schema; the io-ts codec in config.ts
 * is the source of truth and test/config.test.ts keeps them in step), example config, emulator, tests.
 */
import { Capabilities, Connector, EmulatorFactory, Target } from '../../src/sdk';
import { HubSpotApi } from './api';
import { HubSpotConfig, HubSpotConfigCodec, resolveConfig } from './config';
import { HubSpotTarget } from './target';
import spec from './spec.json';

export type { HubSpotConfig } from './config';

export const connector: Connector<HubSpotConfig> = {
  id: 'hubspot',
  description: spec.description,
  config: HubSpotConfigCodec,
  schema: spec,
  capabilities: {
    dryRun: true,
    backfill: true,
    suppressionModes: ['unsubscribe-all', 'subscriptions'],
    statusKeys: ['hubspot.batch.unsubscribe-all', 'hubspot.batch.subscriptions'],
  },
  // deliver() chunks lookups and writes by 100 itself; bigger batches let writes fill whole chunks
  maxBatch: 1000,
  open(config: HubSpotConfig, caps: Capabilities): Target {
    const cfg = resolveConfig(config);
    return new HubSpotTarget(cfg, caps, new HubSpotApi(cfg, caps));
  },
  example: () => ({
    '//': 'HubSpot: opt-outs land in the subscription status (Communication Preferences API, API version 2026-09). Auth: a Service Key (Development > Keys > Service keys); private-app tokens and OAuth work too. See connectors/hubspot/README.md.',
    auth: { type: 'service-key', serviceKey: '${HUBSPOT_SERVICE_KEY}' },
    suppression: { type: 'unsubscribe-all', batch: 'auto' },
    onlyExistingContacts: true,
  }),
  emulator: (): EmulatorFactory => ({
    async start(world, opts) {
      // loaded only when an emulator is wanted (demo, emulate, e2e): deliver-only runs never load it
      const { HubSpotEmulator } = await import('./emulator');
      const server = await new HubSpotEmulator(world, { port: opts.port, host: opts.host }).start();
      const c = server.connection();
      return {
        url: c.baseUrl,
        targetConfig: () => ({
          config: {
            baseUrl: c.baseUrl,
            auth: { type: 'service-key', serviceKey: '${HUBSPOT_SERVICE_KEY}' },
            suppression: { type: 'unsubscribe-all', batch: 'auto' },
            onlyExistingContacts: true,
          },
          env: { HUBSPOT_SERVICE_KEY: c.serviceKey },
        }),
        requestCounts: () => Object.fromEntries(server.counts),
        verify: () => world.verify().hubspot,
        stop: () => server.stop(),
      };
    },
  }),
};

export default connector;
