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
import { HeldLease, Leases, SchedulerInput, SharedBudget } from './types';

export const DEFAULT_DELIVER_IDLE_MS = 5 * 60_000;

export type LeaseKind = 'account' | 'deliver';

/** `account:<id>` */
export function accountLeaseKey(account: string): string {
  return `account:${account}`;
}

/** `deliver:<id>:<target>` */
export function deliverLeaseKey(account: string, target: string): string {
  return `deliver:${account}:${target}`;
}

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
export interface PollOutcome {
  /** Constant Contact calls it spent (API and token endpoint). */
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
  detect(signal: AbortSignal): Promise<PollOutcome>;
  deliver(target: string, signal: AbortSignal): Promise<DeliverOutcome>;
  close(): Promise<void>;
}

export interface OpenAccountInput {
  readonly record: AccountRecord;
  readonly lease: HeldLease;
  readonly guard: PgFenceGuard;
  readonly signal: AbortSignal;
}

/** The per-account poll record (for the scheduler and `status`). */
export interface AccountPollState {
  readonly account: string;
  readonly lastPollAt: string | null;
  /** The UTC day `callsToday` counts. */
  readonly day: string;
  readonly callsToday: number;
  /** Consecutive polls without a new opt-out. */
  readonly idleStreak: number;
  /** Average Constant Contact calls per poll (exponential average). */
  readonly callsPerPoll: number;
  /** Consecutive failed polls (backoff). */
  readonly failures: number;
}

export interface PollBook {
  get(account: string): Promise<AccountPollState | null>;
  /** Record one poll (calls are added to today's count; `ok` false counts a failure). */
  record(p: { account: string; at: string; calls: number; found: number }, ok: boolean): Promise<AccountPollState>;
  list(): Promise<AccountPollState[]>;
}

export const utcDay = (d: Date): string => d.toISOString().slice(0, 10);

/** The next state of an account's poll record after one poll (shared by every PollBook). */
export function nextPollState(
  prev: AccountPollState | null,
  p: { account: string; at: string; calls: number; found: number },
  ok: boolean,
): AccountPollState {
  const day = p.at.slice(0, 10);
  const callsToday = (prev && prev.day === day ? prev.callsToday : 0) + p.calls;
  const callsPerPoll = prev && prev.lastPollAt ? prev.callsPerPoll * 0.8 + p.calls * 0.2 : Math.max(p.calls, 1);
  return {
    account: p.account,
    lastPollAt: p.at,
    day,
    callsToday,
    idleStreak: !ok ? (prev?.idleStreak ?? 0) : p.found > 0 ? 0 : (prev?.idleStreak ?? 0) + 1,
    callsPerPoll: ok ? callsPerPoll : (prev?.callsPerPoll ?? 2),
    failures: ok ? 0 : (prev?.failures ?? 0) + 1,
  };
}

/** A PollBook in memory (tests; a single process). */
export class MemoryPollBook implements PollBook {
  private readonly rows = new Map<string, AccountPollState>();
  get(account: string): Promise<AccountPollState | null> {
    return Promise.resolve(this.rows.get(account) ?? null);
  }
  record(p: { account: string; at: string; calls: number; found: number }, ok: boolean): Promise<AccountPollState> {
    const next = nextPollState(this.rows.get(p.account) ?? null, p, ok);
    this.rows.set(p.account, next);
    return Promise.resolve(next);
  }
  list(): Promise<AccountPollState[]> {
    return Promise.resolve([...this.rows.values()]);
  }
}

/** Interval to the next poll, in ms (the fair scheduler: ./scheduler). */
export type ScheduleFn = (input: SchedulerInput) => number;

