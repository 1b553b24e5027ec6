/**
 * The Constant Contact opt-out source (the `OptOutSource` contract of src/source/types.ts).
 *
 * - `scanWindow(after, before)`: `GET /contacts?status=all&optout_after=..&optout_before=..&limit=..`.
 *   This filters on the email opt-out date, which is what an unsubscribe moves; `updated_after` filters on
 *   personal details only and silently misses unsubscribes (the seed forum thread). `status=all` keeps
 *   contacts that unsubscribed and were then deleted.
 * - `scanUnsubscribed(onPage)`: `GET /contacts?status=unsubscribed,deleted&limit=..`, the whole set in one scan.
 *   Whether `status=unsubscribed` alone includes contacts that unsubscribed and were then deleted is not
 *   documented; their opt-out still holds, so deleted contacts are read too (and only the unsubscribed ones count).
 * - `scanUnsubscribed(onPage, plan)`: the engine's full reconcile, narrower (./reconcile.ts): the live set by
 *   pages or by bulk export (./export.ts, `source.detection.reconcileVia`), deleted contacts only since the last
 *   reconcile, and known opt-outs not returned looked up.
 * - Pages are handed to `onPage` one at a time and `onPage` is awaited before the next page is requested,
 *   so the engine can commit each page before the source moves on.
 * - `unsubscribedCount()`: `GET /contacts/counts`, to sanity-check a full scan.
 * - `check()`: token refresh, API reachability and the day's remaining request budget, in words.
 *
 * Usage (engine / CLI):
 *   const source = createConstantContactSource(config.source, deps);
 *   await source.scanWindow(after, before, async (page) => { ...commit page... });
 * First-time authorisation lives in ./authorize (the `cc-optout auth constant-contact` command).
 */
import { ResolvedSource } from '../../config';
import { CheckItem, CheckReport } from '../../plugin';
import { isLeft } from 'fp-ts/Either';
import { formatErrors } from '../../codec';
import { Logger } from '../../log';
import {
  OptOutSource,
  QuotaExceeded,
  ReauthorizationRequired,
  ReconcilePlan,
  ScanStats,
  SourceDeps,
  SourceError,
} from '../types';
import { TokenManager } from './auth';
import { ClientOptions, ConstantContactClient } from './client';
import { CcContactCounts } from './codecs';
import { sourceError } from './errors';
import { EXPORT_AUTO_THRESHOLD, ExportDoubt, ExportTiming, exportUnsubscribed } from './export';
import { handInPages, reconcileWithPlan } from './reconcile';
import { createPageScanner, OnPage, PageScanner } from './scan';

export { TokenManager, REAUTH_COMMAND } from './auth';
export { ConstantContactClient, resolveNextHref } from './client';
export { authorizeWithPkce, authorizeWithDeviceFlow, buildAuthorizeUrl, createPkcePair } from './authorize';
export type { AuthorizeIo, AuthorizeResult } from './authorize';
export { DEFAULT_MAX_PAGES, pagesForCount } from './scan';

/** `sharedBudget` (ClientOptions) also gives the token endpoint the application's shared 1/s slot. */
export interface ConstantContactSourceOptions extends ClientOptions {
  /** Export polling and timeout (tests shorten them). */
  readonly exportTiming?: ExportTiming;
  /** The account this source serves (names it in the re-authorise hint; absent: the config file's). */
  readonly account?: string;
}

/** The source plus the pieces the CLI may want (budget, tokens) for status output. */
export interface ConstantContactSource extends OptOutSource {
  readonly client: ConstantContactClient;
  readonly tokens: TokenManager;
}

/** What the source's functions share. */
interface Ctx {
  readonly config: ResolvedSource;
  readonly deps: SourceDeps;
  readonly client: ConstantContactClient;
  readonly tokens: TokenManager;
  readonly logger: Logger;
  readonly scan: PageScanner;
  readonly options: ConstantContactSourceOptions;
  /** The last `/contacts/counts` this source instance (one run) read: the engine reads it just before a reconcile. */
  counts: CcContactCounts | null;
}

/** `GET /contacts/counts`, decoded; remembered for the reconcile that follows the engine's count (no second request). */
async function readCounts(ctx: Ctx): Promise<CcContactCounts> {
  const body = await ctx.client.getJson(ctx.client.url('/contacts/counts'));
  const r = CcContactCounts.decode(body);
  if (isLeft(r))
    throw sourceError(`Constant Contact GET /contacts/counts: unexpected body (${formatErrors(r.left).join('; ')})`);
  ctx.counts = r.right;
  return r.right;
}

