/** The config codec and its JSON Schema agree on the same accepted and refused examples; errors name the field. */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import { isLeft, isRight } from 'fp-ts/Either';
import { SECURE_URL_PATTERN, formatErrors } from 'cc-optout-connector/sdk';
import { connector, resolveConfig, DynamicsConfig } from '../../src';
import { ORIGIN_PATTERN } from '../../src/schema';

const fixtures = JSON.parse(
  fs.readFileSync(
    path.join(
      __dirname,
      '..',
      '..',
      '..',
      '..',
      '..',
      'packages',
      'cc-optout-connector-dynamics',
      'test',
      'fixtures',
      'configs.json',
    ),
    'utf8',
  ),
) as {
  valid: unknown[];
  invalid: Array<{ why: string; config: unknown }>;
};

describe('dynamics config: codec and JSON Schema', () => {
  const ajv = new Ajv({ allErrors: true, strict: false });
  const validate = ajv.compile(connector.schema);

  it('the origin pattern is the secure-URL pattern without a path', () => {
    assert.notEqual(ORIGIN_PATTERN, SECURE_URL_PATTERN);
    assert.ok(new RegExp(ORIGIN_PATTERN).test('https://org.crm.dynamics.com/'));
    assert.ok(!new RegExp(ORIGIN_PATTERN).test('https://org.crm.dynamics.com/api/data/v9.2'));
  });

  for (const [i, c] of fixtures.valid.entries()) {
    it(`accepts valid example ${i + 1} (codec and schema)`, () => {
      const d = connector.config.decode(c);
      assert.ok(isRight(d), JSON.stringify(isLeft(d) ? d.left.map((e) => e.message) : null));
      assert.ok(validate(c), JSON.stringify(validate.errors));
    });
  }
  for (const { why, config } of fixtures.invalid) {
    it(`refuses: ${why} (codec and schema)`, () => {
      assert.ok(isLeft(connector.config.decode(config)), 'codec accepted it');
      assert.ok(!validate(config), 'schema accepted it');
    });
  }

  it('errors name the field and the problem', () => {
    const d = DynamicsConfig.decode({
      url: 'https://contoso.crm.dynamics.com/api/data/v9.2',
      auth: { type: 'client-credentials', tenantId: 't', clientId: 'c', clientSecret: 's3cr3t' },
      emailFields: ['email'],
    });
    assert.ok(isLeft(d));
    const text = formatErrors(d.left).join('\n');
    assert.match(text, /url/);
    assert.match(text, /without a path/);
    assert.match(text, /emailFields/);
    assert.match(text, /"email" is not one of emailaddress1, emailaddress2, emailaddress3/);
  });

  it('defaults: emailaddress1, contacts and leads, donotbulkemail only, v9.2, 16,000-character URLs, 200 requests per $batch', () => {
    const d = DynamicsConfig.decode(fixtures.valid[0]);
    assert.ok(isRight(d));
    const r = resolveConfig(d.right);
    assert.deepEqual(r.emailFields, ['emailaddress1']);
    assert.deepEqual(r.entities, ['contact', 'lead']);
    assert.equal(r.alsoSetDoNotEmail, false);
    assert.equal(r.apiVersion, '9.2');
    assert.equal(r.maxUrlLength, 16_000);
    assert.equal(r.requestsPerBatch, 200);
    assert.equal(r.auth.authorityHost, 'https://login.microsoftonline.com');
    assert.deepEqual(r.rateLimit, { perWindow: 6000, windowSeconds: 300, maxRetryAfterSeconds: 60, maxRetries: 4 });
  });

  it('the example() config decodes (with its ${ENV} references as values)', () => {
    assert.ok(isRight(connector.config.decode(connector.example!())));
    assert.match(JSON.stringify(connector.example!()), /\$\{DYNAMICS_CLIENT_SECRET\}/);
  });
});
