/**
 * Fleet mode's /readyz keeps the README's promise ("200 when the store is open ... and no credential was refused"):
 * 503 with a reason while the store does not answer or an account's Constant Contact refresh token was refused,
 * ready again once that clears.
 */
import { strict as assert } from 'assert';
import Database from 'better-sqlite3';
import { resolveService } from '../../src/config';
import { createSqliteLeases } from '../../src/fleet/sqlite';
import { sqliteWake } from '../../src/fleet/wake';
import { AccountWork, OpenAccountInput } from '../../src/fleet/worker';
import { memoryLogger } from '../../src/log';
import { FleetRunner } from '../../src/service/fleet-runner';
import { ReauthorizationRequired } from '../../src/source/types';
import { AccountRecord, StoreBackend } from '../../src/store/backend';
import { StateStore } from '../../src/store/types';

function memoryStore(): StateStore {
  const kv = new Map<string, string>();
  return {
    kv: (ns: string) => ({
      get: (k: string) => kv.get(`${ns}/${k}`) ?? null,
      set: (k: string, v: string) => void kv.set(`${ns}/${k}`, v),
    }),
  } as unknown as StateStore;
}

const acme: AccountRecord = {
  id: 'acme',
  priority: 1,
  config: { source: {}, targets: [] },
  createdAt: '2026-12-01T00:00:00.000Z',
  updatedAt: '2026-12-01T00:00:00.000Z',
};

async function until(pred: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('fleet /readyz: store down and refused credentials make it 503', () => {
  let runner: FleetRunner | null = null;
  afterEach(async () => {
    await runner?.stop();
    runner = null;
  });

  it('503 with reasons while the store is down or a refresh token is refused; ready once they clear', async function () {
    this.timeout(30_000);
    let storeDown: 'no' | 'error' | 'hang' = 'no';
    let refuse = true;
    const backend: StoreBackend = {
      kind: 'sqlite',
      location: 'memory',
      account: () => Promise.reject(new Error('not used')),
      listAccounts: () =>
        storeDown === 'error'
          ? Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:5432'))
          : storeDown === 'hang'
            ? new Promise<AccountRecord[]>((resolve) => setTimeout(() => resolve([acme]), 1000))
            : Promise.resolve([acme]),
      getAccount: () => Promise.resolve(acme),
      putAccount: () => Promise.reject(new Error('not used')),
      removeAccount: () => Promise.resolve(false),
      close: () => Promise.resolve(),
    };
    const db = new Database(':memory:');
    const open = (_: OpenAccountInput): Promise<AccountWork> =>
      Promise.resolve({
        store: memoryStore(),
        app: 'app-1',
        detect: () =>
          refuse
            ? Promise.reject(new ReauthorizationRequired('Constant Contact refused the refresh token (invalid_grant)'))
            : Promise.resolve({ calls: 1, found: 0, exitCode: 0 }),
        deliver: () => Promise.resolve({ settled: 0, nextDueAt: null }),
        close: () => Promise.resolve(),
      });
    const service = { ...resolveService(undefined), listen: { host: '127.0.0.1', port: 0 } };
    runner = new FleetRunner({
      service,
      logger: memoryLogger('error'),
      workers: 1,
      storeProbeMs: 300,
      worker: {
        backend,
        leases: createSqliteLeases(db),
        wake: sqliteWake(db),
        open,
        schedule: () => 60_000,
        idleMs: 20,
        failureBackoffMs: 50,
        maxIntervalMs: 100,
        minIntervalMs: 10,
      },
    });
    await runner.start();
    const r = runner;
    await until(async () => (await r.readiness()).reasons.some((x) => /account acme/.test(x)), 'the refusal');
    let rd = await r.readiness();
    assert.equal(rd.ready, false);
    assert.ok(
      rd.reasons.some((x) => /^account acme: credentials refused: .*invalid_grant/.test(x)),
      rd.reasons.join('; '),
    );
    refuse = false;
    await until(async () => (await r.readiness()).ready, 'ready once the token works again');
    storeDown = 'error';
    rd = await r.readiness();
    assert.equal(rd.ready, false);
    assert.ok(
      rd.reasons.some((x) => /^store unreachable: .*ECONNREFUSED/.test(x)),
      rd.reasons.join('; '),
    );
    storeDown = 'hang';
    rd = await r.readiness();
    assert.equal(rd.ready, false);
    assert.ok(
      rd.reasons.some((x) => /^store unreachable: no answer within 300 ms/.test(x)),
      rd.reasons.join('; '),
    );
    storeDown = 'no';
    rd = await r.readiness();
    assert.equal(rd.ready, true, rd.reasons.join('; '));
  });
});
