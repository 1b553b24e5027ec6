/**
 * Local emulators of the Constant Contact V3, HubSpot and Salesforce APIs the connector uses, sharing one
 * generated dataset, for the demo (`cc-optout emulate`), end-to-end tests and safe mapping trials.
 *
 *   const emu = await startEmulators({ seed: 7, contacts: 20_000 });
 *   emu.cc.apiBaseUrl; emu.hubspot.baseUrl; emu.salesforce.instanceUrl;   // 127.0.0.1, ephemeral ports
 *   emu.addOptOuts(25);                                                  // new opt-outs, "now"
 *   emu.faults.set({ fail5xxRate: 0.1, hubspot: { batchAllowed: false } });
 *   emu.verify();                                                        // CRM state vs ground truth
 *   await emu.stop();
 *
 * Every server also answers `GET /__emulator/state` (ground truth, CRM state, knobs, request counts per
 * endpoint), `POST /__emulator/faults` (knobs as JSON, e.g. {"force429Storm": 5, "expireTokens": true}),
 * `GET /__emulator/connection`, `/__emulator/truth`, `/__emulator/verify` and `POST /__emulator/reset-counts`;
 * Constant Contact also `POST /__emulator/optouts` ({"count": n} or {"specs": [...]}) and
 * `POST /__emulator/refresh-token`; Salesforce `POST /__emulator/delete` ({"ids": [...]}).
 */
import { CC_DEFAULTS, CcConnection, CcKnobs, CcServerOptions, ConstantContactEmulator } from './constant-contact';
import { DatasetOptions } from './dataset';
import { CommonKnobs, EndpointCount } from './http';
import {
  HUBSPOT_DEFAULTS,
  HubSpotConnection,
  HubSpotEmulator,
  HubSpotKnobs,
  HubSpotServerOptions,
} from '../../connectors/hubspot/emulator';
import {
  SALESFORCE_DEFAULTS,
  SalesforceConnection,
  SalesforceEmulator,
  SalesforceKnobs,
  SalesforceServerOptions,
} from '../../connectors/salesforce/emulator';
import { AddOptOutSpec, AddedOptOut, GroundTruth, Verification, World } from './world';

export { World } from './world';
export type {
  AddOptOutSpec,
  AddedOptOut,
  GroundTruth,
  HardCases,
  OptOutTruth,
  CaseRef,
  Verification,
  TargetVerification,
  SecondaryMatch,
  SecondaryVerification,
} from './world';
export { generateDataset, MIN_CONTACTS } from './dataset';
export type { DatasetOptions, Dataset, CcContact, HsContact, HsAdditionalEmail, SfRecord } from './dataset';
export { splitAdditionalEmails } from './dataset';
export { ConstantContactEmulator, CC_DEFAULTS } from './constant-contact';
export type { CcKnobs, CcConnection, CcServerOptions } from './constant-contact';
export {
  HubSpotEmulator,
  HUBSPOT_DEFAULTS,
  HUBSPOT_DEFAULT_SCOPES,
  HUBSPOT_DEFAULT_CUSTOM_PROPERTIES,
  HUBSPOT_API_VERSIONS,
  HUBSPOT_LEGACY_PATH,
} from '../../connectors/hubspot/emulator';
export type { HubSpotKnobs, HubSpotConnection, HubSpotServerOptions } from '../../connectors/hubspot/emulator';
export {
  SalesforceEmulator,
  SALESFORCE_DEFAULTS,
  SALESFORCE_API_VERSION,
  MAX_URI_BYTES,
} from '../../connectors/salesforce/emulator';
export type {
  SalesforceKnobs,
  SalesforceConnection,
  SalesforceServerOptions,
} from '../../connectors/salesforce/emulator';
export { COMMON_DEFAULTS } from './http';
export type { CommonKnobs, EndpointCount } from './http';
export { escapeSoql, parseSoql } from '../../connectors/salesforce/emulator/soql';

type Knobless<T> = Omit<T, 'port' | 'host' | 'seed'>;

export interface EmulatorOptions extends DatasetOptions {
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Fixed ports; 0 or absent = ephemeral. */
  ports?: { cc?: number; hubspot?: number; salesforce?: number };
  /** Clock shared by the three servers and the dataset (default Date.now). */
  now?: () => number;
  /** Use an existing world (dataset + state) instead of generating one. */
  world?: World;
  /** Initial common knobs for all three servers. */
  faults?: Partial<CommonKnobs>;
  cc?: Knobless<CcServerOptions>;
  hubspot?: Knobless<HubSpotServerOptions>;
  salesforce?: Knobless<SalesforceServerOptions>;
}

/** Knob changes: top-level common knobs apply to all three; per-vendor objects add vendor knobs. */
export type FaultPatch = Partial<CommonKnobs> & {
  /** Invalidate every current access token on all three (HubSpot: OAuth tokens; private app tokens never expire). */
  expireTokens?: boolean;
  cc?: Partial<CcKnobs> & { expireTokens?: boolean; dailyUsed?: number };
  hubspot?: Partial<HubSpotKnobs> & { expireTokens?: boolean; dailyUsed?: number };
  salesforce?: Partial<SalesforceKnobs> & { expireTokens?: boolean; dailyUsed?: number };
};

