/**
 * The unsubscribed set by bulk export, for the full reconcile and the backfill (`source.detection.reconcileVia`).
 *
 * As the published contract (swagger 3.0.178) describes it, and verified against nothing else:
 *   POST /activities/contact_exports {"status": "unsubscribed", "fields": [...]}  -> 201 {activity_id, state, _links}
 *   GET  /activities/{activity_id}  until state = completed (initialized, processing; failed, cancelled, timed_out end it)
 *   GET  _links.results.href (the contract's example reads /v3/contacts_exports/{id}; the path is /contact_exports/{file_export_id}) -> text/csv
 * A 1,000,000-contact account costs 1 POST + the polls + 1 download instead of one request per 500 contacts.
 *
 * Nothing from an export is trusted on doubt: the activity failing or not finishing within the timeout, no
 * results link, a CSV without an email column or that does not parse, totals that disagree with
 * `GET /contacts/counts` (or with the activity's own `items_total_count`) beyond EXPORT_COUNT_TOLERANCE, or more
 * malformed rows than EXPORT_MALFORMED_LIMIT: each throws ExportDoubt, and the caller reads pages instead
 * (logged). Rows are handed on (and malformed ones quarantined) only after the whole file passed these checks.
 * QuotaExceeded and ReauthorizationRequired are not doubts: they stop detection like any other request.
 */
import { parse } from 'csv-parse/sync';
import * as t from 'io-ts';
import { isLeft } from 'fp-ts/Either';
import { ObservedContact } from '../../domain';
import { Clock } from '../../http/clock';
import { Logger } from '../../log';
import { QuarantinedRecord, SourceError } from '../types';
import { ConstantContactClient } from './client';
import { decodeContacts } from './codecs';

/** The columns asked for (the contract's own names; it requires `email_address` for the opt-out ones). */
export const EXPORT_FIELDS = [
  'email_address',
  'email_optout_date',
  'email_optout_source',
  'email_optout_reason',
] as const;

/** `auto` exports when `/contacts/counts` reports at least this many unsubscribed contacts (10 pages of 500). */
export const EXPORT_AUTO_THRESHOLD = 5_000;

/** Totals may differ from `/contacts/counts` by this share (opt-outs during the export), at least `min` rows. */
export const EXPORT_COUNT_TOLERANCE = { share: 0.005, min: 10 } as const;

/** More malformed rows than this share of the file (at least `min`) and the export is not used. */
export const EXPORT_MALFORMED_LIMIT = { share: 0.01, min: 10 } as const;

export interface ExportTiming {
  /** First wait between two activity polls (doubling up to `pollMaxMs`). Default 2 s. */
  readonly pollMs?: number;
  readonly pollMaxMs?: number;
  /** Give up (and read pages) when the activity has not completed after this long. Default 15 min. */
  readonly timeoutMs?: number;
}

export const EXPORT_TIMING_DEFAULTS = { pollMs: 2_000, pollMaxMs: 15_000, timeoutMs: 15 * 60_000 } as const;

/** The export cannot be trusted: the reconcile reads pages instead. */
export class ExportDoubt extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportDoubt';
  }
}

const Activity = t.intersection([
  t.type({ activity_id: t.string }),
  t.partial({
    state: t.string,
    activity_errors: t.union([t.array(t.unknown), t.null]),
    status: t.union([t.partial({ items_total_count: t.union([t.number, t.null]) }), t.null]),
    _links: t.union([t.partial({ results: t.union([t.partial({ href: t.string }), t.null]) }), t.null]),
  }),
]);
type Activity = t.TypeOf<typeof Activity>;

export interface ExportResult {
  readonly contacts: ObservedContact[];
  readonly quarantine: QuarantinedRecord[];
  readonly quarantinedEmails: string[];
  readonly quarantinedUnidentified: number;
  readonly skippedNoEmail: number;
  /** Data rows in the file. */
  readonly rows: number;
  /** Requests this export spent (POST, polls, download). */
  readonly requests: number;
}

function decodeActivity(body: unknown, what: string): Activity {
  const r = Activity.decode(body);
  if (isLeft(r) || r.right.activity_id.trim() === '')
    throw new ExportDoubt(`${what}: not an activity (no activity_id)`);
  return r.right;
}

