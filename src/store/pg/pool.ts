/**
 * PostgreSQL plumbing shared by the PostgreSQL state store, the account registry and the fleet coordinator:
 * a pool from a `postgres://` URL (its password never appears in a message), transactions, and a migration
 * runner with one numbered list per module ("store", "fleet", "accounts"), applied under an advisory lock so
 * several instances starting at once migrate exactly once.
 */
import { Pool, PoolClient, PoolConfig } from 'pg';

// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`; kept in ./url so that the CLI need not load pg
export { maskUrl, isPostgresUrl } from './url';

export function openPgPool(url: string, extra: Omit<PoolConfig, 'connectionString'> = {}): Pool {
  const pool = new Pool({ connectionString: url, max: 5, idleTimeoutMillis: 10_000, ...extra });
  // an idle client's error (server restart) must not crash the process: the next query reports it
  pool.on('error', () => undefined);
  return pool;
}

/** Run `fn` in one transaction (BEGIN .. COMMIT, ROLLBACK on any error). */
export async function inTransaction<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

/** A stable 32-bit key for pg_advisory_xact_lock from a name. */
function lockKey(name: string): number {
  let h = 0;
  for (const ch of name) h = (Math.imul(h, 31) + ch.charCodeAt(0)) | 0;
  return h;
}

/**
 * Apply `migrations[i]` (SQL text, possibly several statements) for every version above the recorded one of
 * `set`, each in its own transaction, under an advisory lock. Migrations are only ever appended.
 * Returns the schema version of `set` afterwards.
 */
export async function migrate(pool: Pool, set: string, migrations: readonly string[]): Promise<number> {
  return inTransaction(pool, async (c) => {
    await c.query('SELECT pg_advisory_xact_lock($1)', [lockKey(`cc-optout:migrate`)]);
    await c.query(
      `CREATE TABLE IF NOT EXISTS cc_schema_versions (
         set_name text PRIMARY KEY,
         version integer NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const r = await c.query<{ version: number }>('SELECT version FROM cc_schema_versions WHERE set_name = $1', [set]);
    const current = r.rows[0]?.version ?? 0;
    if (current > migrations.length) {
      throw new Error(
        `the PostgreSQL store's "${set}" schema is version ${current}, newer than this cc-optout knows (${migrations.length}): upgrade cc-optout`,
      );
    }
    for (let v = current + 1; v <= migrations.length; v++) {
      await c.query(migrations[v - 1]);
    }
    if (migrations.length > current) {
      await c.query(
        `INSERT INTO cc_schema_versions (set_name, version) VALUES ($1, $2)
         ON CONFLICT (set_name) DO UPDATE SET version = EXCLUDED.version, applied_at = now()`,
        [set, migrations.length],
      );
    }
    return migrations.length;
  });
}
