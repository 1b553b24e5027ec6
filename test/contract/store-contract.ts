/**
 * The StateStore contract (src/store/types.ts) and the StoreBackend registry (src/store/backend.ts), as ONE suite
 * that every store implementation runs (test/contract/*.test.ts): SQLite in-process, PostgreSQL on a real server.
 *
 * Every store call is awaited: the interface is Awaitable (SQLite answers synchronously, PostgreSQL with promises),
 * and a failure may be a synchronous throw or a rejected promise (see `rejects`). Times are ISO strings with
 * milliseconds, as the engine writes them; the store must give them back unchanged.
 * Derived from the behaviour pinned by test/unit/store*.test.ts, run-history.test.ts and src/store/sqlite.ts.
 */
import { mulberry32 } from '../../src/emulators/prng';
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as os from 'os';
import type { KeyValue, OptOut, Outcome } from '../../src/domain';
import type { Awaitable, PgFenceGuard, StoreBackend } from '../../src/store/backend';
import { StaleFence } from '../../src/fleet/types';
import { Engine } from '../../src/engine';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { FakeSource, contact, testConfig, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { DEFAULT_ACCOUNT } from '../../src/store/backend';
import { LeaseLost, RunLocked } from '../../src/store/types';
import type { RunLockOwner, StateStore } from '../../src/store/types';

/** What a runner's factory gives each test: a fresh, empty store (and the backend it came from, when there is one). */
export interface ContractSubject {
  /** The registry the store came from (the registry tests run only when it is given). */
  readonly backend?: StoreBackend;
  /** A fresh, empty store (the `default` account when it came from a backend). */
  readonly store: StateStore;
  /**
   * Another handle on the SAME state (a second process, say): for durability and lease-takeover tests. Without
   * it (`:memory:`) those tests are skipped; with a backend, `backend.account(DEFAULT_ACCOUNT)` is used when it gives
   * another handle (the SQLite backend gives the same store again).
   */
  readonly reopen?: () => Promise<StateStore>;
  cleanup(): Promise<void>;
}

export type ContractFactory = () => Promise<ContractSubject>;

const T0 = '2026-06-01T00:00:00.000Z';
const POLICY = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };

/** `T0 + ms` as an ISO string. */
function at(ms: number): string {
  return new Date(Date.parse(T0) + ms).toISOString();
}
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

function optOut(email: string, optedOutAt = '2026-05-01T00:00:00.000Z', extra: Partial<OptOut> = {}): OptOut {
  return { email, contactId: `c-${email}`, optedOutAt, source: 'Contact', reason: null, deleted: false, ...extra };
}

function outcome(email: string, kind: Outcome['kind'], recordIds: string[] = [], message?: string): Outcome {
  return message === undefined ? { email, kind, recordIds } : { email, kind, recordIds, message };
}

const seeded = mulberry32;

/** The call fails, whether it throws synchronously (SQLite) or rejects (PostgreSQL). */
async function rejects(fn: () => unknown, check: RegExp | ((e: unknown) => boolean), message?: string): Promise<void> {
  await assert.rejects(
    async () => {
      await fn();
    },
    check as RegExp,
    message,
  );
}

function isError(name: string, cls: new (m: string) => Error, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof Error, `an Error, got ${String(e)}`);
    assert.strictEqual(e.name, name, `${name} expected, got ${e.name}: ${e.message}`);
    assert.ok(e instanceof cls, `an instance of ${name}`);
    assert.match(e.message, re);
    return true;
  };
}

type KvWithFlush = KeyValue & { flush?: () => Awaitable<void> };

/** Another host than this one: the SQLite lock takes a dead pid on THIS host over at once, which is not the contract. */
function owner(name: string, ms: number, leaseMs?: number, host = `host-${name}`): RunLockOwner {
  return { owner: name, pid: 4242, host, command: 'sync', now: at(ms), ...(leaseMs !== undefined ? { leaseMs } : {}) };
}

