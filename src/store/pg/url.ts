/**
 * PostgreSQL URLs without loading `pg` (the CLI checks a config's store.url on every command): masking and
 * recognising them. Re-exported by ./pool.
 */

/**
 * `postgres://user:secret@host/db` -> `postgres://user:***@host/db` (for messages and logs); a password given as
 * a query parameter (`?password=...`, which libpq and pg accept too) is masked the same way.
 */
export function maskUrl(url: string): string {
  const raw = rawUserInfo(url);
  // a password holding an unencoded '/', '?', '#' or '@' is not where a URL parser looks for it: mask the raw text
  if (raw && /[/?#@]/.test(raw.userInfo))
    return `${raw.scheme}${raw.user}${raw.password === null ? '' : ':***'}@${raw.rest}`;
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

/** The user info of `scheme://user:password@host...` as written (up to the LAST '@'), without parsing the URL. */
export function rawUserInfo(
  url: string,
): { scheme: string; userInfo: string; user: string; password: string | null; rest: string } | null {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)@([^@]*)$/is.exec(url);
  if (!m) return null;
  const userInfo = m[2]!;
  const colon = userInfo.indexOf(':');
  return {
    scheme: m[1]!,
    userInfo,
    user: colon < 0 ? userInfo : userInfo.slice(0, colon),
    password: colon < 0 ? null : userInfo.slice(colon + 1),
    rest: m[3]!,
  };
}

/** What is wrong with a postgres:// URL's shape before any connection (null: nothing). */
export function pgUrlProblem(url: string): string | null {
  const raw = rawUserInfo(url);
  if (raw && /[/?#@]/.test(raw.userInfo))
    return "its user name or password holds an unencoded '/', '?', '#' or '@': percent-encode them (%2F %3F %23 %40)";
  try {
    new URL(url);
  } catch {
    return 'not a valid URL (postgres://user:password@host:5432/database)';
  }
  return null;
}
