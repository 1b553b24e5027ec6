/**
 * io-ts codecs for what Constant Contact V3 and its OAuth server send back, and the mapping from a
 * decoded contact to the domain's `ObservedContact`.
 *
 * Two levels of strictness:
 * - the page envelope (`{contacts: [...], _links?: {next?: {href}}, contacts_count?}`) is decoded strictly:
 *   if it is wrong, nothing on the page can be trusted and the scan fails with a SourceError;
 * - each contact is decoded on its own: a malformed contact is quarantined (with a readable io-ts path
 *   message and the raw record) and the rest of the page goes on.
 *
 * The vendor adds fields over time, so no codec here rejects unknown keys.
 */
import * as t from 'io-ts';
import { isLeft } from 'fp-ts/Either';
import { normaliseEmail, ObservedContact } from '../../domain';
import { formatErrors, NonEmptyString } from '../../codec';
import { QuarantinedRecord } from '../types';
import { redact } from '../../log';

/**
 * `X | null` whose failures read as X's own (a plain `t.union` would add a second, noisy
 * "expected null" line to every problem).
 */
function orNull<C extends t.Mixed>(codec: C): t.Type<t.TypeOf<C> | null, t.OutputOf<C> | null, unknown> {
  return new t.Type<t.TypeOf<C> | null, t.OutputOf<C> | null, unknown>(
    `${codec.name} | null`,
    (u): u is t.TypeOf<C> | null => u === null || codec.is(u),
    (u, c) => {
      if (u === null) return t.success(null);
      // Validate as if the inner codec stood here, so error paths and names read as its own.
      const last = c[c.length - 1];
      return codec.validate(u, last ? [...c.slice(0, -1), { ...last, type: codec }] : c);
    },
    (a) => (a === null ? null : codec.encode(a)),
  );
}

/** Optional vendor strings sometimes come back as `null`: accept both and treat null as absent. */
const OptString = orNull(t.string);

// ---------------------------------------------------------------------------------------------
// Contacts

export const CcEmailAddress = t.intersection(
  [
    t.type({
      address: NonEmptyString,
      permission_to_send: t.string,
    }),
    t.partial({
      created_at: OptString,
      updated_at: OptString,
      opt_in_source: OptString,
      opt_in_date: OptString,
      opt_out_source: OptString,
      opt_out_date: OptString,
      opt_out_reason: OptString,
      confirm_status: OptString,
    }),
  ],
  'EmailAddress',
);
export type CcEmailAddress = t.TypeOf<typeof CcEmailAddress>;

export const CcContact = t.intersection(
  [
    t.type({ contact_id: NonEmptyString }),
    t.partial({
      /** Absent (or null) on SMS-only contacts. */
      email_address: orNull(CcEmailAddress),
      /** Personal details only: an unsubscribe does NOT move it (see the seed forum thread). */
      updated_at: OptString,
      created_at: OptString,
      /** A date (`2024-06-09`), not a date-time; present only on deleted contacts. */
      deleted_at: OptString,
    }),
  ],
  'Contact',
);
export type CcContact = t.TypeOf<typeof CcContact>;

/** `_links.next.href` is host-relative and already starts with `/v3`. `_links` may be null or absent. */
export const CcPageLinks = t.partial({
  next: orNull(t.type({ href: t.string })),
});

export const CcContactsPage = t.intersection(
  [
    t.type({ contacts: t.array(t.unknown) }),
    t.partial({
      contacts_count: orNull(t.number),
      _links: orNull(CcPageLinks),
    }),
  ],
  'ContactsPage',
);
export type CcContactsPage = t.TypeOf<typeof CcContactsPage>;

/** `GET /contacts/counts`. */
export const CcContactCounts = t.partial(
  {
    total: t.number,
    explicit: t.number,
    implicit: t.number,
    pending: t.number,
    unsubscribed: t.number,
    new_subscriber: t.number,
  },
  'ContactCounts',
);
export type CcContactCounts = t.TypeOf<typeof CcContactCounts>;

// ---------------------------------------------------------------------------------------------
// Errors