/** The unsubscribed count, or null when `/contacts/counts` fails with a SourceError (logged). */
async function unsubscribedCount(ctx: Ctx): Promise<number | null> {
  try {
    const c = await readCounts(ctx);
    return typeof c.unsubscribed === 'number' ? c.unsubscribed : null;
  } catch (err) {
    if (err instanceof SourceError) {
      ctx.logger.warn('constant-contact: unsubscribed count unavailable', { error: err.message });
      return null;
    }
    throw err; // QuotaExceeded, ReauthorizationRequired: the run must stop
  }
}

/** `pages` or `export` for this reconcile: `auto` exports from EXPORT_AUTO_THRESHOLD unsubscribed contacts on. */
function chooseVia(ctx: Ctx, unsubscribed: number | null): 'pages' | 'export' {
  const via = ctx.config.detection.reconcileVia;
  if (via !== 'auto') return via;
  return unsubscribed !== null && unsubscribed >= EXPORT_AUTO_THRESHOLD ? 'export' : 'pages';
}

/** The live unsubscribed set by pages, its total compared with `/contacts/counts`. */
async function liveByPages(ctx: Ctx, expected: number | null, onPage: OnPage): Promise<ScanStats> {
  const stats = await ctx.scan({ status: 'unsubscribed', limit: ctx.config.detection.pageSize }, onPage);
  if (expected !== null && stats.reportedCount !== null && stats.reportedCount !== expected) {
    ctx.logger.warn(
      'constant-contact: status=unsubscribed reports another total than /contacts/counts (contacts may have changed)',
      {
        contactsCount: stats.reportedCount,
        counts: expected,
      },
    );
  }
  return {
    pages: stats.pages,
    contacts: stats.contacts,
    skippedNoEmail: stats.skippedNoEmail,
    quarantined: stats.quarantined,
  };
}

/**
 * The live unsubscribed set by export; on any doubt (ExportDoubt) by pages, logged. Nothing is handed on
 * or quarantined before the whole export passed its checks.
 */
async function liveByExport(ctx: Ctx, expected: number | null, onPage: OnPage): Promise<ScanStats> {
  let result;
  try {
    result = await exportUnsubscribed(ctx.client, ctx.deps.clock, ctx.logger, expected, ctx.options.exportTiming);
  } catch (err) {
    if (!(err instanceof ExportDoubt)) throw err;
    ctx.logger.warn('constant-contact: contact export not used, reading pages instead', { reason: err.message });
    return liveByPages(ctx, expected, onPage);
  }
  for (const rec of result.quarantine) ctx.deps.quarantine(rec);
  if (result.quarantine.length > 0)
    ctx.logger.warn('constant-contact: quarantined malformed export rows', { count: result.quarantine.length });
  const pages = await handInPages(result.contacts, ctx.config.detection.pageSize, onPage, {
    skippedNoEmail: result.skippedNoEmail,
    quarantined: result.quarantine.length,
    quarantinedEmails: result.quarantinedEmails,
    quarantinedUnidentified: result.quarantinedUnidentified,
  });
  ctx.logger.info('constant-contact: unsubscribed set read by export', {
    rows: result.rows,
    requests: result.requests,
  });
  return {
    pages,
    contacts: result.contacts.length,
    skippedNoEmail: result.skippedNoEmail,
    quarantined: result.quarantine.length,
  };
}

/** The engine's full reconcile (./reconcile.ts), the live set read as `reconcileVia` says. */
async function reconcile(ctx: Ctx, plan: ReconcilePlan, onPage: OnPage): Promise<ScanStats> {
  const known = ctx.counts?.unsubscribed;
  const expected = typeof known === 'number' ? known : await unsubscribedCount(ctx);
  const via = chooseVia(ctx, expected);
  ctx.logger.debug('constant-contact: full reconcile', {
    via,
    unsubscribed: expected,
    deletedSince: plan.deletedSince?.toISOString() ?? null,
  });
  return reconcileWithPlan(
    {
      scan: ctx.scan,
      logger: ctx.logger,
      limit: ctx.config.detection.pageSize,
      now: () => ctx.deps.clock.now(),
      readLive: (track) => (via === 'export' ? liveByExport(ctx, expected, track) : liveByPages(ctx, expected, track)),
    },
    plan,
    onPage,
  );
}

