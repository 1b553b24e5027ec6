/**
 * Holding the run lock as a lease: renew it every `renewMs` (a timer that never keeps the process alive) so it
 * stays valid for `3 × renewMs`; a holder that died (a container restart, any host) is taken over once that
 * passes. A failed renewal (taken over, or removed by `cc-optout unlock`) is reported once through `onLost`; from
 * then on the store refuses this run's writes (LeaseLost), so the run fails instead of committing more.
 */
import { DEFAULT_LEASE_RENEW_MS, RunLockOwner, StateStore } from './types';

export interface LeaseOptions {
  /** Renewal interval; the lease lasts 3 intervals. Default 30 s. */
  readonly renewMs?: number;
  readonly now: () => Date;
  readonly onLost: (message: string) => void;
}

export interface Lease {
  /** Why the lease was lost, or null while it is held. */
  lost(): string | null;
  /** Renew now (also done by the timer); false once lost. */
  renew(): Promise<boolean>;
  /** Stop renewing and release the lock. */
  release(): Promise<void>;
}

export const LEASE_INTERVALS = 3;

export function leaseMsFor(renewMs: number = DEFAULT_LEASE_RENEW_MS): number {
  return LEASE_INTERVALS * renewMs;
}

/** Acquire the run lock (throws RunLocked) and keep it renewed until `release()`. */
export async function holdRunLock(
  store: StateStore,
  lock: Omit<RunLockOwner, 'now' | 'leaseMs'>,
  o: LeaseOptions,
): Promise<Lease> {
  const renewMs = o.renewMs ?? DEFAULT_LEASE_RENEW_MS;
  const leaseMs = leaseMsFor(renewMs);
  await store.acquireRunLock({ ...lock, now: o.now().toISOString(), leaseMs });
  let lost: string | null = null;
  let timer: NodeJS.Timeout | null = null;
  let released = false;
  const renew = async (): Promise<boolean> => {
    if (lost) return false;
    if (released) return true;
    let held: boolean;
    try {
      held = await store.renewRunLock(lock.owner, o.now().toISOString(), leaseMs);
    } catch {
      // a busy or failing store: the lease stays valid for a while, the next tick tries again
      return true;
    }
    if (!held) {
      if (released || lost) return !lost;
      let by: Awaited<ReturnType<StateStore['runLock']>> = null;
      try {
        by = await store.runLock();
      } catch {
        by = null;
      }
      lost = by
        ? `the run lock was taken over by cc-optout ${by.command} (pid ${by.pid} on ${by.host}) while this run held it; this run stops committing`
        : 'the run lock was removed while this run held it (cc-optout unlock); this run stops committing';
      if (timer) clearInterval(timer);
      o.onLost(lost);
      return false;
    }
    return true;
  };
  timer = setInterval(() => void renew().catch(() => undefined), renewMs);
  timer.unref();
  return {
    lost: () => lost,
    renew,
    release: async () => {
      released = true;
      if (timer) clearInterval(timer);
      timer = null;
      await store.releaseRunLock(lock.owner);
    },
  };
}
