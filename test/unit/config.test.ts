import assert from 'assert';
import { decodeConfig, ConfigError, parseJsonText } from '../../src/config';
import { redact, clearSecrets } from '../../src/log';
import { testRegistry } from '../helpers';

const base = () => ({
  source: { type: 'constant-contact', clientId: 'abc', clientSecret: '${CC_SECRET}' },
  targets: [{ name: 'crm', connector: 'memory-crm', config: { crm: 'x' } }],
});

function problems(raw: unknown, env: NodeJS.ProcessEnv = { CC_SECRET: 'super-secret-value' }): string[] {
  try {
    decodeConfig(raw, env, testRegistry(), 'cfg.json');
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('config', () => {
  afterEach(() => clearSecrets());

  it('decodes with defaults and resolves ${ENV} secrets', () => {
    const c = decodeConfig(base(), { CC_SECRET: 'super-secret-value' }, testRegistry());
    assert.strictEqual(c.source.clientSecret, 'super-secret-value');
    assert.strictEqual(c.source.apiBaseUrl, 'https://api.cc.email/v3');
    assert.strictEqual(c.source.authBaseUrl, 'https://authz.constantcontact.com/oauth2/default/v1');
    assert.deepStrictEqual(c.source.rateLimit, { perSecond: 4, dailyBudget: 10000 });
    assert.deepStrictEqual(c.source.detection, {
      mode: 'window',
      overlapMinutes: 10,
      lagMinutes: 2,
      reconcileEveryHours: 24,
      pageSize: 500,
      maxPages: 5000,
      reconcileVia: 'auto',
    });
    assert.strictEqual(c.storePath, './.cc-optout/state.db');
    // the resolved secret is now masked wherever it would be printed
    assert.strictEqual(redact('token super-secret-value here'), 'token [redacted] here');
  });

  it('names a missing environment variable with its JSON path', () => {
    assert.deepStrictEqual(problems(base(), {}), [
      'source.clientSecret: environment variable CC_SECRET is not set (referenced as "${CC_SECRET}")',
    ]);
  });

  it('names the path, the value and the expectation for a wrong value', () => {
    const raw = base() as Record<string, any>;
    raw.source.detection = { pageSize: 900, mode: 'often' };
    const p = problems(raw);
    assert.ok(p.includes('source.detection.pageSize: got 900, expected integer 1..500'), p.join('\n'));
    assert.ok(
      p.some((x) => x.startsWith('source.detection.mode: got "often"')),
      p.join('\n'),
    );
  });

  it('rejects unknown keys by name, and accepts "//" comment keys', () => {
    const raw = base() as Record<string, any>;
    raw.source.detecton = { mode: 'full' };
    raw['//'] = 'comment';
    const p = problems(raw);
    assert.strictEqual(p.length, 1);
    assert.match(p[0]!, /^source\.detecton: unknown key "detecton"/);
  });

  it('decodes each target with its connector codec and prefixes the path', () => {
    const raw = base() as Record<string, any>;
    raw.targets = [
      { name: 'crm', connector: 'memory-crm', config: { crm: '' } },
      { name: 'crm', connector: 'memory-crm', config: { crm: 'y' } },
      { name: 'other', connector: 'pipedrive', config: {} },
    ];
    const p = problems(raw);
    assert.ok(p.includes('targets[0].config.crm: got "", expected NonEmptyString'), p.join('\n'));
    assert.ok(p.includes('targets[1].name: duplicate target name "crm"'), p.join('\n'));
    assert.ok(p.includes('targets[2].connector: got "pipedrive", expected one of "memory-crm"'), p.join('\n'));
  });

  it('never prints a secret value in an error', () => {
    const raw = base() as Record<string, any>;
    raw.targets[0].config = { crm: 'x', apiKey: 12345678 };
    const p = problems(raw);
    assert.ok(
      p.some((x) => x.includes('targets[0].config.apiKey: got [redacted]')),
      p.join('\n'),
    );
    assert.ok(!p.join('\n').includes('12345678'));
  });

  it('reports JSON syntax errors with line and column', () => {
    assert.throws(
      () => parseJsonText('{\n  "a": 1,\n  oops\n}', 'cfg.json'),
      (e: ConfigError) => /line 3, column 3/.test(e.problems[0]!),
    );
  });
});
