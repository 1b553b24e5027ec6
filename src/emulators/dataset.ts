/**
 * The emulators' generated dataset: Constant Contact contacts plus the HubSpot and Salesforce records that
 * share their emails, with every hard case the connector must get right, flagged per record.
 *
 * Deterministic: the same `seed`, `contacts` and `anchor` always produce the same data (mulberry32 streams
 * derived per vendor). Timestamps are kept as epoch milliseconds rounded to whole seconds and formatted only
 * when a server emits them, so 100,000 contacts generate in well under a second.
 *
 * Hard cases (names used in `GroundTruth.hardCases`):
 * - updatedAfterTrap: unsubscribed, top-level `updated_at` OLDER than the opt-out (`updated_after` misses it).
 *   Computed from the data (most opt-outs are traps, as in real accounts); `recentTrap` are those that opted
 *   out in the last 7 days and whose `updated_at` is over 30 days old: an incremental sync must find them.
 * - deletedNotUnsubscribed: `deleted_at` set, permission still implicit/explicit. Per the swagger text, a
 *   deleted contact's `email_address` carries `opt_out_source` and `opt_out_date` (the deletion): NOT an opt-out.
 * - unsubscribedThenDeleted: unsubscribed, later deleted: IS an opt-out (only visible with status=all/deleted).
 * - smsOnly: no `email_address` at all.
 * - mixedCaseCc: the CC address has upper case and/or surrounding whitespace.
 * - resubscribed: opted out once, then opted back in (now explicit): NOT an opt-out; any CRM record that is
 *   already suppressed must stay suppressed (never resubscribe automatically).
 * CRM-side cases are listed in `GroundTruth.hardCases` too (mixed-case CRM emails, duplicates, converted
 * Leads, already-suppressed records, opt-outs missing from a CRM).
 * HubSpot secondary addresses (`hs_additional_emails`, `;`-separated, sometimes with spaces and mixed case):
 * some Constant Contact addresses (opted out or not) are held ONLY as a secondary address of a HubSpot
 * contact, whose primary is another address (a new "work address" contact, or an existing contact); noise
 * aliases that exist nowhere else are mixed in. Drawn from their own PRNG stream ('hubspot-secondary') and
 * appended after the other HubSpot contacts, so the primary-address data keeps its shape.
 */
import { createRng, deriveSeed, Rng } from './prng';
import { KEY_PREFIX, makeSfId } from './sfid';

export const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

export type Permission = 'explicit' | 'implicit' | 'not_set' | 'pending_confirmation' | 'temp_hold' | 'unsubscribed';

export type CcCase =
  'deletedNotUnsubscribed' | 'unsubscribedThenDeleted' | 'smsOnly' | 'mixedCaseCc' | 'resubscribed' | 'recentOptOut';

export interface CcEmail {
  /** The address as Constant Contact stores it (may carry upper case / whitespace: see mixedCaseCc). */
  raw: string;
  /** trim + lower-case. */
  norm: string;
  permission: Permission;
  createdMs: number;
  updatedMs: number;
  optInSource: 'Contact' | 'Account';
  optInMs: number | null;
  optOutSource: string | null;
  optOutMs: number | null;
  optOutReason: string | null;
  confirmStatus: 'confirmed' | 'pending' | 'off';
}

export interface CcSms {
  id: string;
  address: string;
  dialCode: string;
  countryCode: string;
  permission: string;
  createdMs: number;
}

export interface CcContact {
  /** Position in the account: the stable order of GET /contacts and the keyset of its cursor. */
  idx: number;
  id: string;
  email: CcEmail | null;
  firstName: string;
  lastName: string;
  jobTitle: string | null;
  companyName: string | null;
  createSource: 'Contact' | 'Account';
  updateSource: 'Contact' | 'Account' | null;
  createdMs: number;
  /** Top-level updated_at: personal details only (the trap). */
  updatedMs: number;
  deletedMs: number | null;
  sms: CcSms | null;
  cases: CcCase[];
  /** Resubscribed contacts: when they had opted out before. */
  previousOptOutMs: number | null;
  listIds: string[];
}

export interface HsContact {
  id: string;
  /** Normalised email (the lookup key). */
  norm: string;
  createdMs: number;
  updatedMs: number;
  /** Property values as HubSpot returns them: strings, or null when unset. `email` keeps its raw form. */
  props: Record<string, string | null>;
  /** hs_email_optout when the dataset was generated (ground truth is judged against it). */
  initialOptOut: boolean;
  mixedCase: boolean;
}

