/**
 * Connector loading: the built-in connector folders (`connectors/<id>/`, found by listing the folder, loaded
 * on first use) and the plugins a config names (`"plugins": ["cc-optout-connector-dynamics", "./local/acme"]`).
 *
 * A connector is recognised by its shape, never by `instanceof`: an object with a string `id`, an `open`
 * function and a `config` codec with `decode` (see src/sdk). So a plugin built against its own copy of io-ts
 * or of this package loads. A plugin module exports `connector`, `connectors` (several) or a default export.
 *
 * Laziness: a built-in connector's module (and its vendor SDK) is required only when something asks for
 * that id (the config's targets, `spec`, `connectors`), so `init`, `--help`, `status` of a HubSpot-only
 * config do not load Salesforce's jsforce. Plugins are loaded when the config naming them is decoded.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Connector, ConnectorCapabilities } from './sdk';

/** A plugin or built-in connector that cannot be loaded; the message names it. Config decoding reports it (exit 2). */
export class PluginError extends Error {
  constructor(
    readonly plugin: string,
    message: string,
  ) {
    super(`plugin "${plugin}": ${message}`);
    this.name = 'PluginError';
  }
}

/** What `cc-optout connectors` shows for one loaded connector. */
export interface ConnectorInfo {
  id: string;
  version: string | null;
  /** Where it came from: "cc-optout-connector (built-in)", a package name, or a local folder. */
  package: string;
  module: string;
  description: string | null;
  capabilities: ConnectorCapabilities;
}

export interface Registry {
  /** Ids known so far, without loading anything (built-in folders, loaded plugins). */
  ids(): string[];
  /** The connector with this id, loading it on first use; undefined when no folder or plugin has it. */
  get(id: string): Connector<unknown> | undefined;
  /** Id, version, package, capabilities of a connector (loads it). */
  entry(id: string): ConnectorInfo | undefined;
  /** Every connector, all loaded (for `cc-optout connectors`). */
  list(): ConnectorInfo[];
  /** Load the plugins a config names: package names resolve from `baseDir`, the cwd, then this package; paths from `baseDir`. */
  usePlugins(specs: readonly string[], baseDir: string): void;
}

export interface RegistryOptions {
  /** Folder of built-in connector folders; default: the package's compiled `connectors/`. null: none. */
  connectorsDir?: string | null;
  /** Connectors given as values (tests, benchmarks). */
  connectors?: readonly Connector<unknown>[];
}

const DEFAULT_CAPABILITIES: ConnectorCapabilities = { dryRun: false, backfill: true, suppressionModes: [] };

/** The package root (where package.json lives), from either `src/` or `dist/src/`. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    const pkg = path.join(dir, 'package.json');
    if (
      fs.existsSync(pkg) &&
      (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'cc-optout-connector'
    )
      return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`package.json of cc-optout-connector not found above ${__dirname}`);
}

/** The directory compiled modules live in (dist/ when running compiled code). */
export function compiledRoot(): string {
  const root = packageRoot();
  const dist = path.join(root, 'dist');
  return __dirname.startsWith(dist) ? dist : root;
}

/** Why `x` is not a connector (null when it is one). Structural: any io-ts copy, any SDK copy. */
export function connectorProblem(x: unknown): string | null {
  const c = x as Partial<Connector<unknown>> | null;
  if (!c || typeof c !== 'object') return 'is not an object';
  if (typeof c.id !== 'string' || !/^[a-z0-9][a-z0-9._-]*$/.test(c.id))
    return `has no valid "id" (lower-case letters, digits, ".", "_", "-"), got ${JSON.stringify(c.id)}`;
  if (typeof c.open !== 'function') return `connector "${c.id}" has no open(config, caps) function`;
  if (!c.config || typeof (c.config as { decode?: unknown }).decode !== 'function')
    return `connector "${c.id}" has no config codec with decode()`;
  if (c.schema !== undefined && (typeof c.schema !== 'object' || c.schema === null))
    return `connector "${c.id}": schema must be a JSON Schema object`;
  return null;
}

/** The connectors a plugin module exports: `connectors` (array), `connector`, or a default export of either. */
function exported(mod: unknown): unknown[] | null {
  const m = mod as { connectors?: unknown; connector?: unknown; default?: unknown } | null;
  if (!m || (typeof m !== 'object' && typeof m !== 'function')) return null;
  if (Array.isArray(m.connectors)) return m.connectors;
  if (m.connector !== undefined) return [m.connector];
  if (m.default !== undefined && m.default !== m) return exported(m.default) ?? [m.default];
  return null;
}

function isPathSpec(spec: string): boolean {
  return spec.startsWith('./') || spec.startsWith('../') || path.isAbsolute(spec) || spec === '.' || spec === '..';
}

