/**
 * FleetWorker (src/fleet/worker.ts) against leases in memory and fake accounts: claims are disjoint across
 * workers, detection and delivery leases each run their own lane, a poll that found opt-outs makes the deliver
 * leases due at once, a lost lease aborts the work, one account's failure never stops the others, and stop()
 * hands every held lease back due now.
 */
import { strict as assert } from 'assert';
import { memoryLogger } from '../../src/log';
import {
  AccountWork,
  DeliverOutcome,
  FleetWorker,
  OpenAccountInput,
  DetectOutcome,
  deliverLeaseKey,
  enabledTargetNames,
  parseLeaseKey,
  readPollRecord,
} from '../../src/fleet/worker';
import Database from 'better-sqlite3';
import { Leases, SchedulerInput } from '../../src/fleet/types';
import { createSqliteLeases } from '../../src/fleet/sqlite';
import { sqliteWake } from '../../src/fleet/wake';
import { fleetStatus } from '../../src/fleet/status';
import { AccountRecord, StoreBackend } from '../../src/store/backend';
import { StateStore } from '../../src/store/types';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The fleet's SQLite leases (src/fleet/sqlite.ts) on a private in-memory database, and its wake. */
function sqliteLeases(): { leases: Leases; db: Database.Database; wake: (k: string, at: string) => Promise<void> } {
  const db = new Database(':memory:');
  return { leases: createSqliteLeases(db), db, wake: sqliteWake(db) };
}

interface LeaseSnapshot {
  key: string;
  owner: string | null;
  fence: number;
  nextDueAt: number;
}

async function rows(leases: Leases): Promise<Map<string, LeaseSnapshot>> {
  return new Map(
    (await leases.list()).map((r) => [
      r.key,
      { key: r.key, owner: r.owner, fence: r.fence, nextDueAt: Date.parse(r.nextDueAt) },
    ]),
  );
}

/** Every release call (key, nextDueAt) on top of the real leases. */
function recordingReleases(leases: Leases): { leases: Leases; releases: { key: string; nextDueAt: string | null }[] } {
  const releases: { key: string; nextDueAt: string | null }[] = [];
  const wrapped: Leases = Object.create(leases) as Leases;
  wrapped.release = (lease, nextDueAt, poll) => {
    releases.push({ key: lease.key, nextDueAt });
    return leases.release(lease, nextDueAt, poll);
  };
  return { leases: wrapped, releases };
}

function memoryStore(): StateStore {
  const kv = new Map<string, string>();
  return {
    kv: (ns: string) => ({
      get: (k: string) => kv.get(`${ns}/${k}`) ?? null,
      set: (k: string, v: string) => void kv.set(`${ns}/${k}`, v),
    }),
  } as unknown as StateStore;
}

function account(id: string, targets = ['hubspot'], priority = 1): AccountRecord {
  return {
    id,
    priority,
    config: { source: {}, targets: targets.map((name) => ({ name, connector: 'hubspot', config: {} })) },
    createdAt: '2026-12-01T00:00:00.000Z',
    updatedAt: '2026-12-01T00:00:00.000Z',
  };
}

function backendOf(accounts: AccountRecord[]): StoreBackend {
  return {
    kind: 'sqlite',
    location: 'memory',
    account: () => Promise.reject(new Error('not used')),
    listAccounts: () => Promise.resolve(accounts),
    getAccount: (id) => Promise.resolve(accounts.find((a) => a.id === id) ?? null),
    putAccount: () => Promise.reject(new Error('not used')),
    removeAccount: () => Promise.resolve(false),
    close: () => Promise.resolve(),
  };
}

interface Fake {
  /** Keys in work right now, and by whom. */
  busy: Map<string, string>;
  overlaps: string[];
  polls: Map<string, number>;
  deliveries: Map<string, number>;
  detect?: (input: OpenAccountInput, signal: AbortSignal) => Promise<DetectOutcome>;
  deliver?: (input: OpenAccountInput, target: string, signal: AbortSignal) => Promise<DeliverOutcome>;
  openFails?: Set<string>;
}

