/**
 * The shared, mutable state behind the three emulators: one dataset seen by Constant Contact, HubSpot and
 * Salesforce at once, plus the ground truth judged against it.
 *
 * Ground truth is recomputed from the current Constant Contact state (so opt-outs added at run time count)
 * and judged against each CRM record's suppression flag AT GENERATION (or creation) time: a record the
 * connector suppressed stays in `toSuppress`, so `verify()` can say whether the expected writes happened.
 */
import {
  CcContact,
  CcCase,
  Dataset,
  DatasetOptions,
  DAY_MS,
  HsAdditionalEmail,
  HsContact,
  HsEmailStatus,
  SfRecord,
  generateDataset,
} from './dataset';
import { createRng, deriveSeed, Rng } from './prng';
import { KEY_PREFIX, makeSfId } from './sfid';

export interface CaseRef {
  contactId: string;
  /** Normalised email, null for SMS-only contacts. */
  email: string | null;
}

export interface OptOutTruth {
  email: string;
  contactId: string;
  optOutDate: string;
  /** Top-level updated_at: older than optOutDate for `updated_after` traps. */
  updatedAt: string;
  trap: boolean;
  deleted: boolean;
  source: string | null;
  reason: string | null;
  /** Added at run time by addOptOuts. */
  added: boolean;
}

export interface AddedOptOut {
  contactId: string;
  email: string;
  optOutDate: string;
  /** A new Constant Contact contact was created for it. */
  created: boolean;
}

export interface AddOptOutSpec {
  /** Unsubscribe this address (created as a new contact if Constant Contact does not have it). */
  email?: string;
  /** Or this existing contact. */
  contactId?: string;
  /** When (default: now). */
  at?: Date | string | number;
  source?: 'Contact' | 'Account';
  reason?: string | null;
  /** Delete the contact right after it unsubscribed (unsubscribed-then-deleted). */
  deleteAfter?: boolean;
  /**
   * For a NEW contact: also create a HubSpot contact (default true); 'secondary' creates a HubSpot contact
   * with another primary address that holds this one in hs_additional_emails.
   */
  hubspot?: boolean | 'secondary';
  /** For a NEW contact: also create a Salesforce record (default 'contact'). */
  salesforce?: 'contact' | 'lead' | 'none';
}

export interface HardCases {
  /** Unsubscribed contacts whose top-level updated_at is older than their opt-out (most of them). */
  updatedAfterTrap: CaseRef[];
  /** Traps that opted out within 7 days of the anchor (or were added at run time) with updated_at over 30 days old. */
  recentTrap: CaseRef[];
  deletedNotUnsubscribed: CaseRef[];
  unsubscribedThenDeleted: CaseRef[];
  smsOnly: CaseRef[];
  mixedCaseCc: CaseRef[];
  resubscribed: CaseRef[];
  mixedCaseHubSpot: string[];
  mixedCaseSalesforce: string[];
  /** Emails (normalised) held by a Salesforce Contact AND a Lead. */
  sfContactAndLead: string[];
  /** Emails held by two Salesforce Contacts. */
  sfTwoContacts: string[];
  /** Every converted Lead (IsConverted = true): updates are rejected with CANNOT_UPDATE_CONVERTED_LEAD. */
  convertedLeads: string[];
  hubspotAlreadySuppressed: string[];
  salesforceAlreadySuppressed: string[];
  /** Opted-out emails with no HubSpot contact / no Salesforce Contact or unconverted Lead. */
  missingFromHubSpot: string[];
  missingFromSalesforce: string[];
  /** Opted-out emails held by HubSpot ONLY as a secondary address (hs_additional_emails) of some contact. */
  hubspotSecondaryOnly: string[];
}

/** An opted-out address that a HubSpot contact holds only as a secondary address. */
export interface SecondaryMatch {
  email: string;
  /** The contact holding it in hs_additional_emails (its primary address is another one). */
  contactId: string;
  /** Unsubscribed (address level) before the run: nothing to write. */
  alreadyUnsubscribed: boolean;
}

