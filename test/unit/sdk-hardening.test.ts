/**
 * Issue 10: the connector SDK and installed connectors.
 *  - connectors (connectors/*, packages/*) import nothing of src/ but the SDK;
 *  - connectors load structurally: a plugin with its own codec object and its own halt class works;
 *  - plugins by package name (node_modules beside the config) and by local folder (relative to the config);
 *  - broken plugins are config errors naming the plugin (exit 2);
 *  - `connectors` and `spec` outputs; lazy loading (only the targets' connectors are required).
 */
import assert from 'assert';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ConfigError, loadConfig } from '../../src/config';
import { Engine } from '../../src/engine';
import { createRegistry, packageRoot, PluginError } from '../../src/registry';
import { SqliteStateStore } from '../../src/store/sqlite';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { HALT_BRAND, TargetHalt, isTargetHalt } from '../../src/sdk';
import { readTargetFailure } from '../../src/engine';
import { FakeSource, MEMORY_PLUGIN, contact, runCliSync } from '../helpers';
import { exampleConfig } from '../../src/init';

const ROOT = packageRoot();
const ACME = path.join(ROOT, 'test', 'fixtures', 'plugins', 'acme');

/** Every import/require specifier of a TypeScript or JavaScript file (comments stripped). */
function specifiers(file: string): string[] {
  const text = fs
    .readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '');
  return [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm)].map(
    (m) => m[1]!,
  );
}

function sourceFiles(dir: string, skipTests: boolean): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name === 'node_modules' || e.name === 'dist' || (skipTests && e.name === 'test')) continue;
      out.push(...sourceFiles(p, skipTests));
    } else if (/\.(ts|js|mjs|cjs)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Imports of `file` that reach into this package's src/ (or its public name) other than the SDK. */
export function nonSdkImports(file: string): string[] {
  const src = path.join(ROOT, 'src');
  const allowed = [path.join(src, 'sdk'), path.join(src, 'sdk', 'index'), path.join(src, 'sdk', 'emulator')];
  return specifiers(file).filter((spec) => {
    if (spec.startsWith('.')) {
      const target = path.resolve(path.dirname(file), spec).replace(/\.(ts|js)$/, '');
      return (target === src || target.startsWith(src + path.sep)) && !allowed.includes(target);
    }
    if (spec === 'cc-optout-connector' || spec.startsWith('cc-optout-connector/'))
      return !['cc-optout-connector/sdk', 'cc-optout-connector/sdk/emulator'].includes(spec);
    return false;
  });
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cc-optout-sdk-'));
}

function writeConfig(dir: string, extra: Record<string, unknown>, targets: unknown[]): string {
  const file = path.join(dir, 'cc-optout.config.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      source: { type: 'constant-contact', clientId: 'abc' },
      store: { path: './state.db' },
      targets,
      ...extra,
    }),
  );
  return file;
}

