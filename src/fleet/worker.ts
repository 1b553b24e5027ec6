/**
 * A fleet worker: one loop that claims due leases (see ./types), runs the work each lease stands for, and gives
 * the lease back with the time it is due again.
 *
 * - `account:<id>` leases: detection only (Constant Contact polling: new opt-outs committed to the account's
 *   outbox, nothing delivered). The next poll is computed by the fair scheduler from the shared budget's state
 *   and this poll's calls and new opt-outs.
 * - `deliver:<id>:<target>` leases: that target's due outbox rows of that account, delivered. With nothing
 *   due, the lease goes back due at the earliest queued row's next attempt (or a while later when none is queued);
 *   a poll that found new opt-outs makes the account's deliver leases due at once.
 *
 * While it works on a lease, the worker renews it every ttl/3 (heartbeat). A renewal that says the lease is no
 * longer ours (another worker took it over after a pause longer than the TTL) aborts the work through its
 * AbortSignal; the store refuses its writes anyway (the fence guard). A renewal that fails (the database is
 * away) is retried at the next beat; the work is aborted once the lease would have expired.
 *
 * One account's failure never stops the worker: it is logged (redacted), recorded in that account's run history
 * when its store could be opened, and the lease goes back with a backoff.
 *
 * `stop()`: claim nothing more, abort the work in hand (the engine stops after the batch or page in hand), and
 * release every lease held due NOW, so another worker or instance picks it up at once (handover).
 */
import * as os from 'os';
import { randomBytes } from 'crypto';
import { Logger, redact } from '../log';
import { AccountRecord, PgFenceGuard, StoreBackend } from '../store/backend';
import { LeaseLost, StateStore } from '../store/types';
import { ReauthorizationRequired } from '../source/types';
import { activityWeight, DEFAULT_MAX_INTERVAL_MS, DEFAULT_MIN_INTERVAL_MS, nextPollDelayMs } from './scheduler';
import {
  accountLeaseKey,
  deliverLeaseKey,
  HeldLease,
  Leases,
  PollOutcome,
  SchedulerInput,
  SharedBudget,
} from './types';

export { accountLeaseKey, deliverLeaseKey };

export const DEFAULT_DELIVER_IDLE_MS = 5 * 60_000;

export type LeaseKind = 'account' | 'deliver';

/** What a lease key stands for (null: not a key this worker knows). */
export function parseLeaseKey(key: string): { kind: LeaseKind; account: string; target: string | null } | null {
  const a = /^account:([^:]+)$/.exec(key);
  if (a) return { kind: 'account', account: a[1]!, target: null };
  const d = /^deliver:([^:]+):(.+)$/.exec(key);
  if (d) return { kind: 'deliver', account: d[1]!, target: d[2]! };
  return null;
}

/**
 * The enabled targets named in an account's config document (without decoding it: no secret is needed to know
 * which deliver leases it has). Unnamed or malformed entries are skipped (decoding the config reports them).
 */
export function enabledTargetNames(config: unknown): string[] {
  const targets = (config as { targets?: unknown } | null)?.targets;
  if (!Array.isArray(targets)) return [];
  const out: string[] = [];
  for (const t of targets as unknown[]) {
    const e = t as { name?: unknown; enabled?: unknown } | null;
    if (!e || typeof e !== 'object' || typeof e.name !== 'string' || e.name === '') continue;
    if (e.enabled === false) continue;
    if (!out.includes(e.name)) out.push(e.name);
  }
  return out;
}

/** What one detection poll did. */
export interface DetectOutcome {
  /** Constant Contact API calls it spent (what the daily budget counts). */
  readonly calls: number;
  /** New opt-outs it committed. */
  readonly found: number;
  /** 0 when complete. */
  readonly exitCode: number;
  /** Detection stopped until then (the daily quota's reset). */
  readonly retryAt?: string | null;
  /** Stopped early on request (stop(), a lost lease). */
  readonly interrupted?: boolean;
}

/** What one deliver-only run for one target did. */
export interface DeliverOutcome {
  /** Records the target settled (any outcome). */
  readonly settled: number;
  /** When the target has rows due again: now (more are due), a row's next attempt, or null when none is queued. */
  readonly nextDueAt: string | null;
  /** The target halted (auth, limit, outage): its message. */
  readonly halted?: string | null;
  readonly retryAt?: string | null;
  readonly interrupted?: boolean;
}

