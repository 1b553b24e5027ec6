/**
 * The SQLite StoreBackend (see ./backend): one machine, nothing to run.
 *
 * - The account `default` is the file at `store.path`, exactly as a single-account install has always had it.
 * - An added account `x` is its own file `<store.path>.accounts/x.db` (folder 0700, file 0600, created when the
 *   account is first opened).
 * - The registry (which accounts exist, their config and priority) is the `accounts` table of the `store.path` file.
 *
 * Each account's StateStore is opened once and kept until `removeAccount` or `close()`: the backend owns it (a
 * caller closes the backend, not the store; a store its user closed anyway is opened again when asked for).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ACCOUNT_ID, AccountOpenOptions, AccountRecord, DEFAULT_ACCOUNT, NewAccount, StoreBackend } from './backend';
import { SqliteStateStore } from './sqlite';
import { StoreOpenError } from './types';

/** An account id that is not in the registry (or not a valid id): names the id and how to list them. */
export class UnknownAccount extends Error {
  constructor(
    readonly account: string,
    detail = 'is not in this store',
  ) {
    super(`account "${account}" ${detail} (\`cc-optout accounts list\` lists the accounts)`);
    this.name = 'UnknownAccount';
  }
}

/** An account id that does not have the allowed shape (lower-case letters, digits, `-`, `_`; 1-64 characters). */
export function checkAccountId(id: string): void {
  if (typeof id !== 'string' || !ACCOUNT_ID.test(id)) {
    throw new UnknownAccount(
      String(id),
      'is not a valid account id: expected 1-64 lower-case letters, digits, "-" or "_", starting with a letter or digit,',
    );
  }
}

interface AccountDbRow {
  id: string;
  config: string;
  priority: number;
  created_at: string;
  updated_at: string;
}

function toRecord(r: AccountDbRow): AccountRecord {
  return {
    id: r.id,
    config: JSON.parse(r.config) as unknown,
    priority: r.priority,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export interface SqliteBackendOptions {
  /** A command that only reads never creates a store: a missing `store.path` file is then a StoreOpenError. */
  readonly mustExist?: boolean;
}

/** Is a folder on `file`'s path a regular file? (the store then names that problem, creating nothing.) */
function underRegularFile(file: string): boolean {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    if (fs.existsSync(dir)) return !fs.statSync(dir).isDirectory();
    if (path.dirname(dir) === dir) return false;
  }
}

export class SqliteBackend implements StoreBackend {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  private readonly open = new Map<string, SqliteStateStore>();
  private closed = false;

  /** `file`: the `store.path` file (or `:memory:`: every account in memory, for tests). */
  constructor(
    readonly file: string,
    o: SqliteBackendOptions = {},
  ) {
    if (o.mustExist && file !== ':memory:' && !fs.existsSync(file) && !underRegularFile(file)) {
      throw new StoreOpenError(
        file,
        'no state store here: nothing has run with this config yet, or store.path is wrong (sync, backfill or check creates it)',
      );
    }
    this.location = file;
    this.open.set(DEFAULT_ACCOUNT, new SqliteStateStore(file));
  }

  /** The `store.path` file's store: the default account, and the registry (opened again if its user closed it). */
  private main(): SqliteStateStore {
    const s = this.open.get(DEFAULT_ACCOUNT);
    if (s && s.db.open) return s;
    const again = new SqliteStateStore(this.file);
    this.open.set(DEFAULT_ACCOUNT, again);
    return again;
  }

  /** The folder of the added accounts' files: `<store.path>.accounts`. */
  get accountsDir(): string {
    return `${this.file}.accounts`;
  }

  /** The file of account `id` (`default`: the store.path file). */
  accountFile(id: string): string {
    checkAccountId(id);
    if (id === DEFAULT_ACCOUNT || this.file === ':memory:') return this.file;
    return path.join(this.accountsDir, `${id}.db`);
  }

  private row(id: string): AccountDbRow | undefined {
    return this.main().db.prepare(`SELECT * FROM accounts WHERE id = ?`).get(id) as AccountDbRow | undefined;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the state store ${this.location} is closed`);
  }

  async account(id: string, _opts: AccountOpenOptions = {}): Promise<SqliteStateStore> {
    this.assertOpen();
    checkAccountId(id);
    if (id === DEFAULT_ACCOUNT) return this.main();
    const existing = this.open.get(id);
    if (existing && existing.db.open) return existing;
    if (!this.row(id)) throw new UnknownAccount(id);
    const file = this.accountFile(id);
    if (file !== ':memory:') {
      fs.mkdirSync(this.accountsDir, { recursive: true, mode: 0o700 });
    }
    const store = new SqliteStateStore(file);
    this.open.set(id, store);
    return store;
  }

  async listAccounts(): Promise<AccountRecord[]> {
    this.assertOpen();
    const rows = this.main().db.prepare(`SELECT * FROM accounts ORDER BY id`).all() as AccountDbRow[];
    return rows.map(toRecord);
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    this.assertOpen();
    checkAccountId(id);
    const r = this.row(id);
    return r ? toRecord(r) : null;
  }

  async putAccount(a: NewAccount, now: string): Promise<AccountRecord> {
    this.assertOpen();
    checkAccountId(a.id);
    const priority = a.priority ?? 1;
    if (typeof priority !== 'number' || !Number.isFinite(priority) || priority < 0) {
      throw new Error(`account "${a.id}": priority must be a number of 0 or more, got ${JSON.stringify(a.priority)}`);
    }
    const config = JSON.stringify(a.config ?? null);
    this.main()
      .db.prepare(
        `INSERT INTO accounts (id, config, priority, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET config = excluded.config, priority = excluded.priority, updated_at = excluded.updated_at`,
      )
      .run(a.id, config, priority, now, now);
    return toRecord(this.row(a.id)!);
  }

  async removeAccount(id: string): Promise<boolean> {
    this.assertOpen();
    checkAccountId(id);
    if (id === DEFAULT_ACCOUNT) {
      throw new Error(
        `account "${DEFAULT_ACCOUNT}" is the store file ${this.file} itself: it cannot be removed (remove added accounts only)`,
      );
    }
    const store = this.open.get(id);
    if (store) {
      store.close();
      this.open.delete(id);
    }
    let existed = false;
    if (this.file !== ':memory:') {
      const file = this.accountFile(id);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) {
        try {
          fs.unlinkSync(f);
          if (f === file) existed = true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
    }
    const r = this.main().db.prepare(`DELETE FROM accounts WHERE id = ?`).run(id);
    return existed || r.changes > 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // the added accounts first, the registry's file (the default account) last
    for (const [id, s] of this.open) if (id !== DEFAULT_ACCOUNT && s.db.open) s.close();
    const main = this.open.get(DEFAULT_ACCOUNT);
    if (main?.db.open) main.close();
    this.open.clear();
  }
}

export function openSqliteBackend(file: string, o: SqliteBackendOptions = {}): SqliteBackend {
  return new SqliteBackend(file, o);
}
