/**
 * deliver(): look every address up (contacts, and Open leads only: statecode 0) by OData `$filter` on the
 * configured email columns, several addresses per query; skip records already suppressed; write the rest with
 * `$batch` change sets (one change set per group of addresses sharing records, so an address is applied
 * whole or not at all), and fold the per-change-set answers into one outcome per address.
 */
import { Capabilities, DeliveryMode, DeliveryReport, OptOut, Outcome, TargetHalt } from 'cc-optout-connector/sdk';
import { buildBatch, BatchAnswerError, ChangeSetResult, parseBatchAnswer, PatchRequest } from './batch';
import { DataverseClient, DataverseHalt, DataverseRequestError, odataErrorOf } from './client';
import { Resolved } from './config';
import { chunkEmails, ENTITIES, EntityKey, lookupPath } from './odata';

export interface FoundRecord {
  readonly entity: EntityKey;
  readonly id: string;
  /** Normalised addresses of the batch this record holds, and in which columns. */
  readonly emails: Map<string, string[]>;
  readonly suppressed: boolean;
}

interface ODataPage {
  value?: Array<Record<string, unknown>>;
  '@odata.nextLink'?: string;
}

export const recordKey = (r: { entity: EntityKey; id: string }): string => `${r.entity}:${r.id}`;

/** A plausible address for a query: something@something, no control characters, at most 320 characters. */
export function plausibleEmail(e: string): boolean {
  return e.length <= 320 && /^[^@\s]+@[^@\s]+$/.test(e) && !/[\u0000-\u001f\u007f]/.test(e);
}

export function toHalt(e: DataverseHalt, outcomes: readonly Outcome[]): TargetHalt {
  return new TargetHalt(e.kind, e.message, { retryAt: e.retryAt, outcomes });
}

export class Delivery {
  constructor(
    private readonly client: DataverseClient,
    private readonly cfg: Resolved,
    private readonly caps: Capabilities,
  ) {}

  /** The columns read for each record: the id, the email columns and the suppression flag(s). */
  selectColumns(): string[] {
    return ['donotbulkemail', ...(this.cfg.alsoSetDoNotEmail ? ['donotemail'] : [])];
  }

  /** Records holding any of `emails` in a configured column (leads: Open only). */
  async lookup(emails: readonly string[]): Promise<{ records: FoundRecord[]; tooLong: string[] }> {
    const records = new Map<string, FoundRecord>();
    const wanted = new Set(emails);
    const tooLong = new Set<string>();
    for (const key of this.cfg.entities) {
      const spec = ENTITIES[key];
      const urlOf = (chunk: readonly string[]): string =>
        `${this.client.apiBase}/${lookupPath(spec, chunk, this.cfg.emailFields, this.selectColumns())}`;
      const { chunks, tooLong: tl } = chunkEmails(emails, urlOf, this.cfg.maxUrlLength, this.cfg.addressesPerQuery);
      for (const e of tl) tooLong.add(e);
      for (const chunk of chunks) {
        let next: string | undefined = lookupPath(spec, chunk, this.cfg.emailFields, this.selectColumns());
        let pages = 0;
        while (next) {
          if (++pages > 1000)
            throw new DataverseHalt('fatal', `Dataverse paging of ${spec.entitySet} did not end after 1000 pages`);
          let page: ODataPage;
          try {
            page = await this.client.getJson<ODataPage>(next, 'odata.maxpagesize=5000');
          } catch (e) {
            if (e instanceof DataverseRequestError) throw this.lookupRefused(spec.entitySet, e);
            throw e;
          }
          if (!Array.isArray(page.value))
            throw new DataverseHalt(
              'unavailable',
              `Dataverse answered the ${spec.entitySet} lookup without a "value" array`,
            );
          for (const row of page.value) this.addRow(records, key, row, wanted);
          next = typeof page['@odata.nextLink'] === 'string' ? page['@odata.nextLink'] : undefined;
        }
      }
    }
    return { records: [...records.values()], tooLong: [...tooLong] };
  }

  private lookupRefused(entitySet: string, e: DataverseRequestError): DataverseHalt | TargetHalt {
    if (e.status === 404) {
      return new DataverseHalt(
        'config',
        `the environment has no "${entitySet}" table (${e.message}); turn it off with entities.${entitySet === 'leads' ? 'lead' : 'contact'}: false`,
      );
    }
    if (e.status === 400 && /property named|Could not find a property/i.test(e.message)) {
      return new DataverseHalt('config', `a configured column does not exist on ${entitySet}: ${e.message}`);
    }
    // something in these addresses made Dataverse refuse the query: the engine splits the batch
    return new TargetHalt('bad-request', `Dataverse refused the ${entitySet} lookup: ${e.message}`);
  }