export interface FaultControl {
  /** Apply knobs; throws (and applies nothing to that vendor) when a knob is unknown or mistyped. */
  set(patch: FaultPatch): void;
  get(): { cc: CcKnobs; hubspot: HubSpotKnobs; salesforce: SalesforceKnobs };
  /** Invalidate current access tokens (all vendors by default). */
  expireTokens(vendor?: 'cc' | 'hubspot' | 'salesforce'): void;
  /** Back to the defaults (and the initial `faults` option). */
  reset(): void;
}

export interface Emulators {
  cc: CcConnection;
  hubspot: HubSpotConnection;
  salesforce: SalesforceConnection;
  servers: { cc: ConstantContactEmulator; hubspot: HubSpotEmulator; salesforce: SalesforceEmulator };
  world: World;
  /** Ground truth, recomputed from the current state (opt-outs added at run time included). */
  truth(): GroundTruth;
  /** CRM state against the ground truth: missing suppressions, unexpected changes, repeated writes. */
  verify(): Verification;
  /** New opt-outs happening now (n existing subscribed contacts, or explicit specs). */
  addOptOuts(arg: number | readonly AddOptOutSpec[]): AddedOptOut[];
  faults: FaultControl;
  /** Requests per endpoint label, per vendor. */
  requestCounts(): {
    cc: Record<string, EndpointCount>;
    hubspot: Record<string, EndpointCount>;
    salesforce: Record<string, EndpointCount>;
  };
  stop(): Promise<void>;
}

function makeWorld(opts: EmulatorOptions): World {
  return (
    opts.world ??
    new World({
      seed: opts.seed,
      contacts: opts.contacts,
      anchor: opts.anchor,
      optOutRate: opts.optOutRate,
      personAccounts: opts.personAccounts,
      now: opts.now,
    })
  );
}

export interface SingleEmulatorOptions<S> extends DatasetOptions {
  world?: World;
  now?: () => number;
  port?: number;
  host?: string;
  server?: Knobless<S>;
}

export async function startConstantContact(
  opts: SingleEmulatorOptions<CcServerOptions> = {},
): Promise<ConstantContactEmulator> {
  return new ConstantContactEmulator(makeWorld(opts), {
    ...(opts.server ?? {}),
    port: opts.port,
    host: opts.host,
  }).start();
}

export async function startHubSpot(opts: SingleEmulatorOptions<HubSpotServerOptions> = {}): Promise<HubSpotEmulator> {
  return new HubSpotEmulator(makeWorld(opts), { ...(opts.server ?? {}), port: opts.port, host: opts.host }).start();
}

export async function startSalesforce(
  opts: SingleEmulatorOptions<SalesforceServerOptions> = {},
): Promise<SalesforceEmulator> {
  return new SalesforceEmulator(makeWorld(opts), { ...(opts.server ?? {}), port: opts.port, host: opts.host }).start();
}

export async function startEmulators(opts: EmulatorOptions = {}): Promise<Emulators> {
  const world = makeWorld(opts);
  const common = opts.faults ?? {};
  const cc = new ConstantContactEmulator(world, {
    ...(opts.cc ?? {}),
    knobs: { ...common, ...(opts.cc?.knobs ?? {}) },
    port: opts.ports?.cc,
    host: opts.host,
  });
  const hubspot = new HubSpotEmulator(world, {
    ...(opts.hubspot ?? {}),
    knobs: { ...common, ...(opts.hubspot?.knobs ?? {}) },
    port: opts.ports?.hubspot,
    host: opts.host,
  });
  const salesforce = new SalesforceEmulator(world, {
    ...(opts.salesforce ?? {}),
    knobs: { ...common, ...(opts.salesforce?.knobs ?? {}) },
    port: opts.ports?.salesforce,
    host: opts.host,
  });
  const initial = { cc: { ...cc.knobs }, hubspot: { ...hubspot.knobs }, salesforce: { ...salesforce.knobs } };
  try {
    await Promise.all([cc.start(), hubspot.start(), salesforce.start()]);
  } catch (e) {
    await Promise.all([cc.stop(), hubspot.stop(), salesforce.stop()]);
    throw e;
  }
  const servers = { cc, hubspot, salesforce };
  const commonKeys = Object.keys(initial.cc).filter((k) => k in initial.hubspot && k in initial.salesforce);

  const faults: FaultControl = {
    set(patch) {
      const shared: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(patch)) {
        if (k === 'cc' || k === 'hubspot' || k === 'salesforce') continue;
        if (k !== 'expireTokens' && !commonKeys.includes(k))
          throw new Error(`unknown common knob "${k}" (vendor knobs go under cc/hubspot/salesforce)`);
        shared[k] = v;
      }
      const problems: string[] = [];
      for (const key of ['cc', 'hubspot', 'salesforce'] as const) {
        const p = { ...shared, ...((patch[key] as Record<string, unknown> | undefined) ?? {}) };
        if (Object.keys(p).length === 0) continue;
        for (const msg of servers[key].setKnobs(p)) problems.push(`${key}: ${msg}`);
      }
      if (problems.length) throw new Error(`invalid knobs: ${problems.join('; ')}`);
    },
    get: () => ({ cc: { ...cc.knobs }, hubspot: { ...hubspot.knobs }, salesforce: { ...salesforce.knobs } }),
    expireTokens(vendor) {
      for (const key of ['cc', 'hubspot', 'salesforce'] as const)
        if (!vendor || vendor === key) servers[key].expireTokens();
    },
    reset() {
      Object.assign(cc.knobs, initial.cc);
      Object.assign(hubspot.knobs, initial.hubspot);
      Object.assign(salesforce.knobs, initial.salesforce);
      cc.setKnobs({});
      hubspot.setKnobs({});
      salesforce.setKnobs({});
    },
  };

  return {
    cc: cc.connection(),
    hubspot: hubspot.connection(),
    salesforce: salesforce.connection(),
    servers,
    world,
    truth: () => world.truth(),
    verify: () => world.verify(),
    addOptOuts: (arg) => world.addOptOuts(arg),
    faults,
    requestCounts: () => ({
      cc: Object.fromEntries(cc.counts),
      hubspot: Object.fromEntries(hubspot.counts),
      salesforce: Object.fromEntries(salesforce.counts),
    }),
    stop: async () => {
      await Promise.all([cc.stop(), hubspot.stop(), salesforce.stop()]);
    },
  };
}

