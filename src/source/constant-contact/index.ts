/**
 * The Constant Contact opt-out source (the `OptOutSource` contract of src/source/types.ts).
 *
 * - `scanWindow(after, before)`: `GET /contacts?status=all&optout_after=..&optout_before=..&limit=..`.
 *   This filters on the email opt-out date, which is what an unsubscribe moves; `updated_after` filters on
 *   personal details only and silently misses unsubscribes (the seed forum thread). `status=all` keeps
 *   contacts that unsubscribed and were then deleted.
 * - `scanUnsubscribed()`: `GET /contacts?status=unsubscribed,deleted&limit=..`, the full reconcile. Whether
 *   `status=unsubscribed` alone includes contacts that unsubscribed and were then deleted is not documented;
 *   their opt-out still holds, so deleted contacts are read too (and only the unsubscribed ones count).
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
import { OptOutSource, QuotaExceeded, ReauthorizationRequired, ScanStats, SourceDeps, SourceError, SourcePage } from '../types';
import { REAUTH_COMMAND, TokenManager } from './auth';
import { ClientOptions, ConstantContactClient, QueryParams } from './client';
import { CcContactCounts, decodeContacts, decodeContactsPage } from './codecs';
import { sourceError } from './errors';

export { TokenManager, REAUTH_COMMAND } from './auth';
export { ConstantContactClient, resolveNextHref } from './client';
export { authorizeWithPkce, authorizeWithDeviceFlow, buildAuthorizeUrl, createPkcePair } from './authorize';
export type { AuthorizeIo, AuthorizeResult } from './authorize';

export type ConstantContactSourceOptions = ClientOptions;

/** The source plus the pieces the CLI may want (budget, tokens) for status output. */
export interface ConstantContactSource extends OptOutSource {
  readonly client: ConstantContactClient;
  readonly tokens: TokenManager;
}

type OnPage = (page: SourcePage) => Promise<void> | void;

/** Pages one scan may read when `source.detection.maxPages` is not set (half the default daily budget). */
export const DEFAULT_MAX_PAGES = 5000;

/**
 * Pages a scan may need when the first page says `contacts_count` = `count`: the count plus a margin for
 * contacts that change during the scan (10 %, at least one page), in pages of `limit`, plus one page for
 * an empty last page.
 */
export function pagesForCount(count: number, limit: number): number {
  const margin = Math.max(limit, Math.ceil(count * 0.1));
  return Math.ceil((count + margin) / limit) + 1;
}

