/**
 * The PostgreSQL state store against the SQLite one, on the same calls: detection commits of 1,000 opt-outs x 2
 * targets until `--opt-outs` are stored (in each of `--accounts` accounts of one database), then reading due
 * pages, recording outcomes in batches of 100, targetStatus and a full audit. Prints milliseconds (median of the
 * commits; single runs otherwise). PostgreSQL: `--url postgres://...` (a database that is emptied first is NOT
 * assumed: a new one is made on the private test cluster of test/support/postgres when no URL is given).
 *
 *   node dist/bench/pg-store.js [--opt-outs 20000] [--accounts 2]
 */
import * as os from 'os';
import { OptOut } from '../src/domain';
import { PgBackend, openPgBackend } from '../src/store/postgres';
import { SqliteStateStore } from '../src/store/sqlite';
import { StateStore } from '../src/store/types';
import { freshDatabase } from '../test/support/postgres';

const T0 = '2026-06-01T00:00:00.000Z';
const policy = { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 };

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

async function time(fn: () => unknown): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

async function exercise(label: string, s: StateStore, total: number): Promise<Record<string, number>> {
  const runId = await s.startRun('sync', false, T0);
  const commits: number[] = [];
  for (let done = 0; done < total; done += 1000) {
    const added: OptOut[] = Array.from({ length: 1000 }, (_, i) => ({
      email: `p${done + i}@example.com`,
      contactId: `c${done + i}`,
      optedOutAt: new Date(Date.parse(T0) - (done + i) * 1000).toISOString(),
      source: 'Contact',
      reason: null,
      deleted: false,
    }));
    commits.push(
      await time(() =>
        s.commitDetection({ runId, added, resubscribed: [], targets: ['hs', 'sf'], now: T0, checkpoints: { w: T0 } }),
      ),
    );
  }
  const out: Record<string, number> = { 'commitDetection 1000x2 (median)': median(commits) };
  out['dueOutbox 100'] = await time(() => s.dueOutbox('hs', new Date(T0), 100));
  const outcomes: number[] = [];
  for (let b = 0; b < 10; b++) {
    const due = await s.dueOutbox('hs', new Date(T0), 100);
    outcomes.push(
      await time(() =>
        s.recordOutcomes({
          runId,
          target: 'hs',
          now: new Date(T0),
          policy,
          outcomes: due.map((r) => ({ email: r.optOut.email, kind: 'applied' as const, recordIds: ['1'] })),
        }),
      ),
    );
  }
  out['recordOutcomes 100 (median)'] = median(outcomes);
  out['targetStatus 2 targets'] = await time(() => s.targetStatus(['hs', 'sf'], new Date(T0)));
  out['countOptOuts'] = await time(() => s.countOptOuts());
  out['enqueueKnown 1 new target'] = await time(() =>
    s.enqueueKnown({ runId, targets: ['t3'], since: null, redeliver: false, now: T0 }),
  );
  out[`audit (${total * 3} rows)`] = await time(() => s.audit(null));
  out['deliveryHistory'] = await time(() => s.deliveryHistory(null));
  void label;
  return out;
}

async function main(): Promise<void> {
  const total = arg('opt-outs', 20000);
  const accounts = arg('accounts', 2);
  const urlAt = process.argv.indexOf('--url');
  const db = urlAt > 0 ? { url: process.argv[urlAt + 1]!, drop: async () => undefined } : await freshDatabase('bench');
  console.log(`${total} opt-outs x 2 targets per account, ${accounts} account(s); ${os.cpus().length} CPUs`);
  const lite = new SqliteStateStore(':memory:');
  const sqlite = await exercise('sqlite', lite, total);
  lite.close();
  const backend = (await openPgBackend(db.url)) as PgBackend;
  const pg: Record<string, number>[] = [];
  try {
    for (let a = 0; a < accounts; a++) {
      const id = a === 0 ? 'default' : `acct-${a}`;
      if (a > 0) await backend.putAccount({ id, config: {} }, T0);
      pg.push(await exercise(id, await backend.account(id), total));
    }
  } finally {
    await backend.close();
    await db.drop();
  }
  const rows = Object.keys(sqlite).map((k) => [k, sqlite[k]!.toFixed(1), ...pg.map((p) => p[k]!.toFixed(1))]);
  const head = ['ms', 'SQLite :memory:', ...pg.map((_, i) => `PostgreSQL account ${i + 1}`)];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padStart(widths[i]!)).join('  '));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