  private addRow(
    into: Map<string, FoundRecord>,
    entity: EntityKey,
    row: Record<string, unknown>,
    wanted: ReadonlySet<string>,
  ): void {
    const id = row[ENTITIES[entity].idColumn];
    if (typeof id !== 'string' || id === '') return;
    const emails = new Map<string, string[]>();
    for (const f of this.cfg.emailFields) {
      const v = row[f];
      if (typeof v !== 'string') continue;
      const norm = v.trim().toLowerCase();
      if (!wanted.has(norm)) continue;
      emails.set(norm, [...(emails.get(norm) ?? []), f]);
    }
    if (emails.size === 0) return;
    const suppressed = row.donotbulkemail === true && (!this.cfg.alsoSetDoNotEmail || row.donotemail === true);
    into.set(recordKey({ entity, id }), { entity, id: id.toLowerCase(), emails, suppressed });
  }

  private patchBody(): Record<string, boolean> {
    return { donotbulkemail: true, ...(this.cfg.alsoSetDoNotEmail ? { donotemail: true } : {}) };
  }

  private recordUrl(r: FoundRecord): string {
    return `${this.client.apiBase}/${ENTITIES[r.entity].entitySet}(${r.id})`;
  }

  async run(batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> {
    const outcomes: Outcome[] = [];
    const emails: string[] = [];
    const seen = new Set<string>();
    for (const o of batch) {
      const e = o.email.trim().toLowerCase();
      if (seen.has(e)) continue;
      seen.add(e);
      if (!plausibleEmail(e))
        outcomes.push({
          email: o.email,
          kind: 'failed-permanent',
          recordIds: [],
          message: 'not an email address Dataverse can be queried for',
        });
      else emails.push(e);
    }
    let found: { records: FoundRecord[]; tooLong: string[] };
    try {
      found = await this.lookup(emails);
    } catch (e) {
      if (e instanceof DataverseHalt) throw toHalt(e, outcomes);
      if (e instanceof TargetHalt) throw e.withOutcomes(outcomes);
      throw e;
    }
    const tooLong = new Set(found.tooLong);
    const byEmail = new Map<string, FoundRecord[]>();
    for (const r of found.records) for (const e of r.emails.keys()) byEmail.set(e, [...(byEmail.get(e) ?? []), r]);

    const toWrite: string[] = [];
    for (const e of emails) {
      if (tooLong.has(e)) {
        outcomes.push({
          email: e,
          kind: 'failed-permanent',
          recordIds: [],
          message: `the address is too long for a lookup URL of at most ${this.cfg.maxUrlLength} characters`,
        });
        continue;
      }
      const recs = byEmail.get(e) ?? [];
      const ids = recs.map(recordKey);
      const matchedBy = [...new Set(recs.flatMap((r) => r.emails.get(e) ?? []))].join(',') || undefined;
      if (recs.length === 0) outcomes.push({ email: e, kind: 'not-found', recordIds: [] });
      else if (recs.every((r) => r.suppressed))
        outcomes.push({ email: e, kind: 'already-suppressed', recordIds: ids, matchedBy });
      else if (mode === 'plan') {
        const body = Object.entries(this.patchBody())
          .map(([k, v]) => `${k}=${v}`)
          .join(', ');
        const action = recs
          .filter((r) => !r.suppressed)
          .map((r) => `${r.entity} ${r.id}: ${body}`)
          .join('; ');
        outcomes.push({ email: e, kind: 'planned', recordIds: ids, action, matchedBy });
      } else toWrite.push(e);
    }
    if (toWrite.length === 0) return { outcomes };

    // groups of addresses that share records to write: one change set each
    const groups = groupByRecords(toWrite, byEmail);
    const changeSets: Array<{ emails: string[]; records: FoundRecord[] }> = [];
    for (const g of groups) {
      for (let i = 0; i < g.records.length; i += this.cfg.requestsPerBatch)
        changeSets.push({ emails: g.emails, records: g.records.slice(i, i + this.cfg.requestsPerBatch) });
    }
    // a group split over several change sets is applied only if all of them are
    const results = new Map<string, { ok: boolean; retryable: boolean; message?: string }>();
    const settle = (emailsOf: string[], r: { ok: boolean; retryable: boolean; message?: string }): void => {
      for (const e of emailsOf) {
        const prev = results.get(e);
        if (!prev || prev.ok) results.set(e, r);
        else if (!r.ok && prev.retryable && !r.retryable) results.set(e, r);
      }
    };
    const finish = (): Outcome[] => {
      const out = [...outcomes];
      for (const e of toWrite) {
        const r = results.get(e);
        if (!r) continue;
        const recs = byEmail.get(e) ?? [];
        const matchedBy = [...new Set(recs.flatMap((x) => x.emails.get(e) ?? []))].join(',') || undefined;
        if (r.ok) out.push({ email: e, kind: 'applied', recordIds: recs.map(recordKey), matchedBy });
        else
          out.push({
            email: e,
            kind: r.retryable ? 'failed-retryable' : 'failed-permanent',
            recordIds: recs.map(recordKey),
            message: r.message,
            matchedBy,
          });
      }
      return out;
    };

    let i = 0;
    while (i < changeSets.length) {
      // asked to stop (SIGINT/SIGTERM): the $batch in hand has finished; the rest is not sent, stays retryable
      if (i > 0 && this.caps.signal?.aborted) {
        for (const cs of changeSets.slice(i))
          settle(cs.emails, {
            ok: false,
            retryable: true,
            message: 'not attempted: the run was asked to stop before this $batch',
          });
        break;
      }
      const pack: typeof changeSets = [];
      let n = 0;
      while (
        i < changeSets.length &&
        (pack.length === 0 || n + changeSets[i].records.length <= this.cfg.requestsPerBatch)
      ) {
        n += changeSets[i].records.length;
        pack.push(changeSets[i++]);
      }
      const built = buildBatch(
        pack.map((cs) => cs.records.map((r): PatchRequest => ({ url: this.recordUrl(r), body: this.patchBody() }))),
      );
      let answer: ChangeSetResult[];
      try {
        const res = await this.client.batch(built.boundary, built.body, true);
        answer = parseBatchAnswer(built, res.headers['content-type'] ?? '', res.body);
      } catch (e) {
        const done = pack.flatMap((cs) => cs.emails);
        if (e instanceof DataverseHalt)
          throw toHalt(
            e,
            finish().filter((o) => !done.includes(o.email) || results.get(o.email)?.ok === false),
          );
        if (e instanceof DataverseRequestError) {
          // the $batch itself was refused before anything ran
          throw new TargetHalt('bad-request', `Dataverse refused the $batch: ${e.message}`, {
            outcomes: finish().filter((o) => !done.includes(o.email)),
          });
        }
        if (e instanceof BatchAnswerError) {
          // the writes may or may not have happened: writing the same values again is harmless
          for (const cs of pack)
            settle(cs.emails, { ok: false, retryable: true, message: `unreadable $batch answer: ${e.message}` });
          continue;
        }
        throw e;
      }
      answer.forEach((r, k) => settle(pack[k].emails, this.judge(r, pack[k].records, built.changeSets[k])));
    }
    return { outcomes: finish() };
  }

  /** `contentIds[i]` is the Content-ID of the request that wrote `records[i]`. */
  private judge(
    r: ChangeSetResult,
    records: FoundRecord[],
    contentIds: readonly number[],
  ): { ok: boolean; retryable: boolean; message?: string } {
    if (r.ok) return { ok: true, retryable: false };
    if (!r.failure)
      return {
        ok: false,
        retryable: true,
        message: 'not attempted: Dataverse stopped the $batch before this change set',
      };
    const f = r.failure;
    const err = odataErrorOf(f.body);
    const at = f.contentId === null ? -1 : contentIds.indexOf(f.contentId);
    const which = at >= 0 && records[at] ? ` (${records[at].entity} ${records[at].id})` : '';
    const text = this.caps.secrets
      .redact(`HTTP ${f.status}${which}${err.code ? ` ${err.code}` : ''}${err.message ? `: ${err.message}` : ''}`)
      .slice(0, 300);
    if (f.status === 404)
      return {
        ok: false,
        retryable: true,
        message: `a record was deleted since the lookup; looked up again next time: ${text}`,
      };
    if (f.status === 412 || f.status === 429 || f.status >= 500) return { ok: false, retryable: true, message: text };
    return { ok: false, retryable: false, message: text };
  }
}

/** Connected components of addresses and the unsuppressed records they hold. */
export function groupByRecords(
  emails: readonly string[],
  byEmail: ReadonlyMap<string, readonly FoundRecord[]>,
): Array<{ emails: string[]; records: FoundRecord[] }> {
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  const union = (a: string, b: string): void => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(ra, rb);
  };
  const recs = new Map<string, FoundRecord>();
  for (const e of emails) parent.set(`e|${e}`, `e|${e}`);
  for (const e of emails) {
    for (const r of byEmail.get(e) ?? []) {
      if (r.suppressed) continue;
      const k = `r|${recordKey(r)}`;
      if (!parent.has(k)) parent.set(k, k);
      recs.set(k, r);
      union(`e|${e}`, k);
    }
  }
  const groups = new Map<string, { emails: string[]; records: FoundRecord[] }>();
  for (const e of emails) {
    const root = find(`e|${e}`);
    const g = groups.get(root) ?? { emails: [], records: [] };
    g.emails.push(e);
    groups.set(root, g);
  }
  for (const [k, r] of recs) groups.get(find(k))!.records.push(r);
  return [...groups.values()].filter((g) => g.records.length > 0);
}