export interface GroundTruth {
  seed: number;
  anchor: string;
  /** Normalised, sorted, unique emails of every opted-out contact (deleted-after-opt-out included). */
  optedOutEmails: string[];
  optOuts: OptOutTruth[];
  /** Emails that must NOT be treated as opt-outs although they look like one somewhere. */
  notOptOuts: { deletedNotUnsubscribed: string[]; resubscribed: string[] };
  hubspot: {
    /** Contact ids whose hs_email_optout must end "true" (not suppressed at generation). */
    toSuppress: string[];
    /** Contacts matching an opt-out that were already suppressed: no write needed. */
    alreadySuppressed: string[];
    /** Contacts whose state must not change (their email is not opted out). */
    untouched: string[];
    /**
     * Opted-out emails (normalised) that must be unsubscribed: a primary address whose contact is not yet
     * suppressed, or a secondary-only address not yet unsubscribed (`secondaryToUnsubscribe`).
     */
    emailsToUnsubscribe: string[];
    /** Opted-out emails that no contact holds, neither as primary nor as secondary address. */
    missingEmails: string[];
    /**
     * Opted-out addresses held only as a secondary address (hs_additional_emails): the subscription status
     * belongs to the address, so each must end unsubscribed from all email (address level); the holder's
     * own hs_email_optout (its primary address) must not change.
     */
    secondaryMatches: SecondaryMatch[];
    /** secondaryMatches not unsubscribed at generation: one address-level write each. */
    secondaryToUnsubscribe: string[];
    secondaryAlreadyUnsubscribed: string[];
  };
  salesforce: {
    /** Contacts + unconverted Leads whose HasOptedOutOfEmail must end true. */
    toSuppress: string[];
    alreadySuppressed: string[];
    /** Converted Leads matching an opt-out: cannot be updated; must be skipped (or fail) without harm. */
    convertedLeads: string[];
    /** Person Accounts (only with personAccounts) whose PersonHasOptedOutOfEmail must end true. */
    personAccountsToSuppress: string[];
    untouched: string[];
    missingEmails: string[];
  };
  hardCases: HardCases;
  counts: {
    contacts: number;
    deleted: number;
    smsOnly: number;
    optedOut: number;
    optedOutDeleted: number;
    /** What GET /contacts?status=unsubscribed returns (depends on the unsubscribedIncludesDeleted knob). */
    unsubscribedNotDeleted: number;
    hubspotContacts: number;
    salesforceRecords: number;
  };
  addedOptOuts: AddedOptOut[];
}

export interface TargetVerification {
  ok: boolean;
  expected: number;
  /** toSuppress records still not suppressed. */
  notSuppressed: string[];
  /** Records whose suppression flag differs from generation although their email is not opted out. */
  unexpectedlyChanged: string[];
  /** Untouched / already-suppressed records that received a write anyway. */
  unnecessaryWrites: string[];
  /** Records written more than once. */
  repeatedWrites: string[];
  /** Writes to records (HubSpot: per contact, i.e. its primary address; secondary addresses are below). */
  writes: number;
}

/** HubSpot secondary-address (hs_additional_emails) part of the verdict: address-level statuses. */
export interface SecondaryVerification {
  ok: boolean;
  /** Secondary-only opted-out addresses that must end unsubscribed. */
  expected: number;
  /** Of those, still not unsubscribed from all email (missed secondary-address opt-outs). */
  notUnsubscribed: string[];
  /** Secondary addresses written although not opted out (writes to already-unsubscribed opted-out ones are allowed). */
  unnecessaryWrites: string[];
  repeatedWrites: string[];
  writes: number;
}

export interface Verification {
  ok: boolean;
  hubspot: TargetVerification & { secondary: SecondaryVerification };
  salesforce: TargetVerification;
}

export interface WorldOptions extends DatasetOptions {
  /** The emulators' clock (default Date.now). */
  now?: () => number;
}

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort();

export class World {
  readonly data: Dataset;
  readonly now: () => number;
  readonly ccById = new Map<string, CcContact>();
  readonly ccByNorm = new Map<string, CcContact>();
  readonly hsById = new Map<string, HsContact>();
  readonly hsByNorm = new Map<string, HsContact>();
  /** Secondary (hs_additional_emails) addresses, normalised -> holder. */
  readonly hsByAdditional = new Map<string, { contact: HsContact; entry: HsAdditionalEmail }>();
  readonly sfById = new Map<string, SfRecord>();
  readonly sfByNorm = new Map<string, SfRecord[]>();
  /** Writes per HubSpot contact id (unsubscribe-all of its email, batch update) and per Salesforce Id. */
  readonly hsWrites = new Map<string, number>();
  readonly sfWrites = new Map<string, number>();
  /** Comm-preference writes for emails that have no HubSpot contact (neither primary nor secondary). */
  readonly hsOrphanStatusWrites = new Map<string, number>();
  /** Comm-preference writes for secondary addresses (normalised email -> count); not contact writes. */
  readonly hsSecondaryStatusWrites = new Map<string, number>();
  readonly added: AddedOptOut[] = [];
  private readonly addRng: Rng;
  /** Bumped on every Constant Contact mutation (cache key for filtered scans). */
  version = 0;