export function createConstantContactSource(
  config: ResolvedSource,
  deps: SourceDeps,
  options: ConstantContactSourceOptions = {},
): ConstantContactSource {
  const tokens = new TokenManager(config, deps, { http: options.http });
  const client = new ConstantContactClient(config, deps, tokens, options);
  const logger = deps.logger.child({ source: 'constant-contact' });
  const limit = config.detection.pageSize;
  const maxPages = config.detection.maxPages ?? DEFAULT_MAX_PAGES;

  /**
   * Request the first page (with `include_count=true`), then follow `_links.next.href` until absent. A scan
   * is bounded: by the `contacts_count` the first page reports (plus a margin, see `pagesForCount`) and by
   * `source.detection.maxPages`. A next link beyond the bound is not followed: the scan fails with a
   * SourceError (everything read up to there was committed page by page; the caller does not move its
   * checkpoint), so distinct cursors without end cannot spend the per-application daily budget.
   */
  async function scan(params: QueryParams, onPage: OnPage): Promise<ScanStats> {
    let url = client.url('/contacts');
    let query: QueryParams | undefined = { ...params, include_count: true };
    let bound = maxPages;
    let boundWhy = `the page cap source.detection.maxPages (${maxPages})`;
    const seen = new Set<string>();
    let pages = 0;
    let contacts = 0;
    let skippedNoEmail = 0;
    let quarantined = 0;
    for (;;) {
      const body = await client.getJson(url, query);
      const decoded = decodeContactsPage(body);
      if (!decoded.ok) {
        throw sourceError(`Constant Contact GET /contacts page ${pages + 1} is not a contacts page: ${decoded.problems.join('; ')}`);
      }
      // The next link is checked BEFORE the page is handed on: a page that links to another origin (or back
      // to a page already read) is rejected whole, so nothing from it is committed.
      const href = decoded.page._links?.next?.href;
      const next = typeof href === 'string' && href.trim() !== '' ? client.nextUrl(href) : null;
      if (next !== null && seen.has(next)) throw sourceError(`Constant Contact pagination loops: page ${pages + 1} links back to a page already read`);
      if (pages === 0) {
        const count = decoded.page.contacts_count;
        if (typeof count === 'number' && Number.isFinite(count) && count >= 0 && pagesForCount(count, limit) < bound) {
          bound = pagesForCount(count, limit);
          boundWhy = `the ${count} contacts the API reported for this query (contacts_count) plus a margin (${bound} pages of ${limit})`;
        }
      }
      const page = decodeContacts(decoded.page.contacts, deps.quarantine, deps.clock.now(), (value, contactId) => {
        // Kept (the opt-out itself is clear; dropping it would keep mailing the person), but reported.
        logger.warn('constant-contact: unknown email_address.opt_out_source kept as sent', { value: value.slice(0, 60), contactId });
      });
      pages += 1;
      contacts += page.contacts.length;
      skippedNoEmail += page.skippedNoEmail;
      quarantined += page.quarantined;
      if (page.quarantined > 0) logger.warn('constant-contact: quarantined malformed contacts', { page: pages, count: page.quarantined });
      await onPage({
        contacts: page.contacts,
        skippedNoEmail: page.skippedNoEmail,
        quarantined: page.quarantined,
        quarantinedEmails: page.quarantinedEmails,
        quarantinedUnidentified: page.quarantinedUnidentified,
      });

      if (next === null) break;
      if (pages >= bound) {
        throw sourceError(
          `Constant Contact GET /contacts: stopped after ${pages} pages (${contacts} contacts), the most ${boundWhy} allows, ` +
            `while next links kept coming (the API may be paging through distinct cursors without end). The pages read so far ` +
            `are kept; no later page was requested and detection does not advance its checkpoint.` +
            (bound === maxPages ? ` If the account really is that large, raise source.detection.maxPages.` : ''),
        );
      }
      seen.add(next);
      url = next;
      query = undefined; // the cursor replays the original filters
    }
    logger.debug('constant-contact: scan finished', { pages, contacts, skippedNoEmail, quarantined });
    return { pages, contacts, skippedNoEmail, quarantined };
  }

  async function counts(): Promise<CcContactCounts> {
    const body = await client.getJson(client.url('/contacts/counts'));
    const r = CcContactCounts.decode(body);
    if (isLeft(r)) throw sourceError(`Constant Contact GET /contacts/counts: unexpected body (${formatErrors(r.left).join('; ')})`);
    return r.right;
  }

  const source: ConstantContactSource = {
    client,
    tokens,

    scanWindow(after, before, onPage) {
      if (!(after.getTime() <= before.getTime())) {
        return Promise.reject(sourceError(`scanWindow: after (${after.toISOString()}) is later than before (${before.toISOString()})`));
      }
      return scan(
        { status: 'all', optout_after: after.toISOString(), optout_before: before.toISOString(), limit },
        onPage,
      );
    },

    scanUnsubscribed(onPage) {
      return scan({ status: 'unsubscribed,deleted', limit }, onPage);
    },

    async unsubscribedCount() {
      try {
        const c = await counts();
        return typeof c.unsubscribed === 'number' ? c.unsubscribed : null;
      } catch (err) {
        if (err instanceof SourceError) {
          logger.warn('constant-contact: unsubscribed count unavailable', { error: err.message });
          return null;
        }
        throw err; // QuotaExceeded, ReauthorizationRequired: the run must stop
      }
    },

    async check(): Promise<CheckReport> {
      const items: CheckItem[] = [];
      let tokenOk = false;
      if (tokens.refreshToken() === null) {
        items.push({
          name: 'Constant Contact authorisation',
          ok: false,
          detail: `no refresh token stored or configured: run \`${REAUTH_COMMAND}\``,
        });
      } else {
        try {
          await tokens.refresh();
          const until = tokens.accessExpiresAt();
          tokenOk = true;
          items.push({
            name: 'Constant Contact token refresh',
            ok: true,
            detail: `refreshed; access token valid until ${until ? until.toISOString() : 'unknown'}`,
          });
        } catch (err) {
          const reauth = err instanceof ReauthorizationRequired;
          items.push({
            name: 'Constant Contact token refresh',
            ok: false,
            detail: reauth ? (err as Error).message : `token refresh failed: ${(err as Error).message}`,
          });
        }
      }

      if (!tokenOk) {
        items.push({ name: 'Constant Contact API', ok: false, detail: 'skipped: no valid access token' });
      } else {
        try {
          const c = await counts();
          items.push({
            name: 'Constant Contact API',
            ok: true,
            detail: `reachable (${config.apiBaseUrl}); ${c.unsubscribed ?? 'unknown'} unsubscribed of ${c.total ?? 'unknown'} contacts`,
          });
        } catch (err) {
          const detail = err instanceof QuotaExceeded ? err.message : `GET /contacts/counts failed: ${(err as Error).message}`;
          items.push({ name: 'Constant Contact API', ok: false, detail });
        }
      }

      const b = client.budget();
      items.push({
        name: 'Constant Contact daily budget',
        ok: b.remaining > 0,
        detail: `${b.remaining} of ${b.budget} requests left today (per application; resets ${b.resetsAt.toISOString()})`,
      });
      return { ok: items.every((i) => i.ok), items };
    },
  };
  return source;
}
