import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runCliSync } from '../helpers';

const run = runCliSync;

describe('CLI', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-cli-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('init writes an example config that decodes once its environment variables are set', () => {
    const file = path.join(dir, 'cfg.json');
    const r = run(['--config', file, 'init']);
    assert.strictEqual(r.code, 0, r.stderr);
    assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600);
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /\$\{CC_CLIENT_ID\}/);
    // without the env: exit 2, naming each missing variable with its path
    const bad = run(['--config', file, 'check']);
    assert.strictEqual(bad.code, 2);
    assert.match(bad.stderr, /source\.clientId: environment variable CC_CLIENT_ID is not set/);
    assert.match(
      bad.stderr,
      /targets\[0\]\.config\.auth\.serviceKey: environment variable HUBSPOT_SERVICE_KEY is not set/,
    );
    assert.ok(!fs.existsSync(path.join(dir, '.cc-optout')), 'nothing is created before the config is valid');
    // refuses to overwrite
    assert.strictEqual(run(['--config', file, 'init']).code, 2);
  });

  it('a bad config exits 2 before any network call, naming path, value and expectation; secrets never printed', () => {
    const file = path.join(dir, 'cfg.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        source: {
          type: 'constant-contact',
          clientId: 'abc',
          clientSecret: '${CC_CLIENT_SECRET}',
          apiBaseUrl: 'not a url',
          detection: { pageSize: 0 },
        },
        targets: [
          {
            name: 'hs',
            connector: 'hubspot',
            config: { auth: { type: 'private-app', accessToken: '${HUBSPOT_TOKEN}' }, suppression: { type: 'nope' } },
          },
        ],
      }),
    );
    const secret = 'pat-na1-very-secret-token-123456';
    const r = run(['--config', file, 'sync'], { CC_CLIENT_SECRET: 'cc-secret-abcdef', HUBSPOT_TOKEN: secret });
    assert.strictEqual(r.code, 2, r.stderr);
    assert.match(r.stderr, /source\.apiBaseUrl: got "not a url", expected HttpUrl/);
    assert.match(r.stderr, /source\.detection\.pageSize: got 0, expected integer 1\.\.500/);
    assert.match(r.stderr, /targets\[0\]\.config\.suppression/);
    assert.ok(!(r.stderr + r.stdout).includes(secret));
    assert.ok(!(r.stderr + r.stdout).includes('cc-secret-abcdef'));
    assert.ok(!fs.existsSync(path.join(dir, '.cc-optout')));
  });

  it('a missing config file and an unparseable one exit 2 with the file and position', () => {
    assert.match(
      run(['--config', path.join(dir, 'none.json'), 'sync']).stderr,
      /file not found: .*none\.json \(create one with `cc-optout init`/,
    );
    const file = path.join(dir, 'bad.json');
    fs.writeFileSync(file, '{\n  "source": {,\n}');
    const r = run(['--config', file, 'sync']);
    assert.strictEqual(r.code, 2);
    assert.match(r.stderr, /line 2, column/);
  });

  it('numeric options are validated and named', () => {
    const r = run(['demo', '--contacts', '12x']);
    assert.strictEqual(r.code, 2);
    assert.match(r.stderr, /--contacts <n>.*'12x' is invalid\. expected a whole number from 60 to 1000000/);
  });

  it('unknown options exit 2 with help', () => {
    const r = run(['sync', '--nope']);
    assert.strictEqual(r.code, 2);
    assert.match(r.stderr, /unknown option '--nope'/);
  });
});