/** One V3 API error. Both fields are documented but neither is marked required. */
export const CcApiError = t.partial({ error_key: t.string, error_message: t.string }, 'ApiError');
/** Usual shape: an array of errors. */
export const CcApiErrorList = t.array(CcApiError, 'ApiErrorList');

export interface ParsedApiError {
  readonly errorKey: string | null;
  readonly errorMessage: string | null;
}

/**
 * Read an API error body in either shape: `[{error_key, error_message}, ...]` (most errors) or a single
 * `{error_key, error_message}` (401). Anything else (HTML from a proxy, empty body) yields nulls and a
 * short text excerpt in `errorMessage`.
 */
export function parseApiError(body: unknown): ParsedApiError {
  const list = CcApiErrorList.decode(body);
  if (!isLeft(list) && list.right.length > 0) {
    const keys = list.right.map((e) => e.error_key).filter((k): k is string => typeof k === 'string');
    const msgs = list.right.map((e) => e.error_message).filter((m): m is string => typeof m === 'string');
    return { errorKey: keys[0] ?? null, errorMessage: msgs.length > 0 ? msgs.join('; ') : null };
  }
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    const single = CcApiError.decode(body);
    if (!isLeft(single) && (single.right.error_key !== undefined || single.right.error_message !== undefined)) {
      return { errorKey: single.right.error_key ?? null, errorMessage: single.right.error_message ?? null };
    }
  }
  if (typeof body === 'string' && body.trim().length > 0) {
    // Redact before cutting: a secret split by the cut could no longer be recognised.
    const text = redact(body.replace(/\s+/g, ' ').trim());
    return { errorKey: null, errorMessage: text.length > 200 ? text.slice(0, 197) + '...' : text };
  }
  return { errorKey: null, errorMessage: null };
}

// ---------------------------------------------------------------------------------------------
// OAuth

/**
 * A lifetime in seconds: a finite number, or a string holding one (`"86400"`; some OAuth servers and proxies
 * send strings). Bounds are applied where the value is used (`storeTokens`), not here.
 */
export const LenientSeconds = new t.Type<number, number, unknown>(
  'seconds (a number)',
  (u): u is number => typeof u === 'number' && Number.isFinite(u),
  (u, c) => {
    if (typeof u === 'number' && Number.isFinite(u)) return t.success(u);
    if (typeof u === 'string' && /^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$/.test(u)) {
      const n = Number(u);
      if (Number.isFinite(n)) return t.success(n);
    }
    return t.failure(u, c);
  },
  (a) => a,
);

/** Token endpoint success (`authorization_code`, `refresh_token`, device code grants). */
export const TokenResponse = t.intersection(
  [
    t.type({ access_token: NonEmptyString }),
    t.partial({
      token_type: OptString,
      expires_in: orNull(LenientSeconds),
      /** Present when the app asked for `offline_access`; a NEW value on every refresh when rotation is on. */
      refresh_token: orNull(t.string),
      scope: OptString,
    }),
  ],
  'TokenResponse',
);
export type TokenResponse = t.TypeOf<typeof TokenResponse>;

/** RFC 6749 §5.2 error body: `{error, error_description?}`. */
export const OAuthError = t.intersection(
  [t.type({ error: t.string }), t.partial({ error_description: OptString })],
  'OAuthError',
);
export type OAuthError = t.TypeOf<typeof OAuthError>;

/** RFC 8628 device authorization response. */
export const DeviceAuthorization = t.intersection(
  [
    t.type({
      device_code: NonEmptyString,
      user_code: NonEmptyString,
      verification_uri: t.string,
    }),
    t.partial({
      verification_uri_complete: t.string,
      expires_in: t.number,
      interval: t.number,
    }),
  ],
  'DeviceAuthorization',
);
export type DeviceAuthorization = t.TypeOf<typeof DeviceAuthorization>;

/** The daily request counter persisted in the key/value store under `daily_usage`. */
export const DailyUsage = t.type({ day: t.string, used: t.number }, 'DailyUsage');
export type DailyUsage = t.TypeOf<typeof DailyUsage>;

// ---------------------------------------------------------------------------------------------
// Page and contact decoding