  constructor(opts: WorldOptions = {}) {
    this.now = opts.now ?? (() => Date.now());
    const anchor = opts.anchor ?? this.now();
    this.data = generateDataset({ ...opts, anchor });
    this.addRng = createRng(deriveSeed(this.data.seed, 'added'));
    for (const c of this.data.cc) this.indexCc(c);
    for (const h of this.data.hubspot) {
      this.hsById.set(h.id, h);
      this.hsByNorm.set(h.norm, h);
    }
    for (const entry of this.data.hubspotAdditional)
      this.hsByAdditional.set(entry.norm, { contact: this.hsById.get(entry.contactId)!, entry });
    for (const r of this.data.salesforce) this.indexSf(r);
  }

  get hubspotStatuses(): Map<string, HsEmailStatus> {
    return this.data.hubspotStatuses;
  }

  private indexCc(c: CcContact): void {
    this.ccById.set(c.id, c);
    if (c.email) this.ccByNorm.set(c.email.norm, c);
  }

  private indexSf(r: SfRecord): void {
    this.sfById.set(r.Id, r);
    if (r.norm !== null) {
      const list = this.sfByNorm.get(r.norm);
      if (list) list.push(r);
      else this.sfByNorm.set(r.norm, [r]);
    }
  }

  countHsWrite(id: string): void {
    this.hsWrites.set(id, (this.hsWrites.get(id) ?? 0) + 1);
  }

  /** A subscription-status write for `norm`: counted on its contact, its secondary address, or as an orphan. */
  countHsStatusWrite(norm: string): void {
    const h = this.hsByNorm.get(norm);
    if (h) this.countHsWrite(h.id);
    else if (this.hsByAdditional.has(norm))
      this.hsSecondaryStatusWrites.set(norm, (this.hsSecondaryStatusWrites.get(norm) ?? 0) + 1);
    else this.hsOrphanStatusWrites.set(norm, (this.hsOrphanStatusWrites.get(norm) ?? 0) + 1);
  }

  /** The HubSpot contact holding `email` as its primary or as a secondary address. */
  hsContactByAnyEmail(email: string): { contact: HsContact; match: 'primary' | 'additional-email' } | null {
    const norm = email.trim().toLowerCase();
    const h = this.hsByNorm.get(norm);
    if (h) return { contact: h, match: 'primary' };
    const s = this.hsByAdditional.get(norm);
    return s ? { contact: s.contact, match: 'additional-email' } : null;
  }

  /** Address-level "unsubscribed from all email" (the Communication Preferences state of one address). */
  hsAddressUnsubscribed(email: string): boolean {
    return (this.hubspotStatuses.get(email.trim().toLowerCase())?.allUnsubMs ?? null) !== null;
  }

  /**
   * Add a secondary address to a HubSpot contact at run time (tests), appended to its hs_additional_emails
   * as given (mixed case / spaces kept). Refuses an address another contact holds (HubSpot keeps emails unique).
   */
  addHubSpotAdditionalEmail(
    contactId: string,
    email: string,
    opts: { unsubscribed?: boolean; separator?: string } = {},
  ): HsAdditionalEmail {
    const h = this.hsById.get(contactId);
    if (!h) throw new Error(`addHubSpotAdditionalEmail: no HubSpot contact ${contactId}`);
    const norm = email.trim().toLowerCase();
    if (this.hsByNorm.has(norm) || this.hsByAdditional.has(norm))
      throw new Error(`addHubSpotAdditionalEmail: ${norm} already belongs to a HubSpot contact`);
    const cur = h.props.hs_additional_emails;
    h.props.hs_additional_emails = cur ? `${cur}${opts.separator ?? ';'}${email}` : email;
    const unsubscribed = opts.unsubscribed === true;
    if (unsubscribed) {
      const st = this.hubspotStatuses.get(norm) ?? { allUnsubMs: null, subs: new Map() };
      st.allUnsubMs = this.now();
      this.hubspotStatuses.set(norm, st);
    }
    const entry: HsAdditionalEmail = { norm, raw: email, contactId, initialUnsubscribed: unsubscribed };
    this.data.hubspotAdditional.push(entry);
    this.hsByAdditional.set(norm, { contact: h, entry });
    return entry;
  }

