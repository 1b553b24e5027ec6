/**
 * Test capabilities for the Dynamics connector: what the engine hands a connector, in memory (no core
 * internals: only the SDK's types), with a clock whose sleeps can be instant and recorded.
 */
import { Capabilities, Limiter, OptOut } from 'cc-optout-connector/sdk';

export interface TestCaps extends Capabilities {
  readonly lines: string[];
  readonly callCounts: Map<string, number>;
  readonly sleeps: number[];
  readonly pauses: number[];
  readonly registered: Set<string>;
  acquired: number;
}

export function testCaps(opts: { instantSleep?: boolean; files?: Record<string, string> } = {}): TestCaps {
  const lines: string[] = [];
  const callCounts = new Map<string, number>();
  const sleeps: number[] = [];
  const pauses: number[] = [];
  const registered = new Set<string>();
  let offset = 0;
  const redact = (s: string): string => {
    let out = s;
    for (const v of registered) out = out.split(v).join('***');
    return out;
  };
  const logger = {
    debug: (m: string, f?: Record<string, unknown>) => lines.push(redact(`debug ${m} ${JSON.stringify(f ?? {})}`)),
    info: (m: string, f?: Record<string, unknown>) => lines.push(redact(`info ${m} ${JSON.stringify(f ?? {})}`)),
    warn: (m: string, f?: Record<string, unknown>) => lines.push(redact(`warn ${m} ${JSON.stringify(f ?? {})}`)),
    error: (m: string, f?: Record<string, unknown>) => lines.push(redact(`error ${m} ${JSON.stringify(f ?? {})}`)),
    child() {
      return logger;
    },
  };
  const kv = new Map<string, string>();
  const caps: TestCaps = {
    lines,
    callCounts,
    sleeps,
    pauses,
    registered,
    acquired: 0,
    clock: {
      now: () => new Date(Date.now() + offset),
      sleep: async (ms: number) => {
        sleeps.push(ms);
        if (opts.instantSleep ?? true) offset += ms;
        else await new Promise((r) => setTimeout(r, ms));
      },
    },
    logger,
    kv: { get: (k) => kv.get(k) ?? null, set: (k, v) => void kv.set(k, v) },
    calls: { record: (vendor, n = 1) => void callCounts.set(vendor, (callCounts.get(vendor) ?? 0) + n) },
    targetName: 'dynamics-test',
    readFile: (p) => {
      if (opts.files && p in opts.files) return opts.files[p];

      return (require('fs') as typeof import('fs')).readFileSync(p, 'utf8');
    },
    secrets: {
      register: (v) => {
        if (v && v.length >= 6) registered.add(v);
      },
      redact,
    },
    http: {
      limiter: (): Limiter => ({
        acquire: async () => {
          caps.acquired++;
        },
        pause: (ms) => void pauses.push(ms),
        exhaust: () => undefined,
        usedToday: () => caps.acquired,
      }),
      retry: async (fn) => fn(1),
      singleFlight: (fn) => {
        let p: Promise<unknown> | null = null;
        return {
          run: () => (p ??= fn().finally(() => (p = null))) as never,
          running: () => p as never,
        };
      },
    },
  };
  return caps;
}

export function optOut(email: string, at = '2026-11-30T10:00:00.000Z'): OptOut {
  return { email, contactId: `cc-${email}`, optedOutAt: at, source: 'Contact', reason: null, deleted: false };
}
