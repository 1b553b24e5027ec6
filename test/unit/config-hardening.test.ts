/**
 * Issue 8, config side: #3 plain http:// only for loopback, #10 bounded numbers, #13 prototype and duplicate keys,
 * #15 init's config decodes, #18 paths resolved from the config file, #19 read-only commands need no secret.
 * Codecs and the JSON Schemas (src/config.schema.json, connectors/*\/spec.json) are checked on the same cases.
 */
import assert from 'assert';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Ajv from 'ajv';
import { isLeft } from 'fp-ts/Either';
import * as codec from '../../src/codec';
import { ConfigError, decodeConfig, loadConfig, parseJsonText } from '../../src/config';
import { openApp } from '../../src/app';
import { createLogger, clearSecrets } from '../../src/log';
import { createRegistry, packageRoot, Registry } from '../../src/registry';
import { CONFIG_SCHEMA, SOURCE_SCHEMA } from '../../src/spec';
import { loadPrivateKey } from '../../connectors/salesforce/auth';
import { runCliSync, testRegistry } from '../helpers';
import { SqliteStateStore } from '../../src/store/sqlite';

const ROOT = packageRoot();
const ajv = new Ajv({ allErrors: true, strict: false });
const fullSchema = ajv.compile(CONFIG_SCHEMA);
const sourceSchema = ajv.compile(SOURCE_SCHEMA);
// each connector's one schema: connectors/<id>/spec.json (what `cc-optout spec <id>` prints)
const entrySchema = (id: string) =>
  ajv.compile(JSON.parse(fs.readFileSync(path.join(ROOT, 'connectors', id, 'spec.json'), 'utf8')) as object);
const hubspotSchema = entrySchema('hubspot');
const salesforceSchema = entrySchema('salesforce');
const manifestConnectorSchema = (id: string) => ajv.compile(createRegistry().get(id)!.schema);

let registry: Registry;
before(() => {
  registry = createRegistry();
});
afterEach(() => clearSecrets());