/** One secondary address (`hs_additional_emails` value) of a HubSpot contact. */
export interface HsAdditionalEmail {
  /** trim + lower-case (unique across every primary and secondary address of the portal). */
  norm: string;
  /** As stored in hs_additional_emails (may carry upper case). */
  raw: string;
  contactId: string;
  /** Address-level status at generation: unsubscribed from all email already. */
  initialUnsubscribed: boolean;
}

export type SfType = 'Contact' | 'Lead' | 'Account';

export interface SfRecord {
  Id: string;
  type: SfType;
  /** Canonical field names (see salesforce describe). Booleans are booleans, datetimes ISO strings. */
  fields: Record<string, string | number | boolean | null>;
  /** Normalised email (Email, or PersonEmail on person accounts); null when the record has none. */
  norm: string | null;
  deleted: boolean;
  initialOptOut: boolean;
  mixedCase: boolean;
  /** Duplicate-shape tag for the ground truth: contactAndLead, twoContacts, convertedLead, personAccount. */
  shape: string;
}

/** Comm-preferences state of one email in HubSpot (sparse: only emails with a recorded status). */
export interface HsEmailStatus {
  /** Unsubscribed from all email (portal-wide) at this time, or null. */
  allUnsubMs: number | null;
  subs: Map<
    number,
    {
      status: 'SUBSCRIBED' | 'UNSUBSCRIBED' | 'NOT_SPECIFIED';
      ms: number;
      legalBasis: string | null;
      legalBasisExplanation: string | null;
      source: string;
    }
  >;
}

export interface DatasetOptions {
  /** PRNG seed (default 42). */
  seed?: number;
  /** Number of Constant Contact contacts (default 20,000). At least 60 to host every forced hard case. */
  contacts?: number;
  /** "Now" of the dataset: every generated event happens before it (default: the current time). */
  anchor?: Date | string | number;
  /** Share of contacts that are opted out (default 0.12). */
  optOutRate?: number;
  /** Generate Salesforce Person Accounts (Account.IsPersonAccount / PersonEmail). Default false. */
  personAccounts?: boolean;
}

export interface Dataset {
  seed: number;
  anchorMs: number;
  personAccounts: boolean;
  cc: CcContact[];
  hubspot: HsContact[];
  hubspotStatuses: Map<string, HsEmailStatus>;
  /** Secondary addresses of HubSpot contacts (also in each contact's props.hs_additional_emails). */
  hubspotAdditional: HsAdditionalEmail[];
  salesforce: SfRecord[];
  listIds: string[];
  /** Next free numeric HubSpot id and Salesforce counter, for records created later. */
  nextHubSpotId: number;
  nextSfCounter: number;
}

