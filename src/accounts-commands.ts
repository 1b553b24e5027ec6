/**
 * `cc-optout accounts add | list | remove | set`: the accounts one store holds (registered by one call in
 * src/cli.ts). `default` is the config file's account (its `source` and `targets`); every other account is a
 * document in the store's registry (see src/accounts.ts), selected on the other commands with `--account <id>`.
 */
import * as os from 'os';
import * as path from 'path';
import { Command } from 'commander';
import type { CommandHelpers, GlobalOpts } from './cli-output';
import { EXIT, ExitError } from './cli-output';
import { ConfigError, loadConfig } from './config';
import { createRegistry } from './registry';
import * as fs from 'fs';
import { pidAlive } from './store/sqlite';
import { AccountRecord, DEFAULT_ACCOUNT, StoreBackend } from './store/backend';
import { openBackend, storeSpecFor } from './store/open';
import { isPostgresUrl } from './store/pg/url';
import { SqliteBackend, UnknownAccount } from './store/sqlite-backend';
import { SOURCE_KV } from './engine';
import { KV_ACCESS_EXPIRES_AT, KV_ACCESS_TOKEN, KV_REFRESH_TOKEN } from './source/constant-contact/auth';
import {
  DEFAULT_PRIORITY,
  PRIORITY_MAX,
  accountIdProblem,
  decodeAccount,
  documentTargets,
  literalSecretFields,
  prefixed,
  readAccountFile,
  storedDocument,
  unknownAccountMessage,
  usePluginsOf,
} from './accounts';
import { intOption } from './commands';
import { AccountFleetStatus, fleetStatus } from './fleet/status';
import { accountLeaseKey, BudgetState } from './fleet/types';
import { callsOn, readPollRecord, utcDay } from './fleet/worker';
import { FleetTables, fleetTablesOf } from './service/fleet-cli';
import type { StateStore } from './store/types';

/**
 * Opens the store the global options name (`--store`, else the config's `store.url` / `store.path`). `mustExist`:
 * a SQLite file is never created (commands that only read or change what is there).
 */
export type BackendOpener = (g: GlobalOpts, mustExist: boolean) => Promise<StoreBackend>;

/** The store spec of the global options (the config file is decoded without its secrets). */
export function storeSpecOf(g: GlobalOpts): string {
  return storeSpecFor(
    loadConfig(g.config, process.env, createRegistry(), { requireEnv: false, ignoreStore: !!g.store }),
    g.store,
  );
}

export const openBackendFor: BackendOpener = (g, mustExist) => openBackend(storeSpecOf(g), { mustExist });

/** A SQLite store that does not exist yet (nothing has run, nothing was added). */
function noStoreYet(spec: string): boolean {
  return !isPostgresUrl(spec) && spec !== ':memory:' && !fs.existsSync(spec);
}

/**
 * `--account <id>` for the commands that open one account (check, sync, backfill, status, audit, runs, ...):
 * an invalid id, or one the store does not have, exits 2 naming it and listing the accounts the store has.
 */
export async function withAccount<T>(
  g: GlobalOpts,
  open: (account: string) => Promise<T>,
  openStore: BackendOpener = openBackendFor,
): Promise<T> {
  const account = g.account ?? DEFAULT_ACCOUNT;
  const problem = accountIdProblem(account);
  if (problem) throw new ExitError(EXIT.config, `--account ${account}: ${problem}`);
  try {
    return await open(account);
  } catch (err) {
    if (!(err instanceof UnknownAccount) || account === DEFAULT_ACCOUNT) throw err;
    let known: AccountRecord[] = [];
    if (!noStoreYet(storeSpecOf(g))) {
      const backend = await openStore(g, true);
      try {
        known = await backend.listAccounts();
      } finally {
        await backend.close();
      }
    }
    throw new ExitError(EXIT.config, unknownAccountMessage(account, known));
  }
}

/** Where an account's state lives: its own file on SQLite, the (masked) URL on PostgreSQL. */
function accountLocation(backend: StoreBackend, id: string): string {
  return backend instanceof SqliteBackend ? backend.accountFile(id) : backend.location;
}

/** The fields of an account document's source that its stored Constant Contact tokens belong to. */
const TOKEN_FIELDS = ['clientId', 'authBaseUrl', 'apiBaseUrl', 'refreshToken'] as const;

