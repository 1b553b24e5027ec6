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
  MemoryPollBook,
  OpenAccountInput,
  PollOutcome,
  deliverLeaseKey,
  enabledTargetNames,
  parseLeaseKey,
} from '../../src/fleet/worker';
import { HeldLease, LeaseRow, Leases } from '../../src/fleet/types';
import { AccountRecord, PgFenceGuard, StoreBackend } from '../../src/store/backend';
import { StateStore } from '../../src/store/types';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Row {
  key: string;
  account: string;
  target: string | null;
  owner: string | null;
  fence: number;
  expiresAt: number;
  nextDueAt: number;
  priority: number;
}

/** Leases in memory with the contract of src/fleet/types (claims are atomic: one event loop). */
class MemoryLeases implements Leases {
  readonly rows = new Map<string, Row>();
  readonly releases: { key: string; nextDueAt: string | null }[] = [];
  ensure(key: string, account: string, target: string | null, dueAt: string, priority = 1): Promise<void> {
    if (!this.rows.has(key))
      this.rows.set(key, {
        key,
        account,
        target,
        owner: null,
        fence: 0,
        expiresAt: 0,
        nextDueAt: Date.parse(dueAt),
        priority,
      });
    return Promise.resolve();
  }
  forget(account: string): Promise<void> {
    for (const [k, r] of this.rows) if (r.account === account) this.rows.delete(k);
    return Promise.resolve();
  }
  claim(
    owner: string,
    limit: number,
    ttlMs: number,
    now: Date,
    kinds?: readonly ('account' | 'deliver')[],
  ): Promise<HeldLease[]> {
    const t = now.getTime();
    const due = [...this.rows.values()]
      .filter((r) => r.nextDueAt <= t && (r.owner === null || r.expiresAt <= t))
      .filter((r) => !kinds || kinds.includes(r.key.startsWith('account:') ? 'account' : 'deliver'))
      .sort((a, b) => b.priority - a.priority || a.nextDueAt - b.nextDueAt)
      .slice(0, limit);
    return Promise.resolve(
      due.map((r) => {
        r.owner = owner;
        r.fence += 1;
        r.expiresAt = t + ttlMs;
        return { key: r.key, owner, fence: r.fence, expiresAt: new Date(r.expiresAt).toISOString() };
      }),
    );
  }
  renew(lease: HeldLease, ttlMs: number, now: Date): Promise<boolean> {
    const r = this.rows.get(lease.key);
    if (!r || r.owner !== lease.owner || r.fence !== lease.fence) return Promise.resolve(false);
    r.expiresAt = now.getTime() + ttlMs;
    return Promise.resolve(true);
  }
  release(lease: HeldLease, nextDueAt: string | null): Promise<void> {
    const r = this.rows.get(lease.key);
    this.releases.push({ key: lease.key, nextDueAt });
    if (r && r.owner === lease.owner && r.fence === lease.fence) {
      r.owner = null;
      r.expiresAt = 0;
      r.nextDueAt = nextDueAt === null ? Date.now() : Date.parse(nextDueAt);
    }
    return Promise.resolve();
  }
  wake(key: string, dueAt: string): Promise<void> {
    const r = this.rows.get(key);
    if (r) r.nextDueAt = Math.min(r.nextDueAt, Date.parse(dueAt));
    return Promise.resolve();
  }
  list(): Promise<LeaseRow[]> {
    return Promise.resolve(
      [...this.rows.values()].map((r) => ({
        key: r.key,
        account: r.account,
        target: r.target,
        owner: r.owner as string,
        fence: r.fence,
        expiresAt: new Date(r.expiresAt).toISOString(),
        nextDueAt: new Date(r.nextDueAt).toISOString(),
        priority: r.priority,
      })),
    );
  }
  guard(held: readonly HeldLease[]): PgFenceGuard {
    return { check: () => Promise.resolve(), held } as unknown as PgFenceGuard;
  }
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
  detect?: (input: OpenAccountInput, signal: AbortSignal) => Promise<PollOutcome>;
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
      store: {} as StateStore,
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

function worker(
  leases: MemoryLeases,
  accounts: AccountRecord[],
  f: Fake,
  extra: Partial<ConstructorParameters<typeof FleetWorker>[0]> = {},
): FleetWorker {
  return new FleetWorker({
    backend: backendOf(accounts),
    leases,
    polls: new MemoryPollBook(),
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
    const leases = new MemoryLeases();
    const accounts = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => account(id, ['hubspot', 'salesforce']));
    const f = newFake();
    f.detect = async () => {
      await sleep(15);
      return { calls: 3, found: 0, exitCode: 0 };
    };
    const w1 = worker(leases, accounts, f);
    const w2 = worker(leases, accounts, f);
    w1.start();
    w2.start();
    try {
      await waitUntil(
        () =>
          f.polls.size === 6 && f.deliveries.size === 12 && [...leases.rows.values()].every((r) => r.owner === null),
        'every account polled, every target run, every lease back',
      );
    } finally {
      await Promise.all([w1.stop(), w2.stop()]);
    }
    assert.equal(leases.rows.size, 18, '6 account leases + 12 deliver leases');
    assert.deepEqual(f.overlaps, [], 'no key worked by two workers at once');
    assert.ok(
      w1.counts.claimed > 0 && w2.counts.claimed > 0,
      `both claimed (${w1.counts.claimed}, ${w2.counts.claimed})`,
    );
    // polled once each: the schedule said 60 s; the deliver leases with nothing queued come back after maxIntervalMs
    for (const n of f.polls.values()) assert.equal(n, 1);
    for (const r of leases.rows.values()) {
      assert.equal(r.owner, null, `${r.key} released`);
      assert.ok(r.nextDueAt > Date.now() + 30_000, `${r.key} is due later`);
    }
  });

