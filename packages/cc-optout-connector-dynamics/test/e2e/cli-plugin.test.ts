/**
 * The whole product with the Dynamics connector as a plugin: `cc-optout emulate` runs the Constant Contact
 * emulator, the package's Dataverse emulator holds records for its opted-out people, and the real CLI loads
 * the connector from the config's `plugins` and runs `check`, `backfill` and `sync` against both.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import axios from 'axios';
import { DataverseEmulator } from '../../src/emulator';

const ROOT = path.resolve(__dirname, '..', '..', '..', '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const PLUGIN = path.join(ROOT, 'dist', 'packages', 'cc-optout-connector-dynamics', 'src');

function readEnv(file: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2].replace(/^'(.*)'$/, '$1').replace(/^"(.*)"$/, '$1');
  }
  return env;
}

describe('dynamics as a plugin of the real CLI (emulate + Dataverse emulator)', function () {
  this.timeout(120_000);
  let emulate: ChildProcess | null = null;
  let dv: DataverseEmulator | null = null;
  let dir = '';

  after(async () => {
    if (emulate?.pid) emulate.kill('SIGTERM');
    await dv?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('check, backfill and sync deliver the opt-outs to Dynamics through the plugin; the emulator verifies', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dyn-cli-'));
    const emuDir = path.join(dir, 'emu');
    emulate = spawn(process.execPath, [CLI, 'emulate', '--contacts', '300', '--seed', '9', '--dir', emuDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error(`emulate did not start: ${out}`)), 60_000);
      emulate!.stdout!.on('data', (d) => {
        out += String(d);
        if (/Ctrl-C stops/.test(out)) {
          clearTimeout(t);
          resolve();
        }
      });
      emulate!.on('exit', (code) => reject(new Error(`emulate exited ${code}: ${out}`)));
    });
    const emuCfg = JSON.parse(fs.readFileSync(path.join(emuDir, 'cc-optout.config.json'), 'utf8'));
    const ccOrigin = new URL(emuCfg.source.apiBaseUrl).origin;
    const truth = (await axios.get(`${ccOrigin}/__emulator/truth`)).data as { optedOutEmails: string[] };
    assert.ok(truth.optedOutEmails.length > 10);

    dv = await new DataverseEmulator({
      seed: 9,
      people: truth.optedOutEmails.map((email) => ({ email, optedOut: true })),
    }).start();
    const c = dv.connection();
    const config = {
      plugins: [PLUGIN],
      store: { path: './state.db' },
      source: emuCfg.source,
      delivery: emuCfg.delivery,
      targets: [
        {
          name: 'dynamics',
          connector: 'dynamics',
          config: {
            url: c.url,
            auth: {
              type: 'client-credentials',
              tenantId: c.tenantId,
              clientId: c.clientId,
              clientSecret: '${DYNAMICS_CLIENT_SECRET}',
              authorityHost: c.authorityHost,
              caPath: c.caFile,
            },
            emailFields: ['emailaddress1', 'emailaddress2', 'emailaddress3'],
          },
        },
      ],
    };
    const cfgFile = path.join(dir, 'cc-optout.config.json');
    fs.writeFileSync(cfgFile, JSON.stringify(config, null, 2));
    const env = {
      ...process.env,
      ...readEnv(path.join(emuDir, 'emulator.env')),
      DYNAMICS_CLIENT_SECRET: c.clientSecret,
    };
    // asynchronously: the Dataverse emulator serves from this process
    const run = (...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const p = spawn(process.execPath, [CLI, '--config', cfgFile, '--no-progress', ...args], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += String(d)));
        p.stderr.on('data', (d) => (stderr += String(d)));
        p.on('close', (status) => resolve({ status, stdout, stderr }));
      });

    const check = await run('check');
    assert.equal(check.status, 0, `check: ${check.stdout}\n${check.stderr}`);
    assert.match(check.stdout + check.stderr, /dynamics/);
    assert.ok(!(check.stdout + check.stderr).includes(c.clientSecret), 'the client secret is never printed');

    const backfill = await run('--json', 'backfill');
    assert.equal(backfill.status, 0, `backfill: ${backfill.stdout}\n${backfill.stderr}`);
    const v = dv.verify();
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.ok(v.expected > 0 && v.writes === v.expected);
    assert.ok(!(backfill.stdout + backfill.stderr).includes(c.clientSecret));

    const batchesBefore = dv.requestCounts()['POST $batch']?.total ?? 0;
    const sync = await run('--json', 'sync');
    assert.equal(sync.status, 0, `sync: ${sync.stdout}\n${sync.stderr}`);
    assert.equal(dv.requestCounts()['POST $batch']?.total ?? 0, batchesBefore, 'nothing new to write');
    assert.equal(dv.verify().ok, true);
  });
});
