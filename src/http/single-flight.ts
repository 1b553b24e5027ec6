/**
 * One call in flight at a time: concurrent callers share the running promise; the next call after it settles
 * starts a new one. Used for token refreshes, where two racing refreshes of a rotating refresh token would
 * kill the connection (the second one presents a token the first already spent).
 */
export function singleFlight<T>(fn: () => Promise<T>): { run(): Promise<T>; running(): Promise<T> | null } {
  let inflight: Promise<T> | null = null;
  return {
    run(): Promise<T> {
      if (!inflight) {
        inflight = fn().finally(() => {
          inflight = null;
        });
      }
      return inflight;
    },
    running: () => inflight,
  };
}
