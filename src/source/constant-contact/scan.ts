/**
 * Reading `GET /contacts` page by page (used by the window scan, the full reconcile and its lookups).
 *
 * Request the first page (with `include_count=true`), then follow `_links.next.href` until absent. A scan
 * is bounded: by the `contacts_count` the first page reports (plus a margin, see `pagesForCount`) and by
 * `source.detection.maxPages`. A next link beyond the bound is not followed: the scan fails with a
 * SourceError (everything read up to there was committed page by page; the caller does not move its
 * checkpoint), so distinct cursors without end cannot spend the per-application daily budget.
 */
import { DEFAULT_MAX_PAGES, ResolvedSource } from '../../config';
import { Logger } from '../../log';
import { ScanStats, SourceDeps, SourcePage } from '../types';
import { ConstantContactClient, QueryParams } from './client';
import { decodeContacts, decodeContactsPage } from './codecs';
import { sourceError } from './errors';

export type OnPage = (page: SourcePage) => Promise<void> | void;

/** Pages one scan may read when `source.detection.maxPages` is not set (defined with the other defaults in config.ts). */
export { DEFAULT_MAX_PAGES };

/**
 * Pages a scan may need when the first page says `contacts_count` = `count`: the count plus a margin for
 * contacts that change during the scan (10 %, at least one page), in pages of `limit`, plus one page for
 * an empty last page.
 */
export function pagesForCount(count: number, limit: number): number {
  const margin = Math.max(limit, Math.ceil(count * 0.1));
  return Math.ceil((count + margin) / limit) + 1;
}

/** A scan's stats plus what the first page reported (`contacts_count`, null when absent). */
export interface PageScanStats extends ScanStats {
  readonly reportedCount: number | null;
}

export type PageScanner = (params: QueryParams, onPage: OnPage) => Promise<PageScanStats>;

/** The first page's `contacts_count` when it is a usable number. */
function usableCount(count: unknown): number | null {
  return typeof count === 'number' && Number.isFinite(count) && count >= 0 ? count : null;
}

export function createPageScanner(
  config: ResolvedSource,
  deps: SourceDeps,
  client: ConstantContactClient,
  logger: Logger,
): PageScanner {
  const limit = config.detection.pageSize;
  const maxPages = config.detection.maxPages ?? DEFAULT_MAX_PAGES;
  const onUnknownSource = (value: string, contactId: string): void => {
    // Kept (the opt-out itself is clear; dropping it would keep mailing the person), but reported.
    logger.warn('constant-contact: unknown email_address.opt_out_source kept as sent', {
      value: value.slice(0, 60),
      contactId,
    });
  };

  return async function scan(params, onPage) {
    let url = client.url('/contacts');
    let query: QueryParams | undefined = { ...params, include_count: true };
    let bound = maxPages;
    let boundWhy = `the page cap source.detection.maxPages (${maxPages})`;
    const seen = new Set<string>();
    let pages = 0;
    let contacts = 0;
    let skippedNoEmail = 0;
    let quarantined = 0;
    let reportedCount: number | null = null;
    for (;;) {
      const body = await client.getJson(url, query);
      const decoded = decodeContactsPage(body);
      if (!decoded.ok) {
        throw sourceError(
          `Constant Contact GET /contacts page ${pages + 1} is not a contacts page: ${decoded.problems.join('; ')}`,
        );
      }
      // The next link is checked BEFORE the page is handed on: a page that links to another origin (or back
      // to a page already read) is rejected whole, so nothing from it is committed.
      const href = decoded.page._links?.next?.href;
      const next = typeof href === 'string' && href.trim() !== '' ? client.nextUrl(href) : null;
      if (next !== null && seen.has(next))
        throw sourceError(`Constant Contact pagination loops: page ${pages + 1} links back to a page already read`);
      if (pages === 0) {
        reportedCount = usableCount(decoded.page.contacts_count);
        if (reportedCount !== null && pagesForCount(reportedCount, limit) < bound) {
          bound = pagesForCount(reportedCount, limit);
          boundWhy = `the ${reportedCount} contacts the API reported for this query (contacts_count) plus a margin (${bound} pages of ${limit})`;
        }
      }
      const page = decodeContacts(decoded.page.contacts, deps.quarantine, deps.clock.now(), onUnknownSource);
      pages += 1;
      contacts += page.contacts.length;
      skippedNoEmail += page.skippedNoEmail;
      quarantined += page.quarantined;
      if (page.quarantined > 0)
        logger.warn('constant-contact: quarantined malformed contacts', { page: pages, count: page.quarantined });
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
    return { pages, contacts, skippedNoEmail, quarantined, reportedCount };
  };
}

/** Two scans' stats added up. */
export function addStats(a: ScanStats, b: ScanStats): ScanStats {
  return {
    pages: a.pages + b.pages,
    contacts: a.contacts + b.contacts,
    skippedNoEmail: a.skippedNoEmail + b.skippedNoEmail,
    quarantined: a.quarantined + b.quarantined,
  };
}

export const NO_STATS: ScanStats = { pages: 0, contacts: 0, skippedNoEmail: 0, quarantined: 0 };
