import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import { isRight } from 'fp-ts/Either';
import { connector } from '..';
import { resolveConfig, SalesforceConfig } from '../config';
import { KV_API_USAGE } from '../client';
import { formatErrors } from '../../../src/sdk';

// Compiled tests run from dist/; fixtures and spec.json are read from the source tree.
/** The package root (holds package.json), from either connectors/salesforce/test or dist/connectors/salesforce/test. */
const ROOT = [3, 4]
  .map((up) => path.resolve(__dirname, ...Array<string>(up).fill('..')))
  .find((d) => fs.existsSync(path.join(d, 'package.json')))!;
const fixtures = JSON.parse(
  fs.readFileSync(path.join(ROOT, 'connectors/salesforce/test/fixtures/configs.json'), 'utf8'),
) as {
  valid: unknown[];
  invalid: Array<{ config: unknown; why: string }>;
};
const spec = JSON.parse(fs.readFileSync(path.join(ROOT, 'connectors/salesforce/spec.json'), 'utf8')) as Record<
  string,
  unknown
>;

describe('salesforce config', () => {
  const ajv = new Ajv({ allErrors: true, strict: true });
  const validate = ajv.compile(spec);

  it('has enough fixtures', () => {
    assert.ok(fixtures.valid.length >= 4);
    assert.ok(fixtures.invalid.length >= 6);
  });

  fixtures.valid.forEach((c, i) => {
    it(`accepts valid[${i}] with both the io-ts codec and the JSON Schema`, () => {
      const r = connector.config.decode(c);
      assert.ok(isRight(r), isRight(r) ? '' : formatErrors(r.left).join('\n'));
      assert.ok(validate(c), JSON.stringify(validate.errors));
    });
  });

  fixtures.invalid.forEach(({ config, why }, i) => {
    it(`rejects invalid[${i}] (${why}) with both`, () => {
      assert.ok(!isRight(connector.config.decode(config)), `io-ts accepted: ${why}`);
      assert.ok(!validate(config), `JSON Schema accepted: ${why}`);
    });
  });

  it('names the problem in readable paths', () => {
    const r = connector.config.decode({
      auth: { type: 'access-token', accessToken: 'tok-123456' },
      objects: { Contact: { feild: 'X' } },
    });
    assert.ok(!isRight(r));
    const lines = formatErrors(r.left, 'targets[0].config');
    assert.ok(
      lines.some((l) => l.startsWith('targets[0].config.objects.Contact.feild: unknown key "feild"')),
      lines.join('\n'),
    );
    const r2 = connector.config.decode({ auth: { type: 'access-token', accessToken: 'tok-123456' } });
    assert.ok(!isRight(r2));
    assert.deepEqual(formatErrors(r2.left), [
      'instanceUrl: instanceUrl is required with auth.type "access-token" (your My Domain URL, e.g. https://acme.my.salesforce.com)',
    ]);
    const r3 = connector.config.decode({ auth: { type: 'jwt', clientId: 'c', username: 'u' } });
    assert.ok(!isRight(r3));
    assert.match(formatErrors(r3.left).join('\n'), /^auth: jwt auth needs exactly one of "privateKeyPath"/);
  });

  it('applies defaults: Contact and Lead on, PersonAccount off, v62.0, login host, 2000, 100', () => {
    const r = connector.config.decode({ auth: { type: 'refresh-token', clientId: 'c', refreshToken: 'r' } });
    assert.ok(isRight(r));
    const cfg = resolveConfig(r.right);
    assert.equal(cfg.loginUrl, 'https://login.salesforce.com');
    assert.equal(cfg.apiVersion, '62.0');
    assert.equal(cfg.bulkThreshold, 2000);
    assert.equal(cfg.queryChunkSize, 200);
    assert.deepEqual(
      cfg.objects.map((o) => [o.key, o.sobject, o.emailField, o.field, o.conditions.join(' AND ')]),
      [
        ['Contact', 'Contact', 'Email', 'HasOptedOutOfEmail', ''],
        ['Lead', 'Lead', 'Email', 'HasOptedOutOfEmail', 'IsConverted = false'],
      ],
    );
  });

  it('maps PersonAccount to Account.PersonEmail / PersonHasOptedOutOfEmail and keeps person contacts out of Contact', () => {
    const c = {
      auth: { type: 'refresh-token', clientId: 'c', refreshToken: 'r' },
      loginUrl: 'https://test.salesforce.com/',
      objects: { PersonAccount: { enabled: true } },
    };
    const r = SalesforceConfig.decode(c);
    assert.ok(isRight(r));
    const cfg = resolveConfig(r.right);
    assert.equal(cfg.loginUrl, 'https://test.salesforce.com');
    const pa = cfg.objects.find((o) => o.key === 'PersonAccount')!;
    assert.deepEqual(
      [pa.sobject, pa.emailField, pa.field, pa.conditions],
      ['Account', 'PersonEmail', 'PersonHasOptedOutOfEmail', ['IsPersonAccount = true']],
    );
    assert.deepEqual(cfg.objects.find((o) => o.key === 'Contact')!.conditions, ['IsPersonAccount = false']);
  });

  it('the connector serves spec.json as its schema, and says what it can do', () => {
    assert.deepEqual(connector.schema, spec);
    assert.deepEqual(connector.capabilities, {
      dryRun: true,
      backfill: true,
      suppressionModes: ['email-opt-out-field'],
      objects: ['Contact', 'Lead', 'PersonAccount'],
      // `status` shows the last Sforce-Limit-Info the connector stores under this key
      statusKeys: [KV_API_USAGE],
    });
  });
});