function sourceOf(doc: unknown): Record<string, unknown> {
  const s = doc && typeof doc === 'object' ? (doc as Record<string, unknown>).source : undefined;
  return s && typeof s === 'object' ? (s as Record<string, unknown>) : {};
}

/** The `source.X` fields whose value differs between two account documents (as stored: references unresolved). */
function tokenFieldsChanged(before: unknown, after: unknown): string[] {
  const a = sourceOf(before);
  const b = sourceOf(after);
  return TOKEN_FIELDS.filter((f) => JSON.stringify(a[f] ?? null) !== JSON.stringify(b[f] ?? null)).map(
    (f) => `source.${f}`,
  );
}

interface SourceIdentity {
  clientId: string | null;
  refreshToken: string | null;
}

/** `${NAME}` references replaced from `env` (an unset one: null, nothing to compare). */
function resolved(v: unknown, env: NodeJS.ProcessEnv): string | null {
  if (typeof v !== 'string' || v === '') return null;
  let unset = false;
  const out = v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, n: string) => {
    const x = env[n];
    if (x === undefined || x === '') unset = true;
    return x ?? '';
  });
  return unset ? null : out;
}

function sourceIdentity(doc: unknown, env: NodeJS.ProcessEnv): SourceIdentity {
  const s = sourceOf(doc);
  return { clientId: resolved(s.clientId, env), refreshToken: resolved(s.refreshToken, env) };
}

/** The config file's source (the `default` account), or null when it does not decode. */
function defaultSource(g: GlobalOpts): SourceIdentity | null {
  try {
    const c = loadConfig(g.config, process.env, createRegistry(), { requireEnv: false });
    return { clientId: c.source.clientId || null, refreshToken: c.source.refreshToken || null };
  } catch {
    return null;
  }
}

/** What `accounts list` shows of one account. */
export interface AccountListing {
  id: string;
  /** `config file` for default, `store` for an added account. */
  from: 'config file' | 'store';
  priority: number;
  targets: string[];
  createdAt: string | null;
  updatedAt: string | null;
  /** The newest run of the account (any kind), from its run history. */
  lastRun: { id: number; kind: string; startedAt: string; finishedAt: string | null; status: string } | null;
  /** Once a fleet worker ran on this store: the last and next poll, the calls today and the share of the budget. */
  fleet?: Pick<AccountFleetStatus, 'lastPollAt' | 'nextPollAt' | 'callsToday' | 'share'> | null;
}

/** `${NAME}` references in `doc` whose variable is not set in `env` (needed when the account runs). */
function unsetReferences(doc: unknown, env: NodeJS.ProcessEnv): string[] {
  const names = new Set<string>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      for (const m of v.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g))
        if (env[m[1]!] === undefined || env[m[1]!] === '') names.add(m[1]!);
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) if (!k.startsWith('//') && k !== '$comment') walk(x);
  };
  walk(doc);
  return [...names];
}

async function withBackend<T>(
  open: BackendOpener,
  g: GlobalOpts,
  mustExist: boolean,
  fn: (b: StoreBackend) => Promise<T>,
): Promise<T> {
  const backend = await open(g, mustExist);
  try {
    return await fn(backend);
  } finally {
    await backend.close();
  }
}

/** The id given to an accounts command: a valid id (exit 2 naming it otherwise). */
function checkId(cmd: string, id: string, h: CommandHelpers): void {
  const p = accountIdProblem(id);
  if (p) throw new h.ExitError(EXIT.config, `accounts ${cmd} ${id}: id: ${p}`);
}

/** The account's newest run, or null (the backend owns the account's store: it is not closed here). */
async function lastRunOf(backend: StoreBackend, id: string): Promise<AccountListing['lastRun']> {
  const store = await backend.account(id);
  const [r] = await store.recentRuns(1);
  return r ? { id: r.id, kind: r.kind, startedAt: r.startedAt, finishedAt: r.finishedAt, status: r.status } : null;
}

const DEFAULT_LISTING: AccountListing = {
  id: DEFAULT_ACCOUNT,
  from: 'config file',
  priority: DEFAULT_PRIORITY,
  targets: [],
  createdAt: null,
  updatedAt: null,
  lastRun: null,
};