function copyDir(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

const acmeTarget = { name: 'acme-main', connector: 'acme', config: { account: 'A-1' } };

describe('connector SDK (issue 10)', () => {
  describe('connectors import only the SDK', () => {
    const files = [
      ...sourceFiles(path.join(ROOT, 'connectors'), true),
      ...sourceFiles(path.join(ROOT, 'packages'), true),
    ];

    it('scans every connector source file (connectors/*, packages/*; tests excepted)', () => {
      assert.ok(
        files.some((f) => f.endsWith(path.join('hubspot', 'target.ts'))) &&
          files.some((f) => f.endsWith(path.join('salesforce', 'emulator', 'index.ts'))),
        `${files.length} files`,
      );
    });

    it('no connector file imports src/ other than src/sdk (or src/sdk/emulator)', () => {
      const bad = files.flatMap((f) => nonSdkImports(f).map((s) => `${path.relative(ROOT, f)}: ${s}`));
      assert.deepStrictEqual(bad, []);
    });

    it('the scan catches a deep import (src/plugin, src/http/single-flight, the package root)', () => {
      const dir = path.join(ROOT, 'connectors', '__scan_probe__');
      fs.mkdirSync(dir, { recursive: true });
      const probe = path.join(dir, 'index.ts');
      try {
        fs.writeFileSync(
          probe,
          "import { x } from '../../src/plugin';\nimport { singleFlight } from '../../src/http/single-flight';\nimport { TargetHalt } from '../../src/sdk';\nconst m = require('cc-optout-connector');\n",
        );
        assert.deepStrictEqual(nonSdkImports(probe), [
          '../../src/plugin',
          '../../src/http/single-flight',
          'cc-optout-connector',
        ]);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('TargetHalt', () => {
    it('is recognised by its brand, not by class: a halt from another copy of the SDK counts', () => {
      class OtherCopyHalt extends Error {
        constructor(
          readonly kind: string,
          message: string,
          readonly retryAt?: string,
        ) {
          super(message);
          (this as unknown as Record<symbol, boolean>)[Symbol.for('cc-optout.halt')] = true;
        }
      }
      const foreign = new OtherCopyHalt('rate-limit', 'slow down', '2030-01-01T00:00:00.000Z');
      assert.ok(!(foreign instanceof TargetHalt));
      assert.ok(isTargetHalt(foreign));
      assert.ok(isTargetHalt(new TargetHalt('auth', 'refused')));
      assert.strictEqual(HALT_BRAND, Symbol.for('cc-optout.halt'));
      // not a halt: no brand, or an unknown kind
      assert.ok(!isTargetHalt(new Error('x')));
      assert.ok(!isTargetHalt(new OtherCopyHalt('nonsense', 'x')));
      const read = readTargetFailure(foreign);
      assert.deepStrictEqual(read.halt, {
        kind: 'rate-limit',
        message: 'slow down',
        retryAt: '2030-01-01T00:00:00.000Z',
      });
      assert.strictEqual(read.halted, true);
      assert.strictEqual(readTargetFailure(new Error('boom')).halted, false);
    });

    it('keeps its message and outcomes when rebuilt (an Error message is not enumerable)', () => {
      const h = new TargetHalt({ kind: 'quota', message: 'daily limit', retryAt: '2030-01-01T00:00:00Z' });
      const again = h.withOutcomes([{ email: 'a@x.com', kind: 'applied', recordIds: ['1'] }]);
      assert.strictEqual(again.message, 'daily limit');
      assert.strictEqual(again.retryAt, '2030-01-01T00:00:00Z');
      assert.strictEqual(again.outcomes!.length, 1);
    });
  });

  describe('plugins named in the config', () => {
    let dir: string;
    beforeEach(() => {
      dir = tmpDir();
      (globalThis as Record<string, unknown>).__acmeCrm = { suppressed: new Set<string>(), haltAfter: null };
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('a local folder, relative to the config file: loads structurally (its own codec object, no io-ts) and decodes its target', () => {
      copyDir(ACME, path.join(dir, 'connectors-local', 'acme'));
      const file = writeConfig(dir, { plugins: ['./connectors-local/acme'] }, [acmeTarget]);
      const registry = createRegistry();
      const config = loadConfig(file, {}, registry);
      assert.deepStrictEqual(config.targets[0]!.config, { account: 'A-1' });
      assert.deepStrictEqual(registry.entry('acme')!.package, './connectors-local/acme');
      assert.strictEqual(registry.entry('acme')!.version, '1.2.3');
      // the plugin's own codec reports errors in io-ts's shape: the config error names the field
      const bad = writeConfig(dir, { plugins: ['./connectors-local/acme'] }, [
        { ...acmeTarget, config: { account: '' } },
      ]);
      assert.throws(
        () => loadConfig(bad, {}, createRegistry()),
        (e: Error) =>
          e instanceof ConfigError &&
          /targets\[0\]\.config\.account: account: expected a non-empty string/.test(e.message),
      );
    });

    it('a package name, resolved from node_modules beside the config file', () => {
      copyDir(ACME, path.join(dir, 'node_modules', 'cc-optout-connector-acme'));
      const file = writeConfig(dir, { plugins: ['cc-optout-connector-acme'] }, [acmeTarget]);
      const registry = createRegistry();
      loadConfig(file, {}, registry);
      const info = registry.entry('acme')!;
      assert.strictEqual(info.package, 'cc-optout-connector-acme');
      assert.strictEqual(
        fs.realpathSync(info.module),
        fs.realpathSync(path.join(dir, 'node_modules', 'cc-optout-connector-acme', 'index.js')),
      );
      assert.deepStrictEqual(info.capabilities.suppressionModes, ['acme-flag']);
    });

    it("the engine honours the plugin's own halt class: settled outcomes kept, the rest deferred to retryAt", async () => {
      copyDir(ACME, path.join(dir, 'acme'));
      const file = writeConfig(dir, { plugins: ['./acme'], store: { path: ':memory:' } }, [acmeTarget]);
      const registry = createRegistry();
      const config = loadConfig(file, {}, registry);
      (globalThis as { __acmeCrm?: { haltAfter: number | null } }).__acmeCrm!.haltAfter = 2;
      const source = new FakeSource();
      source.contacts = ['a@x.com', 'b@x.com', 'c@x.com', 'd@x.com'].map((e, i) =>
        contact(e, 'unsubscribed', `2026-05-0${i + 1}T00:00:00Z`),
      );
      const store = new SqliteStateStore(':memory:');
      const engine = new Engine({
        config,
        store,
        registry,
        source: () => source,
        clock: fakeClock(new Date('2026-06-01T12:00:00Z')),
        logger: memoryLogger(),
        random: () => 0.5,
      });
      const summary = await engine.sync();
      await engine.close();
      const t = summary.targets['acme-main']!;
      assert.match(t.halted ?? '', /^quota: Acme daily limit reached/);
      assert.strictEqual(t.outcomes.applied, 2);
      assert.strictEqual(t.queued, 2, 'the two not delivered stay queued');
      assert.strictEqual(
        store.dueOutbox('acme-main', new Date('2998-12-31T00:00:00Z'), 10).length,
        0,
        "deferred to the halt's retryAt",
      );
      store.close();
    });

    for (const [what, write, pattern] of [
      [
        'a missing export',
        (d: string) => fs.writeFileSync(path.join(d, 'index.js'), 'exports.nothing = 1;\n'),
        /plugin "\.\/broken": .*exports no "connector"/,
      ],
      [
        'a module that throws on load',
        (d: string) => fs.writeFileSync(path.join(d, 'index.js'), "throw new Error('acme init failed');\n"),
        /plugin "\.\/broken": failed to load .*acme init failed/,
      ],
      [
        'an object that is not a connector',
        (d: string) => fs.writeFileSync(path.join(d, 'index.js'), "exports.connector = { id: 'x', open() {} };\n"),
        /plugin "\.\/broken": connector "x" has no config codec with decode\(\)/,
      ],
      [
        'an export whose id getter throws',
        (d: string) =>
          fs.writeFileSync(
            path.join(d, 'index.js'),
            "exports.connector = { get id() { throw new Error('hostile getter'); }, open() {}, config: { decode() {} } };\n",
          ),
        /plugin "\.\/broken": .*reading its export failed: hostile getter/,
      ],
      [
        "a duplicate id (a built-in connector's)",
        (d: string) =>
          fs.writeFileSync(
            path.join(d, 'index.js'),
            "exports.connector = { id: 'hubspot', open() {}, config: { decode: () => ({ _tag: 'Right', right: {} }) } };\n",
          ),
        /plugin "\.\/broken": connector id "hubspot" is already provided by cc-optout-connector \(built-in\)/,
      ],
    ] as const) {
      it(`${what}: a config error naming the plugin (exit 2, before any store is created)`, () => {
        fs.mkdirSync(path.join(dir, 'broken'));
        write(path.join(dir, 'broken'));
        const file = writeConfig(dir, { plugins: ['./broken'] }, [
          { name: 'hs', connector: 'hubspot', config: { auth: { type: 'private-app', accessToken: 'pat-na1-x' } } },
        ]);
        assert.throws(
          () => loadConfig(file, {}, createRegistry()),
          (e: Error) => e instanceof ConfigError && pattern.test(e.message),
        );
        const r = runCliSync(['--config', file, 'check']);
        assert.strictEqual(r.code, 2, r.stderr);
        assert.match(r.stderr, pattern);
        assert.ok(!fs.existsSync(path.join(dir, 'state.db')), 'no store created');
      });
    }

    it('a plugin that is not installed is named, with where it was looked for', () => {
      const file = writeConfig(dir, { plugins: ['cc-optout-connector-nowhere'] }, [acmeTarget]);
      assert.throws(
        () => loadConfig(file, {}, createRegistry()),
        (e: Error) =>
          e instanceof ConfigError &&
          /plugins\[0\]: plugin "cc-optout-connector-nowhere": not installed/.test(e.message),
      );
    });

    it('`connectors --json` lists built-ins and the plugin (id, version, package, capabilities); `spec acme` prints its schema', () => {
      copyDir(ACME, path.join(dir, 'connectors-local', 'acme'));
      const file = writeConfig(dir, { plugins: ['./connectors-local/acme'] }, [acmeTarget]);
      const r = runCliSync(['--config', file, '--json', 'connectors']);
      assert.strictEqual(r.code, 0, r.stderr);
      const list = JSON.parse(r.stdout) as Array<{
        id: string;
        version: string;
        package: string;
        capabilities: { suppressionModes: string[] };
      }>;
      assert.deepStrictEqual(
        list.map((c) => c.id),
        ['acme', 'hubspot', 'salesforce'],
      );
      const acme = list.find((c) => c.id === 'acme')!;
      assert.deepStrictEqual(
        [acme.version, acme.package, acme.capabilities.suppressionModes],
        ['1.2.3', './connectors-local/acme', ['acme-flag']],
      );
      assert.strictEqual(list.find((c) => c.id === 'hubspot')!.package, 'cc-optout-connector (built-in)');
      const text = runCliSync(['--config', file, 'connectors']);
      assert.match(
        text.stdout,
        /^acme\t1\.2\.3\t\.\/connectors-local\/acme\tdry run no, backfill yes, suppression acme-flag$/m,
      );
      const spec = runCliSync(['--config', file, 'spec', 'acme']);
      assert.strictEqual(spec.code, 0, spec.stderr);
      assert.deepStrictEqual(JSON.parse(spec.stdout), {
        type: 'object',
        required: ['account'],
        properties: { account: { type: 'string', minLength: 1 } },
        additionalProperties: false,
      });
      const hs = JSON.parse(runCliSync(['--config', file, 'spec', 'hubspot']).stdout) as { title: string };
      assert.deepStrictEqual(
        hs,
        JSON.parse(fs.readFileSync(path.join(ROOT, 'connectors', 'hubspot', 'spec.json'), 'utf8')),
      );
      const file2 = JSON.parse(runCliSync(['spec']).stdout) as { properties: Record<string, unknown> };
      assert.ok(
        'plugins' in file2.properties && 'targets' in file2.properties,
        'spec without a connector: the config file schema',
      );
      const unknown = runCliSync(['--config', file, 'spec', 'nope']);
      assert.strictEqual(unknown.code, 2);
      assert.match(unknown.stderr, /unknown connector "nope" \(loaded: acme, hubspot, salesforce\)/);
    });
  });

  describe('lazy loading', () => {
    /** Run `code` in a fresh node with `dir` as cwd; it prints which connector modules ended up in require.cache. */
    function loadedAfter(dir: string, code: string): { builtins: string[]; acmeLoads: number } {
      const script = `
        ${code}
        const ids = Object.keys(require.cache).map((f) => /[\\\\/]connectors[\\\\/]([a-z-]+)[\\\\/]index\\.js$/.exec(f)).filter(Boolean).map((m) => m[1]);
        process.stdout.write(JSON.stringify({ builtins: [...new Set(ids)].sort(), acmeLoads: globalThis.__acmeLoads || 0 }));`;
      const r = spawnSync(process.execPath, ['-e', script], {
        cwd: dir,
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir() },
      });
      assert.strictEqual(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { builtins: string[]; acmeLoads: number };
    }
    const dist = JSON.stringify(path.join(ROOT, 'dist', 'src'));
    let dir: string;
    beforeEach(() => {
      dir = tmpDir();
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('a config with one HubSpot target loads HubSpot only (not Salesforce and its jsforce)', () => {
      const file = writeConfig(dir, {}, [
        { name: 'hs', connector: 'hubspot', config: { auth: { type: 'private-app', accessToken: 'pat-na1-x' } } },
      ]);
      const r = loadedAfter(
        dir,
        `const { loadConfig } = require(${dist} + '/config'); const { createRegistry } = require(${dist} + '/registry'); loadConfig(${JSON.stringify(file)}, {}, createRegistry());`,
      );
      assert.deepStrictEqual(r.builtins, ['hubspot']);
      const jsforce = loadedAfter(
        dir,
        `const { loadConfig } = require(${dist} + '/config'); const { createRegistry } = require(${dist} + '/registry'); loadConfig(${JSON.stringify(file)}, {}, createRegistry()); if (Object.keys(require.cache).some((f) => f.includes('jsforce'))) throw new Error('jsforce loaded');`,
      );
      assert.deepStrictEqual(jsforce.builtins, ['hubspot']);
    });

    it('the CLI loads no connector for --help, --version or spec (no connector): building the program requires none', () => {
      const r = loadedAfter(dir, `const { buildProgram } = require(${dist} + '/cli'); buildProgram();`);
      assert.deepStrictEqual(r.builtins, []);
    });

    it('a plugin-only config loads the plugin and no built-in connector', () => {
      copyDir(ACME, path.join(dir, 'acme'));
      const file = writeConfig(dir, { plugins: ['./acme'] }, [acmeTarget]);
      const r = loadedAfter(
        dir,
        `const { loadConfig } = require(${dist} + '/config'); const { createRegistry } = require(${dist} + '/registry'); loadConfig(${JSON.stringify(file)}, {}, createRegistry());`,
      );
      assert.deepStrictEqual(r, { builtins: [], acmeLoads: 1 });
    });
  });

  it('init asks each loaded connector for its example target (the core names no CRM)', () => {
    const withPlugin = createRegistry();
    withPlugin.usePlugins([MEMORY_PLUGIN], ROOT);
    const targets = (
      exampleConfig(withPlugin) as {
        targets: Array<{ name: string; connector: string; config: unknown; '//'?: string }>;
      }
    ).targets;
    assert.deepStrictEqual(
      targets.map((t) => t.connector),
      ['hubspot', 'memory-crm', 'salesforce'],
    );
    assert.deepStrictEqual(targets.find((t) => t.connector === 'memory-crm')!.config, { crm: 'main' });
    const hs = targets.find((t) => t.connector === 'hubspot')!;
    assert.deepStrictEqual(
      hs.config,
      (({ ['//']: _c, ...rest }) => rest)(createRegistry().get('hubspot')!.example!() as Record<string, unknown>),
    );
    assert.match(hs['//'] ?? '', /Service Key/);
    // only connectors: no target for a registry without any
    assert.deepStrictEqual(
      (exampleConfig(createRegistry({ connectorsDir: null })) as { targets: unknown[] }).targets,
      [],
    );
  });

  it("emulate starts each connector's own emulator (connector.emulator()) and writes a config a backfill runs against", async function () {
    this.timeout(60_000);
    const dir = tmpDir();
    const child = spawn(
      process.execPath,
      [path.join(ROOT, 'dist', 'src', 'cli.js'), '--json', 'emulate', '--contacts', '120', '--dir', dir],
      { env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir() } },
    );
    try {
      const first = await new Promise<string>((resolve, reject) => {
        let buf = '';
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
        });
        child.on('exit', (code) => reject(new Error(`emulate exited ${code}`)));
      });
      const urls = JSON.parse(first) as Record<string, string>;
      assert.deepStrictEqual(Object.keys(urls).sort(), ['cc', 'config', 'hubspot', 'salesforce']);
      const env = Object.fromEntries(
        fs
          .readFileSync(path.join(dir, 'emulator.env'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      const r = runCliSync(['--config', urls.config!, '--json', 'backfill'], env);
      assert.strictEqual(r.code, 0, r.stderr);
      const summary = JSON.parse(r.stdout) as { targets: Record<string, { queued: number; parked: number }> };
      assert.deepStrictEqual(Object.keys(summary.targets).sort(), ['hubspot', 'salesforce']);
      for (const t of Object.values(summary.targets)) assert.deepStrictEqual([t.queued, t.parked], [0, 0]);
    } finally {
      child.kill('SIGINT');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('PluginError names the plugin', () => {
    assert.strictEqual(new PluginError('./x', 'broken').message, 'plugin "./x": broken');
  });
});