/** Decode the page envelope. Returns readable problems when it is not a contacts page. */
export function decodeContactsPage(
  body: unknown,
): { ok: true; page: CcContactsPage } | { ok: false; problems: string[] } {
  const r = CcContactsPage.decode(body);
  if (isLeft(r)) return { ok: false, problems: formatErrors(r.left) };
  return { ok: true, page: r.right };
}

/** The first of the candidates that is a parseable date-time, verbatim (the vendor's own string). */
function firstDateTime(...candidates: Array<string | null | undefined>): string | null {
  for (const c of candidates) {
    if (typeof c === 'string' && c.trim() !== '' && !Number.isNaN(Date.parse(c))) return c;
  }
  return null;
}

function presentString(s: string | null | undefined): string | null {
  return typeof s === 'string' && s.trim() !== '' ? s : null;
}

/**
 * Map a decoded contact with an email address to what the engine compares.
 * - `optedOutAt` = `email_address.opt_out_date`, else `email_address.updated_at`, else null; a value that
 *   does not parse as a date is skipped rather than passed on (the engine then uses its own fallback).
 *   The top-level `updated_at` is never used: it tracks personal details, not the email permission.
 * - `deleted` = `deleted_at` is present (a deleted contact may still be subscribed, and an unsubscribed
 *   contact stays unsubscribed when deleted).
 */
export function toObservedContact(c: CcContact & { email_address: CcEmailAddress }): ObservedContact {
  const e = c.email_address;
  const source = presentString(e.opt_out_source);
  return {
    email: normaliseEmail(e.address),
    contactId: c.contact_id,
    // compared case-insensitively: `UNSUBSCRIBED` is unsubscribed
    permission: e.permission_to_send.trim().toLowerCase(),
    optedOutAt: firstDateTime(e.opt_out_date, e.updated_at),
    source: source === null ? null : canonicalOptOutSource(source).value,
    reason: presentString(e.opt_out_reason),
    deleted: presentString(c.deleted_at) !== null,
  };
}

export interface DecodedContacts {
  readonly contacts: ObservedContact[];
  readonly skippedNoEmail: number;
  readonly quarantined: number;
  /** Emails read from the quarantined records (see SourcePage.quarantinedEmails). */
  readonly quarantinedEmails: string[];
  /** Quarantined records whose email address is present but unreadable. */
  readonly quarantinedUnidentified: number;
}

/** `email_address.permission_to_send` values (API-NOTES; swagger 3.0.178), compared case-insensitively. */
export const PERMISSIONS_TO_SEND = [
  'explicit',
  'implicit',
  'not_set',
  'pending_confirmation',
  'temp_hold',
  'unsubscribed',
] as const;
/** `email_address.opt_out_source` values known today (the contract says Contact|Account; System was seen). */
export const OPT_OUT_SOURCES = ['Contact', 'Account', 'System'] as const;
/** A date later than now by more than this is not believed (clock skew allowance). */
export const FUTURE_DATE_SKEW_MS = 24 * 3600_000;
/** A date before this is not believed either (Constant Contact did not exist). */
export const EARLIEST_DATE = '1990-01-01T00:00:00Z';

/**
 * Where a decoded contact cannot be trusted as it stands: an unknown `permission_to_send`, or an opt-out or
 * permission date in the future (beyond FUTURE_DATE_SKEW_MS) or before EARLIEST_DATE (`+275760-09-13T00:00:00Z`,
 * `9999-12-31`). Returns the problems, empty when the contact is usable.
 */