  it('a poll that found opt-outs makes its deliver leases due at once; the next poll follows the schedule', async () => {
    const leases = new MemoryLeases();
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
    const polls = new MemoryPollBook();
    const seen: number[] = [];
    const w = worker(leases, accounts, f, {
      polls,
      deliverIdleMs: 3_600_000,
      concurrency: 1,
      kinds: ['account', 'deliver'],
      schedule: (i) => {
        seen.push(i.callsPerPoll, i.idleStreak);
        return 120_000;
      },
    });
    w.start();
    try {
      await waitUntil(() => delivered === 3 && f.polls.get('a') === 1, 'the deliver lease ran after the poll');
    } finally {
      await w.stop();
    }
    const st = await polls.get('a');
    assert.equal(st?.callsToday, 4);
    assert.equal(st?.idleStreak, 0);
    assert.deepEqual(seen.slice(0, 2), [4, 0], 'the scheduler saw the poll');
    const row = leases.rows.get('account:a')!;
    assert.ok(Math.abs(row.nextDueAt - (Date.now() + 120_000)) < 5_000, 'next poll at the scheduled interval');
  });

  it('a lease taken over aborts the work in hand and is not released by the loser', async () => {
    const leases = new MemoryLeases();
    const f = newFake();
    let aborted: unknown = null;
    f.detect = (_i, signal) =>
      new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          aborted = signal.reason;
          resolve({ calls: 1, found: 0, exitCode: 1, interrupted: true });
        });
      });
    const w = worker(leases, [account('a', [])], f);
    w.start();
    try {
      await waitUntil(() => f.busy.has('account:a'), 'the poll started');
      // a successor took it over (fence moved on)
      const row = leases.rows.get('account:a')!;
      row.owner = 'someone-else';
      row.fence += 1;
      await waitUntil(() => aborted !== null, 'the work was aborted');
    } finally {
      await w.stop();
    }
    assert.match(String((aborted as Error).message), /taken over/);
    assert.equal(w.counts.lost, 1);
    assert.equal(leases.rows.get('account:a')!.owner, 'someone-else', 'the successor keeps it');
    assert.ok(!leases.releases.some((r) => r.key === 'account:a'), 'the loser released nothing');
  });

  it("one account's failure never stops the worker: it backs off, the others go on", async () => {
    const leases = new MemoryLeases();
    const accounts = [account('bad', []), account('good', [])];
    const f = newFake();
    f.openFails = new Set(['bad']);
    const logger = memoryLogger('info');
    const w = worker(leases, accounts, f, { logger, failureBackoffMs: 10_000 });
    w.start();
    try {
      await waitUntil(
        () => f.polls.get('good') === 1 && leases.releases.some((r) => r.key === 'account:bad'),
        'both ran',
      );
    } finally {
      await w.stop();
    }
    const bad = leases.rows.get('account:bad')!;
    assert.ok(bad.nextDueAt > Date.now() + 5_000 && bad.nextDueAt < Date.now() + 11_000, 'backed off ~10 s');
    assert.ok(
      logger.lines.some((l) => l.includes('broken config')),
      'the failure is logged',
    );
    assert.equal(w.counts.failures, 1);
  });

  it('stop() aborts the work in hand and hands every held lease back due now', async () => {
    const leases = new MemoryLeases();
    const f = newFake();
    f.detect = (_i, signal) =>
      new Promise((resolve) =>
        signal.addEventListener('abort', () => resolve({ calls: 1, found: 0, exitCode: 143, interrupted: true })),
      );
    const w = worker(leases, [account('a', []), account('b', [])], f);
    w.start();
    await waitUntil(() => f.busy.size === 2, 'both polls in hand');
    const t0 = Date.now();
    await w.stop('SIGTERM');
    assert.ok(Date.now() - t0 < 1000, 'stopped promptly');
    assert.equal(w.counts.handedOver, 2);
    for (const k of ['account:a', 'account:b']) {
      const r = leases.rows.get(k)!;
      assert.equal(r.owner, null, `${k} released`);
      assert.ok(r.nextDueAt <= Date.now(), `${k} due now`);
      assert.ok(leases.releases.some((x) => x.key === k && x.nextDueAt === null));
    }
    // a second worker picks them up at once
    const f2 = newFake();
    const w2 = worker(leases, [account('a', []), account('b', [])], f2);
    w2.start();
    try {
      await waitUntil(() => f2.polls.size === 2, 'taken over at once');
    } finally {
      await w2.stop();
    }
  });

  it('an account removed from the registry has its lease rows forgotten', async () => {
    const leases = new MemoryLeases();
    await leases.ensure('account:gone', 'gone', null, new Date().toISOString());
    await leases.ensure(deliverLeaseKey('gone', 'hubspot'), 'gone', 'hubspot', new Date().toISOString());
    const w = worker(leases, [], newFake());
    w.start();
    try {
      await waitUntil(() => leases.rows.size === 0, 'rows forgotten');
    } finally {
      await w.stop();
    }
  });
});

async function waitUntil(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting: ${what}`);
    await sleep(10);
  }
}