function fakeOpen(f: Fake): (input: OpenAccountInput) => Promise<AccountWork> {
  return (input) => {
    if (f.openFails?.has(input.record.id))
      return Promise.reject(new Error(`account ${input.record.id}: broken config`));
    const enter = (): void => {
      const by = f.busy.get(input.lease.key);
      if (by) f.overlaps.push(`${input.lease.key}: ${by} and ${input.lease.owner}`);
      f.busy.set(input.lease.key, input.lease.owner);
    };
    const leave = (): void => {
      f.busy.delete(input.lease.key);
    };
    return Promise.resolve({
      store: memoryStore(),
      app: 'app-1',
      async detect(signal) {
        enter();
        try {
          f.polls.set(input.record.id, (f.polls.get(input.record.id) ?? 0) + 1);
          if (f.detect) return await f.detect(input, signal);
          await sleep(5);
          return { calls: 2, found: 0, exitCode: 0 };
        } finally {
          leave();
        }
      },
      async deliver(target, signal) {
        enter();
        try {
          const k = deliverLeaseKey(input.record.id, target);
          f.deliveries.set(k, (f.deliveries.get(k) ?? 0) + 1);
          if (f.deliver) return await f.deliver(input, target, signal);
          await sleep(5);
          return { settled: 0, nextDueAt: null };
        } finally {
          leave();
        }
      },
      close: () => Promise.resolve(),
    });
  };
}

function newFake(): Fake {
  return { busy: new Map(), overlaps: [], polls: new Map(), deliveries: new Map() };
}

interface Setup {
  leases: Leases;
  db: Database.Database;
  wake: (k: string, at: string) => Promise<void>;
  releases: { key: string; nextDueAt: string | null }[];
}

function setup(): Setup {
  const base = sqliteLeases();
  const r = recordingReleases(base.leases);
  return { ...base, leases: r.leases, releases: r.releases };
}

function worker(
  s: Setup,
  accounts: AccountRecord[],
  f: Fake,
  extra: Partial<ConstructorParameters<typeof FleetWorker>[0]> = {},
): FleetWorker {
  return new FleetWorker({
    backend: backendOf(accounts),
    leases: s.leases,
    wake: s.wake,
    open: fakeOpen(f),
    schedule: () => 60_000,
    logger: memoryLogger('info'),
    concurrency: 2,
    ttlMs: 300,
    idleMs: 20,
    minIntervalMs: 1000,
    maxIntervalMs: 3_600_000,
    ...extra,
  });
}

