/**
 * The package's public API (`require('cc-optout-connector')`): what a program embedding the connector, or the
 * author of a new CRM connector, needs. The command line is the `cc-optout` bin (dist/src/cli.js).
 *
 *   import { openApp, memoryLogger } from 'cc-optout-connector';
 *   const app = openApp({ configFile: './cc-optout.config.json', env: process.env, logger });
 *   const summary = await app.engine.sync();
 *   await app.close();
 *
 * A connector imports only the SDK, `cc-optout-connector/sdk` (src/sdk: the contract, TargetHalt, Capabilities,
 * codec helpers); see README "Writing a connector". The types are re-exported here for embedding programs.
 */

// The connector contract (the SDK) and the connector registry (built-in folders, plugins)
export { createRegistry, packageRoot, PluginError } from './registry';
export type { ConnectorInfo, Registry, RegistryOptions } from './registry';
export { TargetHalt, isTargetHalt } from './sdk';
export type {
  CallCounter,
  Capabilities,
  CheckItem,
  CheckReport,
  Connector,
  DeliveryMode,
  DeliveryReport,
  HaltInfo,
  HaltKind,
  KeyValue,
  Target,
} from './sdk';
export { makeCapabilities } from './capabilities';

// Domain values
export { OUTCOME_KINDS, OPT_OUT_VALUE_KEYS, isFinal, isOptedOut, mappedValue, normaliseEmail } from './domain';
export type { MappedValue, ObservedContact, OptOut, OptOutValueKey, Outcome, OutcomeKind } from './domain';

// Config loading
export { ConfigError, DEFAULT_CONFIG_PATH, DEFAULT_STORE_PATH, decodeConfig, loadConfig } from './config';
export type { Config, ResolvedDelivery, ResolvedDetection, ResolvedSource, ResolvedTarget } from './config';

// The engine, and the wiring the CLI uses (config file -> store, registry, source, engine)
export { Engine, outcomeColumns } from './engine';
export type {
  BackfillOptions,
  DetectionSummary,
  EngineDeps,
  PlanEntry,
  ProgressEvent,
  RunSummary,
  SyncOptions,
  TargetSummary,
} from './engine';
export { openApp, openAppAsync, storePathFor } from './app';
export { openBackend, storeSpecFor } from './store/open';
export type { App, AppOptions } from './app';

// The state store (the SQLite implementation stays internal: its declarations would need @types/better-sqlite3)
import { openStore as openSqliteStore } from './store/sqlite';
import type { StateStore } from './store/types';
/** Open (creating and migrating as needed) the SQLite state store at `file` (or ':memory:'). */
export function openStore(file: string): StateStore {
  return openSqliteStore(file);
}
export { RunLocked } from './store/types';
export type { AuditRow, OutboxRow, StateStore, TargetStatus } from './store/types';

// The Constant Contact source
export { createConstantContactSource } from './source/constant-contact';
export { QuotaExceeded, ReauthorizationRequired, SourceError } from './source/types';
export type { OptOutSource, SourceDeps, SourcePage } from './source/types';

// Logging and the shared HTTP helpers for connectors
export { createLogger, memoryLogger, redact, registerSecret } from './log';
export type { Logger, LoggerOptions, LogLevel } from './log';
export { BudgetExhausted, RateLimiter, fakeClock, isTransientNetworkError, systemClock, withRetry } from './http';
export type { Clock, RetryPolicy } from './http';