  countSfWrite(id: string): void {
    this.sfWrites.set(id, (this.sfWrites.get(id) ?? 0) + 1);
  }

  /** Salesforce: the suppression flag of a record (HasOptedOutOfEmail, or PersonHasOptedOutOfEmail). */
  static sfOptedOut(r: SfRecord): boolean {
    return r.type === 'Account' ? r.fields.PersonHasOptedOutOfEmail === true : r.fields.HasOptedOutOfEmail === true;
  }

  /** Add a Salesforce record at run time (tests); returns it. */
  addSalesforceRecord(
    type: 'Contact' | 'Lead',
    email: string,
    fields: Record<string, string | number | boolean | null> = {},
  ): SfRecord {
    const Id = makeSfId(KEY_PREFIX[type], this.data.nextSfCounter++);
    const nowIso = new Date(this.now()).toISOString();
    const norm = email.trim().toLowerCase();
    const base: Record<string, string | number | boolean | null> = {
      Id,
      FirstName: 'New',
      LastName: 'Record',
      Email: email,
      HasOptedOutOfEmail: false,
      CreatedDate: nowIso,
      LastModifiedDate: nowIso,
      IsDeleted: false,
      CC_Opt_Out_Date__c: null,
      CC_Opt_Out_Source__c: null,
      CC_Opt_Out_Reason__c: null,
    };
    if (type === 'Lead')
      Object.assign(base, {
        Company: 'New LLC',
        Status: 'Open - Not Contacted',
        IsConverted: false,
        ConvertedContactId: null,
        ConvertedDate: null,
      });
    else base.AccountId = null;
    Object.assign(base, fields);
    const rec: SfRecord = {
      Id,
      type,
      fields: base,
      norm,
      deleted: false,
      initialOptOut: base.HasOptedOutOfEmail === true,
      mixedCase: email !== norm,
      shape: 'added',
    };
    this.data.salesforce.push(rec);
    this.indexSf(rec);
    return rec;
  }

  /** Add a HubSpot contact at run time (tests); returns it. Refuses a duplicate email (HubSpot emails are unique). */
  addHubSpotContact(email: string, optOut = false): HsContact {
    const norm = email.trim().toLowerCase();
    const existing = this.hsByNorm.get(norm);
    if (existing) return existing;
    if (this.hsByAdditional.has(norm))
      throw new Error(
        `addHubSpotContact: ${norm} is already a secondary address of contact ${this.hsByAdditional.get(norm)!.contact.id}`,
      );
    const id = String(this.data.nextHubSpotId++);
    const nowMs = this.now();
    const h: HsContact = {
      id,
      norm,
      createdMs: nowMs,
      updatedMs: nowMs,
      props: { email, firstname: 'New', lastname: 'Contact', hs_email_optout: optOut ? 'true' : 'false' },
      initialOptOut: optOut,
      mixedCase: email !== norm,
    };
    this.data.hubspot.push(h);
    this.hsById.set(id, h);
    this.hsByNorm.set(norm, h);
    return h;
  }