function scanWindow(ctx: Ctx, after: Date, before: Date, onPage: OnPage): Promise<ScanStats> {
  if (!(after.getTime() <= before.getTime())) {
    return Promise.reject(
      sourceError(`scanWindow: after (${after.toISOString()}) is later than before (${before.toISOString()})`),
    );
  }
  return ctx
    .scan(
      {
        status: 'all',
        optout_after: after.toISOString(),
        optout_before: before.toISOString(),
        limit: ctx.config.detection.pageSize,
      },
      onPage,
    )
    .then(plainStats);
}

/** The token part of `check()`: whether a refresh works (a check item either way). */
async function checkToken(ctx: Ctx, items: CheckItem[]): Promise<boolean> {
  if (ctx.tokens.refreshToken() === null) {
    items.push({
      name: 'Constant Contact authorisation',
      ok: false,
      detail: `no refresh token stored or configured: run \`${ctx.tokens.reauth}\``,
    });
    return false;
  }
  try {
    await ctx.tokens.refresh();
    const until = ctx.tokens.accessExpiresAt();
    items.push({
      name: 'Constant Contact token refresh',
      ok: true,
      detail: `refreshed; access token valid until ${until ? until.toISOString() : 'unknown'}`,
    });
    return true;
  } catch (err) {
    const reauth = err instanceof ReauthorizationRequired;
    items.push({
      name: 'Constant Contact token refresh',
      ok: false,
      detail: reauth ? (err as Error).message : `token refresh failed: ${(err as Error).message}`,
    });
    return false;
  }
}

/** The API part of `check()`: one `/contacts/counts`. */
async function checkApi(ctx: Ctx, tokenOk: boolean): Promise<CheckItem> {
  if (!tokenOk) return { name: 'Constant Contact API', ok: false, detail: 'skipped: no valid access token' };
  try {
    const c = await readCounts(ctx);
    return {
      name: 'Constant Contact API',
      ok: true,
      detail: `reachable (${ctx.config.apiBaseUrl}); ${c.unsubscribed ?? 'unknown'} unsubscribed of ${c.total ?? 'unknown'} contacts`,
    };
  } catch (err) {
    const detail =
      err instanceof QuotaExceeded ? err.message : `GET /contacts/counts failed: ${(err as Error).message}`;
    return { name: 'Constant Contact API', ok: false, detail };
  }
}

function checkBudget(ctx: Ctx): CheckItem {
  const b = ctx.client.budget();
  return {
    name: 'Constant Contact daily budget',
    ok: b.remaining > 0,
    detail: `${b.remaining} of ${b.budget} requests left today (per application; resets ${b.resetsAt.toISOString()})`,
  };
}

async function check(ctx: Ctx): Promise<CheckReport> {
  const items: CheckItem[] = [];
  const tokenOk = await checkToken(ctx, items);
  items.push(await checkApi(ctx, tokenOk));
  items.push(checkBudget(ctx));
  return { ok: items.every((i) => i.ok), items };
}

/** Run `f`, then make the day's request count durable (batched writes: see client.ts), however `f` ends. */
async function flushed<T>(ctx: Ctx, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } finally {
    ctx.client.flushUsage();
  }
}

export function createConstantContactSource(
  config: ResolvedSource,
  deps: SourceDeps,
  options: ConstantContactSourceOptions = {},
): ConstantContactSource {
  const shared = options.sharedBudget;
  const tokens = new TokenManager(config, deps, {
    http: options.http,
    account: options.account,
    // the application's token endpoint slot, shared by every worker (src/fleet)
    ...(shared ? { tokenSlot: () => shared.budget.tokenSlot(shared.app, (shared.clock ?? deps.clock).now()) } : {}),
  });
  const client = new ConstantContactClient(config, deps, tokens, options);
  const logger = deps.logger.child({ source: 'constant-contact' });
  const ctx: Ctx = {
    config,
    deps,
    client,
    tokens,
    logger,
    scan: createPageScanner(config, deps, client, logger),
    options,
    counts: null,
  };
  return {
    client,
    tokens,
    scanWindow: (after, before, onPage) => flushed(ctx, () => scanWindow(ctx, after, before, onPage)),
    scanUnsubscribed: (onPage, plan) =>
      flushed(ctx, () =>
        plan
          ? reconcile(ctx, plan, onPage)
          : ctx.scan({ status: 'unsubscribed,deleted', limit: config.detection.pageSize }, onPage).then(plainStats),
      ),
    unsubscribedCount: () => flushed(ctx, () => unsubscribedCount(ctx)),
    check: () => flushed(ctx, () => check(ctx)),
  };
}

function plainStats(s: ScanStats): ScanStats {
  return { pages: s.pages, contacts: s.contacts, skippedNoEmail: s.skippedNoEmail, quarantined: s.quarantined };
}
