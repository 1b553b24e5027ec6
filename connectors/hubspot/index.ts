/**
 * HubSpot target: opt-outs land in HubSpot's subscription status (Communication Preferences API),
 * never in `hs_email_optout` (read-only). See README.md beside this file.
 */
import { Capabilities, Connector, Target } from '../../src/plugin';
import { HubSpotApi } from './api';
import { HubSpotConfig, HubSpotConfigCodec, resolveConfig } from './config';
import { HubSpotTarget } from './target';

export type { HubSpotConfig } from './config';

export const connector: Connector<HubSpotConfig> = {
  id: 'hubspot',
  config: HubSpotConfigCodec,
  // deliver() chunks lookups and writes by 100 itself; bigger batches let writes fill whole chunks
  maxBatch: 1000,
  open(config: HubSpotConfig, caps: Capabilities): Target {
    const cfg = resolveConfig(config);
    return new HubSpotTarget(cfg, caps, new HubSpotApi(cfg, caps));
  },
};

export default connector;