  /**
   * New opt-outs happening now, as Constant Contact records them: permission_to_send, opt_out_* and
   * email_address.updated_at change; the top-level updated_at does NOT (every added opt-out is a trap).
   * A number picks existing subscribed contacts (preferring ones present in both CRMs); specs pick or create.
   */
  addOptOuts(arg: number | readonly AddOptOutSpec[]): AddedOptOut[] {
    const specs: AddOptOutSpec[] =
      typeof arg === 'number' ? this.pickForOptOut(arg).map((c) => ({ contactId: c.id })) : [...arg];
    const out: AddedOptOut[] = [];
    for (const spec of specs) {
      const atMs =
        spec.at === undefined
          ? this.now()
          : spec.at instanceof Date
            ? spec.at.getTime()
            : typeof spec.at === 'number'
              ? spec.at
              : Date.parse(spec.at);
      if (!Number.isFinite(atMs)) throw new Error(`addOptOuts: bad time ${String(spec.at)}`);
      const ms = Math.floor(atMs / 1000) * 1000;
      let c: CcContact | undefined;
      let created = false;
      if (spec.contactId) {
        c = this.ccById.get(spec.contactId);
        if (!c) throw new Error(`addOptOuts: no contact ${spec.contactId}`);
      } else if (spec.email) {
        c = this.ccByNorm.get(spec.email.trim().toLowerCase());
        if (!c) {
          c = this.createCcContact(spec.email, ms);
          created = true;
          if (spec.hubspot === 'secondary') {
            const local = spec.email.trim().toLowerCase().replace(/@.*$/, '');
            const holder = this.addHubSpotContact(`${local}.${this.data.nextHubSpotId}@work.example.net`);
            this.addHubSpotAdditionalEmail(holder.id, spec.email.trim());
          } else if (spec.hubspot !== false) this.addHubSpotContact(spec.email.trim().toLowerCase());
          const sf = spec.salesforce ?? 'contact';
          if (sf !== 'none')
            this.addSalesforceRecord(sf === 'lead' ? 'Lead' : 'Contact', spec.email.trim().toLowerCase());
        }
      } else {
        throw new Error('addOptOuts: a spec needs email or contactId');
      }
      if (!c.email) throw new Error(`addOptOuts: contact ${c.id} has no email address (SMS-only)`);
      c.email.permission = 'unsubscribed';
      c.email.optOutMs = ms;
      c.email.updatedMs = ms;
      c.email.optOutSource = spec.source ?? 'Contact';
      c.email.optOutReason = spec.reason ?? null;
      if (spec.deleteAfter) {
        c.deletedMs = ms;
        if (!c.cases.includes('unsubscribedThenDeleted')) c.cases.push('unsubscribedThenDeleted');
      }
      if (!c.cases.includes('recentOptOut')) c.cases.push('recentOptOut');
      this.version++;
      const a: AddedOptOut = { contactId: c.id, email: c.email.norm, optOutDate: iso(ms), created };
      this.added.push(a);
      out.push(a);
    }
    return out;
  }

  private createCcContact(email: string, atMs: number): CcContact {
    const norm = email.trim().toLowerCase();
    // Created a while ago, personal details never updated since: the opt-out is invisible to updated_after.
    const createdMs = Math.floor((atMs - 45 * DAY_MS) / 1000) * 1000;
    const c: CcContact = {
      idx: this.data.cc.length,
      id: this.addRng.uuid(),
      email: {
        raw: email,
        norm,
        permission: 'implicit',
        createdMs,
        updatedMs: createdMs,
        optInSource: 'Account',
        optInMs: null,
        optOutSource: null,
        optOutMs: null,
        optOutReason: null,
        confirmStatus: 'off',
      },
      firstName: 'New',
      lastName: 'Contact',
      jobTitle: null,
      companyName: null,
      createSource: 'Account',
      updateSource: null,
      createdMs,
      updatedMs: createdMs,
      deletedMs: null,
      sms: null,
      cases: email !== norm ? ['mixedCaseCc'] : [],
      previousOptOutMs: null,
      listIds: [this.data.listIds[0]],
    };
    this.data.cc.push(c);
    this.indexCc(c);
    return c;
  }

  private pickForOptOut(n: number): CcContact[] {
    const eligible = (c: CcContact): boolean =>
      !!c.email && c.deletedMs === null && c.email.permission !== 'unsubscribed' && !c.cases.includes('resubscribed');
    const both: CcContact[] = [];
    const rest: CcContact[] = [];
    for (const c of this.data.cc) {
      if (!eligible(c)) continue;
      const norm = c.email!.norm;
      const inHs = this.hsByNorm.has(norm);
      const inSf = (this.sfByNorm.get(norm) ?? []).some(
        (r) => r.type === 'Contact' || (r.type === 'Lead' && r.fields.IsConverted !== true),
      );
      (inHs && inSf ? both : rest).push(c);
    }
    const chosen: CcContact[] = [];
    for (const pool of [both, rest]) {
      while (chosen.length < n && pool.length > 0) {
        const k = this.addRng.int(0, pool.length - 1);
        chosen.push(pool[k]);
        pool[k] = pool[pool.length - 1];
        pool.pop();
      }
    }
    if (chosen.length < n) throw new Error(`addOptOuts: only ${chosen.length} subscribed contacts left`);
    return chosen;
  }