const ENDED = new Set(['failed', 'cancelled', 'timed_out']);

/** Run one export of the unsubscribed set and return its rows, checked. Throws ExportDoubt on any doubt. */
export async function exportUnsubscribed(
  client: ConstantContactClient,
  clock: Clock,
  logger: Logger,
  expected: number | null,
  timing: ExportTiming = {},
): Promise<ExportResult> {
  const pollMax = timing.pollMaxMs ?? EXPORT_TIMING_DEFAULTS.pollMaxMs;
  const timeoutMs = timing.timeoutMs ?? EXPORT_TIMING_DEFAULTS.timeoutMs;
  let wait = timing.pollMs ?? EXPORT_TIMING_DEFAULTS.pollMs;
  let requests = 0;
  const doubtOnError = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    requests += 1;
    try {
      return await f();
    } catch (err) {
      // an HTTP failure of the export itself (400 for a field, 404, 5xx after retries): read pages instead
      if (err instanceof SourceError) throw new ExportDoubt(`${what} failed: ${err.message}`);
      throw err;
    }
  };

  const started = clock.now().getTime();
  let activity = decodeActivity(
    await doubtOnError('POST /activities/contact_exports', () =>
      client.postJson(client.url('/activities/contact_exports'), {
        status: 'unsubscribed',
        fields: [...EXPORT_FIELDS],
      }),
    ),
    'POST /activities/contact_exports',
  );
  const id = activity.activity_id;
  logger.info('constant-contact: contact export started', { activityId: id });
  while (activity.state !== 'completed') {
    if (activity.state !== undefined && ENDED.has(activity.state)) {
      const errors = (activity.activity_errors ?? []).map(String).join('; ').slice(0, 300);
      throw new ExportDoubt(`export activity ${id} ended ${activity.state}${errors ? `: ${errors}` : ''}`);
    }
    if (clock.now().getTime() - started + wait > timeoutMs) {
      throw new ExportDoubt(
        `export activity ${id} did not complete within ${Math.round(timeoutMs / 1000)} s (last state ${activity.state ?? 'unknown'})`,
      );
    }
    await clock.sleep(wait);
    wait = Math.min(pollMax, wait * 2);
    activity = decodeActivity(
      await doubtOnError(`GET /activities/${id}`, () =>
        client.getJson(client.url(`/activities/${encodeURIComponent(id)}`)),
      ),
      `GET /activities/${id}`,
    );
  }
  const href = activity._links?.results?.href;
  if (typeof href !== 'string' || href.trim() === '')
    throw new ExportDoubt(`export activity ${id} completed without a results link`);
  let fileUrl: string;
  try {
    fileUrl = client.nextUrl(href); // same origin and API path as apiBaseUrl, or refused
  } catch (err) {
    throw new ExportDoubt((err as Error).message);
  }
  const csv = await doubtOnError('GET the export file', () => client.getText(fileUrl));
  const parsed = parseExportCsv(csv, clock.now());
  const total = parsed.rows;
  const reported = activity.status?.items_total_count;
  // Fewer rows than the counts is never tolerated: each missing row may be an opt-out nobody would ever see (the
  // pages read finds them). More rows within the tolerance are opt-outs that happened while the export ran.
  const tolerance = (n: number): number =>
    Math.max(EXPORT_COUNT_TOLERANCE.min, Math.ceil(n * EXPORT_COUNT_TOLERANCE.share));
  if (expected !== null && (total < expected || total - expected > tolerance(expected))) {
    throw new ExportDoubt(
      `the export holds ${total} rows but GET /contacts/counts reports ${expected} unsubscribed contacts`,
    );
  }
  if (typeof reported === 'number' && (total < reported || total - reported > tolerance(reported))) {
    throw new ExportDoubt(`the export holds ${total} rows but its activity reports ${reported} (items_total_count)`);
  }
  const limit = Math.max(EXPORT_MALFORMED_LIMIT.min, Math.ceil(total * EXPORT_MALFORMED_LIMIT.share));
  if (parsed.quarantine.length > limit) {
    throw new ExportDoubt(
      `${parsed.quarantine.length} of ${total} export rows are malformed (more than ${limit}); first: ${parsed.quarantine[0]!.reason}`,
    );
  }
  return { ...parsed, requests };
}

