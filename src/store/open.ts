/**
 * Where the state lives, from one string: a path (or `:memory:`) selects the SQLite backend (./sqlite-backend), a
 * `postgres://` (or `postgresql://`) URL the PostgreSQL one (./postgres). The CLI's `--store` overrides the config's
 * `store.url` / `store.path`. A URL's password never appears in a message (maskUrl) and is redacted from logs.
 */
import * as path from 'path';
import type { Config } from '../config';
import { ConfigError } from '../domain';
import { registerSecret } from '../log';
import type { StoreBackend } from './backend';
import { isPostgresUrl, maskUrl, pgUrlProblem, rawUserInfo } from './pg/url';
import { openSqliteBackend } from './sqlite-backend';
import { StoreOpenError } from './types';

export interface OpenBackendOptions {
  /**
   * A command that only reads the store never creates one: a missing SQLite file is then a StoreOpenError naming
   * `store.path` (PostgreSQL: the database must exist anyway).
   */
  readonly mustExist?: boolean;
}

/** The password of a postgres:// URL (registered for redaction), or null. */
function urlPassword(url: string): string | null {
  const raw = rawUserInfo(url);
  if (!raw || raw.password === null || raw.password === '') return null;
  try {
    return decodeURIComponent(raw.password);
  } catch {
    return raw.password;
  }
}

/**
 * `message` with every form of the URL's password replaced by `***`: the whole URL, `:password@`, and (like every
 * registered secret, from 6 characters on) the password wherever else it appears; a shorter one is not replaced
 * inside other words (a password `e` would garble the message and hide nothing).
 */
export function withoutPassword(message: string, url: string): string {
  const pw = urlPassword(url);
  let out = message.split(url).join(maskUrl(url));
  if (pw) {
    for (const form of new Set([pw, encodeURIComponent(pw)])) {
      if (!form) continue;
      out = out.split(`:${form}@`).join(':***@');
      if (form.length >= 6) out = out.split(form).join('***');
    }
  }
  return out;
}

/** Open the backend `spec` names: a path or `:memory:` (SQLite), or a postgres:// URL (PostgreSQL). */
export async function openBackend(spec: string, opts: OpenBackendOptions = {}): Promise<StoreBackend> {
  if (typeof spec !== 'string' || spec.trim() === '') {
    throw new StoreOpenError(String(spec), 'expected a file path or a postgres:// URL');
  }
  if (isPostgresUrl(spec)) {
    const pw = urlPassword(spec);
    if (pw) registerSecret(pw);
    const problem = pgUrlProblem(spec);
    if (problem) throw new StoreOpenError(maskUrl(spec), problem, 'store.url');
    try {
      const { openPgBackend } = await import('./postgres');
      return await openPgBackend(spec);
    } catch (err) {
      const e = err as Error;
      if (e && typeof e.message === 'string') {
        e.message = withoutPassword(e.message, spec);
        if (typeof e.stack === 'string') e.stack = withoutPassword(e.stack, spec);
      }
      throw err;
    }
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) {
    throw new StoreOpenError(
      maskUrl(spec),
      'is a URL but not a postgres:// one: give a file path (SQLite) or a postgres:// URL (PostgreSQL)',
    );
  }
  return openSqliteBackend(spec, { mustExist: opts.mustExist });
}

/**
 * The store a config names: `override` (the CLI's `--store`; a relative path is relative to the working folder), else
 * `store.url`, else `store.path` (relative to the config file's folder).
 */
export function storeSpecFor(
  config: Pick<Config, 'storePath' | 'storeUrl' | 'file'>,
  override?: string | null,
): string {
  if (override) {
    notAnotherUrl(override, '--store');
    return isPostgresUrl(override) || override === ':memory:' ? override : path.resolve(override);
  }
  if (config.storeUrl) return notAnotherUrl(config.storeUrl, 'store.url');
  notAnotherUrl(config.storePath, 'store.path');
  if (config.storePath === ':memory:' || path.isAbsolute(config.storePath)) return config.storePath;
  const base = config.file ? path.dirname(path.resolve(config.file)) : process.cwd();
  return path.resolve(base, config.storePath);
}

/** Looks like a URL (`scheme://`), whatever the scheme. */
export function looksLikeUrl(spec: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(spec);
}

/**
 * `spec`, unless it is a URL of another scheme than postgres:// (`mysql://...`, `postgresql+x://...`): that is a
 * ConfigError naming `name` (exit 2) before anything is opened or created; the password is masked.
 */
export function notAnotherUrl(spec: string, name: '--store' | 'store.url' | 'store.path'): string {
  if (looksLikeUrl(spec) && !isPostgresUrl(spec)) {
    const pw = urlPassword(spec);
    if (pw) registerSecret(pw);
    throw new ConfigError([
      `${name}: ${JSON.stringify(withoutPassword(maskUrl(spec), spec))} is not a postgres:// URL (a SQLite store is a file path)`,
    ]);
  }
  return spec;
}

/** The store for messages: a path, or the URL with its password masked. */
export function describeStore(spec: string): string {
  return isPostgresUrl(spec) ? maskUrl(spec) : spec;
}