/** One account opened under a lease: its store and its engine, seen through what the worker needs. */
export interface AccountWork {
  readonly store: StateStore;
  /** The Constant Contact application (client id) the account spends the shared budget of. */
  readonly app: string;
  detect(signal: AbortSignal): Promise<DetectOutcome>;
  deliver(target: string, signal: AbortSignal): Promise<DeliverOutcome>;
  close(): Promise<void>;
}

export interface OpenAccountInput {
  readonly record: AccountRecord;
  readonly lease: HeldLease;
  readonly guard: PgFenceGuard;
  readonly signal: AbortSignal;
}

/** The account key/value namespace of the fleet's per-account poll record (`status` reads it). */
export const FLEET_KV = 'fleet';
export const POLL_RECORD_KEY = 'poll';

/**
 * What the worker keeps per account in the account's own store (key/value `fleet`/`poll`, written under the
 * account lease): the Constant Contact calls spent on the UTC `day`, and the consecutive failed polls (backoff).
 * The last poll time, idle streak and calls per poll are on the account's lease row (Leases.release with a poll).
 */
export interface AccountPollRecord {
  readonly day: string;
  readonly callsToday: number;
  readonly failures: number;
  readonly lastPollAt: string | null;
  /** The last failure, redacted (null after a good poll). */
  readonly lastError: string | null;
}

export const utcDay = (d: Date): string => d.toISOString().slice(0, 10);

/** The record as stored (null when absent or unreadable). */
export async function readPollRecord(store: StateStore): Promise<AccountPollRecord | null> {
  const kv = await store.kv(FLEET_KV);
  const raw = kv.get(POLL_RECORD_KEY);
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Partial<AccountPollRecord>;
    if (typeof v.day !== 'string' || typeof v.callsToday !== 'number') return null;
    return {
      day: v.day,
      callsToday: v.callsToday,
      failures: typeof v.failures === 'number' ? v.failures : 0,
      lastPollAt: typeof v.lastPollAt === 'string' ? v.lastPollAt : null,
      lastError: typeof v.lastError === 'string' ? v.lastError : null,
    };
  } catch {
    return null;
  }
}

/** Calls spent today by the record's account (0 when the record is of another day). */
export function callsOn(rec: AccountPollRecord | null, day: string): number {
  return rec && rec.day === day ? rec.callsToday : 0;
}

/** The next record after one poll. */
export function nextPollRecord(
  prev: AccountPollRecord | null,
  p: { at: string; calls: number; error: string | null },
): AccountPollRecord {
  const day = p.at.slice(0, 10);
  return {
    day,
    callsToday: callsOn(prev, day) + p.calls,
    failures: p.error === null ? 0 : (prev?.failures ?? 0) + 1,
    lastPollAt: p.at,
    lastError: p.error,
  };
}

async function writePollRecord(store: StateStore, rec: AccountPollRecord): Promise<void> {
  const kv = await store.kv(FLEET_KV);
  kv.set(POLL_RECORD_KEY, JSON.stringify(rec));
  await kv.flush?.();
}

/** Interval to the next poll, in ms (the fair scheduler: ./scheduler). */
export type ScheduleFn = (input: SchedulerInput) => number;

export interface FleetWorkerOptions {
  readonly backend: StoreBackend;
  readonly leases: Leases;
  /** The shared Constant Contact budget (its state feeds the scheduler). */
  readonly budget?: SharedBudget;
  /** Open an account's store (with the guard) and build its engine. */
  readonly open: (input: OpenAccountInput) => Promise<AccountWork>;
  /** The accounts this worker serves (default: the backend's registry). */
  readonly accounts?: () => Promise<AccountRecord[]>;
  /** The fair scheduler (default ./scheduler nextPollDelayMs). */
  readonly schedule?: ScheduleFn;
  /**
   * Make a free lease due at `dueAt` unless it is due earlier already (a poll that found opt-outs wakes the
   * account's deliver leases); optional: without it they come due after `deliverIdleMs`.
   */
  readonly wake?: (key: string, dueAt: string) => Promise<void>;
  readonly logger: Logger;
  /** Leases worked at once (default 2). */
  readonly concurrency?: number;
  /** Lease time to live (default 30 s); renewed every ttl/3. */
  readonly ttlMs?: number;
  /** How long an idle loop waits before it looks for due leases again (default 1 s). */
  readonly idleMs?: number;
  /** Bounds of a poll interval (scheduler input; defaults ./scheduler's 1 min and 24 h). */
  readonly minIntervalMs?: number;
  readonly maxIntervalMs?: number;
  /**
   * A deliver lease with nothing queued comes back after this (default 5 min): a poll that found opt-outs makes
   * it due at once anyway (Leases.wake), this bounds the wait when that wake raced a delivery in hand.
   */
  readonly deliverIdleMs?: number;
  /** Backoff after a failure: base, doubling per consecutive failure, up to maxIntervalMs (default 30 s). */
  readonly failureBackoffMs?: number;
  readonly kinds?: readonly LeaseKind[];
  readonly owner?: string;
  readonly now?: () => Date;
}

