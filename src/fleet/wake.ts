/**
 * Making a free lease due sooner (never later): after a poll that found new opt-outs, the account's deliver
 * leases are due at once instead of at their idle time (src/fleet/worker.ts `wake`). A lease in hand is left
 * alone (its holder's release sets its next due time; the worker bounds that wait with `deliverIdleMs`).
 * Over the fleet's `cc_leases` table (./postgres.ts, ./sqlite.ts).
 */
import type Database from 'better-sqlite3';
import type { Pool } from 'pg';

export type Wake = (key: string, dueAt: string) => Promise<void>;

function dueMs(dueAt: string): number {
  const t = Date.parse(dueAt);
  if (Number.isNaN(t)) throw new Error(`wake: dueAt ${JSON.stringify(dueAt)} is not an ISO-8601 instant`);
  return t;
}

export function pgWake(pool: Pool): Wake {
  return async (key, dueAt) => {
    dueMs(dueAt);
    await pool.query(
      `UPDATE cc_leases SET next_due_at = $2::timestamptz WHERE key = $1 AND owner IS NULL AND next_due_at > $2::timestamptz`,
      [key, dueAt],
    );
  };
}

export function sqliteWake(db: Database.Database): Wake {
  const stmt = db.prepare('UPDATE cc_leases SET next_due_at = ? WHERE key = ? AND owner IS NULL AND next_due_at > ?');
  return (key, dueAt) => {
    const t = dueMs(dueAt);
    stmt.run(t, key, t);
    return Promise.resolve();
  };
}