/** Resolve a plugin spec to a module file (PluginError naming it when it cannot be found). */
export function resolvePlugin(spec: string, baseDir: string): string {
  if (typeof spec !== 'string' || spec.trim() === '')
    throw new PluginError(String(spec), 'expected a package name or a path');
  try {
    if (isPathSpec(spec)) return require.resolve(path.resolve(baseDir, spec));
    return require.resolve(spec, { paths: [baseDir, process.cwd(), packageRoot()] });
  } catch (err) {
    const where = isPathSpec(spec)
      ? `no module at ${path.resolve(baseDir, spec)}`
      : `not installed (looked in node_modules from ${baseDir}, ${process.cwd()} and ${packageRoot()})`;
    throw new PluginError(spec, `${where}: ${(err as Error).message.split('\n')[0]}`);
  }
}

function versionOf(file: string): string | null {
  for (let dir = path.dirname(file), i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        return (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version?: string }).version ?? null;
      } catch {
        return null;
      }
    }
  }
  return null;
}

export function createRegistry(opts: RegistryOptions = {}): Registry {
  const dir = opts.connectorsDir === undefined ? path.join(compiledRoot(), 'connectors') : opts.connectorsDir;
  // built-in folders: id -> module folder (nothing required yet)
  const folders = new Map<string, string>();
  if (dir && fs.existsSync(dir)) {
    for (const name of fs.readdirSync(dir).sort()) {
      const folder = path.join(dir, name);
      if (fs.existsSync(path.join(folder, 'index.js')) || fs.existsSync(path.join(folder, 'index.ts')))
        folders.set(name, folder);
    }
  }
  const loaded = new Map<string, { connector: Connector<unknown>; info: ConnectorInfo }>();
  const plugins = new Set<string>();
  const own = (c: Connector<unknown>, pkg: string, module: string, version: string | null): ConnectorInfo => ({
    id: c.id,
    version: c.version ?? version,
    package: pkg,
    module,
    description: c.description ?? null,
    capabilities: { ...DEFAULT_CAPABILITIES, ...(c.capabilities ?? {}) },
  });
  for (const c of opts.connectors ?? []) {
    const problem = connectorProblem(c);
    if (problem) throw new PluginError(String((c as { id?: unknown })?.id), problem);
    loaded.set(c.id, { connector: c, info: own(c, 'in-process', '(value)', null) });
  }

  const loadFolder = (id: string): void => {
    const folder = folders.get(id)!;
    let mod: unknown;
    try {
      mod = require(folder);
    } catch (err) {
      throw new PluginError(`connectors/${id}`, `failed to load: ${(err as Error).message}`);
    }
    const list = exported(mod);
    const c = list?.find((x) => (x as { id?: unknown })?.id === id) ?? list?.[0];
    const problem = list ? connectorProblem(c) : 'exports no "connector"';
    if (problem) throw new PluginError(`connectors/${id}`, problem);
    if ((c as Connector<unknown>).id !== id)
      throw new PluginError(
        `connectors/${id}`,
        `exports connector id "${(c as Connector<unknown>).id}", expected "${id}" (the folder's name)`,
      );
    loaded.set(id, {
      connector: c as Connector<unknown>,
      info: own(
        c as Connector<unknown>,
        'cc-optout-connector (built-in)',
        `connectors/${id}`,
        versionOf(packageRoot() + '/package.json'),
      ),
    });
  };

  const loadPlugin = (spec: string, baseDir: string): void => {
    const file = resolvePlugin(spec, baseDir);
    if (plugins.has(file)) return;
    let mod: unknown;
    try {
      mod = require(file);
    } catch (err) {
      throw new PluginError(spec, `failed to load ${file}: ${(err as Error).message}`);
    }
    try {
      admit(spec, file, mod);
    } catch (err) {
      // a hostile or broken export (a getter that throws, a proxy) is the plugin's error, named as such
      if (err instanceof PluginError) throw err;
      throw new PluginError(spec, `${file}: reading its export failed: ${(err as Error)?.message ?? String(err)}`);
    }
    plugins.add(file);
  };
  const admit = (spec: string, file: string, mod: unknown): void => {
    const list = exported(mod);
    if (!list || list.length === 0)
      throw new PluginError(spec, `${file} exports no "connector" (or "connectors": [...]) object`);
    const version = versionOf(file);
    for (const c of list) {
      const problem = connectorProblem(c);
      if (problem) throw new PluginError(spec, problem);
      const conn = c as Connector<unknown>;
      const clash =
        loaded.get(conn.id)?.info.package ?? (folders.has(conn.id) ? 'cc-optout-connector (built-in)' : null);
      if (clash) throw new PluginError(spec, `connector id "${conn.id}" is already provided by ${clash}`);
      loaded.set(conn.id, { connector: conn, info: own(conn, spec, file, version) });
    }
  };

  const get = (id: string): { connector: Connector<unknown>; info: ConnectorInfo } | undefined => {
    if (!loaded.has(id) && folders.has(id)) loadFolder(id);
    return loaded.get(id);
  };

  return {
    ids: () => [...new Set([...folders.keys(), ...loaded.keys()])].sort(),
    get: (id) => get(id)?.connector,
    entry: (id) => get(id)?.info,
    list: () => [...new Set([...folders.keys(), ...loaded.keys()])].sort().map((id) => get(id)!.info),
    usePlugins: (specs, baseDir) => {
      for (const s of specs) loadPlugin(s, baseDir);
    },
  };
}