export interface FleetWorkerOptions {
  readonly backend: StoreBackend;
  readonly leases: Leases;
  /** The shared Constant Contact budget (its state feeds the scheduler). */
  readonly budget?: SharedBudget;
  readonly polls: PollBook;
  /** Open an account's store (with the guard) and build its engine. */
  readonly open: (input: OpenAccountInput) => Promise<AccountWork>;
  /** The accounts this worker serves (default: the backend's registry). */
  readonly accounts?: () => Promise<AccountRecord[]>;
  readonly schedule: ScheduleFn;
  readonly logger: Logger;
  /** Leases worked at once (default 2). */
  readonly concurrency?: number;
  /** Lease time to live (default 30 s); renewed every ttl/3. */
  readonly ttlMs?: number;
  /** How long an idle loop waits before it looks for due leases again (default 1 s). */
  readonly idleMs?: number;
  /** Bounds of a poll interval (scheduler input; defaults 1 min and 24 h). */
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

  private async releaseQuietly(lease: HeldLease, nextDueAt: string | null): Promise<void> {
    // logged before: once released, another worker may claim it (and log) at once
    this.log.debug('lease releasing', { lease: lease.key, fence: lease.fence, nextDueAt: nextDueAt ?? 'now' });
    try {
      await this.o.leases.release(lease, nextDueAt);
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
    let current = lease;
    const beat = async (): Promise<void> => {
      if (lost || controller.signal.aborted) return;
      try {
        const ok = await this.o.leases.renew(current, this.ttlMs, this.now());
        if (!ok) {
          lost = true;
          this.counts.lost += 1;
          this.log.error('lease lost: another worker took it over; the work in hand stops', { lease: lease.key });
          controller.abort(new LeaseLost(`lease ${lease.key} was taken over by another worker`));
          return;
        }
        expiresAt = this.now().getTime() + this.ttlMs;
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
    return { stop: () => clearInterval(timer), lost: () => lost };
  }

  private async work(lease: HeldLease, records: readonly AccountRecord[], controller: AbortController): Promise<void> {
    const what = parseLeaseKey(lease.key);
    const hb = this.heartbeat(lease, controller);
    let next: string | null = null;
    let forgotten = false;
    try {
      if (!what) {
        this.log.warn('fleet worker: a lease key it does not know; given back for a day', { lease: lease.key });
        next = new Date(this.now().getTime() + 86_400_000).toISOString();
        return;
      }
      const record = records.find((r) => r.id === what.account) ?? (await this.o.backend.getAccount(what.account));
      if (!record) {
        // removed from the registry: its lease rows go too
        await this.o.leases.forget(what.account);
        forgotten = true;
        return;
      }
      if (record.priority <= 0) {
        next = new Date(this.now().getTime() + this.maxMs()).toISOString();
        return;
      }
      if (what.kind === 'deliver' && !enabledTargetNames(record.config).includes(what.target!)) {
        next = new Date(this.now().getTime() + this.maxMs()).toISOString();
        return;
      }
      next = await this.runLease(lease, record, what.kind, what.target, controller.signal);
    } catch (err) {
      next = new Date(this.now().getTime() + (this.o.failureBackoffMs ?? 30_000)).toISOString();
      this.log.error('fleet worker: a lease failed', { lease: lease.key, error: redact((err as Error).message) });
    } finally {
      hb.stop();
      if (!hb.lost() && !forgotten) {
        // stopping: due now, another worker picks it up at once
        if (this.stopping) {
          next = null;
          this.counts.handedOver += 1;
        }
        await this.releaseQuietly(lease, next);
      }
    }
  }

  private maxMs(): number {
    return this.o.maxIntervalMs ?? 24 * 3600_000;
  }

  /** Run one lease's work; returns when it is due again. */
  private async runLease(
    lease: HeldLease,
    record: AccountRecord,
    kind: LeaseKind,
    target: string | null,
    signal: AbortSignal,
  ): Promise<string> {
    const started = this.now();
    let work: AccountWork;
    try {
      work = await this.o.open({ record, lease, guard: this.o.leases.guard([lease]), signal });
    } catch (err) {
      this.counts.failures += 1;
      const message = redact((err as Error).message ?? String(err));
      this.log.error('account could not be opened', { account: record.id, lease: lease.key, error: message });
      if (kind === 'account')
        await this.o.polls.record({ account: record.id, at: started.toISOString(), calls: 0, found: 0 }, false);
      return this.backoff(record.id, kind);
    }
    try {
      if (kind === 'account') return await this.poll(record, work, signal, started);
      return await this.deliver(record, work, target!, signal);
    } catch (err) {
      this.counts.failures += 1;
      const message = redact((err as Error).message ?? String(err));
      this.log.error(kind === 'account' ? 'poll failed' : 'delivery failed', {
        account: record.id,
        ...(target ? { target } : {}),
        error: message,
      });
      if (kind === 'account')
        await this.o.polls
          .record({ account: record.id, at: started.toISOString(), calls: 0, found: 0 }, false)
          .catch(() => undefined);
      return this.backoff(record.id, kind);
    } finally {
      await work
        .close()
        .catch((err: Error) =>
          this.log.warn('account close failed', { account: record.id, error: redact(err.message) }),
        );
    }
  }

  private async backoff(account: string, kind: LeaseKind): Promise<string> {
    const base = this.o.failureBackoffMs ?? 30_000;
    const failures = kind === 'account' ? ((await this.o.polls.get(account).catch(() => null))?.failures ?? 1) : 1;
    const ms = Math.min(this.maxMs(), base * 2 ** Math.max(0, failures - 1));
    return new Date(this.now().getTime() + ms).toISOString();
  }

  private async poll(record: AccountRecord, work: AccountWork, signal: AbortSignal, started: Date): Promise<string> {
    const r = await work.detect(signal);
    this.counts.polls += 1;
    const ok = r.exitCode === 0 || !!r.interrupted;
    const state = await this.o.polls.record(
      { account: record.id, at: started.toISOString(), calls: r.calls, found: r.found },
      ok,
    );
    if (r.found > 0) await this.wakeDeliveries(record);
    const now = this.now();
    if (r.retryAt) {
      const at = Date.parse(r.retryAt);
      if (!Number.isNaN(at) && at > now.getTime()) return new Date(at).toISOString();
    }
    if (!ok) return this.backoff(record.id, 'account');
    const records = await this.accounts();
    const active = records.filter((a) => a.priority > 0);
    let remaining = Number.MAX_SAFE_INTEGER;
    if (this.o.budget) {
      const b = await this.o.budget.state(work.app, now);
      remaining = b.spent ? 0 : Math.max(0, b.limit - b.used);
    }
    const interval = this.o.schedule({
      now,
      remaining,
      accounts: Math.max(1, active.length),
      callsPerPoll: state.callsPerPoll || 2,
      priority: record.priority,
      prioritySum: Math.max(
        record.priority,
        active.reduce((a, x) => a + x.priority, 0),
      ),
      idleStreak: state.idleStreak,
      minIntervalMs: this.o.minIntervalMs ?? 60_000,
      maxIntervalMs: this.maxMs(),
    });
    this.log.info('poll finished', {
      account: record.id,
      calls: r.calls,
      newOptOuts: r.found,
      nextPollInMs: Math.round(interval),
      ...(r.interrupted ? { interrupted: true } : {}),
    });
    return new Date(now.getTime() + interval).toISOString();
  }

  /** New opt-outs are in the outbox: the account's deliver leases are due now (when the Leases can say so). */
  private async wakeDeliveries(record: AccountRecord): Promise<void> {
    const wake = (this.o.leases as Partial<WakeableLeases>).wake;
    if (typeof wake !== 'function') return;
    const now = this.now().toISOString();
    for (const t of enabledTargetNames(record.config)) {
      try {
        await wake.call(this.o.leases, deliverLeaseKey(record.id, t), now);
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
  ): Promise<string> {
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
      if (!Number.isNaN(at)) return new Date(Math.max(at, now)).toISOString();
    }
    if (r.halted) return this.backoff(record.id, 'deliver');
    if (r.nextDueAt === null) return new Date(later).toISOString();
    const at = Date.parse(r.nextDueAt);
    return new Date(Number.isNaN(at) ? later : Math.min(Math.max(at, now), later)).toISOString();
  }
}

/** Leases that can make a free row due earlier (never later); optional for a Leases implementation. */
export interface WakeableLeases extends Leases {
  wake(key: string, dueAt: string): Promise<void>;
}
