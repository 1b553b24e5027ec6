/**
 * The contract between the engine and an opt-out source (Constant Contact today).
 */
import { ObservedContact } from '../domain';
import { CheckReport, KeyValue, CallCounter } from '../plugin';
import { Logger } from '../log';
import { Clock } from '../http/clock';

/** One page of contacts as the source decoded it. Malformed records are already quarantined. */
export interface SourcePage {
  readonly contacts: readonly ObservedContact[];
  /** Contacts without an email address (SMS-only): skipped, counted. */
  readonly skippedNoEmail: number;
  /** Records that failed to decode on this page (stored in quarantine with reason and raw record). */
  readonly quarantined: number;
  /**
   * Normalised email addresses read from this page's quarantined records (where one could be read). A
   * quarantined record says nothing about its contact's permission: a known opt-out among these is NOT
   * taken to have left the unsubscribed set.
   */
  readonly quarantinedEmails?: readonly string[];
  /** Quarantined records that may hold an email address that could not be read (so whose it is, is unknown). */
  readonly quarantinedUnidentified?: number;
}

export interface ScanStats {
  readonly pages: number;
  readonly contacts: number;
  readonly skippedNoEmail: number;
  readonly quarantined: number;
}

/** A malformed record kept for inspection; the rest of its page goes on. */
import type { QuarantinedRecord } from '../domain';
export type { QuarantinedRecord };

export interface SourceDeps {
  readonly clock: Clock;
  readonly logger: Logger;
  /** Durable storage for tokens (refresh token rotation) and the daily request counter. */
  readonly kv: KeyValue;
  readonly calls: CallCounter;
  readonly quarantine: (rec: QuarantinedRecord) => void;
  /** Random in [0,1) for backoff jitter; injectable for tests. */
  readonly random?: () => number;
}

/** What the engine knows when it asks for a full reconcile (src/source/constant-contact/reconcile.ts). */
export interface ReconcilePlan {
  /** Emails the store holds as active opt-outs: each must be accounted for (seen, or looked up) by the scan. */
  readonly knownActive: ReadonlySet<string>;
  /**
   * Start of the last completed full reconcile minus the overlap (null: none yet). Deleted contacts are read
   * only from here on; earlier ones are in the store already.
   */
  readonly deletedSince: Date | null;
  /**
   * Which of `emails` the store last saw as deleted contacts (opted out, then deleted). Deleted contacts do not
   * change, so these count as accounted for without being read again.
   */
  readonly knownDeleted: (emails: readonly string[]) => ReadonlySet<string> | Promise<ReadonlySet<string>>;
}

export interface OptOutSource {
  /**
   * Contacts whose opt-out falls in [after, before]: `status=all&optout_after&optout_before`.
   * `onPage` is awaited before the next page is requested (the engine commits each page).
   */
  scanWindow(after: Date, before: Date, onPage: (page: SourcePage) => Promise<void> | void): Promise<ScanStats>;
  /**
   * Every contact in the unsubscribed set, unsubscribed-then-deleted ones included. Without `plan`: one plain
   * scan of the whole set (deleted contacts included). With `plan` (the engine's full reconcile): the source
   * may read less where the store already knows the rest (see ReconcilePlan), or read by bulk export.
   */
  scanUnsubscribed(onPage: (page: SourcePage) => Promise<void> | void, plan?: ReconcilePlan): Promise<ScanStats>;
  /** `GET /contacts/counts`: the unsubscribed total, to sanity-check a full scan. Null when unavailable. */
  unsubscribedCount(): Promise<number | null>;
  /** Credentials and connectivity, with precise messages. */
  check(): Promise<CheckReport>;
}

/** The refresh token was rejected (`invalid_grant`): a person must re-authorise. Stops the run. */
export class ReauthorizationRequired extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReauthorizationRequired';
  }
}

/** Constant Contact's daily quota (`quota_exceeded`) or our own daily budget is spent. Stops detection cleanly. */
export class QuotaExceeded extends Error {
  constructor(
    readonly resetAt: Date,
    message: string,
  ) {
    super(message);
    this.name = 'QuotaExceeded';
  }
}

/** Any other failure talking to the source after retries (status, vendor error key, message). */
export class SourceError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly errorKey?: string,
  ) {
    super(message);
    this.name = 'SourceError';
  }
}
