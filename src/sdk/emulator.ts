/**
 * The emulator kit for connector emulators (`cc-optout-connector/sdk/emulator`): the core's HTTP server base
 * and helpers (routes, knobs, rolling windows, daily counters), the shared World (one generated dataset the
 * Constant Contact emulator and every CRM emulator see) and its record types, and small deterministic helpers
 * (seeded PRNG, CSV, Salesforce ids). A connector's emulator imports only this module (and `./index` types).
 */
export {
  COMMON_DEFAULTS,
  BadRequestBody,
  DailyCounter,
  EmulatorServer,
  RollingWindow,
  Router,
  applyKnobs,
  basicAuth,
  bearer,
  empty,
  json,
  parseForm,
  parseJson,
  text,
} from '../emulators/http';
export type {
  CommonKnobs,
  EmuRequest,
  EmuResponse,
  EndpointCount,
  Handler,
  Route,
  RouteKind,
  ServerOptions,
  Vendor,
} from '../emulators/http';
export { World } from '../emulators/world';
export type { GroundTruth, Verification, WorldOptions } from '../emulators/world';
export { MIN_CONTACTS, splitAdditionalEmails } from '../emulators/dataset';
export type { DatasetOptions, HsContact, HsAdditionalEmail, SfRecord, SfType } from '../emulators/dataset';
export { createRng, deriveSeed } from '../emulators/prng';
export type { Rng } from '../emulators/prng';
export { parseCsv, toCsv } from '../emulators/csv';
export { KEY_PREFIX, makeSfId, to18 } from '../emulators/sfid';
export type { EmulatorFactory, EmulatorStartOptions, RunningEmulator } from './index';
