/**
 * Defaults in one place: the codec's resolution (`resolveConfig`) is the source of the defaults; each
 * connector's JSON Schema states them for readers (a `default` keyword, or "(default X)" in a description).
 * For every default the schema states, the field omitted from the connector's own example must resolve to
 * exactly that value; and every `default` keyword in a schema is checked (none is left unlisted).
 */
import { strict as assert } from 'assert';
import { isRight } from 'fp-ts/Either';
import { connector as hubspot } from '../../connectors/hubspot';
import { resolveConfig as resolveHubSpot } from '../../connectors/hubspot/config';
import { connector as salesforce } from '../../connectors/salesforce';
import { resolveConfig as resolveSalesforce } from '../../connectors/salesforce/config';
import {
  connector as dynamics,
  resolveConfig as resolveDynamics,
} from '../../packages/cc-optout-connector-dynamics/src';
import type { Connector } from '../../src/sdk';

type Json = Record<string, unknown>;
/** spec path (dot-separated property names) -> the resolved value it defaults */
type Table = Record<string, (r: never) => unknown>;

function node(schema: Json, p: string): Json {
  let n = schema;
  for (const k of p.split('.')) n = (n.properties as Record<string, Json>)[k]!;
  return n;
}

/** The default a schema node states: its `default`, or "(default X)" / "X (default)" in its description. */
function stated(n: Json): unknown {
  if ('default' in n) return n.default;
  const d = String(n.description ?? '');
  const m = /\(default ([^\s);]+)/.exec(d) ?? /(\S+) \(default\)/.exec(d);
  assert.ok(m, `no default stated in ${JSON.stringify(d)}`);
  const v = m[1]!.trim().replace(/[:.,]$/, '');
  if (/^-?\d+(\.\d+)?$/.test(v) && !/\.\d$/.test(v)) return Number(v);
  if (v === 'true' || v === 'false') return v === 'true';
  if (v.startsWith('[')) return JSON.parse(v);
  return v;
}

function defaultKeywords(n: unknown, p: string, out: string[]): string[] {
  if (!n || typeof n !== 'object') return out;
  const o = n as Json;
  if ('default' in o && p) out.push(p);
  for (const [k, v] of Object.entries((o.properties as Json) ?? {})) defaultKeywords(v, p ? `${p}.${k}` : k, out);
  return out;
}

function example(c: Connector<unknown>): Json {
  const text = JSON.stringify(c.example!()).replace(/\$\{([A-Z0-9_]+)\}/g, 'value-$1');
  return JSON.parse(text, (k, v) => (k === '//' ? undefined : v)) as Json;
}

function without(cfg: Json, p: string): Json {
  const copy = JSON.parse(JSON.stringify(cfg)) as Json;
  const keys = p.split('.');
  let n = copy;
  for (const k of keys.slice(0, -1)) {
    if (!n[k] || typeof n[k] !== 'object') return copy;
    n = n[k] as Json;
  }
  delete n[keys[keys.length - 1]!];
  return copy;
}

const cases: Array<{ c: Connector<unknown>; resolve: (x: never) => unknown; table: Table }> = [
  {
    c: hubspot as Connector<unknown>,
    resolve: resolveHubSpot as (x: never) => unknown,
    table: {
      baseUrl: (r: ReturnType<typeof resolveHubSpot>) => r.baseUrl,
      apiVersion: (r: ReturnType<typeof resolveHubSpot>) => r.apiVersion,
      businessUnitId: (r: ReturnType<typeof resolveHubSpot>) => r.businessUnitId,
      onlyExistingContacts: (r: ReturnType<typeof resolveHubSpot>) => r.onlyExistingContacts,
      matchAdditionalEmails: (r: ReturnType<typeof resolveHubSpot>) => r.matchAdditionalEmails,
      'rateLimit.per10Seconds': (r: ReturnType<typeof resolveHubSpot>) => r.per10Seconds,
      'rateLimit.searchPerSecond': (r: ReturnType<typeof resolveHubSpot>) => r.searchPerSecond,
    } as Table,
  },
  {
    c: salesforce as Connector<unknown>,
    resolve: resolveSalesforce as (x: never) => unknown,
    table: {
      loginUrl: (r: ReturnType<typeof resolveSalesforce>) => r.loginUrl,
      apiVersion: (r: ReturnType<typeof resolveSalesforce>) => r.apiVersion,
      bulkThreshold: (r: ReturnType<typeof resolveSalesforce>) => r.bulkThreshold,
      queryChunkSize: (r: ReturnType<typeof resolveSalesforce>) => r.queryChunkSize,
    } as Table,
  },
  {
    c: dynamics as Connector<unknown>,
    resolve: resolveDynamics as (x: never) => unknown,
    table: {
      apiVersion: (r: ReturnType<typeof resolveDynamics>) => r.apiVersion,
      'auth.authorityHost': (r: ReturnType<typeof resolveDynamics>) => r.auth.authorityHost,
      'entities.contact': (r: ReturnType<typeof resolveDynamics>) => r.entities.includes('contact'),
      'entities.lead': (r: ReturnType<typeof resolveDynamics>) => r.entities.includes('lead'),
      emailFields: (r: ReturnType<typeof resolveDynamics>) => r.emailFields,
      alsoSetDoNotEmail: (r: ReturnType<typeof resolveDynamics>) => r.alsoSetDoNotEmail,
      maxUrlLength: (r: ReturnType<typeof resolveDynamics>) => r.maxUrlLength,
      addressesPerQuery: (r: ReturnType<typeof resolveDynamics>) => r.addressesPerQuery,
      requestsPerBatch: (r: ReturnType<typeof resolveDynamics>) => r.requestsPerBatch,
      'rateLimit.perWindow': (r: ReturnType<typeof resolveDynamics>) => r.rateLimit.perWindow,
      'rateLimit.windowSeconds': (r: ReturnType<typeof resolveDynamics>) => r.rateLimit.windowSeconds,
      'rateLimit.maxRetryAfterSeconds': (r: ReturnType<typeof resolveDynamics>) => r.rateLimit.maxRetryAfterSeconds,
      'rateLimit.maxRetries': (r: ReturnType<typeof resolveDynamics>) => r.rateLimit.maxRetries,
      timeoutSeconds: (r: ReturnType<typeof resolveDynamics>) => (r.timeoutMs as number) / 1000,
    } as Table,
  },
];

describe('connector specs state the defaults the codec resolves (one source: resolveConfig)', () => {
  for (const { c, resolve, table } of cases) {
    it(`${c.id}: every default its spec.json states equals what resolveConfig gives for the omitted field`, () => {
      const schema = c.schema as Json;
      const unlisted = defaultKeywords(schema, '', []).filter((p) => !(p in table));
      assert.deepEqual(unlisted, [], `defaults in ${c.id}'s schema the test does not check`);
      const base = example(c);
      const wrong: string[] = [];
      for (const [p, get] of Object.entries(table)) {
        const d = c.config.decode(without(base, p));
        assert.ok(isRight(d), `${c.id}: the example without ${p} does not decode`);
        const got = get(resolve(d.right as never) as never);
        const want = stated(node(schema, p));
        if (JSON.stringify(got) !== JSON.stringify(want))
          wrong.push(`${p}: schema says ${JSON.stringify(want)}, resolveConfig gives ${JSON.stringify(got)}`);
      }
      assert.deepEqual(wrong, []);
    });
  }
});
