/**
 * HubSpot config: the io-ts codec and spec.json (the config's JSON Schema, `connector.schema`) agree on the fixtures;
 * errors are readable paths; defaults apply; the connector exports what the registry expects.
 */
import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { isLeft, isRight } from 'fp-ts/Either';
import { formatErrors } from '../../../src/sdk';
import { connector } from '..';
import { HubSpotConfigCodec, resolveConfig } from '../config';
import { BATCH_KV_PREFIX } from '../target';

// dist/test/unit -> package root
/** The package root (holds package.json), from either connectors/hubspot/test or dist/connectors/hubspot/test. */
const ROOT = [3, 4]
  .map((up) => path.resolve(__dirname, ...Array<string>(up).fill('..')))
  .find((d) => fs.existsSync(path.join(d, 'package.json')))!;
const spec = JSON.parse(fs.readFileSync(path.join(ROOT, 'connectors', 'hubspot', 'spec.json'), 'utf8')) as Record<
  string,
  unknown
>;
const fixtures = JSON.parse(
  fs.readFileSync(path.join(ROOT, 'connectors', 'hubspot', 'test', 'fixtures', 'configs.json'), 'utf8'),
) as {
  valid: Record<string, unknown>[];
  invalid: { config: Record<string, unknown>; why: string }[];
};

describe('hubspot connector: config', () => {
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats(ajv);
  const validate = ajv.compile(spec);

  it('spec and capabilities: the connector serves spec.json as its schema, a draft-07 schema', () => {
    assert.deepStrictEqual(connector.schema, spec);
    assert.deepStrictEqual(connector.capabilities, {
      dryRun: true,
      backfill: true,
      suppressionModes: ['unsubscribe-all', 'subscriptions'],
      // `status` shows the batch decision the connector stores under these keys
      statusKeys: ['unsubscribe-all', 'subscriptions'].map((m) => BATCH_KV_PREFIX + m),
    });
    assert.strictEqual(spec.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.strictEqual(spec.additionalProperties, false);
  });

  it('connector: id, maxBatch, codec', () => {
    assert.strictEqual(connector.id, 'hubspot');
    assert.strictEqual(connector.maxBatch, 1000);
    assert.strictEqual(connector.config, HubSpotConfigCodec);
  });

  it('has enough fixtures', () => {
    assert.ok(fixtures.valid.length >= 4);
    assert.ok(fixtures.invalid.length >= 6);
  });

  fixtures.valid.forEach((config, i) => {
    it(`accepts valid[${i}] with both io-ts and JSON Schema`, () => {
      const r = connector.config.decode(config);
      assert.ok(isRight(r), isLeft(r) ? formatErrors(r.left).join('\n') : '');
      assert.ok(validate(config), JSON.stringify(validate.errors));
    });
  });

  fixtures.invalid.forEach(({ config, why }, i) => {
    it(`rejects invalid[${i}] (${why}) with both io-ts and JSON Schema`, () => {
      const r = connector.config.decode(config);
      assert.ok(isLeft(r), `io-ts accepted: ${why}`);
      assert.ok(!validate(config), `JSON Schema accepted: ${why}`);
    });
  });

  it('errors name the path and what was expected, and never print a secret value', () => {
    const lines = (config: unknown): string => {
      const r = connector.config.decode(config);
      assert.ok(isLeft(r));
      return isLeft(r) ? formatErrors(r.left, 'targets[0].config').join('\n') : '';
    };
    const auth = { type: 'private-app', accessToken: 'pat-secret-value-123' };
    assert.match(lines({ auth, typo: 1 }), /^targets\[0\]\.config\.typo: unknown key "typo" \(allowed: auth, /);
    assert.match(lines({ auth: { ...auth, extra: 'x' } }), /targets\[0\]\.config\.auth\.extra: unknown key "extra"/);
    assert.match(
      lines({ auth, suppression: { type: 'subscriptions', subscriptionIds: [] } }),
      /targets\[0\]\.config\.suppression\.subscriptionIds: .*at least one/,
    );
    assert.match(
      lines({ auth, legalBasis: 'BECAUSE' }),
      /targets\[0\]\.config\.legalBasis: .*LEGITIMATE_INTEREST_CLIENT/,
    );
    assert.match(
      lines({ auth, properties: { hs_email_optout: 'optOutDate' } }),
      /targets\[0\]\.config\.properties\.hs_email_optout: .*read-only/,
    );
    const secretErr = lines({
      auth: { type: 'private-app', accessToken: 'pat-secret-value-123', refreshToken: 'pat-secret-value-456' },
    });
    assert.ok(!secretErr.includes('pat-secret-value'), secretErr);
    assert.ok(
      !lines({ auth: { type: 'private-app', accessToken: 42 } }).includes('42'),
      'secret-looking keys are masked',
    );
  });

  it('a wrong auth type speaks about the type only', () => {
    const r = connector.config.decode({ auth: { type: 'apikey', accessToken: 'x' } });
    assert.ok(isLeft(r));
    const lines = isLeft(r) ? formatErrors(r.left) : [];
    assert.deepStrictEqual(lines, ['auth.type: got "apikey", expected "service-key" | "private-app" | "oauth"']);
  });

  it('applies defaults', () => {
    const r = HubSpotConfigCodec.decode({
      auth: { type: 'private-app', accessToken: 'tok-123456' },
      baseUrl: 'http://127.0.0.1:4010/',
    });
    assert.ok(isRight(r));
    if (!isRight(r)) return;
    const c = resolveConfig(r.right);
    assert.deepStrictEqual(
      { ...c, auth: undefined },
      {
        auth: undefined,
        baseUrl: 'http://127.0.0.1:4010',
        apiVersion: '2026-09',
        matchAdditionalEmails: true,
        suppression: { type: 'unsubscribe-all', batch: 'auto' },
        legalBasis: null,
        legalBasisExplanation: null,
        businessUnitId: 0,
        onlyExistingContacts: true,
        properties: {},
        per10Seconds: 100,
        searchPerSecond: 5,
      },
    );
    const d = HubSpotConfigCodec.decode({ auth: { type: 'private-app', accessToken: 'tok-123456' } });
    assert.ok(isRight(d) && resolveConfig(d.right).baseUrl === 'https://api.hubapi.com');
  });
});