/** Header names compared loosely: `Email Address`, `email_address`, `EMAIL-ADDRESS` are one column. */
function columnKey(h: string): string {
  return h
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
}

const COLUMN_ALIASES: Record<string, string[]> = {
  email: ['email_address', 'email'],
  date: ['email_optout_date', 'email_opt_out_date', 'opt_out_date'],
  source: ['email_optout_source', 'email_opt_out_source', 'opt_out_source'],
  reason: ['email_optout_reason', 'email_opt_out_reason', 'opt_out_reason'],
  id: ['contact_id'],
};

/**
 * Parse the CSV (csv-parse) into observed contacts. Every row of an export of `status=unsubscribed` is an
 * opt-out. A row is quarantined like a malformed page record (with its line and the raw row) when its
 * column count differs from the header's, its email is not an address, or its opt-out date is in the future
 * or before 1990. Throws ExportDoubt when the file does not parse or has no email column.
 */
export function parseExportCsv(csv: string, now: Date): Omit<ExportResult, 'requests'> {
  let records: string[][];
  try {
    records = parse(csv, { bom: true, relax_column_count: true, skip_empty_lines: true }) as string[][];
  } catch (err) {
    throw new ExportDoubt(`the export file is not CSV: ${(err as Error).message.slice(0, 200)}`);
  }
  if (records.length === 0) throw new ExportDoubt('the export file is empty (not even a header row)');
  const header = records[0]!.map(columnKey);
  const col = (name: string): number => header.findIndex((h) => COLUMN_ALIASES[name]!.includes(h));
  const iEmail = col('email');
  if (iEmail < 0)
    throw new ExportDoubt(
      `the export file has no email address column (header: ${records[0]!.join(',').slice(0, 200)})`,
    );
  const [iDate, iSource, iReason, iId] = [col('date'), col('source'), col('reason'), col('id')];
  const contacts: ObservedContact[] = [];
  const quarantine: QuarantinedRecord[] = [];
  const quarantinedEmails: string[] = [];
  let quarantinedUnidentified = 0;
  let skippedNoEmail = 0;
  const cell = (r: string[], i: number): string | null =>
    i >= 0 && typeof r[i] === 'string' && r[i]!.trim() !== '' ? r[i]!.trim() : null;
  for (let n = 1; n < records.length; n++) {
    const r = records[n]!;
    const line = n + 1;
    const raw = Object.fromEntries(records[0]!.map((h, i) => [h, r[i] ?? null]));
    const address = cell(r, iEmail);
    const q = (reason: string): void => {
      const email = address !== null && address.includes('@') ? address.toLowerCase() : null;
      if (email) quarantinedEmails.push(email);
      else quarantinedUnidentified += 1;
      quarantine.push({ reason: `export line ${line}: ${reason}`, raw, recordId: cell(r, iId), email });
    };
    if (r.length !== header.length) {
      q(`${r.length} columns, the header has ${header.length}`);
      continue;
    }
    if (address === null) {
      skippedNoEmail += 1; // an SMS-only contact, as on pages
      continue;
    }
    if (!/^[^\s@]+@[^\s@]+$/.test(address)) {
      q(`email_address: got ${JSON.stringify(address.slice(0, 60))}, expected an email address`);
      continue;
    }
    const contact = {
      contact_id: cell(r, iId) ?? `export:${address.toLowerCase()}`,
      email_address: {
        address,
        permission_to_send: 'unsubscribed',
        opt_out_date: cell(r, iDate),
        opt_out_source: cell(r, iSource),
        opt_out_reason: cell(r, iReason),
      },
    };
    const d = decodeContacts([contact], (rec) => q(rec.reason), now);
    contacts.push(...d.contacts);
  }
  return { contacts, quarantine, quarantinedEmails, quarantinedUnidentified, skippedNoEmail, rows: records.length - 1 };
}
