/**
 * `run` at start-up: a PostgreSQL server that is not reachable yet (a reboot where the database starts late) is
 * waited for, with backoff, instead of being a config error (exit 2 would keep systemd from restarting the unit).
 * Every failed attempt is logged once (the URL's password is masked); SIGTERM/SIGINT during the wait stops cleanly.
 */
import type { Logger } from '../log';
import { StoreUnreachable } from '../store/types';

export interface StoreWaitOptions {
  /** First pause after a failed attempt (doubling per attempt, at most maxMs). */
  readonly baseMs?: number;
  readonly maxMs?: number;
}

/**
 * `open()` until it does not throw StoreUnreachable (any other error is thrown at once). Resolves null when a
 * SIGTERM or SIGINT arrives while waiting (the caller then exits cleanly).
 */
export async function untilStoreOpens<T>(
  open: () => Promise<T>,
  logger: Logger,
  o: StoreWaitOptions = {},
): Promise<T | null> {
  const baseMs = o.baseMs ?? 1000;
  const maxMs = o.maxMs ?? 30_000;
  let stopped: NodeJS.Signals | null = null;
  let wake: () => void = () => undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    stopped = sig;
    wake();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const opened = await open();
        if (attempt > 1) logger.info('state store reachable: starting', { attempts: attempt });
        return opened;
      } catch (err) {
        if (!(err instanceof StoreUnreachable)) throw err;
        const waitMs = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 20));
        logger.warn(`state store not reachable (attempt ${attempt}), retrying in ${Math.round(waitMs / 1000)} s`, {
          error: err.message,
        });
        if (stopped) break;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, waitMs);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        if (stopped) break;
      }
    }
    logger.info('stopping: signal received while waiting for the state store', { signal: stopped });
    return null;
  } finally {
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
  }
}
