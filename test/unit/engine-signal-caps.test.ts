/**
 * `caps.signal`: the engine hands each target the current run's stop signal, so a connector whose deliver()
 * makes several calls (Dynamics' `$batch` packs) can stop between them once SIGINT/SIGTERM arrives.
 */
import { strict as assert } from 'assert';
import { FakeSource, contact, testConfig } from '../helpers';
import { Engine } from '../../src/engine';
import { SqliteStateStore } from '../../src/store/sqlite';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { createRegistry } from '../../src/registry';
import type { Capabilities, Connector, OptOut, Outcome } from '../../src/sdk';

describe('engine: caps.signal is the run stop signal', () => {
  it('a target sees caps.signal aborted inside deliver() once the run signal is aborted', async () => {
    const ac = new AbortController();
    const seen: Array<boolean | undefined> = [];
    const conn: Connector<unknown> = {
      id: 'memory-crm',
      config: { decode: (x: unknown) => ({ _tag: 'Right', right: x }) } as unknown as Connector<unknown>['config'],
      schema: {},
      capabilities: { dryRun: true, backfill: true, suppressionModes: [] },
      open: (_c: unknown, caps: Capabilities) => ({
        check: async () => ({ ok: true, items: [] }),
        deliver: async (batch: readonly OptOut[]) => {
          ac.abort(); // SIGINT while the batch is in hand
          seen.push(caps.signal?.aborted);
          return {
            outcomes: batch.map((o): Outcome => ({ email: o.email, kind: 'applied', recordIds: ['1'] })),
          };
        },
      }),
    };
    const registry = createRegistry({ connectorsDir: null, connectors: [conn] });
    const src = new FakeSource();
    src.contacts = ['a@x.com', 'b@x.com'].map((e, i) =>
      contact(e, 'unsubscribed', new Date(Date.UTC(2026, 4, 1 + i)).toISOString()),
    );
    const engine = new Engine({
      config: testConfig(registry, [{ name: 'crm', crm: 'x' }]),
      store: new SqliteStateStore(':memory:'),
      registry,
      source: () => src,
      clock: fakeClock(new Date('2026-06-01T00:00:00Z')),
      logger: memoryLogger(),
      random: () => 0.5,
    });
    await engine.backfill({ signal: ac.signal });
    assert.deepEqual(seen, [true], 'the connector saw the abort through caps.signal');
  });
});