describe('fleet worker (src/fleet/worker.ts)', () => {
  it('parses lease keys and reads the enabled targets of an account config', () => {
    assert.deepEqual(parseLeaseKey('account:a-1'), { kind: 'account', account: 'a-1', target: null });
    assert.deepEqual(parseLeaseKey('deliver:a-1:hub.spot'), { kind: 'deliver', account: 'a-1', target: 'hub.spot' });
    assert.equal(parseLeaseKey('other:x'), null);
    assert.deepEqual(
      enabledTargetNames({
        targets: [{ name: 'a' }, { name: 'b', enabled: false }, { name: 'c', enabled: true }, { nope: 1 }, null],
      }),
      ['a', 'c'],
    );
    assert.deepEqual(enabledTargetNames(null), []);
  });

  it('ensures a lease row per account and enabled target; two workers share the accounts, never one key at once', async () => {
    const s = setup();
    const accounts = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => account(id, ['hubspot', 'salesforce']));
    const f = newFake();
    f.detect = async () => {
      await sleep(15);
      return { calls: 3, found: 0, exitCode: 0 };
    };
    const w1 = worker(s, accounts, f);
    const w2 = worker(s, accounts, f);
    w1.start();
    w2.start();
    try {
      await waitUntil(
        async () =>
          f.polls.size === 6 &&
          f.deliveries.size === 12 &&
          [...(await rows(s.leases)).values()].every((r) => r.owner === null),
        'every account polled, every target run, every lease back',
      );
    } finally {
      await Promise.all([w1.stop(), w2.stop()]);
    }
    const all = await rows(s.leases);
    assert.equal(all.size, 18, '6 account leases + 12 deliver leases');
    assert.deepEqual(f.overlaps, [], 'no key worked by two workers at once');
    assert.ok(
      w1.counts.claimed > 0 && w2.counts.claimed > 0,
      `both claimed (${w1.counts.claimed}, ${w2.counts.claimed})`,
    );
    // polled once each: the schedule said 60 s; the deliver leases with nothing queued come back after 5 min
    for (const n of f.polls.values()) assert.equal(n, 1);
    for (const r of all.values()) assert.ok(r.nextDueAt > Date.now() + 30_000, `${r.key} is due later`);
    const listed = (await s.leases.list()).find((r) => r.key === 'account:a')!;
    assert.equal(listed.polls, 1, 'the poll is recorded on the lease row');
    assert.equal(listed.callsPerPoll, 3);
    assert.notEqual(listed.lastPollAt, null);
  });

  it('a poll that found opt-outs makes its deliver leases due at once; the next poll follows the schedule', async () => {
    const s = setup();
    const accounts = [account('a', ['hubspot'])];
    const f = newFake();
    let queued = 0;
    let delivered = 0;
    f.detect = () => {
      queued += 3;
      return Promise.resolve({ calls: 4, found: 3, exitCode: 0 });
    };
    f.deliver = () => {
      const settled = queued;
      delivered += settled;
      queued = 0;
      return Promise.resolve({ settled, nextDueAt: null });
    };
    const seen: SchedulerInput[] = [];
    const w = worker(s, accounts, f, {
      concurrency: 1,
      deliverIdleMs: 3_600_000,
      schedule: (i) => {
        seen.push(i);
        return 120_000;
      },
    });
    w.start();
    try {
      await waitUntil(() => delivered === 3 && f.polls.get('a') === 1, 'the deliver lease ran after the poll');
    } finally {
      await w.stop();
    }
    assert.equal(seen[0]?.callsPerPoll, 4, 'the scheduler saw the poll');
    assert.equal(seen[0]?.idleStreak, 0);
    assert.equal(seen[0]?.accounts, 1);
    const row = (await rows(s.leases)).get('account:a')!;
    assert.ok(Math.abs(row.nextDueAt - (Date.now() + 120_000)) < 5_000, 'next poll at the scheduled interval');
  });

  it('without a schedule given, the fair scheduler decides (no budget named: clamped to minIntervalMs)', async () => {
    const s = setup();
    const f = newFake();
    const w = worker(s, [account('a', [])], f, { schedule: undefined, minIntervalMs: 90_000 });
    w.start();
    try {
      await waitUntil(() => f.polls.get('a') === 1, 'polled');
      await waitUntil(async () => (await rows(s.leases)).get('account:a')!.owner === null, 'released');
    } finally {
      await w.stop();
    }
    const row = (await rows(s.leases)).get('account:a')!;
    assert.ok(row.nextDueAt >= Date.now() + 80_000, 'at least minIntervalMs later');
  });

  it('a lease taken over aborts the work in hand and is not released by the loser', async () => {
    const s = setup();
    const f = newFake();
    let aborted: unknown = null;
    f.detect = (_i, signal) =>
      new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          aborted = signal.reason;
          resolve({ calls: 1, found: 0, exitCode: 1, interrupted: true });
        });
      });
    const w = worker(s, [account('a', [])], f);
    w.start();
    try {
      await waitUntil(() => f.busy.has('account:a'), 'the poll started');
      // a successor took it over (its fence moved on)
      s.db.prepare(`UPDATE cc_leases SET owner = 'someone-else', fence = fence + 1 WHERE key = 'account:a'`).run();
      await waitUntil(() => aborted !== null, 'the work was aborted');
    } finally {
      await w.stop();
    }
    assert.match(String((aborted as Error).message), /taken over/);
    assert.equal(w.counts.lost, 1);
    assert.equal((await rows(s.leases)).get('account:a')!.owner, 'someone-else', 'the successor keeps it');
    assert.ok(!s.releases.some((r) => r.key === 'account:a'), 'the loser released nothing');
  });

  it('a lease whose renewal never answers (a paused process, a hung database) aborts the work before it runs out', async () => {
    const s = setup();
    // renewals hang: without a local deadline the work would go on past the TTL, under a possible successor
    const leases = Object.create(s.leases) as Leases;
    leases.renew = () => new Promise<boolean>(() => undefined);
    const f = newFake();
    let aborted: unknown = null;
    const started = Date.now();
    let abortedAfter = 0;
    f.detect = (_i, signal) =>
      new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          aborted = signal.reason;
          abortedAfter = Date.now() - started;
          resolve({ calls: 1, found: 0, exitCode: 1, interrupted: true });
        });
      });
    const w = worker({ ...s, leases }, [account('a', [])], f);
    w.start();
    try {
      await waitUntil(() => aborted !== null, 'the work was aborted');
    } finally {
      await w.stop();
    }
    assert.match(String((aborted as Error).message), /ran out before it was renewed/);
    assert.ok(abortedAfter < 300, `aborted ${abortedAfter} ms after the claim, before the 300 ms TTL ran out`);
  });

  it("one account's failure never stops the worker: it backs off, the others go on", async () => {
    const s = setup();
    const accounts = [account('bad', []), account('good', [])];
    const f = newFake();
    f.openFails = new Set(['bad']);
    const logger = memoryLogger('info');
    const w = worker(s, accounts, f, { logger, failureBackoffMs: 10_000 });
    w.start();
    try {
      await waitUntil(() => f.polls.get('good') === 1 && s.releases.some((r) => r.key === 'account:bad'), 'both ran');
    } finally {
      await w.stop();
    }
    const bad = (await rows(s.leases)).get('account:bad')!;
    assert.ok(bad.nextDueAt > Date.now() + 5_000 && bad.nextDueAt < Date.now() + 11_000, 'backed off ~10 s');
    assert.ok(
      logger.lines.some((l) => l.includes('broken config')),
      'the failure is logged',
    );
    assert.equal(w.counts.failures, 1);
  });

  it('an account that cannot be opened backs off doubling with each failure', async () => {
    const s = setup();
    const f = newFake();
    f.openFails = new Set(['bad']);
    const dues: number[] = [];
    const w = worker(s, [account('bad', [])], f, { failureBackoffMs: 10_000 });
    w.start();
    try {
      for (let i = 0; i < 2; i++) {
        await waitUntil(() => s.releases.filter((r) => r.key === 'account:bad').length > i, `failure ${i + 1}`);
        dues.push(Date.parse(s.releases.filter((r) => r.key === 'account:bad')[i]!.nextDueAt!) - Date.now());
        // due again now, for the next attempt
        s.db.prepare(`UPDATE cc_leases SET next_due_at = 0 WHERE key = 'account:bad'`).run();
      }
    } finally {
      await w.stop();
    }
    assert.ok(dues[0]! > 8_000 && dues[0]! <= 10_000, `first backoff ~10 s (${dues[0]})`);
    assert.ok(dues[1]! > 18_000 && dues[1]! <= 20_000, `second backoff ~20 s (${dues[1]})`);
  });

  it('a failing poll is recorded in the account (failures, the error) and backs off doubling', async () => {
    const s = setup();
    const f = newFake();
    const store = memoryStore();
    let n = 0;
    f.detect = () => {
      n += 1;
      return Promise.reject(new Error('Constant Contact said 500'));
    };
    const open = fakeOpen(f);
    const w = worker(s, [account('a', [])], f, {
      failureBackoffMs: 10_000,
      open: async (i) => ({ ...(await open(i)), store }),
    });
    w.start();
    try {
      await waitUntil(async () => n === 1 && (await rows(s.leases)).get('account:a')!.owner === null, 'failed once');
    } finally {
      await w.stop();
    }
    const rec = await readPollRecord(store);
    assert.equal(rec?.failures, 1);
    assert.match(rec?.lastError ?? '', /500/);
    assert.equal(rec?.callsToday, 0);
  });

  it('stop() aborts the work in hand and hands every held lease back due now', async () => {
    const s = setup();
    const f = newFake();
    f.detect = (_i, signal) =>
      new Promise((resolve) =>
        signal.addEventListener('abort', () => resolve({ calls: 1, found: 0, exitCode: 143, interrupted: true })),
      );
    const accounts = [account('a', []), account('b', [])];
    const w = worker(s, accounts, f);
    w.start();
    await waitUntil(() => f.busy.size === 2, 'both polls in hand');
    const t0 = Date.now();
    await w.stop('SIGTERM');
    assert.ok(Date.now() - t0 < 1000, 'stopped promptly');
    assert.equal(w.counts.handedOver, 2);
    const all = await rows(s.leases);
    for (const k of ['account:a', 'account:b']) {
      const r = all.get(k)!;
      assert.equal(r.owner, null, `${k} released`);
      assert.ok(r.nextDueAt <= Date.now(), `${k} due now`);
      assert.ok(s.releases.some((x) => x.key === k && x.nextDueAt === null));
    }
    // a second worker picks them up at once
    const f2 = newFake();
    const w2 = worker(s, accounts, f2);
    const t1 = Date.now();
    w2.start();
    try {
      await waitUntil(() => f2.polls.size === 2, 'taken over at once');
      assert.ok(Date.now() - t1 < 500, 'at once');
    } finally {
      await w2.stop();
    }
  });

  it('a stop whose last batch outlasts the TTL keeps renewing: no other worker takes the lease meanwhile', async () => {
    const s = setup();
    const f = newFake();
    let finished = 0;
    f.detect = (_i, signal) =>
      new Promise((resolve) =>
        signal.addEventListener('abort', () =>
          // the batch in hand takes 3 TTLs to finish
          setTimeout(() => {
            finished = Date.now();
            resolve({ calls: 1, found: 0, exitCode: 143, interrupted: true });
          }, 900),
        ),
      );
    const accounts = [account('a', [])];
    const w = worker(s, accounts, f);
    w.start();
    await waitUntil(() => f.busy.has('account:a'), 'the poll in hand');
    const stopping = w.stop('SIGTERM');
    const f2 = newFake();
    const w2 = worker(s, accounts, f2);
    w2.start();
    let claimedAt = 0;
    f2.detect = () => {
      claimedAt = Date.now();
      return Promise.resolve({ calls: 1, found: 0, exitCode: 0 });
    };
    try {
      await stopping;
      await waitUntil(() => claimedAt > 0, 'handed over after the batch');
    } finally {
      await w2.stop();
    }
    assert.ok(claimedAt >= finished, 'the successor started only after the batch in hand finished');
    assert.equal(w.counts.lost, 0);
  });

  it('an account removed from the registry has its lease rows forgotten', async () => {
    const s = setup();
    await s.leases.ensure('account:gone', 'gone', null, new Date().toISOString());
    await s.leases.ensure(deliverLeaseKey('gone', 'hubspot'), 'gone', 'hubspot', new Date().toISOString());
    const w = worker(s, [], newFake());
    w.start();
    try {
      await waitUntil(async () => (await rows(s.leases)).size === 0, 'rows forgotten');
    } finally {
      await w.stop();
    }
  });
});