const FIRST = [
  'Ada',
  'Grace',
  'Alan',
  'Edsger',
  'Barbara',
  'Donald',
  'Frances',
  'John',
  'Katherine',
  'Linus',
  'Margaret',
  'Niklaus',
  'Radia',
  'Tim',
  'Ken',
  'Dennis',
  'Hedy',
  'Claude',
  'Sophie',
  'Guido',
  'Bjarne',
  'Anita',
  'Leslie',
  'Shafi',
  'Whitfield',
  'Ivan',
  'Jean',
  'Adele',
  'Brian',
  'Carol',
  'Diego',
  'Elena',
  'Farid',
  'Greta',
  'Hiro',
  'Ines',
  'Jonas',
  'Kemal',
  'Lucia',
  'Mateo',
];
const LAST = [
  'Lovelace',
  'Hopper',
  'Turing',
  'Dijkstra',
  'Liskov',
  'Knuth',
  'Allen',
  'McCarthy',
  'Johnson',
  'Torvalds',
  'Hamilton',
  'Wirth',
  'Perlman',
  'BernersLee',
  'Thompson',
  'Ritchie',
  'Lamarr',
  'Shannon',
  'Wilson',
  'vanRossum',
  'Stroustrup',
  'Borg',
  'Lamport',
  'Goldwasser',
  'Diffie',
  'Sutherland',
  'Sammet',
  'Goldberg',
  'Kernighan',
  'Shaw',
  'Alvarez',
  'Petrova',
  'Haddad',
  'Nilsson',
  'Tanaka',
  'Moreau',
  'Berg',
  'Yilmaz',
  'Rossi',
  'Garcia',
];
const DOMAINS = [
  'example.com',
  'example.org',
  'example.net',
  'mail.example.com',
  'corp.example.org',
  'shop.example.net',
];
const REASONS = [
  'I am no longer interested in this service.',
  'Too many emails.',
  'Never signed up.',
  'Content not relevant.',
  'Switching providers.',
];
const COMPANIES = ['Acme Corp.', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Vandelay Industries', null, null];
const JOBS = ['Engineer', 'Manager', 'Director', 'Analyst', null, null, null];

/** Seconds precision everywhere: CC emits second-precision timestamps and filters compare them. */
const sec = (ms: number): number => Math.floor(ms / 1000) * 1000;

/** A mixed-case (and sometimes whitespace-padded) variant of a lower-case address that differs from it. */
export function messUp(rng: Rng, norm: string, whitespace: boolean): string {
  let out = '';
  for (const ch of norm) out += /[a-z]/.test(ch) && rng.chance(0.4) ? ch.toUpperCase() : ch;
  if (out === norm) out = norm[0].toUpperCase() + norm.slice(1);
  if (whitespace) {
    const lead = rng.chance(0.5) ? ' ' : '';
    out = `${lead}${out}${lead ? ' ' : '\t'}`;
  }
  return out;
}

function anchorOf(a: DatasetOptions['anchor']): number {
  if (a === undefined) return sec(Date.now());
  const ms = a instanceof Date ? a.getTime() : typeof a === 'number' ? a : Date.parse(a);
  if (!Number.isFinite(ms)) throw new Error(`dataset anchor is not a date: ${String(a)}`);
  return sec(ms);
}

/** Forced per-index plans guarantee that every hard case exists even in small datasets. */
type Forced =
  | 'recentTrap'
  | 'updatedAfterOptOut'
  | 'unsubDeleted'
  | 'deletedNotUnsub'
  | 'sms'
  | 'resub'
  | 'resubSuppressed'
  | 'mixedCc'
  | 'hsAlready'
  | 'hsMissing'
  | 'hsMixed'
  | 'sfContactAndLead'
  | 'sfTwoContacts'
  | 'sfConverted'
  | 'sfAlready'
  | 'sfMissing'
  | 'sfMixed'
  | 'sfPartlySuppressed'
  | 'personAccount'
  | 'deletedNotUnsubInCrm'
  | 'plainOptOut'
  | 'hsSecondary'
  | 'hsSecondaryAlready'
  | 'hsSecondarySubscribed';

const FORCED_PLAN: Forced[] = [
  'recentTrap',
  'recentTrap',
  'recentTrap',
  'updatedAfterOptOut',
  'unsubDeleted',
  'unsubDeleted',
  'deletedNotUnsub',
  'deletedNotUnsubInCrm',
  'sms',
  'sms',
  'resub',
  'resubSuppressed',
  'mixedCc',
  'mixedCc',
  'hsAlready',
  'hsAlready',
  'hsMissing',
  'hsMissing',
  'hsMixed',
  'sfContactAndLead',
  'sfContactAndLead',
  'sfTwoContacts',
  'sfTwoContacts',
  'sfConverted',
  'sfConverted',
  'sfAlready',
  'sfAlready',
  'sfMissing',
  'sfMissing',
  'sfMixed',
  'sfPartlySuppressed',
  'personAccount',
  'plainOptOut',
  'plainOptOut',
  'hsSecondary',
  'hsSecondary',
  'hsSecondaryAlready',
  'hsSecondarySubscribed',
];

const OPTED_OUT_FORCED = new Set<Forced>([
  'recentTrap',
  'updatedAfterOptOut',
  'unsubDeleted',
  'hsAlready',
  'hsMissing',
  'hsMixed',
  'sfContactAndLead',
  'sfTwoContacts',
  'sfConverted',
  'sfAlready',
  'sfMissing',
  'sfMixed',
  'sfPartlySuppressed',
  'personAccount',
  'plainOptOut',
  'mixedCc',
  'hsSecondary',
  'hsSecondaryAlready',
]);

const HS_SECONDARY_FORCED = new Set<Forced>(['hsSecondary', 'hsSecondaryAlready', 'hsSecondarySubscribed']);

export const MIN_CONTACTS = 60;

export function generateDataset(opts: DatasetOptions = {}): Dataset {
  const seed = opts.seed ?? 42;
  const n = opts.contacts ?? 20_000;
  if (!Number.isInteger(n) || n < MIN_CONTACTS)
    throw new Error(`dataset needs at least ${MIN_CONTACTS} contacts (got ${n})`);
  const A = anchorOf(opts.anchor);
  const optOutRate = opts.optOutRate ?? 0.12;
  const personAccounts = opts.personAccounts ?? false;

  // --- forced hard cases at pseudo-random distinct positions
  const place = createRng(deriveSeed(seed, 'place'));
  const forced = new Map<number, Forced>();
  for (const f of FORCED_PLAN) {
    let i = place.int(0, n - 1);
    while (forced.has(i)) i = (i + 1) % n;
    forced.set(i, f);
  }

  const rng = createRng(deriveSeed(seed, 'cc'));
  const listIds = [rng.uuid(), rng.uuid(), rng.uuid()];
  // Shared (never mutated) membership arrays: fewer allocations for large datasets.
  const memberships = listIds.map((l) => [l]);
  const cc: CcContact[] = new Array(n);
  const minCreated = A - 3 * 365 * DAY_MS;

  for (let i = 0; i < n; i++) {
    const f = forced.get(i);
    const first = FIRST[rng.int(0, FIRST.length - 1)];
    const last = LAST[rng.int(0, LAST.length - 1)];
    const domain = DOMAINS[rng.int(0, DOMAINS.length - 1)];
    const norm = `${first}.${last}.${i}@${domain}`.toLowerCase();
    // Traps need an old creation date; everyone is created at least 60 days ago.
    const createdMs = sec(minCreated + rng.next() * (A - 60 * DAY_MS - minCreated));
    const c: CcContact = {
      idx: i,
      id: rng.uuid(),
      email: null,
      firstName: first,
      lastName: last,
      jobTitle: JOBS[rng.int(0, JOBS.length - 1)],
      companyName: COMPANIES[rng.int(0, COMPANIES.length - 1)],
      createSource: rng.chance(0.7) ? 'Account' : 'Contact',
      updateSource: null,
      createdMs,
      updatedMs: createdMs,
      deletedMs: null,
      sms: null,
      cases: [],
      previousOptOutMs: null,
      listIds: memberships[rng.int(0, listIds.length - 1)],
    };
    cc[i] = c;

    // Category: forced, else random.
    let cat: 'normal' | 'unsub' | 'unsubDeleted' | 'deletedNotUnsub' | 'sms' | 'resub';
    const r = rng.next();
    if (f) {
      cat =
        f === 'unsubDeleted'
          ? 'unsubDeleted'
          : f === 'deletedNotUnsub' || f === 'deletedNotUnsubInCrm'
            ? 'deletedNotUnsub'
            : f === 'sms'
              ? 'sms'
              : f === 'resub' || f === 'resubSuppressed'
                ? 'resub'
                : OPTED_OUT_FORCED.has(f)
                  ? 'unsub'
                  : 'normal';
    } else if (r < optOutRate * 0.9) cat = 'unsub';
    else if (r < optOutRate) cat = 'unsubDeleted';
    else if (r < optOutRate + 0.01) cat = 'deletedNotUnsub';
    else if (r < optOutRate + 0.016) cat = 'sms';
    else if (r < optOutRate + 0.026) cat = 'resub';
    else cat = 'normal';

    if (cat === 'sms') {
      c.cases.push('smsOnly');
      c.sms = {
        id: rng.uuid(),
        address: `781555${String(rng.int(0, 9999)).padStart(4, '0')}`,
        dialCode: '1',
        countryCode: 'US',
        permission: 'explicit',
        createdMs,
      };
      c.updatedMs = sec(createdMs + rng.next() * (A - createdMs) * 0.5);
      continue;
    }

    const mixed = f === 'mixedCc' || (!f && rng.chance(0.03));
    const raw = mixed ? messUp(rng, norm, rng.chance(0.4)) : norm;
    if (mixed) c.cases.push('mixedCaseCc');
    const email: CcEmail = {
      raw,
      norm,
      permission: 'implicit',
      createdMs,
      updatedMs: createdMs,
      optInSource: c.createSource,
      optInMs: null,
      optOutSource: null,
      optOutMs: null,
      optOutReason: null,
      confirmStatus: 'off',
    };
    c.email = email;

    if (cat === 'normal') {
      const p = rng.next();
      email.permission =
        p < 0.45
          ? 'explicit'
          : p < 0.85
            ? 'implicit'
            : p < 0.93
              ? 'pending_confirmation'
              : p < 0.97
                ? 'not_set'
                : 'temp_hold';
      if (email.permission === 'explicit') {
        email.optInMs = createdMs;
        email.confirmStatus = 'confirmed';
      } else if (email.permission === 'pending_confirmation') email.confirmStatus = 'pending';
      if (rng.chance(0.4)) {
        c.updatedMs = sec(createdMs + rng.next() * (A - createdMs));
        c.updateSource = rng.chance(0.5) ? 'Account' : 'Contact';
      }
      if (rng.chance(0.2)) email.updatedMs = sec(createdMs + rng.next() * (A - createdMs));
      continue;
    }

    if (cat === 'deletedNotUnsub') {
      c.cases.push('deletedNotUnsubscribed');
      email.permission = rng.chance(0.5) ? 'implicit' : 'explicit';
      if (email.permission === 'explicit') {
        email.optInMs = createdMs;
        email.confirmStatus = 'confirmed';
      }
      c.deletedMs = sec(createdMs + DAY_MS + rng.next() * (A - HOUR_MS - createdMs - DAY_MS));
      // Per the swagger: a deleted contact's email_address shows opt_out_source and opt_out_date (the deletion).
      email.optOutSource = 'Account';
      email.optOutMs = c.deletedMs;
      email.updatedMs = c.deletedMs;
      continue;
    }

    if (cat === 'resub') {
      c.cases.push('resubscribed');
      const outMs = sec(createdMs + DAY_MS + rng.next() * (A - 10 * DAY_MS - createdMs - DAY_MS));
      const backMs = sec(outMs + DAY_MS + rng.next() * (A - outMs - 2 * DAY_MS));
      c.previousOptOutMs = outMs;
      email.permission = 'explicit';
      email.optInSource = 'Contact';
      email.optInMs = backMs;
      email.confirmStatus = 'confirmed';
      email.updatedMs = backMs;
      continue;
    }

    // Opted out (possibly deleted afterwards).
    let outMs: number;
    const recent = f === 'recentTrap' || (!f && rng.chance(0.03));
    if (recent) {
      outMs = sec(A - HOUR_MS - rng.next() * 6 * DAY_MS);
      c.cases.push('recentOptOut');
    } else {
      outMs = sec(createdMs + DAY_MS + rng.next() * (A - 7 * DAY_MS - createdMs - DAY_MS));
    }
    email.permission = 'unsubscribed';
    email.optOutMs = outMs;
    email.updatedMs = outMs;
    email.optOutSource = rng.chance(0.85) ? 'Contact' : 'Account';
    email.optOutReason =
      email.optOutSource === 'Contact' && rng.chance(0.3) ? REASONS[rng.int(0, REASONS.length - 1)] : null;
    if (rng.chance(0.5)) {
      email.optInMs = createdMs;
      email.confirmStatus = 'confirmed';
    }
    const updatedAfter = f === 'updatedAfterOptOut' || (!f && !recent && rng.chance(0.2));
    if (updatedAfter) {
      c.updatedMs = sec(outMs + rng.next() * (A - outMs));
      c.updateSource = 'Account';
    } else if (f === 'recentTrap' || recent) {
      // Personal details last touched long before: over 30 days ago.
      c.updatedMs = sec(createdMs + rng.next() * Math.max(0, A - 40 * DAY_MS - createdMs));
      if (c.updatedMs > createdMs) c.updateSource = 'Contact';
    } else if (rng.chance(0.5)) {
      c.updatedMs = sec(createdMs + rng.next() * (outMs - createdMs));
      c.updateSource = 'Contact';
    }
    if (cat === 'unsubDeleted') {
      c.cases.push('unsubscribedThenDeleted');
      c.deletedMs = sec(outMs + rng.next() * (A - outMs));
    }
  }

  // --- HubSpot
  const hrng = createRng(deriveSeed(seed, 'hubspot'));
  const hubspot: HsContact[] = [];
  const hubspotStatuses = new Map<string, HsEmailStatus>();
  let hsId = 1001;
  const addHs = (
    norm: string,
    raw: string,
    first: string,
    last: string,
    createdMs: number,
    optOut: boolean,
    mixed: boolean,
  ): void => {
    const id = String(hsId);
    hsId += hrng.int(1, 3);
    const updatedMs = sec(createdMs + hrng.next() * (A - createdMs) * 0.8);
    hubspot.push({
      id,
      norm,
      createdMs,
      updatedMs,
      props: { email: raw, firstname: first, lastname: last, hs_email_optout: optOut ? 'true' : 'false' },
      initialOptOut: optOut,
      mixedCase: mixed,
    });
    if (optOut)
      hubspotStatuses.set(norm, { allUnsubMs: sec(createdMs + (updatedMs - createdMs) * 0.5), subs: new Map() });
  };
  // Addresses that will be held only as a secondary address (decided on their own stream: xrng).
  const xrng = createRng(deriveSeed(seed, 'hubspot-secondary'));
  const secondaryOnly: Array<{ c: CcContact; f: Forced | undefined }> = [];
  for (const c of cc) {
    if (!c.email) continue;
    const f = forced.get(c.idx);
    const optedOut = c.email.permission === 'unsubscribed';
    if (f && HS_SECONDARY_FORCED.has(f)) {
      secondaryOnly.push({ c, f });
      continue;
    }
    const present =
      f === 'hsMissing'
        ? false
        : f === 'hsAlready' || f === 'hsMixed' || f === 'resubSuppressed' || f === 'deletedNotUnsubInCrm'
          ? true
          : hrng.chance(optedOut ? 0.85 : 0.7);
    if (!present) {
      // About 15% of the addresses without a primary-address contact are someone else's secondary address.
      if (!f && xrng.chance(0.15)) secondaryOnly.push({ c, f });
      continue;
    }
    const mixed = f === 'hsMixed' || (!f && hrng.chance(0.06));
    const raw = mixed ? messUp(hrng, c.email.norm, hrng.chance(0.3)) : c.email.norm;
    const suppressed =
      f === 'hsAlready' || f === 'resubSuppressed'
        ? true
        : f
          ? false
          : optedOut
            ? hrng.chance(0.15)
            : c.cases.includes('resubscribed')
              ? hrng.chance(0.5)
              : hrng.chance(0.02);
    addHs(c.email.norm, raw, c.firstName, c.lastName, sec(c.createdMs + hrng.next() * DAY_MS * 30), suppressed, mixed);
  }
  // Contacts that exist only in HubSpot.
  const hsOnly = Math.max(3, Math.floor(n * 0.03));
  for (let k = 0; k < hsOnly; k++) {
    const norm = `hubspot.only.${k}@example.com`;
    addHs(
      norm,
      norm,
      FIRST[k % FIRST.length],
      LAST[k % LAST.length],
      sec(minCreated + hrng.next() * (A - minCreated - DAY_MS)),
      hrng.chance(0.05),
      false,
    );
  }
  const hubspotAdditional = addSecondaryAddresses(xrng, A, hubspot, hubspotStatuses, secondaryOnly, () => {
    const id = String(hsId);
    hsId += xrng.int(1, 3);
    return id;
  });

  // --- Salesforce
  const srng = createRng(deriveSeed(seed, 'salesforce'));
  const salesforce: SfRecord[] = [];
  let sfCounter = 1;
  const sfEmail = (norm: string, mixed: boolean): string => (mixed ? messUp(srng, norm, false) : norm);
  const addSf = (
    type: SfType,
    norm: string | null,
    first: string,
    last: string,
    createdMs: number,
    optOut: boolean,
    mixed: boolean,
    shape: string,
    extra: Record<string, string | number | boolean | null> = {},
  ): SfRecord => {
    const Id = makeSfId(KEY_PREFIX[type], sfCounter++);
    const modified = new Date(sec(createdMs + srng.next() * (A - createdMs) * 0.8)).toISOString();
    const created = new Date(createdMs).toISOString();
    let fields: Record<string, string | number | boolean | null>;
    const email = norm === null ? null : sfEmail(norm, mixed);
    if (type === 'Account') {
      const person = extra.IsPersonAccount === true;
      fields = {
        Id,
        Name: person ? `${first} ${last}` : `${last} Holdings`,
        IsPersonAccount: person,
        PersonEmail: person ? email : null,
        PersonHasOptedOutOfEmail: person ? optOut : false,
        FirstName: person ? first : null,
        LastName: person ? last : null,
        CreatedDate: created,
        LastModifiedDate: modified,
        IsDeleted: false,
      };
      if (!personAccounts) {
        delete fields.IsPersonAccount;
        delete fields.PersonEmail;
        delete fields.PersonHasOptedOutOfEmail;
        delete fields.FirstName;
        delete fields.LastName;
      }
    } else {
      fields = {
        Id,
        FirstName: first,
        LastName: last,
        Email: email,
        HasOptedOutOfEmail: optOut,
        CreatedDate: created,
        LastModifiedDate: modified,
        IsDeleted: false,
        CC_Opt_Out_Date__c: null,
        CC_Opt_Out_Source__c: null,
        CC_Opt_Out_Reason__c: null,
      };
      if (type === 'Lead') {
        fields.Company = `${last} LLC`;
        fields.Status = 'Open - Not Contacted';
        fields.IsConverted = false;
        fields.ConvertedContactId = null;
        fields.ConvertedDate = null;
      } else {
        fields.AccountId = null;
      }
    }
    Object.assign(fields, extra);
    const rec: SfRecord = {
      Id,
      type,
      fields,
      norm,
      deleted: false,
      initialOptOut: optOut,
      mixedCase: mixed && norm !== null,
      shape,
    };
    salesforce.push(rec);
    return rec;
  };
  for (const c of cc) {
    if (!c.email) continue;
    const f = forced.get(c.idx);
    const optedOut = c.email.permission === 'unsubscribed';
    const resub = c.cases.includes('resubscribed');
    const present =
      f === 'sfMissing'
        ? false
        : f && f !== 'hsMissing' && f !== 'hsAlready' && f !== 'hsMixed' && f !== 'sms'
          ? true
          : srng.chance(optedOut ? 0.8 : 0.6);
    if (!present) continue;
    const suppressedRoll = (): boolean =>
      f === 'sfAlready' || f === 'resubSuppressed'
        ? true
        : f
          ? false
          : optedOut
            ? srng.chance(0.15)
            : resub
              ? srng.chance(0.5)
              : srng.chance(0.02);
    const mixedRoll = (): boolean => f === 'sfMixed' || (!f && srng.chance(0.06));
    const created = sec(c.createdMs + srng.next() * DAY_MS * 30);
    const norm = c.email.norm;
    let shape: string;
    if (f === 'sfContactAndLead') shape = 'contactAndLead';
    else if (f === 'sfTwoContacts' || f === 'sfPartlySuppressed') shape = 'twoContacts';
    else if (f === 'sfConverted') shape = 'convertedLead';
    else if (f === 'personAccount') shape = personAccounts ? 'personAccount' : 'contact';
    else if (f) shape = 'contact';
    else {
      const p = srng.next();
      shape =
        p < 0.65
          ? 'contact'
          : p < 0.82
            ? 'lead'
            : p < 0.87
              ? 'convertedLead'
              : p < 0.93
                ? 'contactAndLead'
                : p < 0.97
                  ? 'twoContacts'
                  : personAccounts
                    ? 'personAccount'
                    : 'contact';
    }
    switch (shape) {
      case 'contact':
        addSf('Contact', norm, c.firstName, c.lastName, created, suppressedRoll(), mixedRoll(), shape);
        break;
      case 'lead':
        addSf('Lead', norm, c.firstName, c.lastName, created, suppressedRoll(), mixedRoll(), shape);
        break;
      case 'convertedLead': {
        const contact = addSf(
          'Contact',
          norm,
          c.firstName,
          c.lastName,
          created + DAY_MS,
          suppressedRoll(),
          mixedRoll(),
          shape,
        );
        addSf('Lead', norm, c.firstName, c.lastName, created, srng.chance(0.1), mixedRoll(), shape, {
          IsConverted: true,
          Status: 'Closed - Converted',
          ConvertedContactId: contact.Id,
          ConvertedDate: new Date(created + DAY_MS).toISOString().slice(0, 10),
        });
        break;
      }
      case 'contactAndLead':
        addSf('Contact', norm, c.firstName, c.lastName, created, suppressedRoll(), mixedRoll(), shape);
        addSf('Lead', norm, c.firstName, c.lastName, created + HOUR_MS, suppressedRoll(), true, shape);
        break;
      case 'twoContacts':
        addSf(
          'Contact',
          norm,
          c.firstName,
          c.lastName,
          created,
          f === 'sfPartlySuppressed' ? true : suppressedRoll(),
          mixedRoll(),
          shape,
        );
        addSf(
          'Contact',
          norm,
          c.firstName,
          c.lastName,
          created + HOUR_MS,
          f === 'sfPartlySuppressed' ? false : suppressedRoll(),
          mixedRoll(),
          shape,
        );
        break;
      case 'personAccount':
        addSf('Account', norm, c.firstName, c.lastName, created, suppressedRoll(), mixedRoll(), shape, {
          IsPersonAccount: true,
        });
        break;
    }
  }
  // Records that exist only in Salesforce, and business accounts (no email).
  const sfOnly = Math.max(3, Math.floor(n * 0.03));
  for (let k = 0; k < sfOnly; k++) {
    const norm = `salesforce.only.${k}@example.org`;
    addSf(
      k % 3 === 0 ? 'Lead' : 'Contact',
      norm,
      FIRST[k % FIRST.length],
      LAST[k % LAST.length],
      sec(minCreated + srng.next() * (A - minCreated - DAY_MS)),
      srng.chance(0.05),
      false,
      'sfOnly',
    );
  }
  const business = Math.max(2, Math.floor(n * 0.01));
  for (let k = 0; k < business; k++) {
    addSf(
      'Account',
      null,
      '',
      LAST[k % LAST.length],
      sec(minCreated + srng.next() * (A - minCreated - DAY_MS)),
      false,
      false,
      'businessAccount',
      personAccounts ? { IsPersonAccount: false } : {},
    );
  }

  return {
    seed,
    anchorMs: A,
    personAccounts,
    cc,
    hubspot,
    hubspotStatuses,
    hubspotAdditional,
    salesforce,
    listIds,
    nextHubSpotId: hsId,
    nextSfCounter: sfCounter,
  };
}

/** Join secondary addresses as HubSpot stores hs_additional_emails: `;`-separated, sometimes with spaces. */
export function joinAdditionalEmails(rng: Rng, raws: readonly string[]): string {
  return raws.map((r, i) => (i > 0 && rng.chance(0.4) ? ` ${r}` : r)).join(';');
}

/** Split hs_additional_emails into normalised addresses (trim + lower-case, empty values dropped). */
export function splitAdditionalEmails(value: string | null | undefined): string[] {
  if (!value) return [];
  return value
    .split(';')
    .map((v) => v.trim().toLowerCase())
    .filter((v) => v !== '');
}

/**
 * Give each address of `secondaryOnly` to a HubSpot contact as a secondary address: the first forced one
 * (and half of the random ones) to a NEW contact whose primary is a work address nobody else has; the rest
 * to existing contacts. Holders get 0-2 noise aliases too. Forced 'hsSecondaryAlready' (and ~15% of the
 * random opted-out ones) are already unsubscribed at address level.
 */
function addSecondaryAddresses(
  xrng: Rng,
  A: number,
  hubspot: HsContact[],
  statuses: Map<string, HsEmailStatus>,
  secondaryOnly: ReadonlyArray<{ c: CcContact; f: Forced | undefined }>,
  nextId: () => string,
): HsAdditionalEmail[] {
  const existing = hubspot.length;
  const held = new Map<HsContact, string[]>();
  const out: HsAdditionalEmail[] = [];
  let alias = 0;
  let forcedNew = false;
  for (const { c, f } of secondaryOnly) {
    const e = c.email!;
    let holder: HsContact;
    const toNew = (f === 'hsSecondary' && !forcedNew) || (f === undefined && xrng.chance(0.5)) || existing === 0;
    if (toNew) {
      if (f === 'hsSecondary') forcedNew = true;
      const createdMs = sec(c.createdMs + xrng.next() * DAY_MS * 30);
      const norm = `${c.firstName}.${c.lastName}.${c.idx}@work.example.net`.toLowerCase();
      holder = {
        id: nextId(),
        norm,
        createdMs,
        updatedMs: sec(createdMs + xrng.next() * (A - createdMs) * 0.8),
        props: { email: norm, firstname: c.firstName, lastname: c.lastName, hs_email_optout: 'false' },
        initialOptOut: false,
        mixedCase: false,
      };
      hubspot.push(holder);
    } else {
      holder = hubspot[xrng.int(0, existing - 1)];
    }
    const raw = xrng.chance(0.3) ? messUp(xrng, e.norm, false) : e.norm;
    const list = held.get(holder) ?? [];
    list.push(raw);
    held.set(holder, list);
    const optedOut = e.permission === 'unsubscribed';
    const already = f === 'hsSecondaryAlready' || (f === undefined && optedOut && xrng.chance(0.15));
    if (already)
      statuses.set(e.norm, {
        allUnsubMs: sec(Math.min(A - DAY_MS, (e.optOutMs ?? c.createdMs) + DAY_MS)),
        subs: new Map(),
      });
    out.push({ norm: e.norm, raw, contactId: holder.id, initialUnsubscribed: already });
    if (xrng.chance(0.3)) {
      const noise = `alias.${alias++}@secondary.example.net`;
      list.push(noise);
      out.push({ norm: noise, raw: noise, contactId: holder.id, initialUnsubscribed: false });
    }
  }
  for (const [holder, raws] of held) holder.props.hs_additional_emails = joinAdditionalEmails(xrng, raws);
  return out;
}
