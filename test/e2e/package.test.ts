/**
 * Issue 8 #23: the package as npm would publish it. `require('cc-optout-connector')` resolves through the
 * exports map to a file that exists and exports the public API; type declarations ship and only reference
 * packages a user installs; the connectors' READMEs (which `init` points to) and the LICENSE are in the tarball.
 *
 * Fast and offline: `npm pack --dry-run --json` gives the exact file list, and a project in a temp folder
 * reaches this package through node_modules (a symlink, as `npm link` makes) for `require` and for `tsc`.
 * The slow check, installing the real tarball with its dependencies from the registry (better-sqlite3
 * compiles for about a minute), runs in .ci/package-smoke, called by .ci/run.
 */
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import { builtinModules } from 'module';
import * as os from 'os';
import * as path from 'path';
import { packageRoot } from '../../src/plugin';

const ROOT = packageRoot();
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  license: string;
  main: string;
  types?: string;
  bin: Record<string, string>;
  exports?: Record<string, string | Record<string, string>>;
  dependencies: Record<string, string>;
};
const strip = (p: string): string => p.replace(/^\.\//, '');

describe('the npm package (issue 8 #23)', function () {
  this.timeout(120_000);
  let files: Set<string>;
  let tmp: string;

  before(() => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const parsed = JSON.parse(out) as Array<{ files: Array<{ path: string }> }>;
    files = new Set(parsed[0]!.files.map((f) => f.path));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-optout-pkg-'));
    // a consumer project: node_modules/cc-optout-connector -> this package (as `npm link` would)
    fs.mkdirSync(path.join(tmp, 'node_modules'), { recursive: true });
    fs.symlinkSync(ROOT, path.join(tmp, 'node_modules', pkg.name), 'dir');
    fs.writeFileSync(
      path.join(tmp, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }),
    );
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('ships every file package.json names: main, types, exports, bin; the LICENSE and the connectors READMEs', () => {
    const named = [pkg.main, pkg.types, ...Object.values(pkg.bin)];
    for (const target of Object.values(pkg.exports ?? {}))
      named.push(...(typeof target === 'string' ? [target] : Object.values(target)));
    assert.ok(pkg.types, 'package.json has "types"');
    assert.ok(
      pkg.exports && pkg.exports['.'] && pkg.exports['./package.json'],
      'package.json has an exports map with "." and "./package.json"',
    );
    for (const f of named) {
      assert.ok(f, 'a path in package.json');
      assert.ok(files.has(strip(f!)), `${f} is in the tarball`);
      assert.ok(fs.existsSync(path.join(ROOT, f!)), `${f} exists after the build`);
    }
    for (const f of [
      'LICENSE',
      'README.md',
      'connectors/hubspot/README.md',
      'connectors/salesforce/README.md',
      'dist/src/config.schema.json',
    ]) {
      assert.ok(files.has(f), `${f} is in the tarball`);
    }
    // the SDK a connector imports, with its declarations
    for (const f of [
      'dist/src/sdk/index.js',
      'dist/src/sdk/index.d.ts',
      'dist/src/sdk/emulator.js',
      'dist/src/sdk/emulator.d.ts',
    ])
      assert.ok(files.has(f), `${f} is in the tarball`);
    // every connector folder is shipped compiled, with its spec and README
    for (const id of fs.readdirSync(path.join(ROOT, 'connectors'))) {
      for (const f of [
        `dist/connectors/${id}/index.js`,
        `dist/connectors/${id}/spec.json`,
        `connectors/${id}/README.md`,
      ])
        assert.ok(files.has(f), `${f} is in the tarball`);
    }
    // and nothing of the tests or the TypeScript sources
    const stray = [...files].filter(
      (f) => f.startsWith('dist/test/') || f.startsWith('test/') || (/\.ts$/.test(f) && !/\.d\.ts$/.test(f)),
    );
    assert.deepEqual(stray, []);
  });

  it('the LICENSE is the MIT license package.json declares', () => {
    assert.equal(pkg.license, 'MIT');
    const text = fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8');
    assert.match(text, /^MIT License/);
    assert.match(text, /Permission is hereby granted, free of charge/);
  });

  it("require('cc-optout-connector') from another project resolves through the exports map to the public API", () => {
    const script = `
      const m = require(${JSON.stringify(pkg.name)});
      const fs = require('fs'), path = require('path');
      const out = { version: require(${JSON.stringify(pkg.name + '/package.json')}).version, resolved: require.resolve(${JSON.stringify(pkg.name)}) };
      out.functions = ['Engine', 'openApp', 'loadConfig', 'decodeConfig', 'createRegistry', 'openStore', 'createConstantContactSource', 'createLogger', 'RateLimiter', 'withRetry', 'redact']
        .filter((k) => typeof m[k] !== 'function');
      out.connectors = m.createRegistry().ids();
      const store = m.openStore(path.join(process.cwd(), 'state.db'));
      out.storeStatus = store.targetStatus([], new Date()).length;
      store.close();
      out.storeFile = fs.existsSync(path.join(process.cwd(), 'state.db'));
      try { require(${JSON.stringify(pkg.name + '/dist/src/engine')}); out.deep = 'resolved'; } catch (e) { out.deep = e.code; }
      process.stdout.write(JSON.stringify(out));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: tmp, encoding: 'utf8' })) as Record<
      string,
      unknown
    >;
    assert.equal(out.version, pkg.version);
    assert.equal(fs.realpathSync(out.resolved as string), fs.realpathSync(path.join(ROOT, pkg.main)));
    assert.deepEqual(out.functions, [], 'exported as functions');
    assert.deepEqual((out.connectors as string[]).sort(), ['hubspot', 'salesforce']);
    assert.equal(out.storeStatus, 0);
    assert.equal(out.storeFile, true);
    assert.equal(out.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'only the exports map is public');
  });

  it('a TypeScript project type-checks against the declarations (module node16, strict)', () => {
    fs.writeFileSync(
      path.join(tmp, 'consumer.ts'),
      `import { openApp, memoryLogger, createLogger, openStore, createRegistry, Engine } from ${JSON.stringify(pkg.name)};
import type { Connector, Target, HaltInfo, DeliveryReport, RunSummary, StateStore, Outcome, OptOut } from ${JSON.stringify(pkg.name)};
import { TargetHalt, isTargetHalt, defineConnector, strictObject, NonEmptyString } from ${JSON.stringify(pkg.name + '/sdk')};
import type { Capabilities } from ${JSON.stringify(pkg.name + '/sdk')};
import { json, World } from ${JSON.stringify(pkg.name + '/sdk/emulator')};

export async function syncOnce(configFile: string): Promise<RunSummary> {
  const app = openApp({ configFile, env: process.env, logger: memoryLogger() });
  try {
    return await app.engine.sync({ dryRun: true });
  } finally {
    await app.close();
  }
}
export const store: StateStore = openStore(':memory:');
// the README's library example
export const readmeApp = () => openApp({ configFile: './cc-optout.config.json', env: process.env, logger: createLogger({ format: 'text', level: 'info' }) });
export const ids: string[] = createRegistry().ids();
export const isEngine = (x: unknown): x is Engine => x instanceof Engine;
export const refused: HaltInfo = { kind: 'bad-request', message: 'one odd address' };
export const halt = new TargetHalt('quota', 'daily limit', { retryAt: '2030-01-01T00:00:00Z' });
export const halted: boolean = isTargetHalt(halt);
export const plugin = defineConnector({
  id: 'acme',
  config: strictObject('Acme', { crm: NonEmptyString }, {}),
  schema: { type: 'object' },
  capabilities: { dryRun: false, backfill: true, suppressionModes: [] },
  open: (_config, caps: Capabilities) => ({
    check: async () => ({ ok: true, items: [{ name: 'crm', ok: true, detail: caps.targetName }] }),
    deliver: async (batch) => ({ outcomes: batch.map((o): Outcome => ({ email: o.email, kind: 'not-found', recordIds: [] })) }),
  }),
});
export const answer = json(200, { ok: true });
export type AnyWorld = World;
export function report(batch: readonly OptOut[]): DeliveryReport {
  const outcomes: Outcome[] = batch.map((o) => ({ email: o.email, kind: 'not-found', recordIds: [] }));
  return { outcomes };
}
export type AnyConnector = Connector<{ crm: string }>;
export type AnyTarget = Target;
`,
    );
    fs.writeFileSync(
      path.join(tmp, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'node16',
          moduleResolution: 'node16',
          target: 'ES2022',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [path.join(ROOT, 'node_modules', '@types')],
        },
        files: ['consumer.ts'],
      }),
    );
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    try {
      execFileSync(process.execPath, [tsc, '-p', path.join(tmp, 'tsconfig.json')], {
        cwd: tmp,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      assert.fail(`tsc failed on the consumer:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    }
  });

  it('the declarations import only packages a user installs (dependencies that ship types, or Node built-ins)', () => {
    const seen = new Set<string>();
    const bare = new Map<string, string>();
    const walk = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      assert.ok(
        files.has(path.relative(ROOT, file).split(path.sep).join('/')),
        `${path.relative(ROOT, file)} is in the tarball`,
      );
      const text = fs
        .readFileSync(file, 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/\/\/.*$/gm, '');
      for (const m of text.matchAll(
        /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm,
      )) {
        const spec = m[1]!;
        if (spec.startsWith('.')) {
          const base = path.resolve(path.dirname(file), spec);
          const next = [`${base}.d.ts`, path.join(base, 'index.d.ts')].find((c) => fs.existsSync(c));
          assert.ok(next, `${path.relative(ROOT, file)}: ${spec} resolves to a declaration file`);
          walk(next!);
        } else {
          bare.set(spec, path.relative(ROOT, file));
        }
      }
    };
    walk(path.join(ROOT, pkg.types!));
    walk(path.join(ROOT, 'dist/src/sdk/index.d.ts'));
    walk(path.join(ROOT, 'dist/src/sdk/emulator.d.ts'));
    assert.ok(seen.size > 5, `${seen.size} declaration files reached`);
    for (const [spec, from] of bare) {
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      if (spec.startsWith('node:') || builtinModules.includes(name)) continue;
      assert.ok(name in pkg.dependencies, `${from} imports "${spec}", which is not in dependencies`);
      const depPkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as {
        types?: string;
        typings?: string;
      };
      const typed =
        !!(depPkg.types || depPkg.typings) ||
        fs.existsSync(path.join(ROOT, 'node_modules', name, 'index.d.ts')) ||
        `@types/${name}` in pkg.dependencies;
      assert.ok(typed, `${from} imports "${spec}", whose types a user would not have (only in devDependencies)`);
    }
  });
});
