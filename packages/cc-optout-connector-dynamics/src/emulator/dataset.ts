/**
 * The Dataverse emulator's records: contacts and leads generated deterministically (seeded) from a list of
 * people (email + whether they opted out in Constant Contact), so a demo's opt-outs match Dynamics records.
 *
 * Shapes, per person (hash of seed + email): a contact holding the address in emailaddress1 (some in mixed
 * case), emailaddress2 or emailaddress3; a duplicate contact; an Open lead (statecode 0), a Qualified
 * (statecode 1) or Disqualified (statecode 2) lead; records already suppressed (donotbulkemail true); or no
 * record at all. Column names and option values: see the package README ("Dataverse facts").
 */
export interface Person {
  /** As the source holds it (normalised or not). */
  email: string;
  optedOut: boolean;
}

export type EntityName = 'contact' | 'lead';

export interface DvRecord {
  readonly entity: EntityName;
  readonly id: string;
  readonly fields: Record<string, string | number | boolean | null>;
  /** donotbulkemail / donotemail at generation (or creation). */
  readonly initialBulk: boolean;
  readonly initialEmail: boolean;
  readonly initialState: number;
}

export const CONTACT_COLUMNS = [
  'contactid',
  'firstname',
  'lastname',
  'fullname',
  'emailaddress1',
  'emailaddress2',
  'emailaddress3',
  'donotbulkemail',
  'donotemail',
  'statecode',
  'statuscode',
  'modifiedon',
] as const;

export const LEAD_COLUMNS = [
  'leadid',
  'subject',
  'firstname',
  'lastname',
  'fullname',
  'companyname',
  'emailaddress1',
  'emailaddress2',
  'emailaddress3',
  'donotbulkemail',
  'donotemail',
  'statecode',
  'statuscode',
  'modifiedon',
] as const;

/** Columns a PATCH may set (the rest are read-only in this emulator). */
export const WRITABLE: Record<EntityName, ReadonlySet<string>> = {
  contact: new Set([
    'firstname',
    'lastname',
    'emailaddress1',
    'emailaddress2',
    'emailaddress3',
    'donotbulkemail',
    'donotemail',
  ]),
  lead: new Set([
    'subject',
    'firstname',
    'lastname',
    'companyname',
    'emailaddress1',
    'emailaddress2',
    'emailaddress3',
    'donotbulkemail',
    'donotemail',
  ]),
};

export const ID_COLUMN: Record<EntityName, string> = { contact: 'contactid', lead: 'leadid' };
export const ENTITY_SET: Record<EntityName, string> = { contact: 'contacts', lead: 'leads' };

/** A small seeded PRNG (mulberry32) and a string hash (FNV-1a), enough for reproducible data. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function guid(r: () => number): string {
  const hex = (n: number): string =>
    Array.from({ length: n }, () =>
      Math.floor(r() * 16)
        .toString(16)
        .toLowerCase(),
    ).join('');
  return `${hex(8)}-${hex(4)}-4${hex(3)}-${'89ab'[Math.floor(r() * 4)]}${hex(3)}-${hex(12)}`;
}

export interface GenerateOptions {
  seed: number;
  people: readonly Person[];
  /** Clock for modifiedon (default Date.now). */
  now?: number;
}

export function mixCase(email: string, r: () => number): string {
  const local = email.replace(/@.*$/, '');
  const domain = email.slice(local.length);
  return local.charAt(0).toUpperCase() + local.slice(1) + (r() < 0.5 ? domain.toUpperCase() : domain);
}

/** Records for the people, deterministic for (seed, people). */
export function generateRecords(opts: GenerateOptions): DvRecord[] {
  const out: DvRecord[] = [];
  const at = new Date(opts.now ?? Date.now()).toISOString();
  let n = 0;
  const add = (
    entity: EntityName,
    r: () => number,
    email: string,
    slot: 1 | 2 | 3,
    extra: { bulk?: boolean; state?: number } = {},
  ): void => {
    n++;
    const id = guid(r);
    const bulk = extra.bulk ?? r() < 0.1;
    const state = extra.state ?? 0;
    const fields: Record<string, string | number | boolean | null> = {
      [ID_COLUMN[entity]]: id,
      firstname: 'Person',
      lastname: `No${n}`,
      fullname: `Person No${n}`,
      emailaddress1: slot === 1 ? email : `other${n}@elsewhere.example.com`,
      emailaddress2: slot === 2 ? email : null,
      emailaddress3: slot === 3 ? email : null,
      donotbulkemail: bulk,
      donotemail: bulk && r() < 0.5,
      statecode: state,
      // contact: 1 Active / 2 Inactive; lead: 1 New, 3 Qualified, 4 Lost (Disqualified)
      statuscode: entity === 'contact' ? (state === 0 ? 1 : 2) : state === 0 ? 1 : state === 1 ? 3 : 4,
      modifiedon: at,
    };
    if (entity === 'lead') {
      fields.subject = `Lead ${n}`;
      fields.companyname = `Company ${n} Ltd`;
    }
    out.push({ entity, id, fields, initialBulk: bulk, initialEmail: fields.donotemail === true, initialState: state });
  };
  for (const p of opts.people) {
    const norm = p.email.trim().toLowerCase();
    const r = rng(hash32(`${opts.seed}|${norm}`));
    const shape = r();
    const raw = r() < 0.1 ? mixCase(norm, r) : norm;
    if (shape < 0.55) add('contact', r, raw, 1);
    else if (shape < 0.62) add('contact', r, raw, 2);
    else if (shape < 0.66) add('contact', r, raw, 3);
    else if (shape < 0.7) {
      add('contact', r, raw, 1);
      add('contact', r, norm, 1);
    } else if (shape < 0.8) add('lead', r, raw, 1);
    else if (shape < 0.85) add('lead', r, raw, 1, { state: 1 });
    else if (shape < 0.88) add('lead', r, raw, 1, { state: 2 });
    // else: no Dynamics record
    // and some people are a contact AND an open lead
    if (shape < 0.55 && r() < 0.12) add('lead', r, norm, 1);
  }
  return out;
}
