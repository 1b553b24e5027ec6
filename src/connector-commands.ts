/**
 * `cc-optout connectors [--json]`: the connectors this installation loads (built-in folders, and the plugins
 * the config names), with id, version, package and capabilities. `cc-optout spec [connector]`: the JSON
 * Schema of a connector's target config (like Airbyte's `spec`), or of the whole config file without one.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command } from 'commander';
import { ConfigError, parseJsonText } from './config';
import { EXIT, ExitError, GlobalOpts, out } from './cli-output';
import { PluginError, Registry, createRegistry } from './registry';
import { CONFIG_SCHEMA } from './spec';

/** The built-in connectors plus the config's plugins, when the config file exists (no secret is read). */
export function registryForConfig(configFile: string, registry: Registry = createRegistry()): Registry {
  if (!fs.existsSync(configFile) || fs.statSync(configFile).isDirectory()) return registry;
  const raw = parseJsonText(fs.readFileSync(configFile, 'utf8'), configFile) as { plugins?: unknown } | null;
  const plugins = raw && typeof raw === 'object' ? raw.plugins : undefined;
  if (plugins === undefined) return registry;
  if (!Array.isArray(plugins) || plugins.some((p) => typeof p !== 'string'))
    throw new ConfigError(['plugins: expected an array of package names or paths'], configFile);
  try {
    registry.usePlugins(plugins as string[], path.dirname(path.resolve(configFile)));
  } catch (err) {
    if (err instanceof PluginError) throw new ConfigError([`plugins: ${err.message}`], configFile);
    throw err;
  }
  return registry;
}

/** Every connector loaded (a connector that fails to load is a config error naming it). */
function listed(registry: Registry): ReturnType<Registry['list']> {
  try {
    return registry.list();
  } catch (err) {
    if (err instanceof PluginError) throw new ExitError(EXIT.config, err.message);
    throw err;
  }
}

export function registerConnectorCommands(program: Command, g: () => GlobalOpts): void {
  program
    .command('connectors')
    .description(
      'list the connectors this installation loads (built-in and the config\'s "plugins"): id, version, package, capabilities',
    )
    .action(() => {
      const infos = listed(registryForConfig(g().config));
      if (g().json) {
        out(
          JSON.stringify(
            infos.map(({ id, version, package: pkg, description, capabilities }) => ({
              id,
              version,
              package: pkg,
              description,
              capabilities,
            })),
            null,
            2,
          ),
        );
        return;
      }
      for (const c of infos) {
        const caps = c.capabilities;
        out(
          `${c.id}\t${c.version ?? '-'}\t${c.package}\tdry run ${caps.dryRun ? 'yes' : 'no'}, backfill ${caps.backfill ? 'yes' : 'no'}` +
            `${caps.suppressionModes.length ? `, suppression ${caps.suppressionModes.join('/')}` : ''}`,
        );
      }
    });

  program
    .command('spec')
    .argument('[connector]', 'connector id (see `cc-optout connectors`); without it, the whole config file')
    .description("print the JSON Schema of a connector's target config (or of the config file)")
    .action((id: string | undefined) => {
      if (id === undefined) {
        out(JSON.stringify(CONFIG_SCHEMA, null, 2));
        return;
      }
      const registry = registryForConfig(g().config);
      let c;
      try {
        c = registry.get(id);
      } catch (err) {
        if (err instanceof PluginError) throw new ExitError(EXIT.config, err.message);
        throw err;
      }
      if (!c)
        throw new ExitError(EXIT.config, `spec: unknown connector "${id}" (loaded: ${registry.ids().join(', ')})`);
      out(JSON.stringify(c.schema ?? {}, null, 2));
    });
}