/** The problems decodeConfig reports ([] when it decodes). */
function problems(
  raw: unknown,
  env: NodeJS.ProcessEnv = {},
  reg: Registry = registry,
  file: string | null = null,
): string[] {
  try {
    decodeConfig(raw, env, reg, file);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

const hubspotTarget = (config: Record<string, unknown> = {}) => ({
  name: 'hs',
  connector: 'hubspot',
  config: { auth: { type: 'private-app', accessToken: 'pat-x' }, ...config },
});
const salesforceTarget = (config: Record<string, unknown> = {}) => ({
  name: 'sf',
  connector: 'salesforce',
  config: { auth: { type: 'refresh-token', clientId: '3MVG9', refreshToken: 'r' }, ...config },
});
const base = (
  over: { source?: Record<string, unknown>; delivery?: Record<string, unknown>; targets?: unknown[] } = {},
) => ({
  source: { type: 'constant-contact', clientId: 'abc', ...over.source },
  targets: over.targets ?? [hubspotTarget()],
  ...(over.delivery ? { delivery: over.delivery } : {}),
});

const run = runCliSync;

describe('config hardening (issue 8)', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-cfg-hard-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('#3 plain http:// only for loopback hosts', () => {
    const accepted = [
      'https://api.cc.email/v3',
      'https://acme.my.salesforce.com',
      'http://127.0.0.1:9000/v3',
      'http://127.10.20.30',
      'http://localhost:4010',
      'HTTP://LOCALHOST/x',
      'http://[::1]:8080/v3',
    ];
    const rejected = [
      'http://api.cc.email/v3',
      'http://api.hubapi.com',
      'http://login.salesforce.com',
      'http://10.0.0.1:8080',
      'http://127.0.0.1.evil.example/v3',
      'http://localhost@evil.example/v3',
      'http://localhost.evil.example',
      'http://[::2]/',
      'ftp://api.cc.email',
      'not a url',
    ];

    it('one shared codec (SecureUrl) and its JSON Schema pattern agree on every case', () => {
      const SecureUrl = (codec as unknown as { SecureUrl?: typeof codec.HttpUrl }).SecureUrl;
      assert.ok(SecureUrl, 'src/codec.ts exports SecureUrl');
      for (const u of accepted) {
        assert.ok(SecureUrl.is(u), `codec rejects ${u}`);
        assert.ok(!isLeft(SecureUrl.decode(u)), `codec rejects ${u}`);
      }
      for (const u of rejected) assert.ok(isLeft(SecureUrl.decode(u)), `codec accepts ${u}`);
      const schemas: Array<[string, (u: string) => unknown]> = [
        ['manifest.configSchema source.apiBaseUrl', (u) => base({ source: { apiBaseUrl: u } })],
        ['manifest.configSchema source.authBaseUrl', (u) => base({ source: { authBaseUrl: u } })],
      ];
      for (const u of [...accepted, ...rejected]) {
        const ok = accepted.includes(u);
        for (const [name, make] of schemas) assert.strictEqual(fullSchema(make(u)), ok, `${name}: ${u}`);
        assert.strictEqual(
          sourceSchema(base({ source: { apiBaseUrl: u } }).source),
          ok,
          `manifest.source.configSchema: ${u}`,
        );
        for (const v of [hubspotSchema, manifestConnectorSchema('hubspot')])
          assert.strictEqual(v(hubspotTarget({ baseUrl: u }).config), ok, `hubspot baseUrl ${u}`);
        for (const v of [salesforceSchema, manifestConnectorSchema('salesforce')]) {
          assert.strictEqual(v(salesforceTarget({ loginUrl: u }).config), ok, `salesforce loginUrl ${u}`);
          assert.strictEqual(v(salesforceTarget({ instanceUrl: u }).config), ok, `salesforce instanceUrl ${u}`);
        }
      }
    });

    it('names every URL field that would send secrets in clear', () => {
      const p = problems(
        base({
          source: {
            apiBaseUrl: 'http://api.cc.email/v3',
            authBaseUrl: 'http://authz.constantcontact.com/oauth2/default/v1',
          },
          targets: [
            hubspotTarget({ baseUrl: 'http://api.hubapi.com' }),
            salesforceTarget({ loginUrl: 'http://login.salesforce.com', instanceUrl: 'http://acme.my.salesforce.com' }),
          ],
        }),
      );
      for (const field of [
        'source.apiBaseUrl',
        'source.authBaseUrl',
        'targets[0].config.baseUrl',
        'targets[1].config.loginUrl',
        'targets[1].config.instanceUrl',
      ]) {
        assert.ok(
          p.some((x) => x.startsWith(`${field}: `) && /plain http:\/\/ is allowed only for loopback/.test(x)),
          `${field} not named:\n${p.join('\n')}`,
        );
      }
      // loopback stays allowed (emulators, local proxies)
      assert.deepStrictEqual(
        problems(
          base({
            source: { apiBaseUrl: 'http://127.0.0.1:9000/v3' },
            targets: [
              hubspotTarget({ baseUrl: 'http://localhost:4010' }),
              salesforceTarget({ loginUrl: 'http://[::1]:5000' }),
            ],
          }),
        ),
        [],
      );
    });

    it('the CLI exits 2 before any network call, naming the field', () => {
      const file = path.join(dir, 'cfg.json');
      fs.writeFileSync(file, JSON.stringify(base({ targets: [hubspotTarget({ baseUrl: 'http://api.hubapi.com' })] })));
      const r = run(['--config', file, 'sync']);
      assert.strictEqual(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /targets\[0\]\.config\.baseUrl: got "http:\/\/api\.hubapi\.com", expected HttpUrl: plain http:\/\/ is allowed only for loopback/,
      );
      assert.ok(!fs.existsSync(path.join(dir, '.cc-optout')), 'nothing written');
    });
  });

  describe('#10 every duration, count and rate is bounded', () => {
    // [where, config, the path named in the error, a value at the maximum that is accepted]
    const cases: Array<{ field: string; make: (v: number) => unknown; max: number }> = [
      {
        field: 'source.detection.overlapMinutes',
        make: (v) => base({ source: { detection: { overlapMinutes: v } } }),
        max: 1440,
      },
      {
        field: 'source.detection.lagMinutes',
        make: (v) => base({ source: { detection: { lagMinutes: v } } }),
        max: 1440,
      },
      {
        field: 'source.detection.reconcileEveryHours',
        make: (v) => base({ source: { detection: { reconcileEveryHours: v } } }),
        max: 720,
      },
      {
        field: 'source.rateLimit.perSecond',
        make: (v) => base({ source: { rateLimit: { perSecond: v } } }),
        max: 1000,
      },
      {
        field: 'source.rateLimit.dailyBudget',
        make: (v) => base({ source: { rateLimit: { dailyBudget: v } } }),
        max: 10_000_000,
      },
      { field: 'delivery.maxAttempts', make: (v) => base({ delivery: { maxAttempts: v } }), max: 1000 },
      { field: 'delivery.backoffBaseSeconds', make: (v) => base({ delivery: { backoffBaseSeconds: v } }), max: 604800 },
      { field: 'delivery.backoffMaxSeconds', make: (v) => base({ delivery: { backoffMaxSeconds: v } }), max: 604800 },
      {
        field: 'delivery.recheckNotFoundHours',
        make: (v) => base({ delivery: { recheckNotFoundHours: v } }),
        max: 8760,
      },
      {
        field: 'targets[0].config.rateLimit.per10Seconds',
        make: (v) => base({ targets: [hubspotTarget({ rateLimit: { per10Seconds: v } })] }),
        max: 100_000,
      },
      {
        field: 'targets[0].config.bulkThreshold',
        make: (v) => base({ targets: [salesforceTarget({ bulkThreshold: v })] }),
        max: 150_000_000,
      },
    ];

    for (const { field, make, max } of cases) {
      it(`${field}: the maximum ${max} passes, 1e12 / 1e300 / max+1 exit 2 naming the field (codec and schema)`, () => {
        const schemaOk = (raw: unknown): boolean => {
          const cfg = raw as { targets: Array<{ connector: string; config: unknown }> };
          const t = cfg.targets[0]!;
          return fullSchema(raw) && (t.connector === 'hubspot' ? hubspotSchema(t.config) : salesforceSchema(t.config));
        };
        assert.deepStrictEqual(problems(make(max)), [], `max ${max} rejected`);
        assert.ok(schemaOk(make(max)), `schema rejects the maximum: ${ajv.errorsText(fullSchema.errors)}`);
        for (const bad of [1e12, 1e300, max + 1]) {
          const p = problems(make(bad));
          assert.ok(
            p.some((x) => x.startsWith(`${field}: got ${JSON.stringify(bad)}, expected`)),
            `${field}=${bad}: ${p.join('\n') || 'accepted'}`,
          );
          assert.strictEqual(schemaOk(make(bad)), false, `schema accepts ${field}=${bad}`);
        }
      });
    }

    it('the CLI exits 2 naming lagMinutes 1e12 (no run row, nothing queued)', () => {
      const file = path.join(dir, 'cfg.json');
      fs.writeFileSync(file, JSON.stringify(base({ source: { detection: { lagMinutes: 1e12 } } })));
      const r = run(['--config', file, 'sync']);
      assert.strictEqual(r.code, 2, r.stderr);
      assert.match(r.stderr, /source\.detection\.lagMinutes: got 1000000000000, expected number 0\.\.1440 \(minutes\)/);
      assert.ok(!fs.existsSync(path.join(dir, '.cc-optout')));
    });
  });

  describe('#13 prototype keys and duplicate keys', () => {
    const text = (s: string) => s.trim() + '\n';

    function parseProblems(s: string): string[] {
      try {
        parseJsonText(s, 'cfg.json');
        return [];
      } catch (e) {
        if (e instanceof ConfigError) return e.problems;
        throw e;
      }
    }

    it('a duplicate key is named with its path and line (JSON.parse would keep the last one silently)', () => {
      const p = parseProblems(
        text(`
{
  "source": {
    "type": "constant-contact",
    "clientId": "abc",
    "clientId": "def"
  },
  "targets": [{ "name": "a", "connector": "memory-crm", "config": { "crm": "x", "crm": "y" } }]
}`),
      );
      assert.ok(
        p.includes(
          'source.clientId: duplicate key "clientId" (line 5, column 5); each key may appear once in an object',
        ),
        p.join('\n'),
      );
      assert.ok(
        p.some((x) => x.startsWith('targets[0].config.crm: duplicate key "crm" (line 7, column')),
        p.join('\n'),
      );
    });

    it('"__proto__", "constructor" and "prototype" are rejected at any depth, also when escaped', () => {
      const p = parseProblems(
        text(`
{
  "source": { "type": "constant-contact", "clientId": "abc" },
  "targets": [
    { "name": "a", "connector": "memory-crm", "config": { "crm": "x", "__proto__": { "polluted": true } } },
    { "name": "b", "connector": "memory-crm", "config": { "crm": "x", "constructor": { "prototype": 1 } } }
  ],
  "__pro\\u0074o__": {}
}`),
      );
      assert.ok(
        p.some((x) => x.startsWith('targets[0].config.__proto__: key "__proto__" is not allowed (line 4, column')),
        p.join('\n'),
      );
      assert.ok(
        p.some((x) => x.startsWith('targets[1].config.constructor: key "constructor" is not allowed (line 5')),
        p.join('\n'),
      );
      assert.ok(
        p.some((x) => x.startsWith('targets[1].config.constructor.prototype: key "prototype" is not allowed')),
        p.join('\n'),
      );
      assert.ok(
        p.some((x) => x.startsWith('__proto__: key "__proto__" is not allowed (line 7, column 3)')),
        p.join('\n'),
      );
      assert.strictEqual(({} as { polluted?: boolean }).polluted, undefined);
    });

    it('decodeConfig also refuses an already parsed object carrying an own "__proto__" key', () => {
      const raw = JSON.parse(
        '{"source":{"type":"constant-contact","clientId":"abc"},"targets":[{"name":"a","connector":"memory-crm","config":{"crm":"x","__proto__":{"apiKey":"k"}}}]}',
      );
      const p = problems(raw, {}, testRegistry());
      assert.deepStrictEqual(p, [
        'targets[0].config.__proto__: key "__proto__" is not allowed (it could alter object prototypes; rename or remove it)',
      ]);
    });

    it('repeated "//" comment keys stay allowed; valid JSON parses as before', () => {
      const v = parseJsonText('{ "//": "one", "//": "two", "a": { "b": [1, {"c": 2}] } }', 'cfg.json');
      assert.deepStrictEqual(v, { '//': 'two', a: { b: [1, { c: 2 }] } });
    });

    it('the CLI exits 2 naming the duplicate key and its line', () => {
      const file = path.join(dir, 'cfg.json');
      fs.writeFileSync(
        file,
        '{\n  "source": { "type": "constant-contact", "clientId": "abc" },\n  "targets": [],\n  "targets": []\n}\n',
      );
      const r = run(['--config', file, 'status']);
      assert.strictEqual(r.code, 2, r.stderr);
      assert.match(r.stderr, /targets: duplicate key "targets" \(line 4, column 3\)/);
    });
  });

  describe("#15 and #19: init's config", () => {
    const INIT_ENV = {
      CC_CLIENT_ID: 'cc-client-id',
      CC_CLIENT_SECRET: 'cc-client-secret',
      HUBSPOT_SERVICE_KEY: 'sk-na1-0000',
      SF_CLIENT_ID: '3MVG9-consumer-key',
      SF_USERNAME: 'integration@acme.com',
      SF_PRIVATE_KEY_PATH: './keys/salesforce.key',
    };

    it("every ${VAR} init names, once set, decodes it; comments are never resolved (check's config stage opens)", () => {
      const file = path.join(dir, 'cc-optout.config.json');
      const r = run(['--config', file, 'init']);
      assert.strictEqual(r.code, 0, r.stderr);
      const text = fs.readFileSync(file, 'utf8');
      const named = [...new Set([...text.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g)].map((m) => m[1]!))]
        .filter((n) => n !== 'ENV_VAR')
        .sort();
      assert.deepStrictEqual(named, Object.keys(INIT_ENV).sort(), 'the variables init names');
      assert.match(
        text,
        /"\/\/": "cc-optout config\. Secrets are \$\{ENV_VAR\} references/,
        'the comment mentions ${ENV_VAR}',
      );
      const c = loadConfig(file, INIT_ENV, registry);
      assert.strictEqual(c.source.clientId, 'cc-client-id');
      assert.deepStrictEqual(
        c.targets.map((t) => t.name),
        ['hubspot', 'salesforce'],
      );
      // what `check` does before its first network call: decode the config and open the store
      const app = openApp({
        configFile: file,
        env: INIT_ENV,
        logger: createLogger({ format: 'text', level: 'error' }),
        registry,
      });
      return app.close();
    });

    it('read-only commands (status, audit, quarantine, requeue, unlock) work with all six variables unset', () => {
      const file = path.join(dir, 'cc-optout.config.json');
      assert.strictEqual(run(['--config', file, 'init']).code, 0);
      // a read-only command never creates a store: on a fresh install it says so (exit 2) ...
      const none = run(['--config', file, 'status']);
      assert.strictEqual(none.code, 2, none.stderr);
      assert.match(none.stderr, /store\.path: .*state\.db: no state store here/);
      assert.ok(!fs.existsSync(path.join(dir, '.cc-optout', 'state.db')), 'status created no store');
      // ... and reads one that a run created
      fs.mkdirSync(path.join(dir, '.cc-optout'));
      new SqliteStateStore(path.join(dir, '.cc-optout', 'state.db')).close();
      const s = run(['--config', file, 'status']);
      assert.strictEqual(s.code, 0, s.stderr);
      assert.match(s.stdout, /opt-outs known: 0 active/);
      const sj = run(['--config', file, '--json', 'status']);
      assert.strictEqual(sj.code, 0, sj.stderr);
      assert.deepStrictEqual(
        (JSON.parse(sj.stdout) as { targets: Array<{ target: string }> }).targets.map((t) => t.target),
        ['hubspot', 'salesforce'],
      );
      for (const args of [['audit'], ['quarantine'], ['requeue'], ['unlock']]) {
        const r = run(['--config', file, ...args]);
        assert.strictEqual(r.code, 0, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      }
      // commands that talk to the services still need every secret, named with its path
      const chk = run(['--config', file, 'check']);
      assert.strictEqual(chk.code, 2, chk.stderr);
      assert.match(chk.stderr, /source\.clientId: environment variable CC_CLIENT_ID is not set/);
      assert.match(
        chk.stderr,
        /targets\[1\]\.config\.auth\.privateKeyPath: environment variable SF_PRIVATE_KEY_PATH is not set/,
      );
    });

    it('read-only commands still validate the structure (and an unset variable in a URL field is not an error there)', () => {
      const file = path.join(dir, 'cfg.json');
      const cfg = base({
        source: { clientId: '${CC_CLIENT_ID}', clientSecret: '${CC_SECRET}', apiBaseUrl: '${CC_API_URL}' },
        targets: [hubspotTarget({ baseUrl: '${HS_URL}' })],
      });
      fs.writeFileSync(file, JSON.stringify(cfg));
      fs.mkdirSync(path.join(dir, '.cc-optout'), { recursive: true });
      new SqliteStateStore(path.join(dir, '.cc-optout', 'state.db')).close();
      const ok = run(['--config', file, 'status']);
      assert.strictEqual(ok.code, 0, ok.stderr);
      fs.writeFileSync(file, JSON.stringify({ ...cfg, source: { ...cfg.source, detection: { pageSize: 0 } } }));
      const bad = run(['--config', file, 'status']);
      assert.strictEqual(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /source\.detection\.pageSize: got 0, expected integer 1\.\.500/);
      assert.ok(!/environment variable/.test(bad.stderr), bad.stderr);
    });
  });

  describe('#18 paths in a config are resolved from the config file, not the current directory', () => {
    it('Salesforce auth.privateKeyPath (inline or from ${ENV}) reaches the connector as an absolute path next to the config', () => {
      const sub = path.join(dir, 'deploy');
      fs.mkdirSync(path.join(sub, 'keys'), { recursive: true });
      const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      const keyFile = path.join(sub, 'keys', 'sf.key');
      fs.writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
      const file = path.join(sub, 'cfg.json');
      const jwt = (p: string) => ({
        name: 'sf',
        connector: 'salesforce',
        config: { auth: { type: 'jwt', clientId: '3MVG9', username: 'u@acme.com', privateKeyPath: p } },
      });
      assert.notStrictEqual(process.cwd(), sub);
      for (const [p, env] of [
        ['./keys/sf.key', {}],
        ['keys/sf.key', {}],
        ['${SF_KEY}', { SF_KEY: 'keys/sf.key' }],
        [keyFile, {}],
      ] as const) {
        fs.writeFileSync(file, JSON.stringify(base({ targets: [jwt(p)] })));
        const c = loadConfig(file, env, registry);
        const auth = (
          c.targets[0]!.config as { auth: { type: 'jwt'; clientId: string; username: string; privateKeyPath: string } }
        ).auth;
        assert.strictEqual(auth.privateKeyPath, keyFile, `${p} -> ${auth.privateKeyPath}`);
        // the connector reads it with the process's own cwd elsewhere
        const key = loadPrivateKey(auth as never, (f) => fs.readFileSync(f, 'utf8'));
        assert.strictEqual(key.asymmetricKeyType, 'rsa');
      }
      // a missing file is reported with the resolved path (a path is not a secret)
      fs.writeFileSync(file, JSON.stringify(base({ targets: [jwt('./keys/missing.key')] })));
      const auth = (loadConfig(file, {}, registry).targets[0]!.config as { auth: never }).auth;
      assert.throws(
        () => loadPrivateKey(auth, (f) => fs.readFileSync(f, 'utf8')),
        (e: Error) => e.message.includes(path.join(sub, 'keys', 'missing.key')),
      );
    });
  });
});
