/**
 * Where the state lives: a store BACKEND holds one or many ACCOUNTS (one Constant Contact connection each, with its
 * own tokens, checkpoints and outbox, plus its targets), and the fleet's coordination tables (leases, the shared
 * Constant Contact budget, the poll schedule).
 *
 * - SQLite (default, embedded): the account `default` is the file at `store.path` (a single-account config works
 *   unchanged); an added account `x` is its own file `<store.path>.accounts/x.db`; the registry and the
 *   coordination tables live in the `store.path` file. One machine only: never share a SQLite file between hosts.
 * - PostgreSQL (`--store postgres://...` or `store.url`): every table carries the account id; any number of
 *   instances on any hosts share one database.
 *
 * The StateStore interface (./types) is asynchronous: every method may return a promise and every caller awaits it.
 * The SQLite store answers synchronously; the PostgreSQL store answers with promises.
 */
import type { StateStore } from './types';

export type Awaitable<T> = T | Promise<T>;

/** Account ids: lower-case letters, digits, `-` and `_`, 1-64 characters, starting with a letter or digit. */
export const ACCOUNT_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const DEFAULT_ACCOUNT = 'default';

/** One account in the registry. */
export interface AccountRecord {
  readonly id: string;
  /**
   * The account's config document: the same shape as a config file's `source` and `targets` (and `delivery`),
   * with secrets as `${ENV}` references (resolved when the account runs, never stored resolved).
   */
  readonly config: unknown;
  /** Higher polls sooner when the budget is short (default 1; 0 = paused). */
  readonly priority: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface NewAccount {
  readonly id: string;
  readonly config: unknown;
  readonly priority?: number;
}

/**
 * A lease the caller holds (see ../fleet/types). A store opened with a guard runs it inside EVERY write
 * transaction (checkpoints, detection commits, outbox writes, outcomes, runs, key/value) before writing; the
 * guard throws LeaseLost (StaleFence) when the lease's fence moved on, and the transaction rolls back, so a
 * paused worker that wakes up cannot overwrite its successor.
 * `scope.target` is set for a write that concerns one target's outbox (outcomes, deferrals).
 */
export interface PgFenceGuard {
  check(client: import('pg').PoolClient, scope: { account: string; target?: string }): Promise<void>;
}

export interface AccountOpenOptions {
  /** PostgreSQL only: the fence check run in every write transaction. */
  readonly guard?: PgFenceGuard;
}

export interface StoreBackend {
  readonly kind: 'sqlite' | 'postgres';
  /** Where it is, for messages: a path, or a URL with its password masked. */
  readonly location: string;
  /** The state of one account (`default` always exists; another must be in the registry). */
  account(id: string, opts?: AccountOpenOptions): Promise<StateStore>;
  listAccounts(): Promise<AccountRecord[]>;
  getAccount(id: string): Promise<AccountRecord | null>;
  /** Add or replace (same id) an account's config and priority. */
  putAccount(a: NewAccount, now: string): Promise<AccountRecord>;
  /** Remove the account from the registry AND its state (tokens, checkpoints, outbox, audit). */
  removeAccount(id: string): Promise<boolean>;
  close(): Promise<void>;
}
