/**
 * One spec per connector, beside its code (connectors/<id>/spec.json, served as `connector.schema`), and one
 * schema of the config file (src/config.schema.json): the io-ts codecs are the source of truth, and each JSON
 * Schema must accept exactly what its codec accepts on the fixture cases (connectors/<id>/test/fixtures/configs.json,
 * test/fixtures/core/configs.json).
 */
import assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import { isLeft } from 'fp-ts/Either';
import { createRegistry, packageRoot } from '../../src/registry';
import { CONFIG_SCHEMA, SOURCE_SCHEMA } from '../../src/spec';
import { decodeConfig, ConstantContactConfig, ConfigError } from '../../src/config';
import { testRegistry } from '../helpers';

const root = packageRoot();

interface Examples {
  valid: unknown[];
  invalid: { config: unknown; why: string }[];
}
function examples(file: string): Examples {
  return JSON.parse(fs.readFileSync(path.join(root, file), 'utf8')) as Examples;
}

describe('connector specs and the config schema', () => {
  it('every built-in connector folder loads, with its schema and capabilities', () => {
    const reg = createRegistry();
    assert.deepStrictEqual(reg.ids(), ['hubspot', 'salesforce']);
    for (const info of reg.list()) {
      const c = reg.get(info.id)!;
      assert.strictEqual(typeof c.schema, 'object', `${info.id} schema`);
      assert.deepStrictEqual(
        c.schema,
        JSON.parse(fs.readFileSync(path.join(root, 'connectors', info.id, 'spec.json'), 'utf8')),
        `${info.id}: the schema is spec.json`,
      );
      assert.strictEqual(typeof info.capabilities.dryRun, 'boolean', `${info.id} capabilities.dryRun`);
      assert.ok(info.capabilities.suppressionModes.length > 0, `${info.id} suppressionModes`);
    }
  });

  it('no manifest copy of a schema is left: one spec.json per connector, no manifest-entry.json, no manifest.json', () => {
    assert.ok(!fs.existsSync(path.join(root, 'manifest.json')));
    for (const id of ['hubspot', 'salesforce']) {
      assert.ok(fs.existsSync(path.join(root, 'connectors', id, 'spec.json')), `${id}/spec.json`);
      assert.ok(!fs.existsSync(path.join(root, 'connectors', id, 'manifest-entry.json')), `${id}/manifest-entry.json`);
    }
  });

  it('a connector added under test/ loads as a plugin alone, with no change to src/', () => {
    const reg = testRegistry();
    assert.deepStrictEqual(reg.ids(), ['memory-crm']);
    assert.strictEqual(reg.get('memory-crm')!.maxBatch, 50);
  });

  describe('JSON Schemas and io-ts codecs agree', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });

    it('on the config file (src/config.schema.json vs the core codec)', () => {
      const validate = ajv.compile(CONFIG_SCHEMA);
      const ex = examples('test/fixtures/core/configs.json');
      const decodes = (c: unknown): boolean => {
        try {
          decodeConfig(c, {}, testRegistry());
          return true;
        } catch (e) {
          if (e instanceof ConfigError) return false;
          throw e;
        }
      };
      for (const v of ex.valid) {
        assert.ok(validate(v), `schema rejects a valid example: ${ajv.errorsText(validate.errors)}`);
        assert.ok(decodes(v), 'codec rejects a valid example');
      }
      for (const { config, why } of ex.invalid) {
        assert.strictEqual(validate(config), false, `schema accepts invalid example (${why})`);
        assert.strictEqual(decodes(config), false, `codec accepts invalid example (${why})`);
      }
    });

    it('on the source config (definitions.source vs ConstantContactConfig)', () => {
      const validate = ajv.compile(SOURCE_SCHEMA);
      const ex = examples('test/fixtures/core/configs.json');
      const sources = ex.valid.map((v) => (v as { source: unknown }).source);
      for (const s of sources) {
        assert.ok(validate(s), ajv.errorsText(validate.errors));
        assert.ok(!isLeft(ConstantContactConfig.decode(s)));
      }
      for (const { config, why } of ex.invalid) {
        const s = (config as { source?: unknown }).source;
        if (s === undefined) continue;
        assert.strictEqual(
          validate(s),
          !isLeft(ConstantContactConfig.decode(s)),
          `schema and codec disagree on source (${why})`,
        );
      }
    });

    const cases: Array<{ id: string; reg: () => ReturnType<typeof createRegistry>; file: string | null }> = [
      { id: 'hubspot', reg: () => createRegistry(), file: 'connectors/hubspot/test/fixtures/configs.json' },
      { id: 'salesforce', reg: () => createRegistry(), file: 'connectors/salesforce/test/fixtures/configs.json' },
      { id: 'memory-crm', reg: testRegistry, file: null },
    ];
    for (const { id, reg, file } of cases) {
      it(`on connector "${id}" (its schema vs its codec)`, () => {
        const c = reg().get(id)!;
        const validate = ajv.compile(c.schema);
        const ex: Examples = file
          ? examples(file)
          : {
              valid: [{ crm: 'a' }, { crm: 'a', apiKey: 'k' }, { '//': 'c', crm: 'a' }],
              invalid: [
                { config: {}, why: 'crm missing' },
                { config: { crm: 'a', other: 1 }, why: 'unknown key' },
              ],
            };
        assert.ok(ex.valid.length >= 2 && ex.invalid.length >= 2, 'enough examples');
        for (const v of ex.valid) {
          assert.ok(
            validate(v),
            `schema rejects a valid ${id} example: ${ajv.errorsText(validate.errors)} ${JSON.stringify(v)}`,
          );
          assert.ok(!isLeft(c.config.decode(v)), `codec rejects a valid ${id} example ${JSON.stringify(v)}`);
        }
        for (const { config, why } of ex.invalid) {
          assert.strictEqual(validate(config), false, `schema accepts an invalid ${id} example (${why})`);
          assert.ok(isLeft(c.config.decode(config)), `codec accepts an invalid ${id} example (${why})`);
        }
      });
    }
  });
});
