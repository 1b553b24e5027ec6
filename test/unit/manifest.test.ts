import assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import Ajv from 'ajv';
import { isLeft } from 'fp-ts/Either';
import { createRegistry, loadManifest, packageRoot, compiledRoot, Manifest } from '../../src/plugin';
import { decodeConfig, ConstantContactConfig, ConfigError } from '../../src/config';
import { testRegistry } from '../helpers';

const root = packageRoot();
const manifest = loadManifest();
const testManifest = loadManifest(path.join(root, 'test', 'fixtures', 'test-manifest.json'));

interface Examples {
  valid: unknown[];
  invalid: { config: unknown; why: string }[];
}
function examples(file: string): Examples {
  return JSON.parse(fs.readFileSync(path.join(root, file), 'utf8')) as Examples;
}

describe('manifest and registry', () => {
  it('lists the source and every connector with schema and capabilities, and every module loads', () => {
    assert.strictEqual(manifest.source.id, 'constant-contact');
    const reg = createRegistry(manifest);
    assert.deepStrictEqual(reg.ids().sort(), manifest.connectors.map((c) => c.id).sort());
    for (const c of manifest.connectors) {
      assert.strictEqual(typeof c.configSchema, 'object', `${c.id} configSchema`);
      assert.strictEqual(typeof c.capabilities.dryRun, 'boolean', `${c.id} capabilities.dryRun`);
      assert.ok(Array.isArray(c.capabilities.suppressionModes) && c.capabilities.suppressionModes.length > 0, `${c.id} suppressionModes`);
    }
    assert.ok(reg.ids().includes('hubspot') && reg.ids().includes('salesforce'), 'both CRM connectors are registered');
  });

  it('a connector added under test/ loads through a manifest entry alone, with no change to src/', () => {
    const reg = testRegistry();
    assert.deepStrictEqual(reg.ids(), ['memory-crm']);
    assert.strictEqual(reg.get('memory-crm')!.maxBatch, 50);
  });

  it('names the manifest entry whose module is not a connector', () => {
    const broken: Manifest = { ...testManifest, connectors: [{ ...testManifest.connectors[0]!, id: 'x', module: 'test/fixtures/memory-connector' }] };
    assert.throws(() => createRegistry(broken, compiledRoot()), /manifest connector "x": module exports connector id "memory-crm"/);
  });

  describe('JSON Schemas and io-ts codecs agree', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });

    it('on the config file (manifest.configSchema vs the core codec)', () => {
      const validate = ajv.compile(manifest.configSchema as object);
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

    it('on the source config (manifest.source.configSchema vs ConstantContactConfig)', () => {
      const validate = ajv.compile(manifest.source.configSchema);
      const ex = examples('test/fixtures/core/configs.json');
      const sources = ex.valid.map((v) => (v as { source: unknown }).source);
      for (const s of sources) {
        assert.ok(validate(s), ajv.errorsText(validate.errors));
        assert.ok(!isLeft(ConstantContactConfig.decode(s)));
      }
      for (const { config, why } of ex.invalid) {
        const s = (config as { source?: unknown }).source;
        if (s === undefined) continue;
        assert.strictEqual(validate(s), !isLeft(ConstantContactConfig.decode(s)), `schema and codec disagree on source (${why})`);
      }
    });

    for (const entry of [...manifest.connectors, ...testManifest.connectors]) {
      it(`on connector "${entry.id}"`, () => {
        const reg = entry.id === 'memory-crm' ? testRegistry() : createRegistry(manifest);
        const codec = reg.get(entry.id)!.config;
        const validate = ajv.compile(entry.configSchema);
        const file = entry.id === 'memory-crm' ? null : `connectors/${entry.id}/test/fixtures/configs.json`;
        const ex: Examples = file ? examples(file) : { valid: [{ crm: 'a' }, { crm: 'a', apiKey: 'k' }], invalid: [{ config: {}, why: 'crm missing' }, { config: { crm: 'a', other: 1 }, why: 'unknown key' }] };
        assert.ok(ex.valid.length >= 2 && ex.invalid.length >= 2, 'enough examples');
        for (const v of ex.valid) {
          assert.ok(validate(v), `schema rejects a valid ${entry.id} example: ${ajv.errorsText(validate.errors)} ${JSON.stringify(v)}`);
          const r = codec.decode(v);
          assert.ok(!isLeft(r), `codec rejects a valid ${entry.id} example ${JSON.stringify(v)}`);
        }
        for (const { config, why } of ex.invalid) {
          assert.strictEqual(validate(config), false, `schema accepts an invalid ${entry.id} example (${why})`);
          assert.ok(isLeft(codec.decode(config)), `codec accepts an invalid ${entry.id} example (${why})`);
        }
      });
    }
  });
});
