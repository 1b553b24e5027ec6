/**
 * End to end: first-time Constant Contact authorisation through the CLI (device flow against the emulator),
 * before any CRM credential exists, then a backfill that uses only the stored (rotating) tokens.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import { Harness, assertVerified, runCli, startHarness } from './helpers';

describe('e2e: cc-optout auth constant-contact', function () {
  this.timeout(120_000);
  let h: Harness;

  before(async () => {
    h = await startHarness({ contacts: 600, seed: 907 });
    // a fresh installation: no refresh token in the config, so the store starts empty
    const cfg = JSON.parse(fs.readFileSync(h.cfg.file, 'utf8')) as { source: Record<string, unknown> };
    delete cfg.source.refreshToken;
    fs.writeFileSync(h.cfg.file, JSON.stringify(cfg, null, 2));
  });
  after(() => h?.stop());

  it('without tokens a run stops with exit 1 and says how to authorise', async () => {
    const r = await runCli(h, ['sync']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cc-optout auth constant-contact/);
    assert.equal(h.emu.verify().hubspot.writes + h.emu.verify().salesforce.writes, 0);
  });

  it('the device flow works with only the Constant Contact settings: CRM secrets are not needed yet', async () => {
    const r = await runCli(h, ['auth', 'constant-contact', '--device'], {
      env: { HUBSPOT_TOKEN: '', SF_CLIENT_ID: '', SF_USERNAME: '' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Constant Contact authorised; tokens stored in .*state\.db .*refresh token stored/);
    assert.ok(!r.stdout.includes(h.env.CC_CLIENT_SECRET!), 'the client secret is not printed');
    assert.equal(fs.statSync(h.storePath).mode & 0o777, 0o600);
  });

  it('a broken source section is still reported by path, before any request', async () => {
    const saved = fs.readFileSync(h.cfg.file, 'utf8');
    const cfg = JSON.parse(saved) as { source: Record<string, unknown> };
    cfg.source.authBaseUrl = 'not-a-url';
    fs.writeFileSync(h.cfg.file, JSON.stringify(cfg));
    try {
      const r = await runCli(h, ['auth', 'constant-contact', '--device'], { env: { CC_CLIENT_SECRET: '' } });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /source\.clientSecret: environment variable CC_CLIENT_SECRET is not set/);
      assert.match(r.stderr, /source\.authBaseUrl: got "not-a-url", expected HttpUrl/);
    } finally {
      fs.writeFileSync(h.cfg.file, saved);
    }
  });

  it('then a backfill runs on the stored tokens alone and suppresses what the ground truth expects', async () => {
    const r = await runCli(h, ['--json', 'backfill']);
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    assertVerified(h.emu);
  });
});