async function waitUntil(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting: ${what}`);
    await sleep(10);
  }
}

describe('fleetStatus (src/fleet/status.ts)', () => {
  it('per account: last and next poll from the lease rows, calls today from its poll record, the scheduler share', async () => {
    const s = setup();
    const accounts = [account('a', []), account('b', [], 3), account('p', [], 0)];
    const stores = new Map(accounts.map((a) => [a.id, memoryStore()]));
    const f = newFake();
    const open = fakeOpen(f);
    f.detect = (i) => Promise.resolve({ calls: i.record.id === 'a' ? 5 : 2, found: 0, exitCode: 0 });
    const w = worker(s, accounts, f, { open: async (i) => ({ ...(await open(i)), store: stores.get(i.record.id)! }) });
    w.start();
    try {
      await waitUntil(async () => {
        const r = await rows(s.leases);
        return f.polls.size === 2 && ['account:a', 'account:b'].every((k) => r.get(k)?.owner === null);
      }, 'a and b polled (p is paused)');
    } finally {
      await w.stop();
    }
    const st = await fleetStatus({
      backend: backendOf(accounts),
      leases: s.leases,
      openStore: (id) => Promise.resolve(stores.get(id)!),
      closeAfterRead: false,
    });
    const by = new Map(st.accounts.map((x) => [x.id, x]));
    assert.deepEqual([...by.keys()], ['a', 'b', 'p']);
    assert.equal(by.get('a')!.callsToday, 5);
    assert.equal(by.get('b')!.callsToday, 2);
    assert.equal(by.get('p')!.callsToday, 0);
    assert.notEqual(by.get('a')!.lastPollAt, null);
    assert.equal(by.get('p')!.lastPollAt, null, 'paused: never polled');
    assert.ok(Date.parse(by.get('a')!.nextPollAt!) > Date.now() + 30_000);
    // priority 1 and 3, both one idle poll (weight 1): shares 1/4 and 3/4; paused 0
    assert.ok(Math.abs(by.get('a')!.share - 0.25) < 1e-9, String(by.get('a')!.share));
    assert.ok(Math.abs(by.get('b')!.share - 0.75) < 1e-9);
    assert.equal(by.get('p')!.share, 0);
  });
});
