/**
 * The published shape: `npm pack` in the package folder builds dist/ and packs only it (no tests, no core
 * sources), and the built package, laid out as an installed dependency next to the core, loads through the
 * specifier `cc-optout-connector/sdk` and runs against the emulator. No registry access: the fresh folder's
 * node_modules links the core (this checkout) and the package's dependencies from this checkout.
 */
import { strict as assert } from 'assert';
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import axios from 'axios';

const ROOT = path.resolve(__dirname, '..', '..', '..', '..', '..');
const PKG = path.join(ROOT, 'packages', 'cc-optout-connector-dynamics');

describe('dynamics package: npm pack and a fresh install layout', function () {
  this.timeout(180_000);
  let tmp = '';
  let emulate: ChildProcess | null = null;
  after(async () => {
    if (emulate && emulate.exitCode === null) {
      const gone = new Promise((r) => emulate!.once('exit', r));
      emulate.kill('SIGTERM');
      await gone;
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('packs dist/ (js + d.ts), README and LICENSE only; the code imports the core only as cc-optout-connector/sdk', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json'], {
      cwd: PKG,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const info = JSON.parse(out.slice(out.indexOf('['))) as Array<{ files: Array<{ path: string }> }>;
    const files = info[0].files.map((f) => f.path).sort();
    for (const f of [
      'dist/index.js',
      'dist/index.d.ts',
      'dist/emulator/index.js',
      'dist/auth.js',
      'README.md',
      'LICENSE',
      'package.json',
    ])
      assert.ok(files.includes(f), `${f} missing from the tarball`);
    assert.deepEqual(
      files.filter((f) => !/^dist\/|^(README\.md|LICENSE|package\.json)$/.test(f)),
      [],
    );
    assert.ok(!files.some((f) => /test/.test(f)), 'no tests in the tarball');
    const pkg = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8'));
    assert.equal(pkg.main, 'dist/index.js');
    assert.equal(pkg.types, 'dist/index.d.ts');
    assert.ok(pkg.peerDependencies['cc-optout-connector']);
    assert.ok(pkg.dependencies['@azure/msal-node']);
    for (const f of files.filter((x) => x.endsWith('.js') || x.endsWith('.d.ts'))) {
      const text = fs.readFileSync(path.join(PKG, f), 'utf8');
      const specs = [...text.matchAll(/(?:require\(|from )['"]([^'"]+)['"]/g)].map((m) => m[1]);
      for (const s of specs) {
        assert.ok(!/\.\.\/\.\.\/|(^|\/)src\//.test(s), `${f} reaches outside the package: ${s}`);
        if (s.startsWith('cc-optout-connector'))
          assert.match(s, /^cc-optout-connector\/sdk(\/emulator)?$/, `${f} imports ${s}`);
      }
    }
  });

  it('installed next to the core, the built package loads, checks and delivers against its emulator', () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dyn-fresh-'));
    const nm = path.join(tmp, 'node_modules');
    fs.mkdirSync(path.join(nm, '@azure'), { recursive: true });
    // the core as an installed package (this checkout, built), the plugin as a copy of what npm pack ships
    fs.symlinkSync(ROOT, path.join(nm, 'cc-optout-connector'), 'dir');
    const dest = path.join(nm, 'cc-optout-connector-dynamics');
    fs.mkdirSync(dest);
    fs.cpSync(path.join(PKG, 'dist'), path.join(dest, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(PKG, 'package.json'), path.join(dest, 'package.json'));
    for (const dep of ['axios', 'io-ts', 'fp-ts', 'selfsigned'])
      fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(nm, dep), 'dir');
    fs.symlinkSync(path.join(ROOT, 'node_modules', '@azure', 'msal-node'), path.join(nm, '@azure', 'msal-node'), 'dir');
    const script = `
      const { connector } = require('cc-optout-connector-dynamics');
      const { World } = require('cc-optout-connector/sdk/emulator');
      const sdk = require('cc-optout-connector/sdk');
      const fs = require('fs'), path = require('path');
      (async () => {
        const world = new World({ seed: 4, contacts: 200 });
        const run = await connector.emulator().start(world, { dir: ${JSON.stringify(tmp)} });
        const { config, env } = run.targetConfig();
        const d = connector.config.decode(JSON.parse(JSON.stringify(config).replace('\${DYNAMICS_CLIENT_SECRET}', env.DYNAMICS_CLIENT_SECRET)));
        const caps = { clock: { now: () => new Date(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) }, logger: { debug() {}, info() {}, warn() {}, error() {}, child() { return this; } },
          kv: { get: () => null, set() {} }, calls: { record() {} }, targetName: 'd', readFile: (p) => fs.readFileSync(p, 'utf8'),
          secrets: { register() {}, redact: (s) => s }, http: { limiter: () => ({ acquire: async () => {}, pause() {}, exhaust() {}, usedToday: () => 0 }), retry: (fn) => fn(1), singleFlight: (fn) => ({ run: fn, running: () => null }) } };
        const t = connector.open(d.right, caps);
        const check = await t.check();
        const r = await t.deliver(world.truth().optedOutEmails.map((email) => ({ email, contactId: 'x', optedOutAt: new Date().toISOString(), source: null, reason: null, deleted: false })), 'apply');
        const where = require.resolve('cc-optout-connector/sdk', { paths: [path.dirname(require.resolve('cc-optout-connector-dynamics'))] });
        console.log(JSON.stringify({ id: connector.id, version: connector.version, check: check.ok, outcomes: r.outcomes.length, verify: run.verify().ok, sdk: sdk.SDK_VERSION, where }));
        await run.stop();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = execFileSync(process.execPath, ['-e', script], {
      cwd: tmp,
      encoding: 'utf8',
      env: { ...process.env, NODE_PATH: '' },
    });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(r.id, 'dynamics');
    assert.equal(r.version, JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8')).version);
    assert.equal(r.check, true);
    assert.ok(r.outcomes > 0);
    assert.equal(r.verify, true);
    assert.equal(
      r.where,
      path.join(fs.realpathSync(ROOT), 'dist', 'src', 'sdk', 'index.js'),
      'the SDK resolved through the installed core',
    );
  });

  it("the installed core's CLI lists the plugin by package name (`connectors --json`) and prints its `spec`", () => {
    assert.ok(tmp, 'runs after the layout test');
    const cfg = path.join(tmp, 'cc-optout.config.json');
    fs.writeFileSync(cfg, JSON.stringify({ plugins: ['cc-optout-connector-dynamics'] }));
    const cli = path.join(tmp, 'node_modules', 'cc-optout-connector', 'dist', 'src', 'cli.js');
    const list = JSON.parse(
      execFileSync(process.execPath, [cli, '--config', cfg, '--json', 'connectors'], { cwd: tmp, encoding: 'utf8' }),
    ) as Array<{ id: string; version?: string; package: string; capabilities: { dryRun: boolean } }>;
    const dyn = list.find((c) => c.id === 'dynamics');
    assert.ok(dyn, JSON.stringify(list));
    assert.equal(dyn.version, JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8')).version);
    assert.equal(dyn.capabilities.dryRun, true);
    assert.ok(
      list.some((c) => c.id === 'hubspot') && list.some((c) => c.id === 'salesforce'),
      'the built-in connectors too',
    );
    const spec = JSON.parse(
      execFileSync(process.execPath, [cli, '--config', cfg, 'spec', 'dynamics'], { cwd: tmp, encoding: 'utf8' }),
    ) as { required: string[]; properties: Record<string, unknown> };
    assert.deepEqual(spec.required, ['url', 'auth']);
    assert.ok('emailFields' in spec.properties);
  });

  it('issue 10 done-when: in that install, `emulate --plugin` starts all three CRMs; `connectors`, `check` and `backfill` run on the printed config; every CRM matches its ground truth', async () => {
    assert.ok(tmp, 'runs after the layout test');
    // what `npm init -y` writes, with the two tarballs as dependencies
    const version = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8')).version as string;
    const coreVersion = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
    fs.writeFileSync(
      path.join(tmp, 'package.json'),
      JSON.stringify({
        name: 'fresh',
        version: '1.0.0',
        dependencies: { 'cc-optout-connector': coreVersion, 'cc-optout-connector-dynamics': version },
      }),
    );
    const cli = path.join(tmp, 'node_modules', 'cc-optout-connector', 'dist', 'src', 'cli.js');
    emulate = spawn(
      process.execPath,
      [
        cli,
        '--json',
        'emulate',
        '--plugin',
        'cc-optout-connector-dynamics',
        '--contacts',
        '400',
        '--seed',
        '11',
        '--dir',
        'emu',
      ],
      { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const urls = await new Promise<Record<string, string>>((resolve, reject) => {
      let out = '';
      let err = '';
      const t = setTimeout(() => reject(new Error(`emulate did not start: ${out}${err}`)), 60_000);
      emulate!.stderr!.on('data', (d) => (err += String(d)));
      emulate!.stdout!.on('data', (d) => {
        out += String(d);
        const nl = out.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(t);
          resolve(JSON.parse(out.slice(0, nl)) as Record<string, string>);
        }
      });
      emulate!.on('exit', (code) => reject(new Error(`emulate exited ${code}: ${out}${err}`)));
    });
    assert.ok(urls.hubspot && urls.salesforce && urls.dynamics, JSON.stringify(urls));
    const cfgFile = path.join(tmp, 'emu', 'cc-optout.config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as {
      plugins: string[];
      targets: Array<{ connector: string }>;
    };
    assert.deepEqual(cfg.plugins, ['cc-optout-connector-dynamics']);
    assert.deepEqual(cfg.targets.map((x) => x.connector).sort(), ['dynamics', 'hubspot', 'salesforce']);
    const env: Record<string, string> = { ...process.env } as Record<string, string>;
    for (const l of fs.readFileSync(path.join(tmp, 'emu', 'emulator.env'), 'utf8').split('\n')) {
      const m = /^([A-Z0-9_]+)=(.*)$/.exec(l);
      if (m) env[m[1]] = m[2];
    }
    assert.ok(env.DYNAMICS_CLIENT_SECRET, 'the Dynamics secret is in emulator.env');
    const run = (...args: string[]): Promise<{ status: number | null; out: string }> =>
      new Promise((resolve) => {
        const p = spawn(process.execPath, [cli, '--config', cfgFile, '--no-progress', ...args], {
          cwd: tmp,
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        p.stdout.on('data', (d) => (out += String(d)));
        p.stderr.on('data', (d) => (out += String(d)));
        p.on('close', (status) => resolve({ status, out }));
      });

    const listed = await run('--json', 'connectors');
    assert.equal(listed.status, 0, listed.out);
    const list = JSON.parse(listed.out) as Array<{ id: string; version: string; package: string }>;
    const by = Object.fromEntries(list.map((c) => [c.id, c]));
    assert.deepEqual(Object.keys(by).sort(), ['dynamics', 'hubspot', 'salesforce']);
    assert.deepEqual([by.dynamics.version, by.dynamics.package], [version, 'cc-optout-connector-dynamics']);
    for (const id of ['hubspot', 'salesforce'])
      assert.deepEqual([by[id].version, by[id].package], [coreVersion, 'cc-optout-connector (built-in)']);

    const check = await run('check');
    assert.equal(check.status, 0, check.out);
    for (const id of ['dynamics', 'hubspot', 'salesforce']) assert.match(check.out, new RegExp(id));

    const backfill = await run('--json', 'backfill');
    assert.equal(backfill.status, 0, backfill.out);
    assert.ok(!backfill.out.includes(env.DYNAMICS_CLIENT_SECRET), 'the client secret is never printed');

    // ground truth: the Constant Contact emulator judges HubSpot and Salesforce, the Dataverse emulator itself
    const cc = (await axios.get(`${new URL(urls.cc).origin}/__emulator/verify`)).data as {
      hubspot: { ok: boolean; expected: number };
      salesforce: { ok: boolean; expected: number };
    };
    const dyn = (await axios.get(`${urls.dynamics}/__emulator/verify`)).data as {
      ok: boolean;
      expected: number;
      writes: number;
    };
    assert.equal(cc.hubspot.ok, true, JSON.stringify(cc.hubspot));
    assert.equal(cc.salesforce.ok, true, JSON.stringify(cc.salesforce));
    assert.equal(dyn.ok, true, JSON.stringify(dyn));
    assert.ok(cc.hubspot.expected > 0 && cc.salesforce.expected > 0 && dyn.expected > 0);
    assert.equal(dyn.writes, dyn.expected, 'each Dynamics record written once');
  });
});
