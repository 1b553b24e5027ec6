/**
 * Where the connector contract used to live. It moved:
 *  - the contract a connector implements (Connector, Target, TargetHalt, Capabilities, codec helpers) is the
 *    SDK, `src/sdk` (`cc-optout-connector/sdk`): the only module a connector imports;
 *  - loading connectors (built-in folders, lazily; plugins a config names) is `src/registry.ts`.
 * This file only re-exports both for code that still imports `./plugin`; new code imports the modules above.
 */
export type {
  CallCounter,
  Capabilities,
  CheckItem,
  CheckReport,
  Connector,
  DeliveryMode,
  DeliveryReport,
  HaltInfo,
  KeyValue,
  Target,
} from './sdk';
export { TargetHalt, isTargetHalt } from './sdk';
export { PluginError, compiledRoot, connectorProblem, createRegistry, packageRoot } from './registry';
export type { ConnectorInfo, Registry, RegistryOptions } from './registry';
