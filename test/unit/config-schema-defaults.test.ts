/**
 * Defaults in one place (core config): every `default` in src/config.schema.json equals the value
 * src/config.ts's decoding gives when the field is omitted (a config with only the required fields).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { decodeConfig } from '../../src/config';
import { packageRoot } from '../../src/registry';
import { testRegistry } from '../helpers';

type Json = Record<string, unknown>;

function defaults(n: unknown, p: string[], out: Array<[string[], unknown]>): Array<[string[], unknown]> {
  if (!n || typeof n !== 'object') return out;
  const o = n as Json;
  if ('default' in o && p.length) out.push([p, o.default]);
  for (const [k, v] of Object.entries((o.properties as Json) ?? {})) defaults(v, [...p, k], out);
  for (const [k, v] of Object.entries((o.$defs as Json) ?? (o.definitions as Json) ?? {}))
    defaults(v, k.split('.'), out);
  return out;
}

describe('config.schema.json defaults equal what config.ts resolves for an omitted field', () => {
  it('a minimal config decodes to every default the schema states', () => {
    const schema = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'src', 'config.schema.json'), 'utf8')) as Json;
    const registry = testRegistry();
    const cfg = decodeConfig(
      {
        source: { type: 'constant-contact', clientId: 'client-1' },
        targets: [{ name: 't', connector: 'memory-crm', config: { crm: 'x' } }],
        service: { backoff: {}, alerts: {} },
      },
      {},
      registry,
    ) as unknown as Json;
    const list = defaults(schema, [], []);
    assert.ok(list.length >= 10, `found ${list.length} defaults`);
    const wrong: string[] = [];
    for (const [p, want] of list) {
      let v: unknown = cfg;
      for (const k of p) v = v && typeof v === 'object' ? (v as Json)[k] : undefined;
      // service.listen is parsed into host and port
      if (p.join('.') === 'service.listen' && v && typeof v === 'object') {
        const l = v as { host: string; port: number };
        v = `${l.host}:${l.port}`;
      }
      if (JSON.stringify(v) !== JSON.stringify(want))
        wrong.push(`${p.join('.')}: schema says ${JSON.stringify(want)}, config.ts gives ${JSON.stringify(v)}`);
    }
    assert.deepEqual(wrong, []);
  });
});