export function contactProblems(c: CcContact & { email_address: CcEmailAddress }, now: Date): string[] {
  const problems: string[] = [];
  const e = c.email_address;
  const permission = e.permission_to_send.trim().toLowerCase();
  if (!(PERMISSIONS_TO_SEND as readonly string[]).includes(permission)) {
    problems.push(
      `email_address.permission_to_send: got ${JSON.stringify(e.permission_to_send.slice(0, 60))}, expected one of ${PERMISSIONS_TO_SEND.join(', ')}`,
    );
  }
  const latest = now.getTime() + FUTURE_DATE_SKEW_MS;
  const earliest = Date.parse(EARLIEST_DATE);
  for (const [field, value] of [
    ['opt_out_date', e.opt_out_date],
    ['updated_at', e.updated_at],
  ] as const) {
    if (typeof value !== 'string' || value.trim() === '') continue;
    const t = Date.parse(value);
    if (Number.isNaN(t)) continue; // unparseable: skipped by toObservedContact, as before
    if (t > latest)
      problems.push(
        `email_address.${field}: got ${JSON.stringify(value.slice(0, 40))}, a date in the future (now is ${now.toISOString()})`,
      );
    else if (t < earliest)
      problems.push(
        `email_address.${field}: got ${JSON.stringify(value.slice(0, 40))}, a date before ${EARLIEST_DATE.slice(0, 10)}`,
      );
  }
  return problems;
}

/** The known spelling of an `opt_out_source` compared case-insensitively; an unknown one verbatim (trimmed). */
export function canonicalOptOutSource(s: string): { value: string; known: boolean } {
  const v = s.trim();
  const known = OPT_OUT_SOURCES.find((k) => k.toLowerCase() === v.toLowerCase());
  return known ? { value: known, known: true } : { value: v, known: false };
}

/** The normalised email of a raw record, when it has a readable one. `undefined`: it has no email address at all. */
function rawEmail(raw: unknown): string | null | undefined {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return null;
  const ea = (raw as Record<string, unknown>)['email_address'];
  if (ea === undefined || ea === null) return undefined;
  if (typeof ea !== 'object' || Array.isArray(ea)) return null;
  const address = (ea as Record<string, unknown>)['address'];
  if (typeof address !== 'string' || address.trim() === '') return null;
  return normaliseEmail(address);
}

/** The contact id of a raw record if it has a usable one, for the quarantine row. */
function rawContactId(raw: unknown): string | null {
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    const id = (raw as Record<string, unknown>)['contact_id'];
    if (typeof id === 'string' && id.trim() !== '') return id;
  }
  return null;
}

/**
 * Decode every raw contact of a page on its own. Malformed ones go to `quarantine` with a readable reason
 * (`email_address.permission_to_send: got nothing (missing), expected string`); contacts without an email
 * address (SMS-only) are counted and skipped.
 */
export function decodeContacts(
  raws: readonly unknown[],
  quarantine: (rec: QuarantinedRecord) => void,
  now: Date = new Date(),
  onUnknownSource?: (value: string, contactId: string) => void,
): DecodedContacts {
  const contacts: ObservedContact[] = [];
  let skippedNoEmail = 0;
  let quarantined = 0;
  const quarantinedEmails: string[] = [];
  let quarantinedUnidentified = 0;
  const reject = (reason: string, raw: unknown, recordId: string | null): void => {
    quarantined += 1;
    const email = rawEmail(raw);
    if (typeof email === 'string') quarantinedEmails.push(email);
    else if (email === null) quarantinedUnidentified += 1;
    quarantine({ reason, raw, recordId, email: email ?? null });
  };
  for (const raw of raws) {
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      reject(`(root): got ${(JSON.stringify(raw) ?? String(raw)).slice(0, 80)}, expected a contact object`, raw, null);
      continue;
    }
    const r = CcContact.decode(raw);
    if (isLeft(r)) {
      reject(formatErrors(r.left).join('; '), raw, rawContactId(raw));
      continue;
    }
    const c = r.right;
    if (c.email_address === undefined || c.email_address === null) {
      skippedNoEmail += 1;
      continue;
    }
    const withEmail = { ...c, email_address: c.email_address };
    const problems = contactProblems(withEmail, now);
    if (problems.length > 0) {
      reject(problems.join('; '), raw, c.contact_id);
      continue;
    }
    const observed = toObservedContact(withEmail);
    const rawSource = presentString(c.email_address.opt_out_source);
    if (rawSource !== null && !canonicalOptOutSource(rawSource).known) onUnknownSource?.(rawSource, c.contact_id);
    contacts.push(observed);
  }
  return { contacts, skippedNoEmail, quarantined, quarantinedEmails, quarantinedUnidentified };
}