  truth(): GroundTruth {
    const d = this.data;
    const optOuts: OptOutTruth[] = [];
    const optedOut = new Set<string>();
    const addedIds = new Set(this.added.map((a) => a.contactId));
    const hard: HardCases = {
      updatedAfterTrap: [],
      recentTrap: [],
      deletedNotUnsubscribed: [],
      unsubscribedThenDeleted: [],
      smsOnly: [],
      mixedCaseCc: [],
      resubscribed: [],
      mixedCaseHubSpot: [],
      mixedCaseSalesforce: [],
      sfContactAndLead: [],
      sfTwoContacts: [],
      convertedLeads: [],
      hubspotAlreadySuppressed: [],
      salesforceAlreadySuppressed: [],
      missingFromHubSpot: [],
      missingFromSalesforce: [],
      hubspotSecondaryOnly: [],
    };
    let deleted = 0;
    let optedOutDeleted = 0;
    let unsubscribedNotDeleted = 0;
    const ref = (c: CcContact): CaseRef => ({ contactId: c.id, email: c.email ? c.email.norm : null });
    const caseLists: Partial<Record<CcCase, CaseRef[]>> = {
      deletedNotUnsubscribed: hard.deletedNotUnsubscribed,
      unsubscribedThenDeleted: hard.unsubscribedThenDeleted,
      smsOnly: hard.smsOnly,
      mixedCaseCc: hard.mixedCaseCc,
      resubscribed: hard.resubscribed,
    };
    const recentFrom = d.anchorMs - 7 * DAY_MS;
    for (const c of d.cc) {
      if (c.deletedMs !== null) deleted++;
      for (const k of c.cases) caseLists[k]?.push(ref(c));
      const e = c.email;
      if (!e || e.permission !== 'unsubscribed' || e.optOutMs === null) continue;
      optedOut.add(e.norm);
      if (c.deletedMs !== null) optedOutDeleted++;
      else unsubscribedNotDeleted++;
      const trap = c.updatedMs < e.optOutMs;
      if (trap) {
        hard.updatedAfterTrap.push(ref(c));
        if ((e.optOutMs >= recentFrom || addedIds.has(c.id)) && e.optOutMs - c.updatedMs > 30 * DAY_MS)
          hard.recentTrap.push(ref(c));
      }
      optOuts.push({
        email: e.norm,
        contactId: c.id,
        optOutDate: iso(e.optOutMs),
        updatedAt: iso(c.updatedMs),
        trap,
        deleted: c.deletedMs !== null,
        source: e.optOutSource,
        reason: e.optOutReason,
        added: addedIds.has(c.id),
      });
    }

    // HubSpot
    const hs = { toSuppress: [] as string[], alreadySuppressed: [] as string[], untouched: [] as string[] };
    const hsToUnsub = new Set<string>();
    for (const h of d.hubspot) {
      if (h.mixedCase) hard.mixedCaseHubSpot.push(h.id);
      if (optedOut.has(h.norm)) {
        if (h.initialOptOut) {
          hs.alreadySuppressed.push(h.id);
          hard.hubspotAlreadySuppressed.push(h.id);
        } else {
          hs.toSuppress.push(h.id);
          hsToUnsub.add(h.norm);
        }
      } else hs.untouched.push(h.id);
    }

    // Salesforce
    const sf = {
      toSuppress: [] as string[],
      alreadySuppressed: [] as string[],
      convertedLeads: [] as string[],
      personAccountsToSuppress: [] as string[],
      untouched: [] as string[],
    };
    const sfCovered = new Set<string>();
    const shapes = new Map<string, Set<string>>();
    for (const r of d.salesforce) {
      if (r.mixedCase) hard.mixedCaseSalesforce.push(r.Id);
      const converted = r.type === 'Lead' && r.fields.IsConverted === true;
      if (converted) hard.convertedLeads.push(r.Id);
      if (r.norm !== null && (r.shape === 'contactAndLead' || r.shape === 'twoContacts')) {
        const s = shapes.get(r.shape) ?? new Set<string>();
        s.add(r.norm);
        shapes.set(r.shape, s);
      }
      const person = r.type === 'Account' && r.fields.IsPersonAccount === true;
      const matches = r.norm !== null && optedOut.has(r.norm) && !r.deleted && (r.type !== 'Account' || person);
      if (!matches) {
        sf.untouched.push(r.Id);
        continue;
      }
      if (converted) {
        sf.convertedLeads.push(r.Id);
        continue;
      }
      sfCovered.add(r.norm!);
      if (r.initialOptOut) {
        sf.alreadySuppressed.push(r.Id);
        hard.salesforceAlreadySuppressed.push(r.Id);
      } else if (person) sf.personAccountsToSuppress.push(r.Id);
      else sf.toSuppress.push(r.Id);
    }
    hard.sfContactAndLead = sorted(shapes.get('contactAndLead') ?? []);
    hard.sfTwoContacts = sorted(shapes.get('twoContacts') ?? []);
    const optedOutEmails = sorted(optedOut);
    const secondaryMatches: SecondaryMatch[] = [];
    for (const e of optedOutEmails) {
      if (this.hsByNorm.has(e)) continue;
      const s = this.hsByAdditional.get(e);
      if (s)
        secondaryMatches.push({ email: e, contactId: s.contact.id, alreadyUnsubscribed: s.entry.initialUnsubscribed });
    }
    hard.hubspotSecondaryOnly = secondaryMatches.map((m) => m.email);
    const secondaryToUnsubscribe = secondaryMatches.filter((m) => !m.alreadyUnsubscribed).map((m) => m.email);
    for (const e of secondaryToUnsubscribe) hsToUnsub.add(e);
    hard.missingFromHubSpot = optedOutEmails.filter((e) => !this.hsByNorm.has(e) && !this.hsByAdditional.has(e));
    hard.missingFromSalesforce = optedOutEmails.filter((e) => !sfCovered.has(e));

    return {
      seed: d.seed,
      anchor: iso(d.anchorMs),
      optedOutEmails,
      optOuts,
      notOptOuts: {
        deletedNotUnsubscribed: sorted(hard.deletedNotUnsubscribed.map((r) => r.email!).filter(Boolean)),
        resubscribed: sorted(hard.resubscribed.map((r) => r.email!).filter(Boolean)),
      },
      hubspot: {
        ...hs,
        emailsToUnsubscribe: sorted(hsToUnsub),
        missingEmails: hard.missingFromHubSpot,
        secondaryMatches,
        secondaryToUnsubscribe,
        secondaryAlreadyUnsubscribed: secondaryMatches.filter((m) => m.alreadyUnsubscribed).map((m) => m.email),
      },
      salesforce: { ...sf, missingEmails: hard.missingFromSalesforce },
      hardCases: hard,
      counts: {
        contacts: d.cc.length,
        deleted,
        smsOnly: hard.smsOnly.length,
        optedOut: optedOut.size,
        optedOutDeleted,
        unsubscribedNotDeleted,
        hubspotContacts: d.hubspot.length,
        salesforceRecords: d.salesforce.length,
      },
      addedOptOuts: [...this.added],
    };
  }

