/**
 * Test doubles for a server-backed state store: every StateStore method answers with a promise settled on a
 * later turn of the event loop (as a PostgreSQL round trip would), and its key/value stores queue `set()` until
 * `flush()`. A caller that forgets an `await` sees a promise where it expected a value, or a write that has not
 * happened yet.
 */
import { KeyValue } from '../../src/domain';
import { StateStore } from '../../src/store/types';

/** A key/value store whose `set()` is queued until `flush()` (the durable map is what a restart would see). */
export interface QueuedKv extends KeyValue {
  readonly durable: Map<string, string>;
  readonly pending: Map<string, string>;
  flushes: number;
  flush(): Promise<void>;
}

export function queuedKv(durable: Map<string, string> = new Map(), onFlush?: () => void): QueuedKv {
  const pending = new Map<string, string>();
  const kv: QueuedKv = {
    durable,
    pending,
    flushes: 0,
    get: (k) => pending.get(k) ?? durable.get(k) ?? null,
    set: (k, v) => {
      pending.set(k, v);
    },
    flush: async () => {
      await new Promise((r) => setImmediate(r));
      for (const [k, v] of pending) durable.set(k, v);
      pending.clear();
      kv.flushes += 1;
      onFlush?.();
    },
  };
  return kv;
}

const later = <T>(fn: () => T): Promise<T> =>
  new Promise<T>((resolve, reject) =>
    setImmediate(() => {
      try {
        resolve(fn());
      } catch (err) {
        reject(err as Error);
      }
    }),
  );

/**
 * Wrap a (synchronous) store: each method runs on a later turn and answers with a promise; `log` records
 * `method` when a call is made and `method:done` when it took effect. `kv(ns)` hands out a queued key/value
 * store per namespace whose flush writes into the inner store.
 */
export function asyncStore(
  inner: StateStore,
  log: string[] = [],
): StateStore & { log: string[]; kvs: Map<string, QueuedKv> } {
  const kvs = new Map<string, QueuedKv>();
  const handler: ProxyHandler<StateStore> = {
    get(target, prop, receiver) {
      if (prop === 'log') return log;
      if (prop === 'kvs') return kvs;
      if (prop === 'schemaVersion') return target.schemaVersion;
      if (prop === 'kv') {
        return (ns: string) =>
          later(() => {
            let q = kvs.get(ns);
            if (!q) {
              const innerKv = target.kv(ns) as KeyValue;
              const view = new Map<string, string>();
              q = queuedKv(view, () => {
                for (const [k, v] of view) innerKv.set(k, v);
                log.push(`kv:${ns}:flush`);
              });
              // what the inner store already holds is visible through get()
              const get = q.get;
              q.get = (k) => get(k) ?? innerKv.get(k);
              kvs.set(ns, q);
            }
            return q;
          });
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      const name = String(prop);
      return (...args: unknown[]) => {
        log.push(name);
        return later(() => {
          const out = (v as (...a: unknown[]) => unknown).apply(target, args);
          log.push(`${name}:done`);
          return out;
        });
      };
    },
  };
  return new Proxy(inner, handler) as StateStore & { log: string[]; kvs: Map<string, QueuedKv> };
}