export function storeContract(name: string, factory: ContractFactory): void {
  describe(`store contract: ${name}`, function () {
    this.timeout(60_000);
    let subject: ContractSubject;
    let s: StateStore;
    const extra: StateStore[] = [];

    beforeEach(async () => {
      subject = await factory();
      s = subject.store;
    });
    afterEach(async () => {
      for (const x of extra.splice(0)) {
        try {
          await x.close();
        } catch {
          // closed by cleanup already
        }
      }
      await subject?.cleanup();
    });

    /** A second handle on the same state, or skip the test (a `:memory:` store has none). */
    async function reopen(ctx: Mocha.Context): Promise<StateStore> {
      let other: StateStore | null = null;
      if (subject.reopen) other = await subject.reopen();
      else if (subject.backend) other = await subject.backend.account(DEFAULT_ACCOUNT);
      // none, or the backend hands out the same store again (one per account): no second handle to test with
      if (other === null || other === s) ctx.skip();
      extra.push(other);
      return other;
    }

    async function detect(
      added: OptOut[],
      targets: string[] = ['hs'],
      more: Partial<Parameters<StateStore['commitDetection']>[0]> = {},
      store: StateStore = s,
    ): Promise<void> {
      await store.commitDetection({ runId: 1, added, resubscribed: [], targets, now: T0, ...more });
    }

    async function record(
      target: string,
      outcomes: Outcome[],
      now: string = T0,
      more: Partial<Parameters<StateStore['recordOutcomes']>[0]> = {},
      store: StateStore = s,
    ): Promise<void> {
      await store.recordOutcomes({ runId: 1, target, outcomes, now: new Date(now), policy: POLICY, ...more });
    }

    async function status(target: string, now: string = T0) {
      const [st] = await s.targetStatus([target], new Date(now));
      return st!;
    }

    // ------------------------------------------------------------------------------------------------ detection
    describe('opt-out detection', () => {
      it('commits opt-outs, one outbox row per target and the checkpoints in one commit', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com')], ['hs', 'sf'], { checkpoints: { w: at(5), r: 'x' } });
        assert.strictEqual(await s.getCheckpoint('w'), at(5));
        assert.strictEqual(await s.getCheckpoint('r'), 'x');
        const st = await s.targetStatus(['hs', 'sf'], new Date(T0));
        assert.deepStrictEqual(
          st.map((t) => [t.target, t.queued, t.due]),
          [
            ['hs', 2, 2],
            ['sf', 2, 2],
          ],
        );
        assert.deepStrictEqual(await s.countOptOuts(), { active: 2, left: 0 });
      });

      it('knownOptOuts returns every field of the known ones and nothing for unknown emails', async () => {
        await detect([optOut('a@x.com', '2026-05-02T03:04:05.678Z', { source: 'Account', reason: 'spam' })], []);
        const known = await s.knownOptOuts(['a@x.com', 'nobody@x.com']);
        assert.deepStrictEqual([...known.keys()], ['a@x.com']);
        assert.deepStrictEqual(known.get('a@x.com'), {
          email: 'a@x.com',
          contactId: 'c-a@x.com',
          optedOutAt: '2026-05-02T03:04:05.678Z',
          source: 'Account',
          reason: 'spam',
          deleted: false,
          state: 'active',
          firstSeenAt: T0,
        });
        assert.strictEqual((await s.knownOptOuts([])).size, 0);
      });

      it('knownOptOuts answers for a list longer than one SQL chunk (1,200 emails)', async () => {
        const many = Array.from({ length: 1200 }, (_, i) => optOut(`p${i}@x.com`));
        await detect(many, []);
        const known = await s.knownOptOuts([...many.map((o) => o.email), 'x@none.com']);
        assert.strictEqual(known.size, 1200);
        assert.strictEqual(known.get('p1199@x.com')!.contactId, 'c-p1199@x.com');
        assert.strictEqual((await s.activeOptOutEmails()).size, 1200);
      });

      it('a commit that fails part-way writes nothing: no opt-out, no outbox row, the checkpoint does not move', async () => {
        const bad = { ...optOut('bad@x.com'), contactId: null as unknown as string }; // NOT NULL
        await rejects(
          () => detect([optOut('ok@x.com'), bad], ['hs'], { checkpoints: { w: T0 } }),
          () => true,
        );
        assert.strictEqual(await s.getCheckpoint('w'), null);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 0 });
        assert.strictEqual((await status('hs')).queued, 0);
        assert.deepStrictEqual(await s.events(null), []);
      });

      it('a resubscribe (email) marks the opt-out left, with one left-unsubscribed-set event and no detail', async () => {
        const run = await s.startRun('sync', false, T0);
        await detect([optOut('a@x.com'), optOut('b@x.com')]);
        await s.commitDetection({ runId: run, added: [], resubscribed: ['a@x.com'], targets: ['hs'], now: at(MIN) });
        assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 1 });
        assert.deepStrictEqual([...(await s.activeOptOutEmails())], ['b@x.com']);
        assert.strictEqual((await s.knownOptOuts(['a@x.com'])).get('a@x.com')!.state, 'left');
        assert.deepStrictEqual(await s.events(null, ['left-unsubscribed-set']), [
          { at: at(MIN), kind: 'left-unsubscribed-set', email: 'a@x.com', detail: null },
        ]);
      });

      it('a resubscribe as an observed contact records its contact id and permission; unknown or already-left emails add no event', async () => {
        await detect([optOut('a@x.com')]);
        const seen = {
          email: 'a@x.com',
          contactId: 'c-a',
          permission: 'implicit',
          optedOutAt: null,
          source: null,
          reason: null,
          deleted: false,
        };
        await s.commitDetection({ runId: 1, added: [], resubscribed: [seen], targets: [], now: at(1) });
        await s.commitDetection({ runId: 1, added: [], resubscribed: [seen], targets: [], now: at(2) });
        await s.commitDetection({ runId: 1, added: [], resubscribed: ['zz@x.com'], targets: [], now: at(3) });
        const ev = await s.events(null, ['left-unsubscribed-set']);
        assert.strictEqual(ev.length, 1);
        assert.deepStrictEqual(JSON.parse(ev[0]!.detail!), { contactId: 'c-a', permission: 'implicit' });
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 1 });
      });

      it('an opt-out that comes back is active again, queued again, and keeps its first sighting', async () => {
        await detect([optOut('a@x.com')]);
        await record('hs', [outcome('a@x.com', 'applied', ['1'])]);
        await s.commitDetection({ runId: 2, added: [], resubscribed: ['a@x.com'], targets: ['hs'], now: at(HOUR) });
        await detect([optOut('a@x.com', '2026-05-20T00:00:00.000Z')], ['hs'], { now: at(2 * HOUR) });
        const k = (await s.knownOptOuts(['a@x.com'])).get('a@x.com')!;
        assert.deepStrictEqual([k.state, k.optedOutAt, k.firstSeenAt], ['active', '2026-05-20T00:00:00.000Z', T0]);
        const st = await status('hs', at(2 * HOUR));
        assert.deepStrictEqual([st.queued, st.done], [1, {}]);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 0 });
      });

      it('detecting a queued opt-out again does not reset its attempts or retry time', async () => {
        await detect([optOut('a@x.com')]);
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'lock')], T0, { random: () => 0.5 });
        const [before] = await s.queuedOutbox('hs', 10, 0);
        await detect([optOut('a@x.com')], ['hs'], { now: at(MIN) });
        const [after] = await s.queuedOutbox('hs', 10, 0);
        assert.deepStrictEqual(
          [after!.attempts, after!.nextAttemptAt, after!.lastError],
          [1, before!.nextAttemptAt, 'lock'],
        );
        assert.strictEqual(after!.nextAttemptAt, at(45_000));
      });

      it('seenDeleted sets the deleted flag of active opt-outs only; seen leaves the data alone', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com')], []);
        await s.commitDetection({ runId: 1, added: [], resubscribed: ['b@x.com'], targets: [], now: at(1) });
        await s.commitDetection({
          runId: 1,
          added: [],
          resubscribed: [],
          seen: ['a@x.com', 'unknown@x.com'],
          seenDeleted: ['a@x.com', 'b@x.com', 'unknown@x.com'],
          targets: [],
          now: at(2),
        });
        const k = await s.knownOptOuts(['a@x.com', 'b@x.com', 'unknown@x.com']);
        assert.deepStrictEqual([...k.values()].map((o) => [o.email, o.deleted, o.state]).sort(), [
          ['a@x.com', true, 'active'],
          ['b@x.com', false, 'left'],
        ]);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 1 });
      });

      it('records an opt-out-detected event per new opt-out, with its contact id, date and source, under its run', async () => {
        const run = await s.startRun('sync', false, T0);
        await s.commitDetection({
          runId: run,
          added: [optOut('a@x.com', '2026-05-03T00:00:00.000Z')],
          resubscribed: [],
          targets: ['hs'],
          now: at(1),
        });
        const ev = await s.events(null, ['opt-out-detected'], run);
        assert.strictEqual(ev.length, 1);
        assert.deepStrictEqual([ev[0]!.at, ev[0]!.email], [at(1), 'a@x.com']);
        assert.deepStrictEqual(JSON.parse(ev[0]!.detail!), {
          contactId: 'c-a@x.com',
          optedOutAt: '2026-05-03T00:00:00.000Z',
          source: 'Contact',
        });
        assert.deepStrictEqual(await s.events(null, ['opt-out-detected'], run + 1000), []);
      });

      it('an opt-out detected with no targets is recorded but queues nothing', async () => {
        await detect([optOut('a@x.com')], []);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 0 });
        assert.deepStrictEqual(await s.dueOutbox('hs', new Date(at(DAY)), 10), []);
        assert.strictEqual((await status('hs')).queued, 0);
      });

      it("rows queued by a backfill run's scan say so (origin backfill); a sync's say sync", async () => {
        const b = await s.startRun('backfill', false, T0);
        const y = await s.startRun('sync', false, T0);
        await s.commitDetection({ runId: b, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: T0 });
        await s.commitDetection({ runId: y, added: [optOut('b@x.com')], resubscribed: [], targets: ['hs'], now: T0 });
        await record('hs', [outcome('a@x.com', 'applied', ['1']), outcome('b@x.com', 'applied', ['2'])]);
        const h = await s.deliveryHistory(null);
        assert.deepStrictEqual(h.map((e) => [e.email, e.origin]).sort(), [
          ['a@x.com', 'backfill'],
          ['b@x.com', 'sync'],
        ]);
      });
    });

    // --------------------------------------------------------------------------------------------- backfill
    describe('backfill enqueue and candidates', () => {
      async function seed(): Promise<void> {
        await detect(
          [
            optOut('old@x.com', '2025-01-01T00:00:00.000Z'),
            optOut('new@x.com', '2026-03-01T00:00:00.000Z'),
            optOut('gone@x.com', '2026-03-02T00:00:00.000Z'),
          ],
          [],
        );
        await s.commitDetection({ runId: 1, added: [], resubscribed: ['gone@x.com'], targets: [], now: T0 });
      }

      it('enqueueKnown queues active opt-outs without a row (left ones never), once, honouring since', async () => {
        await seed();
        assert.strictEqual(
          await s.enqueueKnown({
            runId: 1,
            targets: ['hs'],
            since: '2026-01-01T00:00:00.000Z',
            redeliver: false,
            now: T0,
          }),
          1,
        );
        assert.deepStrictEqual(
          (await s.queuedOutbox('hs', 10, 0)).map((r) => r.optOut.email),
          ['new@x.com'],
        );
        assert.strictEqual(
          await s.enqueueKnown({ runId: 1, targets: ['hs', 'sf'], since: null, redeliver: false, now: T0 }),
          3,
          'hs: old only (new already queued); sf: old and new',
        );
        assert.strictEqual(
          await s.enqueueKnown({ runId: 1, targets: ['hs', 'sf'], since: null, redeliver: false, now: T0 }),
          0,
        );
      });

      it('enqueueKnown with redeliver queues delivered rows again (origin redeliver), never parked or queued ones', async () => {
        await seed();
        await s.enqueueKnown({ runId: 1, targets: ['hs'], since: null, redeliver: false, now: T0 });
        await record('hs', [
          outcome('old@x.com', 'applied', ['1']),
          outcome('new@x.com', 'failed-permanent', [], 'converted lead'),
        ]);
        assert.strictEqual(
          await s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: false, now: at(1) }),
          0,
        );
        assert.strictEqual(
          await s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: true, now: at(2) }),
          1,
        );
        const st = await status('hs', at(2));
        assert.deepStrictEqual([st.queued, st.parked, st.done], [1, 1, {}]);
        await record('hs', [outcome('old@x.com', 'already-suppressed', ['1'])], at(3));
        const h = (await s.deliveryHistory(null)).filter((e) => e.email === 'old@x.com');
        assert.deepStrictEqual(
          h.map((e) => [e.attempt, e.origin, e.outcome]),
          [
            [1, 'backfill', 'applied'],
            [2, 'redeliver', 'already-suppressed'],
          ],
        );
      });

      it('redeliver honours since too', async () => {
        await seed();
        await s.enqueueKnown({ runId: 1, targets: ['hs'], since: null, redeliver: false, now: T0 });
        await record('hs', [outcome('old@x.com', 'applied', ['1']), outcome('new@x.com', 'applied', ['2'])]);
        assert.strictEqual(
          await s.enqueueKnown({
            runId: 2,
            targets: ['hs'],
            since: '2026-01-01T00:00:00.000Z',
            redeliver: true,
            now: at(1),
          }),
          1,
        );
        assert.deepStrictEqual(
          (await s.queuedOutbox('hs', 10, 0)).map((r) => r.optOut.email),
          ['new@x.com'],
        );
      });

      it('backfillCandidates is exactly what enqueueKnown would queue, oldest opt-out first, with every field', async () => {
        await seed();
        await detect([optOut('b@x.com', '2025-01-01T00:00:00.000Z', { reason: 'r', deleted: true })], []);
        assert.deepStrictEqual(await s.backfillCandidates('hs', null, false), [
          {
            email: 'b@x.com',
            contactId: 'c-b@x.com',
            optedOutAt: '2025-01-01T00:00:00.000Z',
            source: 'Contact',
            reason: 'r',
            deleted: true,
          },
          optOut('old@x.com', '2025-01-01T00:00:00.000Z'),
          optOut('new@x.com', '2026-03-01T00:00:00.000Z'),
        ]);
        assert.deepStrictEqual(
          (await s.backfillCandidates('hs', '2026-01-01T00:00:00.000Z', false)).map((o) => o.email),
          ['new@x.com'],
        );
        await s.enqueueKnown({ runId: 1, targets: ['hs'], since: null, redeliver: false, now: T0 });
        assert.deepStrictEqual(await s.backfillCandidates('hs', null, false), []);
        await record('hs', [outcome('old@x.com', 'applied', ['1'])]);
        assert.deepStrictEqual(
          (await s.backfillCandidates('hs', null, true)).map((o) => o.email),
          ['old@x.com'],
        );
        assert.deepStrictEqual(
          (await s.backfillCandidates('sf', null, false)).map((o) => o.email),
          ['b@x.com', 'old@x.com', 'new@x.com'],
        );
      });
    });

    // ---------------------------------------------------------------------------------------------- outbox
    describe('outbox reads', () => {
      it('dueOutbox gives full rows of due queued rows, earliest retry first, then oldest opt-out, up to the limit', async () => {
        await detect(
          [
            optOut('a@x.com', '2026-05-05T00:00:00.000Z'),
            optOut('b@x.com', '2026-05-04T00:00:00.000Z'),
            optOut('c@x.com', '2026-05-03T00:00:00.000Z'),
            optOut('d@x.com', '2026-05-02T00:00:00.000Z'),
          ],
          ['hs', 'sf'],
        );
        await record('hs', [outcome('d@x.com', 'failed-retryable', [], 'x')], T0, {
          deferUntil: new Date(at(2 * HOUR)),
        });
        await record('hs', [outcome('c@x.com', 'failed-retryable', [], 'y')], T0, { deferUntil: new Date(at(HOUR)) });
        const due = await s.dueOutbox('hs', new Date(at(3 * HOUR)), 10);
        assert.deepStrictEqual(
          due.map((r) => r.optOut.email),
          ['b@x.com', 'a@x.com', 'c@x.com', 'd@x.com'],
        );
        assert.deepStrictEqual(
          (await s.dueOutbox('hs', new Date(at(3 * HOUR)), 3)).map((r) => r.optOut.email),
          ['b@x.com', 'a@x.com', 'c@x.com'],
        );
        assert.deepStrictEqual(
          (await s.dueOutbox('hs', new Date(at(HOUR)), 10)).map((r) => r.optOut.email),
          ['b@x.com', 'a@x.com', 'c@x.com'],
          'due at its time exactly',
        );
        assert.deepStrictEqual(due[0], {
          target: 'hs',
          optOut: optOut('b@x.com', '2026-05-04T00:00:00.000Z'),
          state: 'queued',
          attempts: 0,
          nextAttemptAt: T0,
          lastError: null,
        });
        assert.deepStrictEqual([due[3]!.attempts, due[3]!.nextAttemptAt, due[3]!.lastError], [0, at(2 * HOUR), 'x']);
      });

      it('dueOutbox leaves out other targets, closed and parked rows, and rows not yet due', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com'), optOut('c@x.com')], ['hs']);
        await detect([optOut('z@x.com')], ['sf']);
        await record('hs', [outcome('a@x.com', 'applied', ['1']), outcome('b@x.com', 'failed-permanent', [], 'no')]);
        assert.deepStrictEqual(
          (await s.dueOutbox('hs', new Date(T0), 10)).map((r) => r.optOut.email),
          ['c@x.com'],
        );
        assert.deepStrictEqual(await s.dueOutbox('hs', new Date(at(-1)), 10), []);
        assert.deepStrictEqual(await s.dueOutbox('nobody', new Date(T0), 10), []);
      });

      it('queuedOutbox pages every queued row (due or not) by opt-out date and email', async () => {
        await detect(
          [
            optOut('b@x.com', '2026-05-01T00:00:00.000Z'),
            optOut('a@x.com', '2026-05-01T00:00:00.000Z'),
            optOut('c@x.com', '2026-04-01T00:00:00.000Z'),
            optOut('d@x.com', '2026-06-01T00:00:00.000Z'),
          ],
          ['hs'],
        );
        await record('hs', [outcome('c@x.com', 'failed-retryable', [], 'later')], T0, {
          deferUntil: new Date(at(DAY)),
        });
        await record('hs', [outcome('d@x.com', 'applied', ['1'])]);
        const page = async (limit: number, offset: number) =>
          (await s.queuedOutbox('hs', limit, offset)).map((r) => r.optOut.email);
        assert.deepStrictEqual(await page(10, 0), ['c@x.com', 'a@x.com', 'b@x.com']);
        assert.deepStrictEqual(await page(2, 0), ['c@x.com', 'a@x.com']);
        assert.deepStrictEqual(await page(2, 2), ['b@x.com']);
        assert.deepStrictEqual(await page(2, 4), []);
      });

      it('countDue counts due queued rows of one target, stopping at the limit', async () => {
        await detect(
          ['a', 'b', 'c', 'd'].map((e) => optOut(`${e}@x.com`)),
          ['hs', 'sf'],
        );
        await record('hs', [outcome('a@x.com', 'applied', ['1'])]);
        await record('hs', [outcome('b@x.com', 'failed-retryable', [], 'x')], T0, { deferUntil: new Date(at(HOUR)) });
        assert.strictEqual(await s.countDue('hs', new Date(T0)), 2);
        assert.strictEqual(await s.countDue('hs', new Date(at(HOUR))), 3);
        assert.strictEqual(await s.countDue('hs', new Date(at(HOUR)), 2), 2);
        assert.strictEqual(await s.countDue('sf', new Date(T0), 10), 4);
        assert.strictEqual(await s.countDue('none', new Date(T0)), 0);
      });

      it('targetStatus reports every field exactly, per target, and zeros for a target with nothing', async () => {
        await detect(
          [optOut('a@x.com', '2026-05-03T00:00:00.000Z'), optOut('b@x.com', '2026-05-01T00:00:00.000Z')],
          ['hs'],
        );
        await detect([optOut('c@x.com', '2026-04-01T00:00:00.000Z')], ['hs'], { now: at(MIN) });
        await detect([optOut('d@x.com'), optOut('e@x.com')], ['hs'], { now: at(2 * MIN) });
        await record('hs', [outcome('d@x.com', 'applied', ['1'])], at(10 * MIN));
        await record('hs', [outcome('e@x.com', 'not-found')], at(11 * MIN));
        await record('hs', [outcome('c@x.com', 'failed-permanent', [], 'bad')], at(12 * MIN));
        await record('hs', [outcome('b@x.com', 'failed-retryable', [], 'later')], at(13 * MIN), {
          deferUntil: new Date(at(DAY)),
        });
        assert.deepStrictEqual(await s.targetStatus(['hs', 'sf'], new Date(at(HOUR))), [
          {
            target: 'hs',
            queued: 2,
            due: 1,
            parked: 1,
            done: { applied: 1, 'not-found': 1 },
            oldestQueuedOptOutAt: '2026-05-01T00:00:00.000Z',
            oldestQueuedAt: T0,
            lastDeliveredAt: at(11 * MIN),
          },
          {
            target: 'sf',
            queued: 0,
            due: 0,
            parked: 0,
            done: {},
            oldestQueuedOptOutAt: null,
            oldestQueuedAt: null,
            lastDeliveredAt: null,
          },
        ]);
      });
    });

    // ------------------------------------------------------------------------------------------- outcomes
    describe('recording outcomes', () => {
      it('each final kind closes its row (done) with that outcome; planned records nothing', async () => {
        await detect(['a', 'b', 'c', 'd'].map((e) => optOut(`${e}@x.com`)));
        await record('hs', [
          outcome('a@x.com', 'applied', ['1']),
          outcome('b@x.com', 'already-suppressed', ['2']),
          outcome('c@x.com', 'not-found'),
          { email: 'd@x.com', kind: 'planned', recordIds: [], action: 'would write' },
        ]);
        const st = await status('hs');
        assert.deepStrictEqual(
          [st.queued, st.parked, st.done],
          [1, 0, { applied: 1, 'already-suppressed': 1, 'not-found': 1 }],
        );
        assert.deepStrictEqual(
          (await s.queuedOutbox('hs', 10, 0)).map((r) => [r.optOut.email, r.attempts]),
          [['d@x.com', 0]],
        );
        assert.deepStrictEqual((await s.deliveryHistory(null)).map((e) => [e.email, e.outcome]).sort(), [
          ['a@x.com', 'applied'],
          ['b@x.com', 'already-suppressed'],
          ['c@x.com', 'not-found'],
        ]);
      });

      it('failed-permanent parks the row with the reason, the record ids and one attempt', async () => {
        await detect([optOut('a@x.com', '2026-05-07T00:00:00.000Z')]);
        await record('hs', [outcome('a@x.com', 'failed-permanent', ['3'], 'CANNOT_UPDATE_CONVERTED_LEAD')], at(MIN));
        assert.deepStrictEqual(await s.parkedOutbox('hs', 10, 0), [
          {
            target: 'hs',
            email: 'a@x.com',
            optedOutAt: '2026-05-07T00:00:00.000Z',
            parkedAt: at(MIN),
            attempts: 1,
            reason: 'CANNOT_UPDATE_CONVERTED_LEAD',
          },
        ]);
        const [a] = await s.audit(null);
        assert.deepStrictEqual(
          [a!.outcome, a!.recordIds, a!.attempts, a!.closedAt, a!.writtenAt],
          ['failed-permanent', ['3'], 1, at(MIN), null],
        );
      });

      it('failed-retryable stays queued with one more attempt, the message, and a backoff of base/2..base for the first', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com'), optOut('c@x.com')]);
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'lock')], T0, { random: () => 0.5 });
        await record('hs', [outcome('b@x.com', 'failed-retryable', [], 'lock')], T0, { random: () => 0 });
        await record('hs', [outcome('c@x.com', 'failed-retryable', [], 'lock')], T0, { random: () => 0.999 });
        const rows = new Map((await s.queuedOutbox('hs', 10, 0)).map((r) => [r.optOut.email, r]));
        assert.deepStrictEqual(
          [rows.get('a@x.com')!.attempts, rows.get('a@x.com')!.lastError, rows.get('a@x.com')!.state],
          [1, 'lock', 'queued'],
        );
        const delay = (e: string) => Date.parse(rows.get(e)!.nextAttemptAt) - Date.parse(T0);
        assert.strictEqual(delay('a@x.com'), 45_000, 'base 60 s, jitter 0.5 -> 45 s');
        assert.strictEqual(delay('b@x.com'), 30_000);
        assert.ok(delay('c@x.com') > 59_000 && delay('c@x.com') <= 60_000, String(delay('c@x.com')));
        assert.strictEqual(await s.countDue('hs', new Date(at(44_999))), 1, 'only b is due at T0+45 s - 1 ms');
        const st = await status('hs');
        assert.deepStrictEqual([st.queued, st.due], [3, 0]);
      });

      it('retry backoff doubles per attempt within the policy bounds (seeded random), capped at backoffMaxSeconds', async () => {
        const policy = { maxAttempts: 12, backoffBaseSeconds: 10, backoffMaxSeconds: 300 };
        const random = seeded(1234);
        await detect([optOut('a@x.com')]);
        let now = Date.parse(T0);
        const delays: number[] = [];
        for (let attempt = 1; attempt <= 8; attempt++) {
          await record(
            'hs',
            [outcome('a@x.com', 'failed-retryable', [], `try ${attempt}`)],
            new Date(now).toISOString(),
            {
              policy,
              random,
            },
          );
          const [row] = await s.queuedOutbox('hs', 1, 0);
          assert.strictEqual(row!.attempts, attempt);
          const d = Date.parse(row!.nextAttemptAt) - now;
          const cap = Math.min(300, 10 * 2 ** (attempt - 1)) * 1000;
          assert.ok(d >= cap / 2 && d <= cap, `attempt ${attempt}: ${d} ms not within [${cap / 2}, ${cap}]`);
          delays.push(d);
          now = Date.parse(row!.nextAttemptAt);
        }
        assert.ok(
          delays.slice(5).every((d) => d <= 300_000 && d >= 150_000),
          delays.join(','),
        );
        // the same seed gives the same schedule on every backend (the jitter is the caller's random)
        const check = seeded(1234);
        const expected = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => {
          const exp = Math.min(300, 10 * 2 ** (n - 1));
          return (exp / 2 + check() * (exp / 2)) * 1000;
        });
        delays.forEach((d, i) =>
          assert.ok(Math.abs(d - expected[i]!) <= 1, `attempt ${i + 1}: ${d} ms, expected ${expected[i]} ms (+-1)`),
        );
      });

      it('after maxAttempts retryable failures the row is parked: "gave up after N attempts: <message>"', async () => {
        await detect([optOut('a@x.com')]);
        for (let i = 0; i < 3; i++) {
          await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'lock')], at(i * HOUR), { random: () => 0.5 });
        }
        const st = await status('hs', at(3 * HOUR));
        assert.deepStrictEqual([st.queued, st.parked], [0, 1]);
        const [p] = await s.parkedOutbox('hs', 10, 0);
        assert.deepStrictEqual(
          [p!.attempts, p!.reason, p!.parkedAt],
          [3, 'gave up after 3 attempts: lock', at(2 * HOUR)],
        );
        assert.deepStrictEqual(
          (await s.deliveryHistory(null)).map((e) => e.attempt),
          [1, 2, 3],
        );
      });

      it('a target-wide deferral (deferUntil) keeps the rows queued until then without counting an attempt', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com')]);
        const until = at(DAY);
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'daily limit')], T0, {
          deferUntil: new Date(until),
        });
        const rows = new Map((await s.queuedOutbox('hs', 10, 0)).map((r) => [r.optOut.email, r]));
        const a = rows.get('a@x.com')!;
        assert.deepStrictEqual([a.attempts, a.nextAttemptAt, a.lastError], [0, until, 'daily limit']);
        assert.strictEqual(rows.get('b@x.com')!.nextAttemptAt, T0, 'only the rows in the outcomes');
        // deferred as often as the CRM says: never parked for it
        for (let i = 0; i < 5; i++)
          await record('hs', [outcome('a@x.com', 'failed-retryable')], at(i), { deferUntil: new Date(until) });
        assert.strictEqual((await status('hs')).parked, 0);
        assert.strictEqual((await s.queuedOutbox('hs', 10, 0)).find((r) => r.optOut.email === 'a@x.com')!.attempts, 0);
      });

      it('a closed row shows how its records were matched (matchedBy) and keeps no error', async () => {
        await detect([optOut('a@x.com')]);
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'lock')], T0, { random: () => 0 });
        await record(
          'hs',
          [{ email: 'a@x.com', kind: 'applied', recordIds: ['9'], matchedBy: 'additional-email' }],
          at(MIN),
        );
        const [a] = await s.audit(null);
        assert.deepStrictEqual(
          [a!.outcome, a!.message, a!.attempts, a!.recordIds],
          ['applied', 'matched by additional-email', 2, ['9']],
        );
      });

      it('outcomes of one target never touch another target', async () => {
        await detect([optOut('a@x.com')], ['hs', 'sf']);
        await record('hs', [outcome('a@x.com', 'applied', ['1'])]);
        const [hs, sf] = await s.targetStatus(['hs', 'sf'], new Date(T0));
        assert.deepStrictEqual([hs!.queued, hs!.done, sf!.queued, sf!.done], [0, { applied: 1 }, 1, {}]);
      });
    });

    // ------------------------------------------------------------------------------------ requeue, deferrals
    describe('requeue and deferrals', () => {
      async function parkTwo(): Promise<void> {
        await detect(
          [optOut('a@x.com', '2026-05-02T00:00:00.000Z'), optOut('b@x.com', '2026-05-01T00:00:00.000Z')],
          ['hs', 'sf'],
        );
        await record('hs', [
          outcome('a@x.com', 'failed-permanent', [], 'A'),
          outcome('b@x.com', 'failed-permanent', [], 'B'),
        ]);
        await record('sf', [outcome('a@x.com', 'failed-permanent', [], 'C')]);
      }

      it("requeueParked(target) queues that target's parked rows again, due now, attempts reset, with requeued events", async () => {
        await parkTwo();
        assert.strictEqual(await s.requeueParked('hs', at(HOUR)), 2);
        const rows = await s.dueOutbox('hs', new Date(at(HOUR)), 10);
        assert.deepStrictEqual(
          rows.map((r) => [r.optOut.email, r.attempts, r.nextAttemptAt]),
          [
            ['b@x.com', 0, at(HOUR)],
            ['a@x.com', 0, at(HOUR)],
          ],
        );
        assert.strictEqual((await status('sf')).parked, 1, 'the other target stays parked');
        const ev = await s.events(null, ['requeued']);
        assert.deepStrictEqual(ev.map((e) => [e.email, e.at, JSON.parse(e.detail!)]).sort(), [
          ['a@x.com', at(HOUR), { target: 'hs', via: 'cli', parkedFor: 'A' }],
          ['b@x.com', at(HOUR), { target: 'hs', via: 'cli', parkedFor: 'B' }],
        ]);
        assert.strictEqual(await s.requeueParked('hs', at(HOUR)), 0);
      });

      it("requeueParked(null) queues every target's parked rows", async () => {
        await parkTwo();
        assert.strictEqual(await s.requeueParked(null, at(HOUR)), 3);
        const [hs, sf] = await s.targetStatus(['hs', 'sf'], new Date(at(HOUR)));
        assert.deepStrictEqual([hs!.parked, hs!.due, sf!.parked, sf!.due], [0, 2, 0, 2]);
      });

      it('requeueParkedRecords queues only the named emails (unknown or unparked ones ignored), origin requeue', async () => {
        await parkTwo();
        await detect([optOut('q@x.com')], ['hs']);
        const n = await s.requeueParkedRecords({
          target: 'hs',
          emails: ['a@x.com', 'q@x.com', 'nobody@x.com'],
          now: at(HOUR),
          via: 'status-page',
        });
        assert.strictEqual(n, 1);
        assert.deepStrictEqual(
          (await s.parkedOutbox('hs', 10, 0)).map((p) => p.email),
          ['b@x.com'],
        );
        const ev = await s.events(null, ['requeued']);
        assert.deepStrictEqual(
          ev.map((e) => [e.email, JSON.parse(e.detail!)]),
          [['a@x.com', { target: 'hs', via: 'status-page', parkedFor: 'A' }]],
        );
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(2 * HOUR));
        const h = (await s.deliveryHistory(at(2 * HOUR))).map((e) => [e.email, e.origin, e.attempt, e.outcome]);
        assert.deepStrictEqual(h, [['a@x.com', 'requeue', 2, 'applied']]);
      });

      it('requeueParkedRecords: an email named twice is requeued once, but gets a requeued event per mention (surprise, kept as is)', async () => {
        await parkTwo();
        const n = await s.requeueParkedRecords({
          target: 'hs',
          emails: ['a@x.com', 'a@x.com'],
          now: at(HOUR),
          via: 'cli',
        });
        assert.strictEqual(n, 1);
        assert.deepStrictEqual(
          (await s.events(null, ['requeued'])).map((e) => e.email),
          ['a@x.com', 'a@x.com'],
        );
        assert.deepStrictEqual(
          (await s.parkedOutbox('hs', 10, 0)).map((p) => p.email),
          ['b@x.com'],
        );
      });

      it('requeueParkedRecords with emails but no target is refused', async () => {
        await parkTwo();
        await rejects(
          () => s.requeueParkedRecords({ target: null, emails: ['a@x.com'], now: T0, via: 'cli' }),
          /target/,
        );
        assert.strictEqual((await status('hs')).parked, 2);
      });

      it("parkedOutbox pages a target's parked rows, oldest opt-out first", async () => {
        await detect(
          [
            optOut('c@x.com', '2026-05-03T00:00:00.000Z'),
            optOut('a@x.com', '2026-05-01T00:00:00.000Z'),
            optOut('b@x.com', '2026-05-02T00:00:00.000Z'),
          ],
          ['hs'],
        );
        await record(
          'hs',
          ['a', 'b', 'c'].map((e) => outcome(`${e}@x.com`, 'failed-permanent', [], e)),
        );
        const page = async (limit: number, offset: number) =>
          (await s.parkedOutbox('hs', limit, offset)).map((p) => p.email);
        assert.deepStrictEqual(await page(10, 0), ['a@x.com', 'b@x.com', 'c@x.com']);
        assert.deepStrictEqual(await page(1, 1), ['b@x.com']);
        assert.deepStrictEqual(await s.parkedOutbox('sf', 10, 0), []);
      });

      it('requeueNotFound queues not-found rows closed before the cutoff, of active opt-outs only', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com'), optOut('c@x.com'), optOut('d@x.com')], ['hs']);
        await record(
          'hs',
          [outcome('a@x.com', 'not-found'), outcome('b@x.com', 'not-found'), outcome('d@x.com', 'applied', ['1'])],
          at(0),
        );
        await record('hs', [outcome('c@x.com', 'not-found')], at(2 * DAY));
        await s.commitDetection({ runId: 1, added: [], resubscribed: ['b@x.com'], targets: ['hs'], now: at(DAY) });
        assert.strictEqual(await s.requeueNotFound(at(DAY), at(3 * DAY)), 1);
        const due = await s.dueOutbox('hs', new Date(at(3 * DAY)), 10);
        assert.deepStrictEqual(
          due.map((r) => [r.optOut.email, r.attempts, r.nextAttemptAt, r.lastError]),
          [['a@x.com', 0, at(3 * DAY), null]],
        );
        assert.deepStrictEqual((await status('hs', at(3 * DAY))).done, { 'not-found': 2, applied: 1 });
      });

      it('deferQueued holds every queued row of one target until then, never pulls a later retry earlier', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com')], ['hs', 'sf']);
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'x')], T0, {
          deferUntil: new Date(at(3 * DAY)),
        });
        assert.strictEqual(await s.deferQueued('hs', at(DAY)), 1, 'b only: a already waits longer');
        assert.strictEqual(await s.countDue('hs', new Date(at(DAY - 1))), 0);
        assert.strictEqual(await s.countDue('hs', new Date(at(DAY))), 1);
        assert.strictEqual(await s.countDue('sf', new Date(T0)), 2, 'the other target is not held');
        const rows = new Map((await s.queuedOutbox('hs', 10, 0)).map((r) => [r.optOut.email, r.nextAttemptAt]));
        assert.deepStrictEqual([rows.get('a@x.com'), rows.get('b@x.com')], [at(3 * DAY), at(DAY)]);
        assert.strictEqual(await s.deferQueued('hs', at(HOUR)), 0);
      });
    });

    // ------------------------------------------------------------------------------------ checkpoints and kv
    describe('checkpoints and key/value', () => {
      it('a checkpoint is null until set, then its latest value', async () => {
        assert.strictEqual(await s.getCheckpoint('cc:window'), null);
        await s.setCheckpoint('cc:window', at(1), at(1));
        await s.setCheckpoint('cc:other', 'o', at(1));
        await s.setCheckpoint('cc:window', at(2), at(2));
        assert.strictEqual(await s.getCheckpoint('cc:window'), at(2));
        assert.strictEqual(await s.getCheckpoint('cc:other'), 'o');
      });

      it('kv: get null until set, overwrite, namespaces isolated', async () => {
        const a = (await s.kv('source:cc')) as KvWithFlush;
        const b = (await s.kv('target:hs')) as KvWithFlush;
        assert.strictEqual(await a.get('refresh_token'), null);
        await a.set('refresh_token', 'r1');
        await a.set('refresh_token', 'r2');
        await a.set('access_token', 'x'.repeat(5000));
        await b.set('refresh_token', 'other');
        assert.strictEqual(await a.get('refresh_token'), 'r2');
        assert.strictEqual(await a.get('access_token'), 'x'.repeat(5000));
        assert.strictEqual(await b.get('refresh_token'), 'other');
        assert.strictEqual(await b.get('access_token'), null);
        const again = (await s.kv('source:cc')) as KvWithFlush;
        assert.strictEqual(await again.get('refresh_token'), 'r2', 'a new handle on the namespace sees it');
        assert.strictEqual(await (await s.kv('source')).get('refresh_token'), null, 'no prefix matching');
      });

      it('kv values and checkpoints written (and flushed) are there for a fresh store on the same state', async function () {
        const kv = (await s.kv('source:cc')) as KvWithFlush;
        await kv.set('refresh_token', 'rotated-1');
        await kv.set('refresh_token', 'rotated-2');
        await s.setCheckpoint('w', at(7), at(7));
        await kv.flush?.();
        const other = await reopen(this);
        assert.strictEqual(await ((await other.kv('source:cc')) as KvWithFlush).get('refresh_token'), 'rotated-2');
        assert.strictEqual(await other.getCheckpoint('w'), at(7));
      });
    });

    // ---------------------------------------------------------------------------------------------- runs
    describe('runs', () => {
      it('a started run reads running (with who ran it) while its owner holds the lease', async () => {
        await s.acquireRunLock(owner('me', 0));
        const id = await s.startRun('sync', false, at(1), { owner: 'me', pid: 4242, host: 'host-me' });
        assert.deepStrictEqual(await s.getRun(id, new Date(at(MIN))), {
          id,
          kind: 'sync',
          dryRun: false,
          startedAt: at(1),
          finishedAt: null,
          exitCode: null,
          summary: null,
          status: 'running',
          variant: null,
          counts: {},
          apiCalls: {},
          error: null,
          pid: 4242,
          host: 'host-me',
        });
      });

      it('run ids grow; recentRuns is newest first up to the limit; getRun of an unknown id is null', async () => {
        const a = await s.startRun('sync', false, at(1));
        const b = await s.startRun('backfill', true, at(2));
        const c = await s.startRun('sync', false, at(3));
        assert.ok(a < b && b < c, `${a} < ${b} < ${c}`);
        assert.deepStrictEqual(
          (await s.recentRuns(2)).map((r) => [r.id, r.kind, r.dryRun]),
          [
            [c, 'sync', false],
            [b, 'backfill', true],
          ],
        );
        assert.strictEqual((await s.recentRuns(10)).length, 3);
        assert.strictEqual(await s.getRun(c + 100), null);
      });

      it('finishRun records end, exit code, summary, counts, API calls and variant; the status follows the exit code', async () => {
        const codes: [number, string][] = [
          [0, 'ok'],
          [3, 'incomplete'],
          [130, 'interrupted'],
          [143, 'interrupted'],
          [2, 'failed'],
        ];
        for (const [code, want] of codes) {
          const id = await s.startRun('sync', false, at(code));
          await s.finishRun(id, code, { note: `exit ${code}`, nested: [1, { x: true }] }, at(code + 1000), {
            counts: { hubspot: { applied: 2, 'not-found': 1 } },
            apiCalls: { hubspot: 3, 'constant-contact': 1 },
            variant: 'reconcile',
          });
          const r = (await s.getRun(id))!;
          assert.deepStrictEqual(
            [r.status, r.exitCode, r.finishedAt, r.summary, r.counts, r.apiCalls, r.variant, r.error],
            [
              want,
              code,
              at(code + 1000),
              { note: `exit ${code}`, nested: [1, { x: true }] },
              { hubspot: { applied: 2, 'not-found': 1 } },
              { hubspot: 3, 'constant-contact': 1 },
              'reconcile',
              null,
            ],
            `exit ${code}`,
          );
        }
      });

      it('failRun records a failed run with its error and what it did so far', async () => {
        const id = await s.startRun('backfill', false, at(1));
        await s.failRun(id, 1, 'the refresh token was revoked', at(2), {
          counts: { sf: { applied: 1 } },
          apiCalls: { 'constant-contact': 4 },
          variant: 'redeliver',
        });
        const r = (await s.getRun(id))!;
        assert.deepStrictEqual(
          [r.status, r.exitCode, r.finishedAt, r.error, r.counts, r.apiCalls, r.variant],
          [
            'failed',
            1,
            at(2),
            'the refresh token was revoked',
            { sf: { applied: 1 } },
            { 'constant-contact': 4 },
            'redeliver',
          ],
        );
      });

      it('a running run reads abandoned once the run lock is gone or its lease lapsed (a read writes nothing)', async () => {
        await s.acquireRunLock(owner('me', 0, 90_000));
        const id = await s.startRun('sync', false, at(1), { owner: 'me', pid: 4242, host: 'host-me' });
        assert.strictEqual((await s.getRun(id, new Date(at(MIN))))!.status, 'running');
        const lapsed = (await s.getRun(id, new Date(at(10 * MIN))))!;
        assert.strictEqual(lapsed.status, 'abandoned');
        assert.match(lapsed.error!, /ended without recording a result/);
        assert.strictEqual((await s.getRun(id, new Date(at(MIN))))!.status, 'running', 'reading changed nothing');
        await s.releaseRunLock('me');
        const gone = (await s.recentRuns(1, new Date(at(MIN))))[0]!;
        assert.deepStrictEqual([gone.id, gone.status], [id, 'abandoned']);
      });

      it('a run started without exclusivity (an external lease: another lane) leaves the other running runs alone', async () => {
        await s.acquireRunLock(owner('me', 0));
        const who = { owner: 'me', pid: 4242, host: 'host-me' };
        const first = await s.startRun('sync', false, at(1), who);
        const lane = await s.startRun('sync', false, at(2), { ...who, exclusive: false });
        assert.strictEqual((await s.getRun(first, new Date(at(MIN))))!.status, 'running');
        assert.strictEqual((await s.getRun(lane, new Date(at(MIN))))!.status, 'running');
        const third = await s.startRun('sync', false, at(3), { ...who, exclusive: true });
        assert.match((await s.getRun(first, new Date(at(MIN))))!.error!, new RegExp(`found by run #${third} at`));
        assert.strictEqual((await s.getRun(lane, new Date(at(MIN))))!.status, 'abandoned');
      });

      it('a running run of another owner than the lock holder reads abandoned', async () => {
        await s.acquireRunLock(owner('new', 0));
        const id = await s.startRun('sync', false, at(1), { owner: 'old', pid: 1, host: 'host-old' });
        assert.strictEqual((await s.getRun(id, new Date(at(MIN))))!.status, 'abandoned');
      });

      it('starting a run marks every other running run abandoned, naming the run that found it (as an integer: was "#2.0")', async () => {
        await s.acquireRunLock(owner('me', 0));
        const who = { owner: 'me', pid: 4242, host: 'host-me' };
        const first = await s.startRun('sync', false, at(1), who);
        const done = await s.startRun('sync', false, at(2), who);
        await s.finishRun(done, 0, {}, at(3));
        const second = await s.startRun('sync', false, at(4), who);
        const r1 = (await s.getRun(first, new Date(at(MIN))))!;
        assert.strictEqual(r1.status, 'abandoned');
        assert.match(r1.error!, new RegExp(`; found by run #${done} at ${at(2).replace(/\./g, '\\.')}$`));
        assert.strictEqual((await s.getRun(done, new Date(at(MIN))))!.status, 'ok');
        assert.strictEqual((await s.getRun(second, new Date(at(MIN))))!.status, 'running');
      });
    });

    // ---------------------------------------------------------------------------------------- quarantine
    describe('quarantine', () => {
      it('keeps one row per record id: seen again, it counts, keeps its first time and takes the latest reason and run', async () => {
        const rec = (reason: string, raw: unknown) => ({ reason, raw, recordId: 'cc-1' });
        await s.quarantine(1, 'constant-contact', rec('contact_id: missing', { a: 1 }), at(1));
        await s.quarantine(2, 'constant-contact', rec('email: invalid', { a: 2 }), at(2));
        await s.quarantine(3, 'constant-contact', rec('email: invalid', { a: 3 }), at(3));
        assert.strictEqual(await s.countQuarantined(), 1);
        const [row] = await s.quarantined(10);
        const { id: _id, ...rest } = row!;
        assert.deepStrictEqual(rest, {
          runId: 3,
          source: 'constant-contact',
          recordId: 'cc-1',
          reason: 'email: invalid',
          raw: { a: 3 },
          at: at(1),
          lastSeenAt: at(3),
          timesSeen: 3,
        });
      });

      it('records without an id are told apart by their raw content; sources are separate', async () => {
        const noId = (raw: unknown) => ({ reason: 'no id', raw, recordId: null });
        await s.quarantine(null, 'constant-contact', noId({ email_address: { address: 'x' } }), at(1));
        await s.quarantine(null, 'constant-contact', noId({ email_address: { address: 'x' } }), at(2));
        await s.quarantine(null, 'constant-contact', noId({ email_address: { address: 'y' } }), at(3));
        await s.quarantine(null, 'other-source', noId({ email_address: { address: 'x' } }), at(4));
        await s.quarantine(null, 'constant-contact', { reason: 'empty id', raw: 'text', recordId: '' }, at(5));
        assert.strictEqual(await s.countQuarantined(), 4);
        const rows = await s.quarantined(10);
        assert.deepStrictEqual(
          rows.map((r) => [r.source, r.raw, r.timesSeen, r.at, r.lastSeenAt, r.runId]),
          [
            ['constant-contact', 'text', 1, at(5), at(5), null],
            ['other-source', { email_address: { address: 'x' } }, 1, at(4), at(4), null],
            ['constant-contact', { email_address: { address: 'y' } }, 1, at(3), at(3), null],
            ['constant-contact', { email_address: { address: 'x' } }, 2, at(1), at(2), null],
          ],
        );
      });

      it('quarantined lists the most recently seen first, up to the limit', async () => {
        for (const [id, t] of [
          ['r1', 1],
          ['r2', 3],
          ['r3', 2],
        ] as const)
          await s.quarantine(1, 'cc', { reason: 'bad', raw: { id }, recordId: id }, at(t));
        await s.quarantine(1, 'cc', { reason: 'bad', raw: { id: 'r1' }, recordId: 'r1' }, at(9));
        assert.deepStrictEqual(
          (await s.quarantined(2)).map((r) => r.recordId),
          ['r1', 'r2'],
        );
        assert.deepStrictEqual(
          (await s.quarantined(10)).map((r) => r.recordId),
          ['r1', 'r2', 'r3'],
        );
      });
    });

    // -------------------------------------------------------------------------------------------- events
    describe('events', () => {
      it('events are returned in the order written, filtered by since (inclusive), kinds and run', async () => {
        await s.addEvent(1, 'a', 'x@x.com', 'd1', at(1));
        await s.addEvent(2, 'b', null, null, at(2));
        await s.addEvent(1, 'c', 'y@x.com', '{"k":1}', at(3));
        await s.addEvent(null, 'a', null, 'd4', at(4));
        assert.deepStrictEqual(await s.events(null), [
          { at: at(1), kind: 'a', email: 'x@x.com', detail: 'd1' },
          { at: at(2), kind: 'b', email: null, detail: null },
          { at: at(3), kind: 'c', email: 'y@x.com', detail: '{"k":1}' },
          { at: at(4), kind: 'a', email: null, detail: 'd4' },
        ]);
        assert.deepStrictEqual(
          (await s.events(at(2))).map((e) => e.detail),
          [null, '{"k":1}', 'd4'],
        );
        assert.deepStrictEqual(
          (await s.events(null, ['a', 'c'])).map((e) => e.at),
          [at(1), at(3), at(4)],
          'several kinds, still in write order',
        );
        assert.deepStrictEqual(
          (await s.events(null, ['a', 'a'])).map((e) => e.at),
          [at(1), at(4)],
          'a kind named twice is listed once',
        );
        assert.deepStrictEqual(
          (await s.events(null, undefined, 1)).map((e) => e.kind),
          ['a', 'c'],
        );
        assert.deepStrictEqual(
          (await s.events(at(2), ['a'], 1)).map((e) => e.kind),
          [],
        );
        assert.deepStrictEqual(await s.events(null, []), []);
      });
    });

    // ------------------------------------------------------------------------------------------ audit
    describe('audit and delivery history', () => {
      it('audit: written only for applied rows, lag from the opt-out, closed for every closed row, queued rows open', async () => {
        await detect(
          ['a', 'b', 'c', 'd'].map((e) => optOut(`${e}@x.com`)),
          ['hs'],
          { now: at(-HOUR) },
        );
        await record('hs', [
          outcome('a@x.com', 'applied', ['1', '2']),
          outcome('b@x.com', 'not-found'),
          outcome('c@x.com', 'failed-retryable', [], 'lock'),
        ]);
        const rows = new Map((await s.audit(null)).map((r) => [r.email, r]));
        assert.deepStrictEqual(rows.get('a@x.com'), {
          email: 'a@x.com',
          contactId: 'c-a@x.com',
          target: 'hs',
          optedOutAt: '2026-05-01T00:00:00.000Z',
          detectedAt: at(-HOUR),
          writtenAt: T0,
          closedAt: T0,
          lagSeconds: 31 * 86400,
          recordIds: ['1', '2'],
          outcome: 'applied',
          attempts: 1,
          message: null,
          lastOutcome: 'applied',
          lastDeliveryAt: T0,
          deliveries: 1,
        });
        const b = rows.get('b@x.com')!;
        assert.deepStrictEqual([b.writtenAt, b.lagSeconds, b.closedAt, b.outcome], [null, null, T0, 'not-found']);
        const c = rows.get('c@x.com')!;
        assert.deepStrictEqual(
          [c.outcome, c.closedAt, c.attempts, c.message, c.lastOutcome],
          ['queued (retrying)', null, 1, 'lock', 'failed-retryable'],
        );
        const d = rows.get('d@x.com')!;
        assert.deepStrictEqual(
          [d.outcome, d.closedAt, d.deliveries, d.lastOutcome, d.lastDeliveryAt, d.recordIds],
          ['queued', null, 0, null, null, []],
        );
      });

      it('a redelivery keeps the first write (written, outcome applied, record ids) and adds to the history', async () => {
        const T1 = at(HOUR);
        const T2 = at(DAY + HOUR);
        await detect([optOut('a@x.com'), optOut('b@x.com'), optOut('c@x.com')]);
        await record(
          'hs',
          [
            outcome('a@x.com', 'applied', ['101']),
            outcome('b@x.com', 'not-found'),
            outcome('c@x.com', 'applied', ['c1']),
          ],
          T1,
        );
        assert.strictEqual(
          await s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: true, now: T2 }),
          3,
        );
        await record(
          'hs',
          [
            outcome('a@x.com', 'already-suppressed', ['101', '102']),
            outcome('b@x.com', 'applied', ['201']),
            outcome('c@x.com', 'applied', ['c2']),
          ],
          T2,
          {
            runId: 2,
          },
        );
        const rows = new Map((await s.audit(null)).map((r) => [r.email, r]));
        const a = rows.get('a@x.com')!;
        assert.deepStrictEqual(
          [
            a.writtenAt,
            a.outcome,
            a.recordIds,
            a.lagSeconds,
            a.lastOutcome,
            a.lastDeliveryAt,
            a.deliveries,
            a.closedAt,
          ],
          [T1, 'applied', ['101'], 31 * 86400 + 3600, 'already-suppressed', T2, 2, T2],
        );
        const b = rows.get('b@x.com')!;
        assert.deepStrictEqual([b.writtenAt, b.outcome, b.recordIds], [T2, 'applied', ['201']]);
        const c = rows.get('c@x.com')!;
        assert.deepStrictEqual(
          [c.writtenAt, c.outcome, c.recordIds, c.lastOutcome, c.lastDeliveryAt, c.deliveries],
          [T1, 'applied', ['c1'], 'applied', T2, 2],
          'written twice: the first write is the one kept',
        );
      });

      it('audit since and run filters: records delivered or detected by that run', async () => {
        const r1 = await s.startRun('sync', false, T0);
        const r2 = await s.startRun('sync', false, at(DAY));
        await s.commitDetection({
          runId: r1,
          added: [optOut('a@x.com', '2026-05-01T00:00:00.000Z')],
          resubscribed: [],
          targets: ['hs'],
          now: T0,
        });
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(MIN), { runId: r1 });
        await s.commitDetection({
          runId: r2,
          added: [optOut('b@x.com', '2026-05-30T00:00:00.000Z'), optOut('c@x.com', '2026-05-30T00:00:00.000Z')],
          resubscribed: [],
          targets: ['hs'],
          now: at(DAY),
        });
        await record('hs', [outcome('b@x.com', 'applied', ['2'])], at(DAY + MIN), { runId: r2 });
        const emails = async (since: string | null, runId?: number) =>
          (await s.audit(since, runId)).map((r) => r.email).sort();
        assert.deepStrictEqual(await emails(null), ['a@x.com', 'b@x.com', 'c@x.com']);
        assert.deepStrictEqual(await emails(null, r1), ['a@x.com']);
        assert.deepStrictEqual(await emails(null, r2), ['b@x.com', 'c@x.com']);
        // since: opted out since (c, never closed), or closed since (a, opted out long before)
        assert.deepStrictEqual(await emails('2026-05-15T00:00:00.000Z'), ['a@x.com', 'b@x.com', 'c@x.com']);
        assert.deepStrictEqual(await emails(at(2 * MIN)), ['b@x.com']);
      });

      it('deliveryHistory is append-only, oldest first, numbered per record and target, with run, kind and contact', async () => {
        const r1 = await s.startRun('sync', false, T0);
        const r2 = await s.startRun('backfill', false, at(DAY));
        await s.commitDetection({
          runId: r1,
          added: [optOut('a@x.com')],
          resubscribed: [],
          targets: ['hs', 'sf'],
          now: T0,
        });
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'lock')], at(1), { runId: r1, random: () => 0 });
        await record('sf', [outcome('a@x.com', 'applied', ['s1'])], at(2), { runId: r1 });
        await record('hs', [outcome('a@x.com', 'applied', ['h1'])], at(HOUR), { runId: r1 });
        await s.enqueueKnown({ runId: r2, targets: ['hs'], since: null, redeliver: true, now: at(DAY) });
        await record('hs', [outcome('a@x.com', 'already-suppressed', ['h1'], 'already')], at(DAY + 1), { runId: r2 });
        const h = await s.deliveryHistory(null);
        assert.deepStrictEqual(
          h.map((e) => [
            e.at,
            e.runId,
            e.runKind,
            e.target,
            e.email,
            e.contactId,
            e.attempt,
            e.origin,
            e.outcome,
            e.recordIds,
            e.message,
          ]),
          [
            [at(1), r1, 'sync', 'hs', 'a@x.com', 'c-a@x.com', 1, 'sync', 'failed-retryable', [], 'lock'],
            [at(2), r1, 'sync', 'sf', 'a@x.com', 'c-a@x.com', 1, 'sync', 'applied', ['s1'], null],
            [at(HOUR), r1, 'sync', 'hs', 'a@x.com', 'c-a@x.com', 2, 'sync', 'applied', ['h1'], null],
            [
              at(DAY + 1),
              r2,
              'backfill',
              'hs',
              'a@x.com',
              'c-a@x.com',
              3,
              'redeliver',
              'already-suppressed',
              ['h1'],
              'already',
            ],
          ],
        );
        assert.ok(
          h.every((e, i) => i === 0 || e.id > h[i - 1]!.id),
          'ids grow',
        );
        assert.deepStrictEqual(
          (await s.deliveryHistory(at(HOUR))).map((e) => e.attempt),
          [2, 3],
        );
        assert.deepStrictEqual(
          (await s.deliveryHistory(null, r2)).map((e) => e.outcome),
          ['already-suppressed'],
        );
      });

      it('lagPoints: the first applied write of each opt-out a sync queued, the newest N, oldest first', async () => {
        await detect(
          [optOut('a@x.com', at(-HOUR)), optOut('b@x.com', at(-2 * HOUR)), optOut('c@x.com', at(-HOUR))],
          ['hs', 'sf'],
        );
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(MIN));
        await record('sf', [outcome('a@x.com', 'applied', ['1'])], at(2 * MIN));
        await record('hs', [outcome('b@x.com', 'applied', ['2'])], at(3 * MIN));
        await record('hs', [outcome('c@x.com', 'not-found')], at(4 * MIN));
        // a redelivery's write is not a sync's first write
        await s.enqueueKnown({ runId: 2, targets: ['hs'], since: null, redeliver: true, now: at(HOUR) });
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(2 * HOUR));
        // a backfill-queued record's write is not a sync lag either
        await detect([optOut('d@x.com', at(-HOUR))], []);
        await s.enqueueKnown({ runId: 3, targets: ['hs'], since: null, redeliver: false, now: at(3 * HOUR) });
        await record('hs', [outcome('d@x.com', 'applied', ['4'])], at(3 * HOUR));
        assert.deepStrictEqual(await s.lagPoints(10), [
          { target: 'hs', writtenAt: at(MIN), lagSeconds: 3660 },
          { target: 'sf', writtenAt: at(2 * MIN), lagSeconds: 3720 },
          { target: 'hs', writtenAt: at(3 * MIN), lagSeconds: 7380 },
        ]);
        assert.deepStrictEqual(
          (await s.lagPoints(2)).map((p) => p.writtenAt),
          [at(2 * MIN), at(3 * MIN)],
        );
      });
    });

    // ---------------------------------------------------------------------------------------------- run lock
    describe('run lock', () => {
      it('acquire: runLock() names the holder, its times and a lease of 90 s by default', async () => {
        assert.strictEqual(await s.runLock(), null);
        await s.acquireRunLock(owner('a', 0));
        assert.deepStrictEqual(await s.runLock(), {
          owner: 'a',
          pid: 4242,
          host: 'host-a',
          command: 'sync',
          acquiredAt: T0,
          renewedAt: T0,
          expiresAt: at(90_000),
        });
      });

      it('another owner is refused (RunLocked naming the holder) while the lease is valid; the holder re-enters (which restarts its lease AND its acquiredAt)', async () => {
        await s.acquireRunLock(owner('a', 0));
        await s.acquireRunLock(owner('a', 10));
        assert.deepStrictEqual([(await s.runLock())!.acquiredAt, (await s.runLock())!.expiresAt], [at(10), at(90_010)]);
        assert.deepStrictEqual(await s.events(null, ['run-lock-taken-over']), [], 're-entering is no takeover');
        await rejects(
          () => s.acquireRunLock(owner('b', 60_000)),
          isError('RunLocked', RunLocked, /pid 4242 on host-a/),
        );
        assert.strictEqual((await s.runLock())!.owner, 'a');
      });

      it('renewals keep the lease; once not renewed for its lease it is taken over, with an event, and the old holder cannot renew', async () => {
        await s.acquireRunLock(owner('a', 0));
        for (let t = 30_000; t <= 300_000; t += 30_000) assert.strictEqual(await s.renewRunLock('a', at(t)), true);
        assert.deepStrictEqual(
          [(await s.runLock())!.renewedAt, (await s.runLock())!.expiresAt, (await s.runLock())!.acquiredAt],
          [at(300_000), at(390_000), T0],
        );
        await rejects(() => s.acquireRunLock(owner('b', 390_000)), isError('RunLocked', RunLocked, /host-a/));
        await s.acquireRunLock(owner('b', 390_001));
        assert.strictEqual((await s.runLock())!.owner, 'b');
        assert.strictEqual(await s.renewRunLock('a', at(390_002)), false);
        const ev = await s.events(null, ['run-lock-taken-over']);
        assert.strictEqual(ev.length, 1);
        const d = JSON.parse(ev[0]!.detail!) as Record<string, unknown>;
        assert.deepStrictEqual([d.owner, d.host, d.reason], ['a', 'host-a', 'lease expired']);
        assert.strictEqual(ev[0]!.at, at(390_001));
      });

      it('the holder chooses its lease length, and renewRunLock its extension', async () => {
        await s.acquireRunLock(owner('a', 0, 300));
        assert.strictEqual((await s.runLock())!.expiresAt, at(300));
        await rejects(() => s.acquireRunLock(owner('b', 200)), isError('RunLocked', RunLocked, /host-a/));
        assert.strictEqual(await s.renewRunLock('a', at(250), 1000), true);
        assert.strictEqual((await s.runLock())!.expiresAt, at(1250));
        await rejects(() => s.acquireRunLock(owner('b', 1000)), isError('RunLocked', RunLocked, /host-a/));
        await s.acquireRunLock(owner('b', 1251));
        assert.strictEqual((await s.runLock())!.owner, 'b');
      });

      it('releaseRunLock: only by its owner, or by anyone with null (unlock); returns the lock removed', async () => {
        assert.strictEqual(await s.releaseRunLock(null), null);
        await s.acquireRunLock(owner('a', 0));
        assert.strictEqual(await s.releaseRunLock('someone-else'), null);
        assert.strictEqual((await s.runLock())!.owner, 'a');
        const held = await s.releaseRunLock(null);
        assert.deepStrictEqual(held && [held.owner, held.pid, held.host, held.command, held.acquiredAt], [
          'a',
          4242,
          'host-a',
          'sync',
          T0,
        ]);
        assert.strictEqual(await s.runLock(), null);
        await s.acquireRunLock(owner('b', 1));
        const mine = await s.releaseRunLock('b');
        assert.strictEqual(mine?.owner, 'b');
        await s.acquireRunLock(owner('c', 2));
        assert.strictEqual((await s.runLock())!.owner, 'c', 'free again at once');
        await s.releaseRunLock(null);
        assert.strictEqual(await s.renewRunLock('c', at(3)), false, 'nothing to renew once removed');
        assert.strictEqual(await s.runLock(), null, 'a failed renewal takes nothing');
      });

      it('a holder whose lock was removed (unlock) commits nothing more: LeaseLost', async () => {
        await s.acquireRunLock(owner('a', 0));
        await s.setCheckpoint('k', 'before', T0);
        await s.releaseRunLock(null);
        await rejects(() => s.setCheckpoint('k', 'after', T0), isError('LeaseLost', LeaseLost, /removed/));
        await rejects(() => detect([optOut('a@x.com')]), isError('LeaseLost', LeaseLost, /removed/));
        assert.strictEqual(await s.getCheckpoint('k'), 'before');
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 0 });
      });

      it('a holder that released its own lock writes again without a lease', async () => {
        await s.acquireRunLock(owner('a', 0));
        await s.releaseRunLock('a');
        await s.setCheckpoint('k', 'v', T0);
        assert.strictEqual(await s.getCheckpoint('k'), 'v');
      });

      it('a store whose lease was taken over refuses every further write (LeaseLost naming the new holder); nothing of it lands', async function () {
        const other = await reopen(this);
        await s.acquireRunLock(owner('first', 0));
        const run = await s.startRun('sync', false, T0, { owner: 'first', pid: 4242, host: 'host-first' });
        await detect([optOut('a@x.com')], ['hs']);
        await other.acquireRunLock(owner('second', 100_000));
        const lost = isError('LeaseLost', LeaseLost, /taken over by cc-optout sync \(pid 4242 on host-second/);
        await rejects(() => detect([optOut('b@x.com')], ['hs'], { checkpoints: { k: 'v' } }), lost);
        await rejects(() => record('hs', [outcome('a@x.com', 'applied', ['1'])]), /taken over/);
        await rejects(() => s.setCheckpoint('k', 'v', T0), /taken over/);
        await rejects(() => s.finishRun(run, 0, {}, at(1)), /taken over/);
        await rejects(
          () => s.enqueueKnown({ runId: run, targets: ['sf'], since: null, redeliver: false, now: T0 }),
          /taken over/,
        );
        await rejects(() => s.deferQueued('hs', at(DAY)), /taken over/);
        await rejects(() => s.requeueParked(null, T0), /taken over/);
        await rejects(() => s.openBackfill(null, ['hs'], T0), /taken over/);
        assert.deepStrictEqual([...(await other.activeOptOutEmails())], ['a@x.com']);
        assert.strictEqual(await other.getCheckpoint('k'), null);
        const [st] = await other.targetStatus(['hs', 'sf'], new Date(T0));
        assert.deepStrictEqual([st!.queued, st!.due, st!.done], [1, 1, {}], 'the row stays queued for the new holder');
        assert.strictEqual((await other.targetStatus(['sf'], new Date(T0)))[0]!.queued, 0);
        assert.deepStrictEqual(await other.deliveryHistory(null), []);
        // a run that lost its lease still says how it ended (failRun needs no lease)
        await s.failRun(run, 1, 'lease lost', at(2));
        assert.deepStrictEqual(
          [(await other.getRun(run))!.status, (await other.getRun(run))!.error],
          ['failed', 'lease lost'],
        );
        assert.strictEqual((await other.runLock())!.owner, 'second');
      });

      it('on the same host, a holder whose process is gone is taken over at once; a live one blocks', async () => {
        const here = os.hostname();
        const dead = spawnSync(process.execPath, ['-e', '']).pid!;
        await s.acquireRunLock({ owner: 'dead', pid: dead, host: here, command: 'sync', now: T0 });
        const id = await s.startRun('sync', false, T0, { owner: 'dead', pid: dead, host: here });
        assert.strictEqual(
          (await s.getRun(id, new Date(at(1000))))!.status,
          'abandoned',
          'its run reads abandoned at once',
        );
        await s.acquireRunLock({ owner: 'me', pid: process.pid, host: here, command: 'sync', now: at(1000) });
        assert.strictEqual((await s.runLock())!.owner, 'me', 'taken over long before the lease ends');
        const ev = await s.events(null, ['run-lock-taken-over']);
        assert.match(ev[0]!.detail!, /holder process is gone \(same host\)/);
        await rejects(
          () => s.acquireRunLock({ owner: 'other', pid: process.pid, host: here, command: 'sync', now: at(2000) }),
          isError('RunLocked', RunLocked, new RegExp(`pid ${process.pid} on `)),
        );
      });

      it('RunLocked holds across two handles on the same state', async function () {
        const other = await reopen(this);
        await s.acquireRunLock(owner('a', 0));
        await rejects(() => other.acquireRunLock(owner('b', 1000)), isError('RunLocked', RunLocked, /host-a/));
        assert.strictEqual((await other.runLock())!.owner, 'a');
      });
    });

    // ------------------------------------------------------------------------------------------- backfill jobs
    describe('backfill jobs', () => {
      it('an unfinished job with the same since and targets (in any order) is resumed; a finished one is not', async () => {
        const job = await s.openBackfill('2026-01-01T00:00:00.000Z', ['sf', 'hs'], at(1));
        assert.deepStrictEqual(
          { ...job, id: 0 },
          {
            id: 0,
            since: '2026-01-01T00:00:00.000Z',
            targets: ['hs', 'sf'],
            startedAt: at(1),
            scanCompletedAt: null,
            finishedAt: null,
          },
        );
        await s.markBackfillScanned(job.id, at(2));
        const again = await s.openBackfill('2026-01-01T00:00:00.000Z', ['hs', 'sf'], at(3));
        assert.deepStrictEqual(
          [again.id, again.startedAt, again.scanCompletedAt, again.finishedAt],
          [job.id, at(1), at(2), null],
        );
        await s.finishBackfill(job.id, at(4));
        const next = await s.openBackfill('2026-01-01T00:00:00.000Z', ['hs', 'sf'], at(5));
        assert.notStrictEqual(next.id, job.id);
        assert.deepStrictEqual([next.startedAt, next.scanCompletedAt], [at(5), null]);
      });

      it('a job for other targets or another since is another job', async () => {
        const a = await s.openBackfill(null, ['hs'], at(1));
        const b = await s.openBackfill('2026-01-01T00:00:00.000Z', ['hs'], at(2));
        const c = await s.openBackfill(null, ['hs', 'sf'], at(3));
        const d = await s.openBackfill(null, ['hs'], at(4));
        assert.strictEqual(new Set([a.id, b.id, c.id]).size, 3);
        assert.strictEqual(d.id, a.id);
        assert.deepStrictEqual([b.since, c.targets, a.since], ['2026-01-01T00:00:00.000Z', ['hs', 'sf'], null]);
      });
    });

    // ------------------------------------------------------------------------------- edge cases, many rows
    describe('edge cases and volume', () => {
      it('schemaVersion is a positive integer, the same through a second handle', async function () {
        assert.ok(Number.isInteger(s.schemaVersion) && s.schemaVersion > 0, String(s.schemaVersion));
        const other = await reopen(this);
        assert.strictEqual(other.schemaVersion, s.schemaVersion);
      });

      it('what one handle commits, a second handle on the same state reads (opt-outs, outbox, runs, events, audit)', async function () {
        const other = await reopen(this);
        const run = await s.startRun('sync', false, T0);
        await s.commitDetection({ runId: run, added: [optOut('a@x.com')], resubscribed: [], targets: ['hs'], now: T0 });
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(1), { runId: run });
        await s.finishRun(run, 0, { ok: true }, at(2));
        assert.deepStrictEqual([...(await other.activeOptOutEmails())], ['a@x.com']);
        assert.deepStrictEqual((await other.targetStatus(['hs'], new Date(at(2))))[0]!.done, { applied: 1 });
        assert.deepStrictEqual(
          [(await other.getRun(run))!.status, (await other.getRun(run))!.summary],
          ['ok', { ok: true }],
        );
        assert.strictEqual((await other.events(null, ['opt-out-detected'])).length, 1);
        assert.strictEqual((await other.audit(null))[0]!.writtenAt, at(1));
      });

      it('an outcome for a row that is not queued (already closed) leaves the row alone but is still appended to the delivery history', async () => {
        await detect([optOut('a@x.com')]);
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(1));
        await record('hs', [outcome('a@x.com', 'failed-permanent', [], 'late')], at(2));
        await record('hs', [outcome('a@x.com', 'failed-retryable', [], 'late')], at(3));
        const st = await status('hs', at(3));
        assert.deepStrictEqual([st.done, st.parked, st.queued], [{ applied: 1 }, 0, 0]);
        assert.deepStrictEqual(
          (await s.deliveryHistory(null)).map((e) => [e.attempt, e.outcome]),
          [
            [1, 'applied'],
            [2, 'failed-permanent'],
            [3, 'failed-retryable'],
          ],
        );
        const [a] = await s.audit(null);
        assert.deepStrictEqual([a!.outcome, a!.attempts, a!.closedAt, a!.deliveries], ['applied', 1, at(1), 3]);
      });

      it('a detection commit with only checkpoints moves them (and nothing else)', async () => {
        await s.commitDetection({
          runId: 1,
          added: [],
          resubscribed: [],
          targets: ['hs'],
          checkpoints: { w: 'x' },
          now: T0,
        });
        assert.strictEqual(await s.getCheckpoint('w'), 'x');
        assert.deepStrictEqual(await s.events(null), []);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 0 });
      });

      it('an empty string is a value, not null (kv, checkpoints, event fields, a run summary)', async () => {
        const kv = (await s.kv('n')) as KvWithFlush;
        await kv.set('k', '');
        assert.strictEqual(await kv.get('k'), '');
        await s.setCheckpoint('c', '', T0);
        assert.strictEqual(await s.getCheckpoint('c'), '');
        await s.addEvent(null, 'k', '', '', T0);
        assert.deepStrictEqual(await s.events(null, ['k']), [{ at: T0, kind: 'k', email: '', detail: '' }]);
        const id = await s.startRun('sync', false, T0);
        await s.finishRun(id, 0, '', at(1));
        assert.strictEqual((await s.getRun(id))!.summary, '');
        const n = await s.startRun('sync', false, T0);
        await s.finishRun(n, 0, null, at(1));
        assert.strictEqual((await s.getRun(n))!.summary, null);
      });

      it("times are kept and compared as text: given without milliseconds they come back so, and '...00Z' sorts after '...00.000Z' (callers canonicalise)", async () => {
        const noMs = '2026-06-01T00:00:00Z';
        await s.commitDetection({
          runId: 1,
          added: [optOut('a@x.com', '2026-05-01T02:00:00+02:00')],
          resubscribed: [],
          targets: ['hs'],
          now: noMs,
        });
        const k = (await s.knownOptOuts(['a@x.com'])).get('a@x.com')!;
        assert.deepStrictEqual([k.optedOutAt, k.firstSeenAt], ['2026-05-01T02:00:00+02:00', noMs]);
        assert.strictEqual((await s.queuedOutbox('hs', 1, 0))[0]!.nextAttemptAt, noMs);
        const id = await s.startRun('sync', false, noMs);
        assert.strictEqual((await s.getRun(id))!.startedAt, noMs);
        await s.addEvent(null, 'k', null, null, T0);
        assert.deepStrictEqual(await s.events(noMs, ['k']), [], 'text comparison: "." < "Z"');
        assert.strictEqual((await s.events(T0, ['k'])).length, 1);
      });

      it('the same email twice in one commit is one opt-out (the later one wins) and one outbox row per target', async () => {
        await detect(
          [
            optOut('a@x.com', '2026-05-01T00:00:00.000Z'),
            optOut('a@x.com', '2026-05-09T00:00:00.000Z', { reason: 'r2' }),
          ],
          ['hs', 'sf'],
        );
        assert.deepStrictEqual(await s.countOptOuts(), { active: 1, left: 0 });
        const k = (await s.knownOptOuts(['a@x.com'])).get('a@x.com')!;
        assert.deepStrictEqual([k.optedOutAt, k.reason], ['2026-05-09T00:00:00.000Z', 'r2']);
        const [hs, sf] = await s.targetStatus(['hs', 'sf'], new Date(T0));
        assert.deepStrictEqual([hs!.queued, sf!.queued], [1, 1]);
        assert.strictEqual((await s.queuedOutbox('hs', 10, 0))[0]!.optOut.optedOutAt, '2026-05-09T00:00:00.000Z');
      });

      it('the same resubscribe twice in one commit leaves once (one event)', async () => {
        await detect([optOut('a@x.com')]);
        await s.commitDetection({
          runId: 1,
          added: [],
          resubscribed: ['a@x.com', 'a@x.com'],
          targets: ['hs'],
          now: at(1),
        });
        assert.strictEqual((await s.events(null, ['left-unsubscribed-set'])).length, 1);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 1 });
      });

      it('3,000 opt-outs in one commit to two targets, and 3,000 outcomes in one call, are all recorded', async () => {
        const many = Array.from({ length: 3000 }, (_, i) =>
          optOut(`p${i}@x.com`, new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString()),
        );
        await detect(many, ['hs', 'sf'], { checkpoints: { w: 'big' } });
        assert.deepStrictEqual(await s.countOptOuts(), { active: 3000, left: 0 });
        await record(
          'hs',
          many.map((o, i) =>
            outcome(o.email, i % 3 === 0 ? 'applied' : i % 3 === 1 ? 'not-found' : 'failed-permanent', [`r${i}`], 'm'),
          ),
          at(MIN),
        );
        const [hs, sf] = await s.targetStatus(['hs', 'sf'], new Date(at(MIN)));
        assert.deepStrictEqual(
          [hs!.queued, hs!.parked, hs!.done, sf!.queued, sf!.due],
          [0, 1000, { applied: 1000, 'not-found': 1000 }, 3000, 3000],
        );
        assert.strictEqual((await s.deliveryHistory(null)).length, 3000);
        assert.strictEqual((await s.knownOptOuts(many.map((o) => o.email))).size, 3000);
        assert.strictEqual((await s.dueOutbox('sf', new Date(at(MIN)), 2500)).length, 2500);
        assert.strictEqual((await s.dueOutbox('sf', new Date(at(MIN)), 0)).length, 0, 'limit 0');
        assert.strictEqual((await s.events(null, ['opt-out-detected'])).length, 3000);
        assert.strictEqual(await s.getCheckpoint('w'), 'big');
      });

      it('text round-trips exactly: quotes, backslashes, newlines, non-ASCII, emoji (kv, checkpoints, events, raw records)', async () => {
        const text = `O'Brien "quoted" back\\slash\nnew line\ttab ünïcödé 日本語 ✓ 🎉 %_ ' OR 1=1 --`;
        const kv = (await s.kv(`ns:${text}`)) as KvWithFlush;
        await kv.set(text, text);
        assert.strictEqual(await kv.get(text), text);
        await s.setCheckpoint(text, text, T0);
        assert.strictEqual(await s.getCheckpoint(text), text);
        await s.addEvent(null, 'note', `${text}@x.com`, text, T0);
        assert.deepStrictEqual(await s.events(null, ['note']), [
          { at: T0, kind: 'note', email: `${text}@x.com`, detail: text },
        ]);
        await s.quarantine(
          null,
          'cc',
          { reason: text, raw: { name: text, n: 1.5, list: [null, true] }, recordId: text },
          T0,
        );
        const [q] = await s.quarantined(1);
        assert.deepStrictEqual(
          [q!.reason, q!.recordId, q!.raw],
          [text, text, { name: text, n: 1.5, list: [null, true] }],
        );
      });

      it('a raw record holding a NUL character (\\u0000) in a string is quarantined and read back unchanged', async () => {
        const raw = { contact_id: 'c1', first_name: 'a\u0000b', email_address: { address: '\u0000' } };
        await s.quarantine(
          null,
          'constant-contact',
          { reason: 'email_address.address: invalid', raw, recordId: 'c1' },
          T0,
        );
        await s.quarantine(null, 'constant-contact', { reason: 'no id', raw: ['\u0000'], recordId: null }, at(1));
        const rows = await s.quarantined(10);
        assert.deepStrictEqual(
          rows.map((r) => r.raw),
          [['\u0000'], raw],
        );
      });

      it('a raw record that is not an object (a string, a number, null) is kept as it was', async () => {
        await s.quarantine(null, 'cc', { reason: 'r', raw: 'just text', recordId: null }, at(1));
        await s.quarantine(null, 'cc', { reason: 'r', raw: 42, recordId: null }, at(2));
        await s.quarantine(null, 'cc', { reason: 'r', raw: null, recordId: null }, at(3));
        assert.deepStrictEqual(
          (await s.quarantined(10)).map((r) => r.raw),
          [null, 42, 'just text'],
        );
      });
    });

    // ------------------------------------------------------------------------------------------ concurrency
    describe('concurrent calls', () => {
      it('commits started together on one store all land (no lost or interleaved transaction)', async () => {
        await Promise.all(
          Array.from({ length: 10 }, async (_, k) => {
            await s.commitDetection({
              runId: 1,
              added: Array.from({ length: 20 }, (_, i) => optOut(`k${k}-${i}@x.com`)),
              resubscribed: [],
              targets: ['hs', 'sf'],
              checkpoints: { [`w${k}`]: String(k) },
              now: at(k),
            });
          }),
        );
        assert.deepStrictEqual(await s.countOptOuts(), { active: 200, left: 0 });
        const st = await s.targetStatus(['hs', 'sf'], new Date(at(MIN)));
        assert.deepStrictEqual(
          st.map((t) => t.queued),
          [200, 200],
        );
        for (let k = 0; k < 10; k++) assert.strictEqual(await s.getCheckpoint(`w${k}`), String(k));
        assert.strictEqual((await s.events(null, ['opt-out-detected'])).length, 200);
      });

      it('outcomes for two targets recorded together both land, with their own attempt numbers', async () => {
        await detect([optOut('a@x.com'), optOut('b@x.com')], ['hs', 'sf']);
        await Promise.all([
          record('hs', [outcome('a@x.com', 'applied', ['1']), outcome('b@x.com', 'not-found')]),
          record('sf', [outcome('a@x.com', 'failed-permanent', [], 'x'), outcome('b@x.com', 'applied', ['2'])]),
          (async () => (await s.kv('t')).set('k', 'v'))(),
        ]);
        const [hs, sf] = await s.targetStatus(['hs', 'sf'], new Date(T0));
        assert.deepStrictEqual(
          [hs!.done, hs!.queued, sf!.done, sf!.parked],
          [{ applied: 1, 'not-found': 1 }, 0, { applied: 1 }, 1],
        );
        assert.ok((await s.deliveryHistory(null)).every((e) => e.attempt === 1));
      });

      it('two handles racing for the run lock: exactly one gets it, the other is RunLocked', async function () {
        const other = await reopen(this);
        for (let round = 0; round < 5; round++) {
          const tries = [
            async () => s.acquireRunLock(owner(`a${round}`, round * DAY)),
            async () => other.acquireRunLock(owner(`b${round}`, round * DAY)),
          ];
          const got = await Promise.allSettled(tries.map((f) => f()));
          const won = got.flatMap((r, i) => (r.status === 'fulfilled' ? [i === 0 ? `a${round}` : `b${round}`] : []));
          assert.strictEqual(won.length, 1, `round ${round}: ${JSON.stringify(got)}`);
          const lost = got.find((r) => r.status === 'rejected') as PromiseRejectedResult;
          assert.strictEqual((lost.reason as Error).name, 'RunLocked');
          assert.strictEqual((await s.runLock())!.owner, won[0]);
        }
      });
    });

    // ------------------------------------------------------------------------------ the engine over this store
    describe('the engine over this store (detect -> outbox -> deliver)', () => {
      let crmSeq = 0;
      function engineOver(store: StateStore, src: FakeSource, targets: { name: string; crm: string }[]) {
        const registry = testRegistry();
        const config = testConfig(registry, targets);
        const clock = fakeClock(new Date('2026-06-01T12:00:00Z'));
        const engine = new Engine({
          config,
          store,
          registry,
          source: () => src,
          clock,
          logger: memoryLogger(),
          random: () => 0.5,
        });
        return { engine, clock };
      }
      const crmName = (tag: string) => `contract-${tag}-${process.pid}-${++crmSeq}`;

      it('a first sync reconciles and delivers to every target; later syncs deliver only new opt-outs, never twice', async () => {
        const src = new FakeSource();
        src.contacts = [
          contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
          contact('b@x.com', 'unsubscribed', '2026-05-02T00:00:00.000Z'),
          contact('c@x.com', 'implicit', null),
        ];
        const [oneName, twoName] = [crmName('one'), crmName('two')];
        const one = memoryCrm(oneName, ['a@x.com', 'b@x.com', 'c@x.com', 'n@x.com']);
        const two = memoryCrm(twoName, ['a@x.com']);
        const { engine, clock } = engineOver(s, src, [
          { name: 'one', crm: oneName },
          { name: 'two', crm: twoName },
        ]);
        try {
          const r1 = await engine.sync();
          assert.deepStrictEqual(
            [
              r1.exitCode,
              r1.detection.mode,
              r1.detection.newOptOuts,
              r1.targets.one!.outcomes,
              r1.targets.two!.outcomes,
            ],
            [0, 'full', 2, { applied: 2 }, { applied: 1, 'not-found': 1 }],
          );
          clock.advance(15 * MIN);
          src.contacts.push(
            contact('n@x.com', 'unsubscribed', new Date(clock.now().getTime() - 5 * MIN).toISOString()),
          );
          const r2 = await engine.sync();
          assert.deepStrictEqual(
            [r2.exitCode, r2.detection.mode, r2.detection.newOptOuts, r2.targets.one!.outcomes],
            [0, 'window', 1, { applied: 1 }],
          );
          clock.advance(3 * MIN);
          const r3 = await engine.sync();
          assert.deepStrictEqual(
            [r3.detection.newOptOuts, r3.targets.one!.outcomes, r3.targets.two!.outcomes],
            [0, {}, {}],
          );
          assert.deepStrictEqual([one.writes, two.writes], [3, 1], 'no CRM write repeated');
          assert.deepStrictEqual(
            one.records
              .filter((x) => x.suppressed)
              .map((x) => x.email)
              .sort(),
            ['a@x.com', 'b@x.com', 'n@x.com'],
          );
          assert.deepStrictEqual(await s.countOptOuts(), { active: 3, left: 0 });
          const runs = await s.recentRuns(10, clock.now());
          assert.deepStrictEqual(
            runs.map((r) => [r.id, r.kind, r.variant, r.status, r.exitCode]),
            [
              [r3.runId, 'sync', 'window', 'ok', 0],
              [r2.runId, 'sync', 'window', 'ok', 0],
              [r1.runId, 'sync', 'reconcile', 'ok', 0],
            ],
          );
          assert.deepStrictEqual(runs[2]!.counts, { one: { applied: 2 }, two: { applied: 1, 'not-found': 1 } });
          assert.strictEqual((await s.audit(null)).length, 6);
          assert.strictEqual((await s.deliveryHistory(null)).length, 6);
          assert.strictEqual(await s.runLock(), null, 'each run released its lock');
        } finally {
          await engine.close();
        }
      });

      it('a retryable CRM failure stays queued (exit 3) and is delivered by a later sync after its backoff', async () => {
        const src = new FakeSource();
        src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
        const name = crmName('retry');
        const crm = memoryCrm(name, ['a@x.com']);
        crm.failRetryable.add('a@x.com');
        const { engine, clock } = engineOver(s, src, [{ name: 'crm', crm: name }]);
        try {
          const r1 = await engine.sync();
          assert.deepStrictEqual([r1.exitCode, r1.targets.crm!.outcomes], [3, { 'failed-retryable': 1 }]);
          const [row] = await s.queuedOutbox('crm', 10, 0);
          assert.deepStrictEqual([row!.attempts, row!.optOut.email], [1, 'a@x.com']);
          crm.failRetryable.clear();
          clock.advance(10 * MIN);
          const r2 = await engine.sync();
          assert.deepStrictEqual([r2.exitCode, r2.targets.crm!.outcomes], [0, { applied: 1 }]);
          assert.deepStrictEqual(
            (await s.deliveryHistory(null)).map((e) => [e.attempt, e.outcome, e.runId]),
            [
              [1, 'failed-retryable', r1.runId],
              [2, 'applied', r2.runId],
            ],
          );
          assert.strictEqual((await s.recentRuns(2, clock.now()))[1]!.status, 'incomplete');
        } finally {
          await engine.close();
        }
      });

      it('backfill --redeliver delivers again as already suppressed; the audit keeps the first write', async () => {
        const src = new FakeSource();
        src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
        const name = crmName('redeliver');
        const crm = memoryCrm(name, ['a@x.com']);
        const { engine, clock } = engineOver(s, src, [{ name: 'crm', crm: name }]);
        try {
          await engine.sync();
          const [first] = await s.audit(null);
          clock.advance(HOUR);
          const b = await engine.backfill({ redeliver: true, targets: ['crm'] });
          assert.deepStrictEqual(b.targets.crm!.outcomes, { 'already-suppressed': 1 });
          assert.strictEqual(crm.writes, 1);
          const [after] = await s.audit(null);
          assert.deepStrictEqual(
            [after!.writtenAt, after!.outcome, after!.lastOutcome, after!.deliveries],
            [first!.writtenAt, 'applied', 'already-suppressed', 2],
          );
          assert.deepStrictEqual(
            (await s.deliveryHistory(null)).map((e) => [e.origin, e.runKind]),
            [
              ['sync', 'sync'],
              ['redeliver', 'backfill'],
            ],
          );
          const [run] = await s.recentRuns(1, clock.now());
          assert.deepStrictEqual([run!.kind, run!.variant, run!.status], ['backfill', 'redeliver', 'ok']);
        } finally {
          await engine.close();
        }
      });

      it('a contact that leaves the unsubscribed set is reported on the next reconcile and nothing is written', async () => {
        const src = new FakeSource();
        src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
        const name = crmName('leave');
        const crm = memoryCrm(name, ['a@x.com']);
        const { engine, clock } = engineOver(s, src, [{ name: 'crm', crm: name }]);
        try {
          await engine.sync();
          src.contacts = [contact('a@x.com', 'explicit', null)];
          clock.advance(25 * HOUR); // past the periodic full reconcile
          const r = await engine.sync();
          assert.deepStrictEqual([r.detection.mode, r.detection.resubscribed], ['full', 1]);
          assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 1 });
          assert.deepStrictEqual(
            (await s.events(null, ['left-unsubscribed-set'])).map((e) => e.email),
            ['a@x.com'],
          );
          assert.strictEqual(crm.writes, 1);
        } finally {
          await engine.close();
        }
      });
    });

    // --------------------------------------------------------------------------------- fence guard (PostgreSQL)
    describe('fence guard (PostgreSQL: account(id, { guard }))', () => {
      class RecordingGuard implements PgFenceGuard {
        readonly calls: { account: string; target?: string }[] = [];
        stale = false;
        async check(client: import('pg').PoolClient, scope: { account: string; target?: string }): Promise<void> {
          assert.strictEqual(typeof client.query, 'function', 'the guard gets the transaction client');
          this.calls.push({ ...scope });
          if (this.stale) throw new StaleFence(`account:${scope.account}`, 1, 2);
        }
      }

      function pgBackend(ctx: Mocha.Context): StoreBackend {
        if (subject.backend?.kind !== 'postgres') ctx.skip();
        return subject.backend!;
      }

      it('is run inside every write transaction, with the target for outbox writes of one target', async function () {
        const b = pgBackend(this);
        const guard = new RecordingGuard();
        const g = await b.account(DEFAULT_ACCOUNT, { guard });
        extra.push(g);
        const writes: [string, () => Promise<unknown>, string | undefined][] = [
          ['commitDetection', () => detect([optOut('a@x.com'), optOut('b@x.com')], ['hs'], {}, g), undefined],
          ['setCheckpoint', async () => g.setCheckpoint('k', 'v', T0), undefined],
          ['startRun', async () => g.startRun('sync', false, T0), undefined],
          ['recordOutcomes', () => record('hs', [outcome('a@x.com', 'applied', ['1'])], T0, {}, g), 'hs'],
          ['deferQueued', async () => g.deferQueued('hs', at(DAY)), 'hs'],
          ['finishRun', async () => g.finishRun(1, 0, {}, at(1)), undefined],
          ['requeueParked', async () => g.requeueParked(null, at(1)), undefined],
          ['requeueNotFound', async () => g.requeueNotFound(at(1), at(1)), undefined],
          [
            'enqueueKnown',
            async () => g.enqueueKnown({ runId: 1, targets: ['sf'], since: null, redeliver: false, now: T0 }),
            undefined,
          ],
          [
            'kv.set',
            async () => {
              const kv = (await g.kv('source:cc')) as KvWithFlush;
              await kv.set('refresh_token', 'r');
              await kv.flush?.();
            },
            undefined,
          ],
        ];
        for (const [what, write, target] of writes) {
          const before = guard.calls.length;
          await write();
          assert.ok(guard.calls.length > before, `${what} ran the guard`);
          const last = guard.calls[guard.calls.length - 1]!;
          assert.strictEqual(last.account, DEFAULT_ACCOUNT, what);
          if (target) assert.strictEqual(last.target, target, `${what} names its target`);
        }
      });

      it('a stale fence refuses the write (StaleFence, a LeaseLost) and the transaction leaves nothing behind', async function () {
        const b = pgBackend(this);
        const guard = new RecordingGuard();
        const g = await b.account(DEFAULT_ACCOUNT, { guard });
        extra.push(g);
        await detect([optOut('a@x.com')], ['hs'], {}, g);
        guard.stale = true;
        const stale = isError('StaleFence', LeaseLost, /fence 1 is stale/);
        await rejects(() => detect([optOut('b@x.com')], ['hs'], { checkpoints: { w: 'moved' } }, g), stale);
        await rejects(() => record('hs', [outcome('a@x.com', 'applied', ['1'])], T0, {}, g), stale);
        await rejects(() => g.setCheckpoint('w', 'moved', T0), stale);
        await rejects(async () => {
          const kv = (await g.kv('source:cc')) as KvWithFlush;
          await kv.set('refresh_token', 'stolen');
          await kv.flush?.();
        }, stale);
        // a run still says how it ended (failRun needs no lease, as for the run lock)
        const run = await s.startRun('sync', false, T0);
        await g.failRun(run, 1, 'stale', at(1));
        assert.deepStrictEqual([(await s.getRun(run))!.status, (await s.getRun(run))!.error], ['failed', 'stale']);
        // the unguarded store sees only what was committed before the fence moved
        assert.deepStrictEqual([...(await s.activeOptOutEmails())], ['a@x.com']);
        assert.strictEqual(await s.getCheckpoint('w'), null);
        assert.deepStrictEqual(await s.deliveryHistory(null), []);
        assert.strictEqual((await s.targetStatus(['hs'], new Date(T0)))[0]!.queued, 1);
        const fresh = await b.account(DEFAULT_ACCOUNT);
        extra.push(fresh);
        assert.strictEqual(await ((await fresh.kv('source:cc')) as KvWithFlush).get('refresh_token'), null);
      });

      it("names the account it guards (another account's writes say that account)", async function () {
        const b = pgBackend(this);
        await b.putAccount({ id: 'acme', config: {} }, T0);
        const guard = new RecordingGuard();
        const g = await b.account('acme', { guard });
        extra.push(g);
        await g.setCheckpoint('k', 'v', T0);
        assert.deepStrictEqual(
          guard.calls.map((c) => c.account),
          ['acme'],
        );
      });
    });

    // ------------------------------------------------------------------------------------------ registry
    describe('account registry (StoreBackend)', () => {
      function backendOf(ctx: Mocha.Context): StoreBackend {
        if (!subject.backend) ctx.skip();
        return subject.backend!;
      }

      it('putAccount returns the record (priority 1 by default); getAccount reads it back; an unknown id is null', async function () {
        const b = backendOf(this);
        const config = {
          source: { type: 'constant-contact', clientId: '${CC_ID}', refreshToken: '${CC_REFRESH}' },
          targets: [
            { name: 'hubspot', connector: 'hubspot', config: { auth: { type: 'service-key', serviceKey: '${HS}' } } },
          ],
          delivery: { batchSize: 50 },
        };
        const rec = await b.putAccount({ id: 'acme', config }, at(1));
        assert.deepStrictEqual(rec, { id: 'acme', config, priority: 1, createdAt: at(1), updatedAt: at(1) });
        assert.deepStrictEqual(await b.getAccount('acme'), rec);
        assert.strictEqual(await b.getAccount('nobody'), null);
      });

      it('putAccount with the same id replaces config and priority, keeps createdAt', async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'acme', config: { v: 1 }, priority: 2 }, at(1));
        const rec = await b.putAccount({ id: 'acme', config: { v: 2 }, priority: 0 }, at(2));
        assert.deepStrictEqual(rec, { id: 'acme', config: { v: 2 }, priority: 0, createdAt: at(1), updatedAt: at(2) });
        assert.deepStrictEqual(await b.getAccount('acme'), rec);
        assert.deepStrictEqual(
          (await b.listAccounts()).filter((a) => a.id !== DEFAULT_ACCOUNT).map((a) => a.id),
          ['acme'],
        );
      });

      it('listAccounts lists every added account with its record', async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'zeta', config: { z: true }, priority: 3 }, at(1));
        await b.putAccount({ id: 'alpha', config: { a: true } }, at(2));
        await b.putAccount({ id: 'mid-1', config: {} }, at(3));
        const listed = (await b.listAccounts()).filter((a) => a.id !== DEFAULT_ACCOUNT);
        assert.deepStrictEqual(listed.map((a) => [a.id, a.priority, a.config]).sort(), [
          ['alpha', 1, { a: true }],
          ['mid-1', 1, {}],
          ['zeta', 3, { z: true }],
        ]);
      });

      it('an id that is not an account id is refused, and nothing is added', async function () {
        const b = backendOf(this);
        for (const id of ['Upper', 'has space', '../escape', '', '-lead', 'x'.repeat(65), 'a.b', 'é'])
          await rejects(
            () => b.putAccount({ id, config: {} }, T0),
            () => true,
            `id ${JSON.stringify(id)}`,
          );
        assert.deepStrictEqual(
          (await b.listAccounts()).filter((a) => a.id !== DEFAULT_ACCOUNT),
          [],
        );
        const fine = ['a', '0', 'a_b-c', 'x'.repeat(64)];
        for (const id of fine) await b.putAccount({ id, config: {} }, T0);
        assert.deepStrictEqual(
          (await b.listAccounts())
            .filter((a) => a.id !== DEFAULT_ACCOUNT)
            .map((a) => a.id)
            .sort(),
          [...fine].sort(),
        );
      });

      it('account(id) of an id not in the registry is refused', async function () {
        const b = backendOf(this);
        await rejects(() => b.account('not-registered'), /not-registered/);
      });

      it('removeAccount removes the record (true once, then false); its state can no longer be opened', async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'gone', config: {} }, T0);
        assert.strictEqual(await b.removeAccount('gone'), true);
        assert.strictEqual(await b.getAccount('gone'), null);
        assert.strictEqual(await b.removeAccount('gone'), false);
        assert.strictEqual(await b.removeAccount('never'), false);
        await rejects(() => b.account('gone'), /gone/);
      });

      it("two accounts' states are fully isolated: same emails, separate opt-outs, outboxes, checkpoints, kv, runs and locks", async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'one', config: {} }, T0);
        await b.putAccount({ id: 'two', config: {} }, T0);
        const one = await b.account('one');
        const two = await b.account('two');
        extra.push(one, two);
        await detect([optOut('a@x.com'), optOut('b@x.com')], ['hs'], { checkpoints: { w: 'one' } }, one);
        await detect([optOut('a@x.com', '2026-04-01T00:00:00.000Z')], ['hs', 'sf'], { checkpoints: { w: 'two' } }, two);
        await record('hs', [outcome('a@x.com', 'applied', ['1'])], at(MIN), {}, one);
        await record('hs', [outcome('a@x.com', 'failed-permanent', [], 'no')], at(MIN), {}, two);
        await ((await one.kv('source:cc')) as KvWithFlush).set('refresh_token', 'r-one');
        await ((await two.kv('source:cc')) as KvWithFlush).set('refresh_token', 'r-two');
        const r1 = await one.startRun('sync', false, T0);
        await one.finishRun(r1, 0, {}, at(1));
        await one.acquireRunLock(owner('w1', 0));
        await two.acquireRunLock(owner('w2', 0)); // a lock per account: no RunLocked

        assert.deepStrictEqual(await one.countOptOuts(), { active: 2, left: 0 });
        assert.deepStrictEqual(await two.countOptOuts(), { active: 1, left: 0 });
        assert.strictEqual(
          (await two.knownOptOuts(['a@x.com'])).get('a@x.com')!.optedOutAt,
          '2026-04-01T00:00:00.000Z',
        );
        const [oneHs] = await one.targetStatus(['hs'], new Date(at(MIN)));
        const [twoHs, twoSf] = await two.targetStatus(['hs', 'sf'], new Date(at(MIN)));
        assert.deepStrictEqual([oneHs!.queued, oneHs!.done, oneHs!.parked], [1, { applied: 1 }, 0]);
        assert.deepStrictEqual([twoHs!.queued, twoHs!.done, twoHs!.parked, twoSf!.queued], [0, {}, 1, 1]);
        assert.deepStrictEqual([await one.getCheckpoint('w'), await two.getCheckpoint('w')], ['one', 'two']);
        assert.deepStrictEqual(
          [
            await ((await one.kv('source:cc')) as KvWithFlush).get('refresh_token'),
            await ((await two.kv('source:cc')) as KvWithFlush).get('refresh_token'),
          ],
          ['r-one', 'r-two'],
        );
        assert.strictEqual((await one.recentRuns(10)).length, 1);
        assert.deepStrictEqual(await two.recentRuns(10), []);
        assert.deepStrictEqual([(await one.runLock())!.owner, (await two.runLock())!.owner], ['w1', 'w2']);
        assert.strictEqual((await one.deliveryHistory(null)).length, 1);
        assert.deepStrictEqual((await two.audit(null)).map((r) => [r.target, r.outcome]).sort(), [
          ['hs', 'failed-permanent'],
          ['sf', 'queued'],
        ]);
        // the default account sees none of it
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 0 });
        assert.strictEqual(await s.getCheckpoint('w'), null);
        assert.strictEqual(await s.runLock(), null);
      });

      it('an empty account sees nothing of a full one through any read, and its writes touch none of it', async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'full', config: {} }, T0);
        await b.putAccount({ id: 'empty', config: {} }, T0);
        const full = await b.account('full');
        const empty = await b.account('empty');
        extra.push(full, empty);
        // every kind of state in `full`
        const run = await full.startRun('sync', false, T0);
        await full.commitDetection({
          runId: run,
          added: [optOut('a@x.com'), optOut('b@x.com'), optOut('c@x.com'), optOut('d@x.com')],
          resubscribed: [],
          targets: ['hs'],
          checkpoints: { w: 'full' },
          now: T0,
        });
        await full.commitDetection({ runId: run, added: [], resubscribed: ['d@x.com'], targets: ['hs'], now: T0 });
        await record(
          'hs',
          [
            outcome('a@x.com', 'applied', ['1']),
            outcome('b@x.com', 'not-found'),
            outcome('c@x.com', 'failed-permanent', [], 'x'),
          ],
          at(MIN),
          { runId: run },
          full,
        );
        await full.finishRun(run, 0, {}, at(2 * MIN));
        await full.quarantine(run, 'cc', { reason: 'bad', raw: {}, recordId: 'q' }, T0);
        await full.addEvent(run, 'note', null, null, T0);
        const job = await full.openBackfill(null, ['hs'], T0);
        const kv = (await full.kv('source:cc')) as KvWithFlush;
        await kv.set('refresh_token', 'full');
        await kv.flush?.();
        await full.acquireRunLock(owner('full-owner', 0));

        const late = new Date(at(DAY));
        assert.deepStrictEqual(
          {
            known: (await empty.knownOptOuts(['a@x.com', 'd@x.com'])).size,
            active: (await empty.activeOptOutEmails()).size,
            counts: await empty.countOptOuts(),
            candidates: await empty.backfillCandidates('hs', null, true),
            due: await empty.dueOutbox('hs', late, 10),
            queued: await empty.queuedOutbox('hs', 10, 0),
            parked: await empty.parkedOutbox('hs', 10, 0),
            status: (await empty.targetStatus(['hs'], late))[0],
            countDue: await empty.countDue('hs', late),
            checkpoint: await empty.getCheckpoint('w'),
            kv: await ((await empty.kv('source:cc')) as KvWithFlush).get('refresh_token'),
            runs: await empty.recentRuns(10),
            run: await empty.getRun(run),
            quarantined: await empty.quarantined(10),
            countQuarantined: await empty.countQuarantined(),
            events: await empty.events(null),
            audit: await empty.audit(null),
            history: await empty.deliveryHistory(null),
            lag: await empty.lagPoints(10),
            lock: await empty.runLock(),
          },
          {
            known: 0,
            active: 0,
            counts: { active: 0, left: 0 },
            candidates: [],
            due: [],
            queued: [],
            parked: [],
            status: {
              target: 'hs',
              queued: 0,
              due: 0,
              parked: 0,
              done: {},
              oldestQueuedOptOutAt: null,
              oldestQueuedAt: null,
              lastDeliveredAt: null,
            },
            countDue: 0,
            checkpoint: null,
            kv: null,
            runs: [],
            run: null,
            quarantined: [],
            countQuarantined: 0,
            events: [],
            audit: [],
            history: [],
            lag: [],
            lock: null,
          },
        );
        // writes of the empty account that select rows by state never reach the full one's
        assert.strictEqual(await empty.requeueParked(null, at(DAY)), 0);
        assert.strictEqual(await empty.requeueNotFound(at(DAY), at(DAY)), 0);
        assert.strictEqual(await empty.deferQueued('hs', at(2 * DAY)), 0);
        assert.strictEqual(
          await empty.enqueueKnown({ runId: 1, targets: ['hs'], since: null, redeliver: true, now: at(DAY) }),
          0,
        );
        const other = await empty.openBackfill(null, ['hs'], at(DAY));
        assert.strictEqual(other.startedAt, at(DAY), "not the full account's job");
        await empty.acquireRunLock(owner('empty-owner', 0));
        await empty.startRun('sync', false, at(DAY), { owner: 'empty-owner', pid: 4242, host: 'host-empty-owner' });
        // the full account is as it was
        const [st] = await full.targetStatus(['hs'], late);
        assert.deepStrictEqual(
          [st!.queued, st!.parked, st!.done, st!.due],
          [1, 1, { applied: 1, 'not-found': 1 }, 1],
          "d's row is still queued (it left the set after it was queued)",
        );
        assert.deepStrictEqual([(await full.getRun(run))!.status, (await full.runLock())!.owner], ['ok', 'full-owner']);
        assert.strictEqual((await full.openBackfill(null, ['hs'], at(DAY))).id, job.id, 'its job is still open');
        assert.strictEqual((await full.parkedOutbox('hs', 10, 0))[0]!.email, 'c@x.com');
      });

      it("removeAccount deletes the account's state: added again, it starts empty; other accounts keep theirs", async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'temp', config: {} }, T0);
        await b.putAccount({ id: 'keep', config: {} }, T0);
        const temp = await b.account('temp');
        const keep = await b.account('keep');
        extra.push(keep);
        for (const st of [temp, keep]) {
          await detect([optOut('a@x.com')], ['hs'], { checkpoints: { w: 'x' } }, st);
          const kv = (await st.kv('source:cc')) as KvWithFlush;
          await kv.set('refresh_token', 'r');
          await kv.flush?.();
          await st.quarantine(null, 'cc', { reason: 'bad', raw: {}, recordId: 'q' }, T0);
          await st.addEvent(null, 'note', null, null, T0);
        }
        await temp.close();
        assert.strictEqual(await b.removeAccount('temp'), true);
        await b.putAccount({ id: 'temp', config: {} }, at(1));
        const fresh = await b.account('temp');
        extra.push(fresh);
        assert.deepStrictEqual(await fresh.countOptOuts(), { active: 0, left: 0 });
        assert.strictEqual(await fresh.getCheckpoint('w'), null);
        assert.strictEqual(await ((await fresh.kv('source:cc')) as KvWithFlush).get('refresh_token'), null);
        assert.strictEqual((await fresh.targetStatus(['hs'], new Date(T0)))[0]!.queued, 0);
        assert.strictEqual(await fresh.countQuarantined(), 0);
        assert.deepStrictEqual(await fresh.events(null), []);
        assert.strictEqual((await b.getAccount('temp'))!.createdAt, at(1));
        assert.deepStrictEqual(await keep.countOptOuts(), { active: 1, left: 0 });
        assert.strictEqual(await keep.getCheckpoint('w'), 'x');
        assert.strictEqual(await keep.countQuarantined(), 1);
      });

      it('the engine over an added account writes that account only', async function () {
        const b = backendOf(this);
        await b.putAccount({ id: 'acme', config: {} }, T0);
        const acme = await b.account('acme');
        extra.push(acme);
        const src = new FakeSource();
        src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
        const name = `contract-acme-${process.pid}-${Date.now()}`;
        const crm = memoryCrm(name, ['a@x.com']);
        const registry = testRegistry();
        const engine = new Engine({
          config: testConfig(registry, [{ name: 'crm', crm: name }]),
          store: acme,
          registry,
          source: () => src,
          clock: fakeClock(new Date('2026-06-01T12:00:00Z')),
          logger: memoryLogger(),
          random: () => 0.5,
        });
        try {
          const r = await engine.sync();
          assert.deepStrictEqual([r.exitCode, r.targets.crm!.outcomes, crm.writes], [0, { applied: 1 }, 1]);
        } finally {
          await engine.close();
        }
        assert.deepStrictEqual(await acme.countOptOuts(), { active: 1, left: 0 });
        assert.strictEqual((await acme.recentRuns(5)).length, 1);
        assert.deepStrictEqual(await s.countOptOuts(), { active: 0, left: 0 });
        assert.deepStrictEqual(await s.recentRuns(5), []);
        assert.deepStrictEqual(await s.audit(null), []);
      });

      it('the default account needs no registry entry and is a store like any other', async function () {
        const b = backendOf(this);
        const d = await b.account(DEFAULT_ACCOUNT);
        extra.push(d);
        await d.setCheckpoint('k', 'v', T0);
        assert.strictEqual(await d.getCheckpoint('k'), 'v');
        assert.strictEqual(await s.getCheckpoint('k'), 'v', 'the subject store is the default account');
      });
    });
  });
}