  /** Compare the CRM state with the ground truth. */
  verify(truth: GroundTruth = this.truth()): Verification {
    const judge = (
      toSuppress: readonly string[],
      noWrite: readonly string[],
      untouched: readonly string[],
      isSuppressed: (id: string) => boolean,
      initially: (id: string) => boolean,
      writes: Map<string, number>,
    ): TargetVerification => {
      const notSuppressed = toSuppress.filter((id) => !isSuppressed(id));
      const unexpectedlyChanged = untouched.filter((id) => isSuppressed(id) !== initially(id));
      const unnecessaryWrites = [...noWrite, ...untouched].filter((id) => (writes.get(id) ?? 0) > 0);
      const repeatedWrites = [...writes.entries()].filter(([, n]) => n > 1).map(([id]) => id);
      let total = 0;
      for (const n of writes.values()) total += n;
      return {
        ok: notSuppressed.length === 0 && unexpectedlyChanged.length === 0,
        expected: toSuppress.length,
        notSuppressed,
        unexpectedlyChanged,
        unnecessaryWrites,
        repeatedWrites,
        writes: total,
      };
    };
    const hubspot = judge(
      truth.hubspot.toSuppress,
      truth.hubspot.alreadySuppressed,
      truth.hubspot.untouched,
      (id) => this.hsById.get(id)?.props.hs_email_optout === 'true',
      (id) => this.hsById.get(id)?.initialOptOut === true,
      this.hsWrites,
    );
    const salesforce = judge(
      [...truth.salesforce.toSuppress, ...truth.salesforce.personAccountsToSuppress],
      [...truth.salesforce.alreadySuppressed, ...truth.salesforce.convertedLeads],
      truth.salesforce.untouched,
      (id) => {
        const r = this.sfById.get(id);
        return !!r && World.sfOptedOut(r);
      },
      (id) => this.sfById.get(id)?.initialOptOut === true,
      this.sfWrites,
    );
    // Secondary addresses: judged by their address-level status (unsubscribed from all email).
    // A write to an already-unsubscribed secondary address is not "unnecessary": no lookup (search gives the
    // holder's properties) shows an address's status; only the batch status reads do, which a portal without the
    // batch endpoints refuses, so there the write (answered NO_STATUS_CHANGE) is the best a connector can do.
    const secToUnsub = truth.hubspot.secondaryToUnsubscribe;
    const secNeeded = new Set(truth.hubspot.secondaryMatches.map((m) => m.email));
    const secNotUnsub = secToUnsub.filter((e) => !this.hsAddressUnsubscribed(e));
    let secWrites = 0;
    for (const n of this.hsSecondaryStatusWrites.values()) secWrites += n;
    const secondary: SecondaryVerification = {
      ok: secNotUnsub.length === 0,
      expected: secToUnsub.length,
      notUnsubscribed: secNotUnsub,
      unnecessaryWrites: [...this.hsSecondaryStatusWrites.keys()].filter((e) => !secNeeded.has(e)).sort(),
      repeatedWrites: [...this.hsSecondaryStatusWrites.entries()]
        .filter(([, n]) => n > 1)
        .map(([e]) => e)
        .sort(),
      writes: secWrites,
    };
    const hs = { ...hubspot, ok: hubspot.ok && secondary.ok, secondary };
    return { ok: hs.ok && salesforce.ok, hubspot: hs, salesforce };
  }

