/**
 * OData query building for the email lookups: `$filter` with `eq` and `or` over the configured email columns,
 * string literals quoted per OData (a single quote is doubled), the whole URL kept under a length budget
 * (Dataverse accepts URLs up to 32,768 characters; the default budget leaves room for proxies).
 */
export type EntityKey = 'contact' | 'lead';

export interface EntitySpec {
  readonly key: EntityKey;
  readonly entitySet: 'contacts' | 'leads';
  readonly idColumn: 'contactid' | 'leadid';
  /** Extra condition ANDed to the email conditions (leads: `statecode eq 0`, Open only). */
  readonly condition: string | null;
}

export const ENTITIES: Record<EntityKey, EntitySpec> = {
  contact: { key: 'contact', entitySet: 'contacts', idColumn: 'contactid', condition: null },
  lead: { key: 'lead', entitySet: 'leads', idColumn: 'leadid', condition: 'statecode eq 0' },
};

/** An OData string literal: 'o''brien@example.com'. */
export function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

export function emailFilter(emails: readonly string[], fields: readonly string[], condition: string | null): string {
  const ors = fields.flatMap((f) => emails.map((e) => `${f} eq ${literal(e)}`)).join(' or ');
  return condition ? `(${ors}) and ${condition}` : ors;
}

export function lookupPath(
  spec: EntitySpec,
  emails: readonly string[],
  fields: readonly string[],
  select: readonly string[],
): string {
  const cols = [spec.idColumn, ...fields, ...select.filter((c) => !fields.includes(c) && c !== spec.idColumn)];
  return `${spec.entitySet}?$select=${cols.join(',')}&$filter=${encodeURIComponent(emailFilter(emails, fields, spec.condition))}`;
}

/**
 * Split `emails` into chunks whose lookup URL (apiBase + "/" + path) stays within `maxUrlLength` and holds at
 * most `maxPerQuery` addresses. An address too long for a query of its own comes back in `tooLong`.
 */
export function chunkEmails(
  emails: readonly string[],
  urlOf: (chunk: readonly string[]) => string,
  maxUrlLength: number,
  maxPerQuery: number,
): { chunks: string[][]; tooLong: string[] } {
  const chunks: string[][] = [];
  const tooLong: string[] = [];
  let cur: string[] = [];
  for (const e of emails) {
    if (urlOf([e]).length > maxUrlLength) {
      tooLong.push(e);
      continue;
    }
    const next = [...cur, e];
    if (next.length > maxPerQuery || urlOf(next).length > maxUrlLength) {
      chunks.push(cur);
      cur = [e];
    } else cur = next;
  }
  if (cur.length) chunks.push(cur);
  return { chunks, tooLong };
}