/** The config file's target names (none when it does not decode). */
function defaultTargets(g: GlobalOpts): string[] {
  try {
    return loadConfig(g.config, process.env, createRegistry(), {
      requireEnv: false,
      ignoreStore: !!g.store,
    }).targets.map((t) => t.name);
  } catch {
    return [];
  }
}

/** Every account the store knows: `default` (the config file's) first, then the registry's by id. */
export async function listAccounts(backend: StoreBackend, g: GlobalOpts, withRuns = true): Promise<AccountListing[]> {
  const records = await backend.listAccounts();
  const out: AccountListing[] = [];
  const registered = new Map(records.map((r) => [r.id, r]));
  const def = registered.get(DEFAULT_ACCOUNT);
  out.push({
    ...DEFAULT_LISTING,
    priority: def?.priority ?? DEFAULT_PRIORITY,
    targets: defaultTargets(g),
    createdAt: def?.createdAt ?? null,
    updatedAt: def?.updatedAt ?? null,
    lastRun: withRuns ? await lastRunOf(backend, DEFAULT_ACCOUNT).catch(() => null) : null,
  });
  for (const r of [...records].sort((a, b) => a.id.localeCompare(b.id))) {
    if (r.id === DEFAULT_ACCOUNT) continue;
    out.push({
      id: r.id,
      from: 'store',
      priority: r.priority,
      targets: documentTargets(r.config),
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
      lastRun: withRuns ? await lastRunOf(backend, r.id) : null,
    });
  }
  const tables = withRuns ? await existingFleetTables(backend) : null;
  if (tables) {
    const fleet = await fleetStatus({
      backend,
      leases: tables.leases,
      openStore: (id) => backend.account(id),
      closeAfterRead: false,
    });
    for (const row of out) {
      const f = fleet.accounts.find((a) => a.id === row.id);
      row.fleet = f?.nextPollAt
        ? { lastPollAt: f.lastPollAt, nextPollAt: f.nextPollAt, callsToday: f.callsToday, share: f.share }
        : null;
    }
  }
  return out;
}

/** The registry's record of `id`, or exit 2 naming it and listing the known ids. */
async function registered(backend: StoreBackend, cmd: string, id: string, h: CommandHelpers): Promise<AccountRecord> {
  const rec = await backend.getAccount(id);
  if (rec) return rec;
  throw new h.ExitError(EXIT.config, unknownAccountMessage(id, await backend.listAccounts(), `accounts ${cmd}`));
}