  /** A compact view of the CRM state for /__emulator/state. */
  hubspotState(): {
    contacts: Array<{
      id: string;
      email: string | null;
      hs_additional_emails?: string;
      hs_email_optout: string | null;
      initialOptOut: boolean;
      writes: number;
    }>;
    unsubscribedEmails: string[];
    orphanStatusWrites: Record<string, number>;
    secondaryAddresses: Array<{
      email: string;
      contactId: string;
      unsubscribed: boolean;
      initialUnsubscribed: boolean;
      writes: number;
    }>;
  } {
    return {
      contacts: this.data.hubspot.map((h) => ({
        id: h.id,
        email: h.props.email ?? null,
        ...(h.props.hs_additional_emails ? { hs_additional_emails: h.props.hs_additional_emails } : {}),
        hs_email_optout: h.props.hs_email_optout ?? null,
        initialOptOut: h.initialOptOut,
        writes: this.hsWrites.get(h.id) ?? 0,
      })),
      unsubscribedEmails: sorted(
        [...this.hubspotStatuses.entries()].filter(([, s]) => s.allUnsubMs !== null).map(([e]) => e),
      ),
      orphanStatusWrites: Object.fromEntries(this.hsOrphanStatusWrites),
      secondaryAddresses: this.data.hubspotAdditional.map((a) => ({
        email: a.norm,
        contactId: a.contactId,
        unsubscribed: this.hsAddressUnsubscribed(a.norm),
        initialUnsubscribed: a.initialUnsubscribed,
        writes: this.hsSecondaryStatusWrites.get(a.norm) ?? 0,
      })),
    };
  }

  salesforceState(): {
    records: Array<{
      Id: string;
      type: string;
      email: string | null;
      optedOut: boolean;
      initialOptOut: boolean;
      isConverted: boolean;
      deleted: boolean;
      writes: number;
    }>;
  } {
    return {
      records: this.data.salesforce.map((r) => ({
        Id: r.Id,
        type: r.type,
        email:
          (r.type === 'Account'
            ? (r.fields.PersonEmail as string | null | undefined)
            : (r.fields.Email as string | null)) ?? null,
        optedOut: World.sfOptedOut(r),
        initialOptOut: r.initialOptOut,
        isConverted: r.fields.IsConverted === true,
        deleted: r.deleted,
        writes: this.sfWrites.get(r.Id) ?? 0,
      })),
    };
  }
}
