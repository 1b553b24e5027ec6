/**
 * PostgreSQL URLs without loading `pg` (the CLI checks a config's store.url on every command): masking and
 * recognising them. Re-exported by ./pool.
 */

/** `postgres://user:secret@host/db` -> `postgres://user:***@host/db` (for messages and logs). */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}
