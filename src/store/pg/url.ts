/**
 * PostgreSQL URLs without loading `pg` (the CLI checks a config's store.url on every command): masking and
 * recognising them. Re-exported by ./pool.
 */

/**
 * `postgres://user:secret@host/db` -> `postgres://user:***@host/db` (for messages and logs); a password given as
 * a query parameter (`?password=...`, which libpq and pg accept too) is masked the same way.
 */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()])
      if (/^(password|sslpassword|sslkey)$/i.test(key)) u.searchParams.set(key, '***');
    return u.toString().replace(/%2A%2A%2A/g, '***');
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}