export function registerAccountCommands(
  program: Command,
  g: () => GlobalOpts,
  h: CommandHelpers,
  open: BackendOpener = openBackendFor,
): void {
  const accounts = program
    .command('accounts')
    .description(
      'the Constant Contact accounts this store serves: add, list, remove, set (default is the config file)',
    );

  accounts
    .command('add <id>')
    .description(
      'add an account from a file with the config file\'s "source", "targets" and "delivery" (secrets as ${ENV} references); checked before anything is written',
    )
    .requiredOption('--from <file>', 'the account file (JSON; comments allowed, as in the config file)')
    .addOption(
      intOption(
        '--priority <n>',
        `polls sooner when the budget is short; 0 pauses it (default ${DEFAULT_PRIORITY})`,
        0,
        PRIORITY_MAX,
      ),
    )
    .option('--replace', 'replace the config of an account that exists (its state is kept)')
    .action(async (id: string, o: { from: string; priority?: number; replace?: boolean }) => {
      checkId('add', id, h);
      const at = `accounts add ${id}`;
      if (id === DEFAULT_ACCOUNT)
        throw new h.ExitError(
          EXIT.config,
          `${at}: "default" is the config file's account (${g().config}): edit that file, or choose another id`,
        );
      const registry = createRegistry();
      let doc: unknown;
      try {
        usePluginsOf(g().config, registry);
        const raw = readAccountFile(o.from);
        // validated fully (structure, every connector's config) before anything is written; unset references
        // are allowed here (the account may run elsewhere) and reported
        decodeAccount(raw, process.env, registry, { requireEnv: false, configFile: g().config });
        doc = storedDocument(raw, path.dirname(path.resolve(o.from)));
      } catch (err) {
        if (err instanceof ConfigError) throw new h.ExitError(EXIT.config, prefixed(at, err.problems));
        throw err;
      }
      const literal = literalSecretFields(doc);
      await withBackend(open, g(), false, async (backend) => {
        const existing = await backend.getAccount(id);
        if (existing && !o.replace)
          throw new h.ExitError(
            EXIT.config,
            `${at}: the account exists (added ${existing.createdAt}); pass --replace to replace its config (its state is kept), or \`accounts set ${id} --priority N\``,
          );
        // another account with the same application and the same refresh token: a rotation by one breaks the other
        const mine = sourceIdentity(doc, process.env);
        const sharing: string[] = [];
        if (mine.clientId && mine.refreshToken) {
          const others: [string, SourceIdentity][] = (await backend.listAccounts())
            .filter((r) => r.id !== id && r.id !== DEFAULT_ACCOUNT)
            .map((r) => [r.id, sourceIdentity(r.config, process.env)]);
          const def = defaultSource(g());
          if (def) others.unshift([DEFAULT_ACCOUNT, def]);
          for (const [other, s] of others)
            if (s.clientId === mine.clientId && s.refreshToken === mine.refreshToken) sharing.push(other);
        }
        // --replace with another application, token server or refresh token: the stored tokens are not its own
        const changed = existing ? tokenFieldsChanged(existing.config, doc) : [];
        const rec = await backend.putAccount(
          { id, config: doc, priority: o.priority ?? existing?.priority ?? DEFAULT_PRIORITY },
          new Date().toISOString(),
        );
        if (changed.length) {
          const kv = await (await backend.account(id)).kv(SOURCE_KV);
          for (const k of [KV_REFRESH_TOKEN, KV_ACCESS_TOKEN, KV_ACCESS_EXPIRES_AT]) kv.set(k, '');
          await kv.flush?.();
        }
        const where = accountLocation(backend, id);
        for (const other of sharing)
          process.stderr.write(
            `warning: ${at}: account ${other} uses the same Constant Contact clientId and refresh token; refresh tokens rotate, so one of the two will stop working (invalid_grant): authorise each account on its own (\`cc-optout --account ${id} auth constant-contact\`)\n`,
          );
        for (const f of literal)
          process.stderr.write(
            `warning: ${at}: ${f}: an inline secret is stored as given in ${where}; a \${ENV} reference is recommended\n`,
          );
        const unset = unsetReferences(doc, process.env);
        const targets = documentTargets(doc);
        if (g().json)
          h.out(
            JSON.stringify({
              [existing ? 'replaced' : 'added']: rec.id,
              priority: rec.priority,
              targets,
              store: where,
              unsetReferences: unset,
              ...(existing ? { tokensCleared: changed.length > 0 } : {}),
              ...(sharing.length ? { sharesRefreshTokenWith: sharing } : {}),
            }),
          );
        else {
          h.out(
            `account ${rec.id} ${existing ? 'replaced' : 'added'} (priority ${rec.priority}; targets ${targets.join(', ')}) in ${where}`,
          );
          if (existing)
            h.out(
              changed.length
                ? `  ${changed.join(', ')} changed: its stored Constant Contact tokens were cleared (authorise it again, unless source.refreshToken seeds it)`
                : `  its stored Constant Contact tokens are kept (source.clientId, authBaseUrl, apiBaseUrl and refreshToken unchanged)`,
            );
          if (unset.length)
            h.out(`  not set in this environment (needed where it runs): ${unset.map((n) => `\${${n}}`).join(', ')}`);
          h.out(
            `next: cc-optout --account ${rec.id} auth constant-contact (unless source.refreshToken seeds it), then check`,
          );
        }
      });
    });

  accounts
    .command('list')
    .description('every account: id, priority, targets, created, last run')
    .action(async () => {
      const spec = storeSpecOf(g());
      // nothing added, nothing run: only the config file's account, and no store is created to say so
      const rows = noStoreYet(spec)
        ? [{ ...DEFAULT_LISTING, targets: defaultTargets(g()) }]
        : await withBackend(open, g(), true, (backend) => listAccounts(backend, g()));
      {
        if (g().json) {
          h.out(JSON.stringify(rows, null, 2));
          return;
        }
        for (const r of rows)
          h.out(
            `${r.id}\tpriority ${r.priority}${r.priority === 0 ? ' (paused)' : ''}\ttargets ${r.targets.join(', ') || 'none'}\t` +
              `${r.from === 'config file' ? `from ${g().config}` : `added ${r.createdAt}`}\t` +
              `last run ${r.lastRun ? `${r.lastRun.kind} ${r.lastRun.startedAt} ${r.lastRun.status}` : 'never'}` +
              (r.fleet
                ? `\tlast poll ${r.fleet.lastPollAt ?? 'never'}, next poll ${r.fleet.nextPollAt}, share of the budget ${pct(r.fleet.share)}, calls today ${r.fleet.callsToday}`
                : ''),
          );
      }
    });

  accounts
    .command('remove <id>')
    .description('remove an added account and ALL its state (tokens, checkpoints, outbox, audit); needs --yes')
    .option('--yes', 'really delete it')
    .action(async (id: string, o: { yes?: boolean }) => {
      checkId('remove', id, h);
      const at = `accounts remove ${id}`;
      if (id === DEFAULT_ACCOUNT)
        throw new h.ExitError(
          EXIT.config,
          `${at}: "default" is the config file's account (${g().config}) and is never removed by this command; its state is the config's store`,
        );
      await withBackend(open, g(), true, async (backend) => {
        const rec = await registered(backend, 'remove', id, h);
        const store = await backend.account(id);
        let what: string;
        {
          const lock = await store.runLock();
          if (lock && lock.host === os.hostname() && pidAlive(lock.pid))
            throw new h.ExitError(
              EXIT.incomplete,
              `${at}: a run of this account is in progress: cc-optout ${lock.command} (pid ${lock.pid}, since ${lock.acquiredAt}); nothing removed. Stop it first.`,
            );
          // a fleet worker (on any host: the lease table is shared) holding one of its leases
          const now = Date.now();
          const held = ((await (await existingFleetTables(backend))?.leases.list()) ?? []).filter(
            (l) => l.account === id && l.owner !== null && l.expiresAt !== null && Date.parse(l.expiresAt) > now,
          );
          if (held.length)
            throw new h.ExitError(
              EXIT.incomplete,
              `${at}: a fleet worker holds ${held
                .map((l) => `${l.key} (owner ${l.owner}, expires ${l.expiresAt})`)
                .join(', ')}; nothing removed. Stop that worker or wait for it to finish, ` +
                `or pause the account first with \`cc-optout accounts set ${id} --priority 0\` and retry once its leases are released.`,
            );
          const n = await store.countOptOuts();
          const runs = await store.recentRuns(1);
          const targets = documentTargets(rec.config);
          what =
            `the account ${id} (targets ${targets.join(', ') || 'none'}) and its state in ${backend.location}: ` +
            `${n.active + n.left} known opt-outs, the outbox and audit of ${targets.length} target(s), ` +
            `the run history (${runs[0] ? `last run #${runs[0].id}` : 'no runs'}), its Constant Contact tokens and checkpoints`;
        }
        if (!o.yes) throw new h.ExitError(EXIT.config, `${at}: would delete ${what}; pass --yes to delete them`);
        const removed = await backend.removeAccount(id);
        // its fleet lease rows go too (a worker holding one loses it: its writes are refused)
        await (await existingFleetTables(backend))?.leases.forget(id);
        if (g().json) h.out(JSON.stringify({ removed: removed ? id : null, store: backend.location }));
        else h.out(removed ? `removed ${what}` : `${at}: already gone`);
      });
    });

  accounts
    .command('set <id>')
    .description("change an added account's priority (its config: `accounts add ID --from FILE --replace`)")
    .addOption(
      intOption(
        '--priority <n>',
        `polls sooner when the budget is short; 0 pauses it (0..${PRIORITY_MAX})`,
        0,
        PRIORITY_MAX,
      ).makeOptionMandatory(),
    )
    .action(async (id: string, o: { priority: number }) => {
      checkId('set', id, h);
      await withBackend(open, g(), true, async (backend) => {
        if (id === DEFAULT_ACCOUNT)
          throw new h.ExitError(
            EXIT.config,
            `accounts set ${id}: "default" is the config file's account; its priority is not stored in this store`,
          );
        const rec = await registered(backend, 'set', id, h);
        const now = new Date().toISOString();
        const next = await backend.putAccount({ id, config: rec.config, priority: o.priority }, now);
        // the fleet schedules by the lease row's priority too: changed at once, not at the next claim
        await (await existingFleetTables(backend))?.leases.ensure(accountLeaseKey(id), id, null, now, next.priority);
        if (g().json) h.out(JSON.stringify({ id, priority: next.priority }));
        else
          h.out(`account ${id}: priority ${rec.priority} -> ${next.priority}${next.priority === 0 ? ' (paused)' : ''}`);
      });
    });
}

