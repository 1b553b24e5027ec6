/**
 * The JSON Schema of the config file (src/config.schema.json; `cc-optout spec` prints it). The io-ts codecs in
 * src/config.ts are the source of truth; test/unit/manifest.test.ts checks this schema against them on
 * test/fixtures/core/configs.json. Each connector's own schema is `connector.schema` (connectors/<id>/spec.json).
 */
import configSchema from './config.schema.json';

export const CONFIG_SCHEMA: Record<string, unknown> = configSchema;
/** The `source` section's schema (Constant Contact). */
export const SOURCE_SCHEMA: Record<string, unknown> = configSchema.definitions.source;