/** Defaults of every vendor knob (for documentation and `cc-optout emulate --help`). */
export const DEFAULT_KNOBS = { cc: CC_DEFAULTS, hubspot: HUBSPOT_DEFAULTS, salesforce: SALESFORCE_DEFAULTS };

export interface MinimumCallsOptions {
  /** Constant Contact page size (max 500). */
  ccPageSize?: number;
  /** HubSpot v4 batch unsubscribe-all available (else one call per email). */
  hubspotBatchAllowed?: boolean;
  /** Emails per HubSpot batch read / batch unsubscribe (100). */
  hubspotBatch?: number;
  /**
   * Look the emails without a primary-address contact up by CRM search on hs_additional_emails (default
   * true), `hubspotSearchBatch` (100: one IN filter) per search.
   */
  hubspotSearch?: boolean;
  hubspotSearchBatch?: number;
  /** Emails per Salesforce SOQL lookup (about 100 keeps URLs under 16 KB). */
  sfQueryChunk?: number;
  /** Salesforce objects looked up per chunk (Contact, Lead = 2; 3 with Person Accounts). */
  sfObjects?: number;
}

/**
 * A lower bound of API calls for delivering every current opt-out once, for "API calls against the minimum"
 * reports: read each opt-out once from Constant Contact, look each email up once per CRM, write only what
 * is not suppressed yet, in the largest batches each API allows. Token requests are not counted.
 * HubSpot: ceil(E/100) batch reads + ceil(F/100) searches for the F emails no primary address matched +
 * the writes (every address to unsubscribe, primary or secondary: per email, or per 100 with batch). With batch
 * endpoints, + ceil(S/100) address status reads for the S secondary matches (a secondary address's own status is
 * in no lookup; already-unsubscribed ones then need no write). Without them (`hubspotBatchAllowed: false`) the
 * status cannot be read at batch cost, so every secondary match is written.
 */
export function minimumCalls(
  truth: GroundTruth,
  opts: MinimumCallsOptions = {},
): { cc: number; hubspot: number; salesforce: number; total: number } {
  const page = opts.ccPageSize ?? 500;
  const hsBatch = opts.hubspotBatch ?? 100;
  const chunk = opts.sfQueryChunk ?? 100;
  const objects = opts.sfObjects ?? 2;
  const n = truth.optedOutEmails.length;
  const cc = Math.max(1, Math.ceil(n / page));
  const batchAllowed = opts.hubspotBatchAllowed !== false;
  const secondaryMatches = truth.hubspot.secondaryMatches.length;
  const hsWrites =
    truth.hubspot.emailsToUnsubscribe.length + (batchAllowed ? 0 : truth.hubspot.secondaryAlreadyUnsubscribed.length);
  const statusReads = batchAllowed && opts.hubspotSearch !== false ? Math.ceil(secondaryMatches / hsBatch) : 0;
  const notPrimary = truth.hubspot.secondaryMatches.length + truth.hubspot.missingEmails.length;
  const searches = opts.hubspotSearch === false ? 0 : Math.ceil(notPrimary / (opts.hubspotSearchBatch ?? 100));
  const hubspot =
    Math.ceil(n / hsBatch) + searches + statusReads + (batchAllowed ? Math.ceil(hsWrites / hsBatch) : hsWrites);
  const sfRecords = truth.salesforce.toSuppress.length + truth.salesforce.personAccountsToSuppress.length;
  const salesforce = objects * Math.ceil(n / chunk) + Math.ceil(sfRecords / 200);
  return { cc, hubspot, salesforce, total: cc + hubspot + salesforce };
}