/** `host:pid:random`: unique per worker (several in one process). */
export function workerOwnerId(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/** What the worker has done (tests, metrics, logs). */
export interface WorkerCounts {
  claimed: number;
  polls: number;
  deliveries: number;
  failures: number;
  lost: number;
  handedOver: number;
}

interface InHand {
  readonly lease: HeldLease;
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

export class FleetWorker {
  readonly owner: string;
  readonly counts: WorkerCounts = { claimed: 0, polls: 0, deliveries: 0, failures: 0, lost: 0, handedOver: 0 };
  /** Accounts whose Constant Contact credentials were refused (re-authorisation needed): the message (readyz). */
  readonly refused = new Map<string, string>();
  private readonly inHand = new Map<string, InHand>();
  private stopping = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private readonly log: Logger;
  private readonly ttlMs: number;
  private readonly concurrency: number;
  private readonly now: () => Date;
  private ensured = new Set<string>();
  private lastFullEnsure = 0;

  constructor(private readonly o: FleetWorkerOptions) {
    this.owner = o.owner ?? workerOwnerId();
    this.ttlMs = o.ttlMs ?? 30_000;
    this.concurrency = Math.max(1, o.concurrency ?? 2);
    this.now = o.now ?? (() => new Date());
    this.log = o.logger.child({ component: 'fleet-worker', worker: this.owner });
  }

  /** Start the loop (resolves at once; `stopped()` resolves when it has ended). */
  start(): void {
    if (this.loop) return;
    this.loop = this.run().catch((err) => {
      this.log.error('fleet worker loop failed', { error: redact((err as Error).message) });
    });
  }

  stopped(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /** Keys held right now. */
  held(): string[] {
    return [...this.inHand.keys()];
  }

  /** Claim nothing more, abort the work in hand (after its batch), release what is held due now. */
  async stop(reason = 'stop'): Promise<void> {
    this.stopping = true;
    for (const h of this.inHand.values()) h.controller.abort(reason);
    this.wake?.();
    await this.stopped();
    await Promise.all([...this.inHand.values()].map((h) => h.done));
  }

  private accounts(): Promise<AccountRecord[]> {
    return this.o.accounts ? this.o.accounts() : this.o.backend.listAccounts();
  }

  /** Lease rows for every account and each of its enabled targets (new keys due now). */
  async ensureLeases(records: readonly AccountRecord[]): Promise<void> {
    const full = Date.now() - this.lastFullEnsure > 60_000;
    if (full) this.ensured = new Set();
    const now = this.now().toISOString();
    for (const r of records) {
      const keys: [string, string | null][] = [
        [accountLeaseKey(r.id), null],
        ...enabledTargetNames(r.config).map((t): [string, string] => [deliverLeaseKey(r.id, t), t]),
      ];
      for (const [key, target] of keys) {
        if (this.ensured.has(key)) continue;
        await this.o.leases.ensure(key, r.id, target, now, r.priority);
        this.ensured.add(key);
      }
    }
    if (full) this.lastFullEnsure = Date.now();
  }

  private async run(): Promise<void> {
    let records: AccountRecord[] = [];
    while (!this.stopping) {
      let claimed: HeldLease[] = [];
      try {
        records = await this.accounts();
        await this.ensureLeases(records);
        const free = this.concurrency - this.inHand.size;
        if (free > 0)
          claimed = await this.o.leases.claim(
            this.owner,
            free,
            this.ttlMs,
            this.now(),
            this.o.kinds ?? ['account', 'deliver'],
          );
      } catch (err) {
        this.log.warn('fleet worker: could not claim leases (retrying)', { error: redact((err as Error).message) });
      }
      if (this.stopping) {
        // claimed while stopping: hand them straight back
        for (const l of claimed) await this.releaseQuietly(l, null);
        break;
      }
      for (const lease of claimed) {
        this.counts.claimed += 1;
        this.log.debug('lease claimed', { lease: lease.key, fence: lease.fence });
        const controller = new AbortController();
        const done = this.work(lease, records, controller).finally(() => {
          this.inHand.delete(lease.key);
          this.wake?.();
        });
        this.inHand.set(lease.key, { lease, controller, done });
      }
      // full: wait for a slot; nothing due: wait idleMs (a finished lease or stop() wakes the loop earlier)
      if (claimed.length === 0 || this.inHand.size >= this.concurrency) await this.pause();
    }
  }

  private pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.o.idleMs ?? 1000);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  private async releaseQuietly(lease: HeldLease, nextDueAt: string | null, poll?: PollOutcome): Promise<void> {
    // logged before: once released, another worker may claim it (and log) at once
    this.log.debug('lease releasing', { lease: lease.key, fence: lease.fence, nextDueAt: nextDueAt ?? 'now' });
    try {
      await this.o.leases.release(lease, nextDueAt, poll);
    } catch (err) {
      // not given back: it expires after its TTL and another worker takes it over then
      this.log.warn('fleet worker: could not release a lease (it expires after its TTL)', {
        lease: lease.key,
        error: redact((err as Error).message),
      });
    }
  }

  /** Renew every ttl/3; abort the work when the lease is lost or would have expired unrenewed. */
  private heartbeat(lease: HeldLease, controller: AbortController): { stop(): void; lost(): boolean } {
    let lost = false;
    let expiresAt = Date.parse(lease.expiresAt);
    // this process's own view of the lease's end: from when the claim or the last successful renewal was SENT
    let localDeadline = this.now().getTime() + this.ttlMs;
    let current = lease;
    const beat = async (): Promise<void> => {
      // renewed while the work is in hand, a stop's last batch included: it must not expire under a successor
      if (lost) return;
      try {
        const sentAt = this.now().getTime();
        const ok = await this.o.leases.renew(current, this.ttlMs, this.now());
        if (!ok) {
          lost = true;
          this.counts.lost += 1;
          this.log.error('lease lost: another worker took it over; the work in hand stops', { lease: lease.key });
          controller.abort(new LeaseLost(`lease ${lease.key} was taken over by another worker`));
          return;
        }
        expiresAt = this.now().getTime() + this.ttlMs;
        localDeadline = sentAt + this.ttlMs;
        current = { ...current, expiresAt: new Date(expiresAt).toISOString() };
      } catch (err) {
        if (this.now().getTime() >= expiresAt) {
          lost = true;
          this.counts.lost += 1;
          controller.abort(new LeaseLost(`lease ${lease.key} expired: it could not be renewed`));
        }
        this.log.warn('lease renewal failed (retrying at the next beat)', {
          lease: lease.key,
          error: redact((err as Error).message),
        });
      }
    };
    const timer = setInterval(() => void beat(), Math.max(50, Math.floor(this.ttlMs / 3)));
    timer.unref();
    // the local deadline: a process that was paused (SIGSTOP, a VM freeze) wakes up with its lease possibly taken
    // over; before anything else runs (a retry timer, an answer in flight), this check aborts the work once the
    // lease would have expired (a tenth of the TTL early, for clock-rate differences), renewed or not
    const margin = Math.floor(this.ttlMs / 10);
    const deadline = setInterval(
      () => {
        if (!lost && this.now().getTime() >= localDeadline - margin) {
          lost = true;
          this.counts.lost += 1;
          this.log.error('lease ran out before it was renewed (the process was paused?); the work in hand stops', {
            lease: lease.key,
          });
          controller.abort(new LeaseLost(`lease ${lease.key} ran out before it was renewed`));
        }
      },
      Math.max(20, Math.floor(this.ttlMs / 20)),
    );
    deadline.unref();
    return {
      stop: () => {
        clearInterval(timer);
        clearInterval(deadline);
      },
      lost: () => lost,
    };
  }

  private async work(lease: HeldLease, records: readonly AccountRecord[], controller: AbortController): Promise<void> {
    const what = parseLeaseKey(lease.key);
    const hb = this.heartbeat(lease, controller);
    let result: LeaseResult = { next: null };
    let forgotten = false;
    try {
      if (!what) {
        this.log.warn('fleet worker: a lease key it does not know; given back for a day', { lease: lease.key });
        result = { next: this.after(DAY_MS) };
        return;
      }
      const record = records.find((r) => r.id === what.account) ?? (await this.o.backend.getAccount(what.account));
      if (!record) {
        // removed from the registry: its lease rows go too
        await this.o.leases.forget(what.account);
        forgotten = true;
        return;
      }
      if (
        record.priority <= 0 ||
        (what.kind === 'deliver' && !enabledTargetNames(record.config).includes(what.target!))
      ) {
        // paused, or a target no longer enabled: looked at again later
        result = { next: this.after(this.maxMs()) };
        return;
      }
      result = await this.runLease(lease, record, what.kind, what.target, controller.signal);
    } catch (err) {
      result = { next: this.after(this.o.failureBackoffMs ?? 30_000) };
      this.log.error('fleet worker: a lease failed', { lease: lease.key, error: redact((err as Error).message) });
    } finally {
      hb.stop();
      if (!hb.lost() && !forgotten) {
        // stopping: due now, another worker picks it up at once
        if (this.stopping) this.counts.handedOver += 1;
        await this.releaseQuietly(lease, this.stopping ? null : result.next, result.poll);
      }
    }
  }

  private after(ms: number): string {
    return new Date(this.now().getTime() + ms).toISOString();
  }

  private maxMs(): number {
    return this.o.maxIntervalMs ?? DEFAULT_MAX_INTERVAL_MS;
  }

  /** Run one lease's work; returns when it is due again (and, for a poll, what the poll did). */
  private async runLease(
    lease: HeldLease,
    record: AccountRecord,
    kind: LeaseKind,
    target: string | null,
    signal: AbortSignal,
  ): Promise<LeaseResult> {
    const started = this.now();
    let work: AccountWork;
    try {
      work = await this.o.open({ record, lease, guard: this.o.leases.guard([lease]), signal });
    } catch (err) {
      this.counts.failures += 1;
      const message = redact((err as Error).message ?? String(err));
      this.log.error('account could not be opened', { account: record.id, lease: lease.key, error: message });
      return { next: this.backoffAt(this.localFailures(lease.key, true)) };
    }
    let prior: AccountPollRecord | null = null;
    try {
      if (kind === 'account') {
        prior = await readPollRecord(work.store);
        const polled = await this.poll(record, work, signal, started, prior);
        // opened and polled: the failures counted while it could not be opened are over
        this.localFailures(lease.key, false);
        this.refused.delete(record.id);
        return polled;
      }
      return await this.deliver(record, work, target!, signal);
    } catch (err) {
      this.counts.failures += 1;
      const message = redact((err as Error).message ?? String(err));
      if (kind === 'account' && err instanceof ReauthorizationRequired) this.refused.set(record.id, message);
      this.log.error(kind === 'account' ? 'poll failed' : 'delivery failed', {
        account: record.id,
        ...(target ? { target } : {}),
        error: message,
      });
      if (kind !== 'account') return { next: this.backoffAt(this.localFailures(lease.key, true)) };
      const rec = nextPollRecord(prior, { at: started.toISOString(), calls: 0, error: message });
      await writePollRecord(work.store, rec).catch(() => undefined);
      return { next: this.backoffAt(rec.failures) };
    } finally {
      await work
        .close()
        .catch((err: Error) =>
          this.log.warn('account close failed', { account: record.id, error: redact(err.message) }),
        );
    }
  }

  /** Consecutive failures this worker saw of a key it could not record in a store (open failed, deliveries). */
  private readonly failuresSeen = new Map<string, number>();
  private localFailures(key: string, failed: boolean): number {
    if (!failed) {
      this.failuresSeen.delete(key);
      return 0;
    }
    const n = (this.failuresSeen.get(key) ?? 0) + 1;
    this.failuresSeen.set(key, n);
    return n;
  }

  /** Backoff after `failures` consecutive failures: failureBackoffMs doubling, at most maxIntervalMs. */
  private backoffAt(failures: number): string {
    const base = this.o.failureBackoffMs ?? 30_000;
    return this.after(Math.min(this.maxMs(), base * 2 ** Math.max(0, failures - 1)));
  }

  private async poll(
    record: AccountRecord,
    work: AccountWork,
    signal: AbortSignal,
    started: Date,
    prior: AccountPollRecord | null,
  ): Promise<LeaseResult> {
    const r = await work.detect(signal);
    this.counts.polls += 1;
    const ok = r.exitCode === 0 || !!r.interrupted;
    const rec = nextPollRecord(prior, {
      at: started.toISOString(),
      calls: r.calls,
      error: ok ? null : `detection ended with exit code ${r.exitCode}`,
    });
    await writePollRecord(work.store, rec);
    const poll: PollOutcome = { at: started.toISOString(), calls: r.calls, found: r.found };
    if (r.found > 0) await this.wakeDeliveries(record);
    const now = this.now();
    if (r.retryAt) {
      const at = Date.parse(r.retryAt);
      if (!Number.isNaN(at) && at > now.getTime()) return { next: new Date(at).toISOString(), poll };
    }
    if (!ok) return { next: this.backoffAt(rec.failures), poll };
    const interval = await this.interval(record, work, r, now);
    this.log.info('poll finished', {
      account: record.id,
      calls: r.calls,
      newOptOuts: r.found,
      callsToday: rec.callsToday,
      nextPollInMs: Math.round(interval),
      ...(r.interrupted ? { interrupted: true } : {}),
    });
    return { next: new Date(now.getTime() + interval).toISOString(), poll };
  }

  /** The scheduler's interval for the account after this poll (from the budget left and the other accounts). */
  private async interval(record: AccountRecord, work: AccountWork, r: DetectOutcome, now: Date): Promise<number> {
    const [mine, sum] = await Promise.all([this.o.leases.get(accountLeaseKey(record.id)), this.o.leases.summary()]);
    // this poll as the lease row records it on release
    const idleStreak = r.found > 0 ? 0 : (mine?.idleStreak ?? 0) + 1;
    const callsPerPoll = mine && mine.polls > 0 ? mine.callsPerPoll * 0.8 + r.calls * 0.2 : Math.max(1, r.calls);
    // the summary counts this account as it was before this poll (never polled: weight 1)
    const before =
      mine && mine.priority > 0 ? mine.priority * (mine.polls > 0 ? activityWeight(mine.idleStreak) : 1) : 0;
    const weightSum = Math.max(0, sum.weightSum - before) + record.priority * activityWeight(idleStreak);
    const counted = mine && mine.priority > 0;
    let remaining = Number.MAX_SAFE_INTEGER;
    if (this.o.budget) remaining = (await this.o.budget.state(work.app, now)).remaining;
    return (this.o.schedule ?? nextPollDelayMs)({
      now,
      remaining,
      accounts: Math.max(1, sum.accounts + (counted ? 0 : 1)),
      callsPerPoll: Math.max(0.1, callsPerPoll),
      priority: record.priority,
      prioritySum: Math.max(record.priority, sum.prioritySum - (counted ? mine.priority : 0) + record.priority),
      idleStreak,
      weightSum: weightSum > 0 ? weightSum : undefined,
      minIntervalMs: this.o.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS,
      maxIntervalMs: this.maxMs(),
    });
  }

  /** New opt-outs are in the outbox: the account's deliver leases are due now. */
  private async wakeDeliveries(record: AccountRecord): Promise<void> {
    if (!this.o.wake) return;
    const now = this.now().toISOString();
    for (const t of enabledTargetNames(record.config)) {
      try {
        await this.o.wake(deliverLeaseKey(record.id, t), now);
      } catch (err) {
        this.log.warn('could not make a deliver lease due now', {
          account: record.id,
          target: t,
          error: redact((err as Error).message),
        });
      }
    }
  }

  private async deliver(
    record: AccountRecord,
    work: AccountWork,
    target: string,
    signal: AbortSignal,
  ): Promise<LeaseResult> {
    const r = await work.deliver(target, signal);
    this.counts.deliveries += 1;
    const now = this.now().getTime();
    const later = now + (this.o.deliverIdleMs ?? DEFAULT_DELIVER_IDLE_MS);
    if (r.settled > 0 || r.halted)
      this.log.info('delivery finished', {
        account: record.id,
        target,
        settled: r.settled,
        ...(r.halted ? { halted: r.halted } : {}),
      });
    if (r.halted && r.retryAt) {
      const at = Date.parse(r.retryAt);
      if (!Number.isNaN(at)) return { next: new Date(Math.max(at, now)).toISOString() };
    }
    if (r.halted) return { next: this.backoffAt(this.localFailures(deliverLeaseKey(record.id, target), true)) };
    this.localFailures(deliverLeaseKey(record.id, target), false);
    if (r.nextDueAt === null) return { next: new Date(later).toISOString() };
    const at = Date.parse(r.nextDueAt);
    return { next: new Date(Number.isNaN(at) ? later : Math.min(Math.max(at, now), later)).toISOString() };
  }
}

interface LeaseResult {
  /** Due again then (null: now). */
  readonly next: string | null;
  readonly poll?: PollOutcome;
}

const DAY_MS = 86_400_000;