/** What `status` shows of the account itself: its fleet poll schedule and budget share, or its last run. */
export interface AccountStatus {
  id: string;
  /** The fleet's view (null: no fleet worker has run on this store yet). */
  fleet: Omit<AccountFleetStatus, 'id'> | null;
  /** The Constant Contact application's shared budget today (fleet mode only). */
  budget: BudgetState | null;
  /** When its newest run started (any mode). */
  lastRunAt: string | null;
}

/**
 * The fleet's tables when a fleet has run on this store, else null. Nothing is created for a store no fleet
 * worker has used (`status` only reads): on SQLite the lease table must already exist.
 */
export async function existingFleetTables(backend: StoreBackend): Promise<FleetTables | null> {
  if (backend.kind === 'sqlite') {
    const main = (await backend.account(DEFAULT_ACCOUNT)) as unknown as { db?: import('better-sqlite3').Database };
    const has = main.db?.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cc_leases'`).get();
    if (!has) return null;
  }
  return fleetTablesOf(backend);
}

export async function accountStatus(ctx: {
  backend: StoreBackend;
  account: string;
  store: StateStore;
  config: { source: { clientId: string } };
}): Promise<AccountStatus> {
  const [last] = await ctx.store.recentRuns(1);
  const base: AccountStatus = { id: ctx.account, fleet: null, budget: null, lastRunAt: last?.startedAt ?? null };
  const tables = await existingFleetTables(ctx.backend);
  if (!tables) return base;
  const now = new Date();
  // the other accounts' stores are not opened: only this account's poll record is read (its calls today)
  const fs_ = await fleetStatus({ backend: ctx.backend, leases: tables.leases, openStore: null, now });
  const mine = fs_.accounts.find((a) => a.id === ctx.account);
  if (!mine || mine.nextPollAt === null) return base;
  const rec = await readPollRecord(ctx.store);
  const { id: _id, ...rest } = mine;
  return {
    ...base,
    fleet: { ...rest, callsToday: callsOn(rec, utcDay(now)), lastError: rec?.lastError ?? null },
    budget: await tables.budget.state(ctx.config.source.clientId, now),
  };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

/** The lines `status` prints for the account (none for a single-account install: its output is unchanged). */
export function accountStatusLines(s: AccountStatus): string[] {
  if (!s.fleet) {
    if (s.id === DEFAULT_ACCOUNT) return [];
    return [
      `account ${s.id}: not polled by a fleet worker yet (\`cc-optout run\` in fleet mode); last run ${s.lastRunAt ?? 'never'}`,
    ];
  }
  const f = s.fleet;
  const lines = [
    `account ${s.id}: last poll ${f.lastPollAt ?? 'never'}, next poll ${f.nextPollAt}${f.heldBy ? ` (being worked on by ${f.heldBy})` : ''}; ` +
      `share of the budget ${pct(f.share)} (priority ${f.priority}${f.priority === 0 ? ', paused' : ''}, idle polls ${f.idleStreak}); ` +
      `Constant Contact calls today ${f.callsToday}`,
  ];
  if (f.lastError) lines.push(`  last poll failed: ${f.lastError}`);
  if (s.budget)
    lines.push(
      `Constant Contact application ${s.budget.app}: ${s.budget.used} of ${s.budget.limit} requests used on ${s.budget.day} (UTC), ` +
        `${s.budget.remaining} left${s.budget.spent ? '; SPENT for today (quota_exceeded)' : ''}`,
    );
  return lines;
}
