/**
 * The full reconcile with the store's knowledge (`scanUnsubscribed(onPage, plan)`), reading no more than needed:
 *
 * 1. The live unsubscribed set: `status=unsubscribed` by pages, or by bulk export (./export.ts), as
 *    `source.detection.reconcileVia` says. Its total is compared with `GET /contacts/counts` (logged when they differ).
 * 2. Deleted contacts, which may still be opt-outs (unsubscribed, then deleted). Deleted contacts do not change,
 *    so only those whose opt-out date (per the contract a deleted contact shows one) is after `plan.deletedSince`
 *    are read: `status=deleted&optout_after=...`, usually one page. With no earlier reconcile:
 *    `status=deleted&optout_before=<now>`, which is every deleted contact at worst (when deletion itself shows as an
 *    opt-out date) and only the opted-out ones at best.
 * 3. Self-healing: every email the store holds as an active opt-out must have been seen in 1 or 2 (or quarantined),
 *    or be one the store last saw deleted (`plan.knownDeleted`: a deleted contact does not change).
 *    Those that were not (deleted since the last reconcile, resubscribed, or missed by the narrower read) are looked
 *    up one by one (`email=...&status=all`) when there are at most RECHECK_MAX of them, else by reading every
 *    deleted contact (`status=deleted`, the old full read). So a known opt-out is never taken to have left the set
 *    just because the narrower query did not return it.
 */
import { ObservedContact } from '../../domain';
import { Logger } from '../../log';
import { ReconcilePlan, ScanStats, SourcePage } from '../types';
import { QueryParams } from './client';
import { addStats, OnPage, PageScanner } from './scan';

/** Unaccounted known opt-outs looked up one by one up to this many; more, and every deleted contact is read. */
export const RECHECK_MAX = 25;

export interface ReconcileIo {
  readonly scan: PageScanner;
  readonly logger: Logger;
  readonly limit: number;
  readonly now: () => Date;
  /** The live unsubscribed set (pages or export), handed to `onPage`. */
  readonly readLive: (onPage: OnPage) => Promise<ScanStats>;
}

export async function reconcileWithPlan(io: ReconcileIo, plan: ReconcilePlan, onPage: OnPage): Promise<ScanStats> {
  const accounted = new Set<string>();
  const track = (page: SourcePage): Promise<void> | void => {
    for (const c of page.contacts) accounted.add(c.email);
    for (const e of page.quarantinedEmails ?? []) accounted.add(e);
    return onPage(page);
  };
  let stats = await io.readLive(track);

  const deletedQuery: QueryParams = plan.deletedSince
    ? { status: 'deleted', optout_after: plan.deletedSince.toISOString(), limit: io.limit }
    : { status: 'deleted', optout_before: io.now().toISOString(), limit: io.limit };
  stats = addStats(stats, await io.scan(deletedQuery, track));

  const notSeen = [...plan.knownActive].filter((e) => !accounted.has(e));
  const deletedBefore = notSeen.length > 0 ? await plan.knownDeleted(notSeen) : new Set<string>();
  const unaccounted = notSeen.filter((e) => !deletedBefore.has(e)).sort();
  if (unaccounted.length === 0) return stats;
  if (unaccounted.length <= RECHECK_MAX) {
    io.logger.info('constant-contact: looking up known opt-outs the reconcile did not return', {
      count: unaccounted.length,
    });
    for (const email of unaccounted)
      stats = addStats(stats, await io.scan({ email, status: 'all', limit: io.limit }, track));
  } else {
    io.logger.info('constant-contact: many known opt-outs not returned; reading every deleted contact', {
      count: unaccounted.length,
      max: RECHECK_MAX,
    });
    stats = addStats(stats, await io.scan({ status: 'deleted', limit: io.limit }, track));
  }
  return stats;
}

/** Hand `contacts` on in pages of `limit` (the export path: one SQLite transaction per page, as for API pages). */
export async function handInPages(
  contacts: readonly ObservedContact[],
  limit: number,
  onPage: OnPage,
  first: Omit<SourcePage, 'contacts'>,
): Promise<number> {
  let pages = 0;
  for (let i = 0; i < contacts.length || (i === 0 && pages === 0); i += limit) {
    const extra = pages === 0 ? first : { skippedNoEmail: 0, quarantined: 0 };
    await onPage({ contacts: contacts.slice(i, i + limit), ...extra });
    pages += 1;
  }
  return pages;
}
