/**
 * The core's implementation of the SDK's `Capabilities`: the engine builds one per target; tests build them
 * with `makeCapabilities` and swap what they need (clock, kv, logger).
 */
import * as fs from 'fs';
import type { CallCounter, Capabilities, HttpCapabilities, KeyValue, Secrets } from './sdk';
import { Clock, systemClock } from './http/clock';
import { RateLimiter } from './http/limiter';
import { withRetry } from './http/retry';
import { singleFlight } from './http/single-flight';
import { Logger, memoryLogger, redact, registerSecret } from './log';

export const coreSecrets: Secrets = { register: registerSecret, redact };

/**
 * `stopSignal`: the current run's stop signal (SIGTERM, a lost fleet lease); once it is aborted `retry` makes no
 * further attempt, unless the connector passed a signal of its own.
 */
export function coreHttp(clock: Clock, stopSignal?: () => AbortSignal | undefined): HttpCapabilities {
  return {
    limiter: (opts) => new RateLimiter({ ...opts, clock: opts.clock ?? clock }),
    retry: (fn, classify, policy, c, hooks) => {
      const signal = hooks?.signal ?? stopSignal?.();
      return withRetry(fn, classify, policy, c ?? clock, signal ? { ...hooks, signal } : hooks);
    },
    singleFlight: (fn) => singleFlight(fn),
  };
}

export interface CapabilityParts {
  clock?: Clock;
  logger?: Logger;
  kv?: KeyValue;
  calls?: CallCounter;
  targetName?: string;
  readFile?: (p: string) => string;
  signal?: AbortSignal;
}

/** Capabilities from parts; anything not given is the production default (or an in-memory one for kv/logger). */
export function makeCapabilities(p: CapabilityParts = {}): Capabilities {
  const clock = p.clock ?? systemClock;
  const mem = new Map<string, string>();
  return {
    clock,
    logger: p.logger ?? memoryLogger(),
    kv: p.kv ?? { get: (k) => mem.get(k) ?? null, set: (k, v) => void mem.set(k, v) },
    calls: p.calls ?? { record: () => undefined },
    targetName: p.targetName ?? 'test',
    readFile: p.readFile ?? ((f: string) => fs.readFileSync(f, 'utf8')),
    secrets: coreSecrets,
    http: coreHttp(clock),
    ...(p.signal ? { signal: p.signal } : {}),
  };
}
