/**
 * deliver(): look up every mapped object by email, skip records already opted out, write the rest
 * (sObject Collections, or Bulk API 2.0 above the threshold), and fold per-record results into one
 * outcome per email.
 */
import {
  Capabilities,
  DeliveryMode,
  DeliveryReport,
  HaltInfo,
  OptOut,
  Outcome,
  RetryPolicy,
  TargetHalt,
  isTargetHalt,
  mappedValue,
  normaliseEmail,
} from '../../src/sdk';
import { ResolvedConfig, ResolvedObject, ObjectKey } from './config';
import { SalesforceClient, SfApiError, safeMessage } from './client';
import { LookupChunk, lookupSoql, planLookupChunks } from './soql';
import {
  SubError,
  SubResult,
  Subrequest,
  groupsOf,
  querySubUrl,
  runComposite,
  subError,
  transientSub,
} from './composite';
import type { QueryResult, Record as SfRecord } from 'jsforce';
import { toCsv, parseCsv } from './csv';

/** A well-formed address no record has (RFC 2606 `.invalid`), for checking a lookup query's shape. */
const PROBE_ADDRESS = 'probe@cc-optout.invalid';
/** sObject Collections accept at most 200 records per request. */
export const COLLECTION_LIMIT = 200;
/** UNABLE_TO_LOCK_ROW: attempts (including the first) within one run before the record is failed-retryable. */
export const LOCK_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 1_000, maxDelayMs: 10_000 };
/** Bulk 2.0 polling: first wait, growth, cap, and how long we wait for a job before leaving it retryable. */
export const BULK_POLL = { firstMs: 2_000, factor: 1.5, maxMs: 30_000, timeoutMs: 20 * 60_000 };

/** Per-record error codes worth retrying on a later run (the rest are permanent). */
const RETRYABLE_RECORD_CODES = new Set([
  'UNABLE_TO_LOCK_ROW',
  'SERVER_UNAVAILABLE',
  'REQUEST_RUNNING_TOO_LONG',
  'QUERY_TIMEOUT',
  'UNKNOWN_EXCEPTION',
  'ALL_OR_NONE_OPERATION_ROLLED_BACK',
  'UNPROCESSED',
  'NO_RESULT',
  'NOT_ATTEMPTED',
]);

/** A lookup subrequest that failed transiently is sent this many times in all within one deliver(). */
const LOOKUP_SUBREQUEST_ATTEMPTS = 2;

interface LookupTask {
  readonly obj: ResolvedObject;
  readonly chunk: LookupChunk;
}

interface MatchedRecord {
  readonly obj: ResolvedObject;
  readonly id: string;
  readonly suppressed: boolean;
}

interface WriteItem {
  readonly obj: ResolvedObject;
  readonly id: string;
  readonly email: string;
  /** Field values to write (suppression field first, then extra fields with a non-null value). */
  readonly values: Readonly<Record<string, string | number | boolean>>;
}

type WriteResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly retryable: boolean; readonly code: string; readonly message: string };

interface SaveResult {
  id?: string;
  success: boolean;
  errors?: Array<{ statusCode?: string; errorCode?: string; message?: string; fields?: string[] }>;
}

interface IngestJobInfo {
  id: string;
  state: string;
  errorMessage?: string;
  numberRecordsProcessed?: number;
  numberRecordsFailed?: number;
}

function failure(code: string, message: string, retryable = RETRYABLE_RECORD_CODES.has(code)): WriteResult {
  return { ok: false, retryable, code, message: safeMessage(message) };
}

function label(obj: ResolvedObject, id: string): string {
  return `${obj.key} ${id}`;
}

function recordValues(obj: ResolvedObject, o: OptOut): Record<string, string | number | boolean> {
  const values: Record<string, string | number | boolean> = { [obj.field]: true };
  for (const [field, source] of obj.extraFields) {
    const v = mappedValue(source, o);
    // null (no reason / source in Constant Contact) leaves the Salesforce value unchanged
    if (v !== null && field !== obj.field) values[field] = v;
  }
  return values;
}

function describeWrite(obj: ResolvedObject, id: string, values: Record<string, unknown>): string {
  return `${label(obj, id)}: ${Object.entries(values)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(', ')}`;
}

function chunksOf<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

class LockedRows extends Error {
  constructor(readonly count: number) {
    super(`${count} record(s) UNABLE_TO_LOCK_ROW`);
  }
}

export class Delivery {
  /** Objects whose lookup query has worked at least once (so a MALFORMED_QUERY is about the addresses). */
  private readonly workingQueries = new Set<ObjectKey>();

  constructor(
    private readonly client: SalesforceClient,
    private readonly cfg: ResolvedConfig,
    private readonly caps: Capabilities,
  ) {}

  /**
   * Does the lookup query of `obj` work with a plain address? Known after any successful lookup; otherwise
   * one probe query (only ever sent after a MALFORMED_QUERY). A refusal of the probe means the query itself
   * (the mapping) is wrong; a halt (auth, limits) propagates.
   */
  private async queryShapeWorks(obj: ResolvedObject): Promise<boolean> {
    if (this.workingQueries.has(obj.key)) return true;
    try {
      await this.client.queryAll(lookupSoql(obj, [PROBE_ADDRESS]));
    } catch (e) {
      if (e instanceof SfApiError) return false;
      throw e;
    }
    this.workingQueries.add(obj.key);
    return true;
  }

  /** What a refused lookup of `obj` means: a literal at fault (bad-request: the engine splits the batch), or the mapping. */
  private async lookupRefusal(obj: ResolvedObject, e: SfApiError): Promise<TargetHalt> {
    if (e.errorCode === 'MALFORMED_QUERY' && (await this.queryShapeWorks(obj))) {
      // The same query with a plain address works: a literal of this chunk is at fault, not the mapping.
      // Nothing is written yet; the engine splits the batch until the address(es) at fault stand alone.
      return new TargetHalt({
        kind: 'bad-request',
        message: `Salesforce refused the ${obj.key} lookup (${e.errorCode}: ${e.message})`,
      });
    }
    if (e.errorCode === 'REQUEST_LIMIT_EXCEEDED') {
      return new TargetHalt({
        kind: 'quota',
        message: `Salesforce API request limit exceeded (${obj.key} lookup: ${e.errorCode}: ${e.message})`,
      });
    }
    return new TargetHalt({
      kind: 'config',
      message: `Salesforce lookup on ${obj.key} failed (${e.errorCode}: ${e.message}); check objects.${obj.key} (field "${obj.field}") and the integration user's access`,
    });
  }

  /** Every page after the first of a query answered inside a composite call (Query More, one call each). */
  private async queryRest(nextRecordsUrl: string): Promise<Array<Record<string, unknown>>> {
    const conn = await this.client.connection();
    const out: Array<Record<string, unknown>> = [];
    let next: string | undefined = nextRecordsUrl;
    while (next) {
      const locator: string = next;
      const page: QueryResult<SfRecord> = await this.client.call(
        'queryMore',
        async () => await conn.queryMore<SfRecord>(locator),
      );
      out.push(...(page.records as Array<Record<string, unknown>>));
      next = page.done === false ? page.nextRecordsUrl : undefined;
    }
    return out;
  }

  /**
   * Lookups five queries to a Composite call. A subrequest refused as a bad request stops the batch like a
   * refused query (MALFORMED_QUERY -> bad-request isolation; else config); a throttled / failed / unanswered
   * subrequest is sent once more in a later call, then its emails stay queued with the reason in
   * `lookupErrors`. Returns the number of composite calls.
   */
  private async lookupComposite(
    tasks: readonly LookupTask[],
    record: (task: LookupTask, records: ReadonlyArray<Record<string, unknown>>) => void,
    lookupErrors: Map<string, string>,
  ): Promise<number> {
    let calls = 0;
    let pending = [...tasks];
    const lastError = new Map<LookupTask, SubError>();
    for (let round = 0; round < LOOKUP_SUBREQUEST_ATTEMPTS && pending.length > 0; round++) {
      const again: LookupTask[] = [];
      for (const group of groupsOf(pending)) {
        const subs = group.map((t, i) => ({
          method: 'GET' as const,
          url: querySubUrl(this.cfg.apiVersion, t.chunk.soql),
          referenceId: `lookup${i}`,
        }));
        let results: Map<string, SubResult>;
        try {
          calls += 1;
          results = await runComposite(this.client, subs);
        } catch (e) {
          if (e instanceof SfApiError) throw await this.lookupRefusal(group[0]!.obj, e);
          throw e;
        }
        for (const [i, task] of group.entries()) {
          const r = results.get(`lookup${i}`)!;
          if (r.httpStatusCode >= 200 && r.httpStatusCode < 300) {
            const body = (r.body ?? {}) as { records?: unknown; done?: unknown; nextRecordsUrl?: unknown };
            let records = Array.isArray(body.records) ? (body.records as Array<Record<string, unknown>>) : [];
            if (body.done === false && typeof body.nextRecordsUrl === 'string')
              records = records.concat(await this.queryRest(body.nextRecordsUrl));
            record(task, records);
            continue;
          }
          const err = subError(r);
          if (transientSub(err)) {
            lastError.set(task, err);
            again.push(task);
            continue;
          }
          throw await this.lookupRefusal(task.obj, new SfApiError(err.status, err.errorCode, safeMessage(err.message)));
        }
      }
      pending = again;
    }
    for (const task of pending) {
      const err = lastError.get(task);
      const why = `the ${task.obj.key} lookup subrequest failed ${LOOKUP_SUBREQUEST_ATTEMPTS} times (${err ? `HTTP ${err.status} ${err.errorCode}: ${safeMessage(err.message)}` : 'no result'}); looked up again later`;
      task.chunk.emails.forEach((e) => lookupErrors.set(e, why));
    }
    return calls;
  }

  /** One outcome per email; a stop is a TargetHalt carrying the outcomes settled before it (none: nothing done). */
  async run(batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> {
    // one outcome per distinct email; the first opt-out for an email wins
    const byEmail = new Map<string, OptOut>();
    for (const o of batch) {
      const email = normaliseEmail(o.email);
      if (email !== '' && !byEmail.has(email)) byEmail.set(email, { ...o, email });
    }
    const emails = [...byEmail.keys()];
    const blank: Outcome[] = batch
      .filter((o) => normaliseEmail(o.email) === '')
      .slice(0, 1)
      .map((o) => ({ email: o.email, kind: 'failed-permanent', recordIds: [], message: 'empty email address' }));
    if (emails.length === 0) return { outcomes: blank };
    if (this.cfg.objects.length === 0) {
      throw new TargetHalt('config', 'no Salesforce object is enabled in objects (Contact, Lead, PersonAccount)');
    }

    let halt: HaltInfo | undefined;
    const matches = new Map<string, MatchedRecord[]>();
    const lookedUp = new Map<ObjectKey, Set<string>>();
    const tooLong = new Set<string>();
    const results = new Map<string, WriteResult>();
    let queries = 0;
    let lookupCalls = 0;
    let writeCalls = 0;
    /** Emails whose lookup subrequest failed transiently (they stay queued): why. */
    const lookupErrors = new Map<string, string>();

    try {
      // 1. Lookups: every object's chunks (up to queryChunkSize emails, bounded by URL bytes); one chunk is a
      // plain query, more go 5 to a Composite call (one API call for five queries).
      const tasks: LookupTask[] = [];
      const conn = await this.client.connection();
      for (const obj of this.cfg.objects) {
        lookedUp.set(obj.key, new Set<string>());
        const plan = planLookupChunks(obj, emails, {
          instanceUrl: conn.instanceUrl,
          apiVersion: this.cfg.apiVersion,
          maxPerChunk: this.cfg.queryChunkSize,
        });
        plan.tooLong.forEach((e) => tooLong.add(e));
        for (const chunk of plan.chunks) tasks.push({ obj, chunk });
      }
      const record = (task: LookupTask, records: ReadonlyArray<Record<string, unknown>>): void => {
        const { obj, chunk } = task;
        queries += 1;
        this.workingQueries.add(obj.key);
        const wanted = new Set(chunk.emails);
        for (const r of records) {
          const raw = r[obj.emailField];
          const id = r['Id'];
          if (typeof raw !== 'string' || typeof id !== 'string') continue;
          const email = normaliseEmail(raw);
          if (!wanted.has(email)) continue;
          const list = matches.get(email) ?? [];
          if (!list.some((m) => m.id === id)) list.push({ obj, id, suppressed: r[obj.field] === true });
          matches.set(email, list);
        }
        const done = lookedUp.get(obj.key)!;
        chunk.emails.forEach((e) => done.add(e));
      };
      if (tasks.length === 1) {
        const task = tasks[0]!;
        let records: Array<Record<string, unknown>>;
        try {
          records = await this.client.queryAll<Record<string, unknown> & { Id: string }>(task.chunk.soql);
        } catch (e) {
          if (e instanceof SfApiError) throw await this.lookupRefusal(task.obj, e);
          throw e;
        }
        record(task, records);
      } else {
        lookupCalls += await this.lookupComposite(tasks, record, lookupErrors);
      }

      // 2. Writes
      if (mode === 'apply') {
        const items: WriteItem[] = [];
        for (const email of emails) {
          for (const m of matches.get(email) ?? []) {
            if (!m.suppressed)
              items.push({ obj: m.obj, id: m.id, email, values: recordValues(m.obj, byEmail.get(email)!) });
          }
        }
        const bulkObjects = this.cfg.objects.filter(
          (obj) => items.filter((i) => i.obj.key === obj.key).length > this.cfg.bulkThreshold,
        );
        const viaCollections = items.filter((i) => !bulkObjects.some((b) => b.key === i.obj.key));
        writeCalls += await this.writeCollections(viaCollections, results);
        for (const obj of bulkObjects) {
          await this.writeBulk(
            obj,
            items.filter((i) => i.obj.key === obj.key),
            results,
          );
        }
      }
    } catch (e) {
      if (isTargetHalt(e)) halt = e;
      else
        halt = {
          kind: 'fatal',
          message: `Salesforce connector error: ${safeMessage(e instanceof Error ? e.message : String(e))}`,
        };
      this.caps.logger.warn('salesforce delivery stopped', {
        target: this.caps.targetName,
        kind: halt.kind,
        reason: halt.message,
      });
    } finally {
      this.client.flushUsage();
    }

    const outcomes = [
      ...emails.map((email) =>
        this.outcome(byEmail.get(email)!, mode, matches, lookedUp, tooLong, results, halt, lookupErrors),
      ),
      ...blank,
    ];
    this.caps.logger.info('salesforce delivery', {
      target: this.caps.targetName,
      mode,
      emails: emails.length,
      queries,
      compositeLookupCalls: lookupCalls,
      writeCalls,
      ...countKinds(outcomes),
    });
    if (halt && outcomes.every((o) => o.kind === 'failed-retryable')) throw new TargetHalt(halt);
    if (halt) throw new TargetHalt(halt.kind, halt.message, { retryAt: halt.retryAt, outcomes });
    return { outcomes };
  }

  private outcome(
    optOut: OptOut,
    mode: DeliveryMode,
    matches: Map<string, MatchedRecord[]>,
    lookedUp: Map<ObjectKey, Set<string>>,
    tooLong: Set<string>,
    results: Map<string, WriteResult>,
    halt: HaltInfo | undefined,
    lookupErrors: ReadonlyMap<string, string> = new Map(),
  ): Outcome {
    const email = optOut.email;
    if (tooLong.has(email)) {
      return {
        email,
        kind: 'failed-permanent',
        recordIds: [],
        message: 'email address too long for a SOQL lookup URL',
      };
    }
    const complete = this.cfg.objects.every((obj) => lookedUp.get(obj.key)?.has(email) ?? false);
    const recs = matches.get(email) ?? [];
    if (!complete) {
      return {
        email,
        kind: 'failed-retryable',
        recordIds: recs.map((r) => r.id),
        message: `not looked up: ${lookupErrors.get(email) ?? halt?.message ?? 'lookup incomplete'}`,
      };
    }
    if (recs.length === 0)
      return {
        email,
        kind: 'not-found',
        recordIds: [],
        message: `no ${this.cfg.objects.map((o) => o.key).join('/')} with this email`,
      };
    const needs = recs.filter((r) => !r.suppressed);
    const already = recs.filter((r) => r.suppressed);
    const alreadyNote =
      already.length > 0 ? `already opted out: ${already.map((r) => label(r.obj, r.id)).join(', ')}` : undefined;
    if (needs.length === 0) {
      return { email, kind: 'already-suppressed', recordIds: recs.map((r) => r.id) };
    }
    if (mode === 'plan') {
      return {
        email,
        kind: 'planned',
        recordIds: needs.map((r) => r.id),
        action: needs.map((r) => describeWrite(r.obj, r.id, recordValues(r.obj, optOut))).join('; '),
        ...(alreadyNote ? { message: alreadyNote } : {}),
      };
    }
    const written: MatchedRecord[] = [];
    const permanent: string[] = [];
    const retryable: string[] = [];
    for (const r of needs) {
      const res =
        results.get(r.id) ?? failure('NOT_ATTEMPTED', halt ? `not attempted: ${halt.message}` : 'not attempted');
      if (res.ok) written.push(r);
      else (res.retryable ? retryable : permanent).push(`${label(r.obj, r.id)}: ${res.code}: ${res.message}`);
    }
    const writtenNote =
      written.length > 0 ? `written: ${written.map((r) => label(r.obj, r.id)).join(', ')}` : undefined;
    const note = (parts: Array<string | undefined>): string => parts.filter((p): p is string => !!p).join('; ');
    if (retryable.length > 0) {
      return {
        email,
        kind: 'failed-retryable',
        recordIds: recs.map((r) => r.id),
        message: note([...retryable, ...permanent, writtenNote]),
      };
    }
    if (permanent.length > 0) {
      return {
        email,
        kind: 'failed-permanent',
        recordIds: recs.map((r) => r.id),
        message: note([`failed: ${permanent.join('; ')}`, writtenNote, alreadyNote]),
      };
    }
    return {
      email,
      kind: 'applied',
      recordIds: written.map((r) => r.id),
      ...(alreadyNote ? { message: alreadyNote } : {}),
    };
  }

  // -------------------------------------------------------------------------------------------
  // sObject Collections

  /**
   * PATCH /composite/sobjects, at most 200 records per request (object types may mix; records are sorted by
   * type so each request holds at most three type chunks), allOrNone false, results read by position.
   * UNABLE_TO_LOCK_ROW records are re-sent after a backoff, LOCK_RETRY.maxAttempts in all.
   * Returns the number of requests sent.
   */
  private async writeCollections(items: readonly WriteItem[], results: Map<string, WriteResult>): Promise<number> {
    if (items.length === 0) return 0;
    let calls = 0;
    let pending = [...items].sort((a, b) =>
      a.obj.sobject === b.obj.sobject ? 0 : a.obj.sobject < b.obj.sobject ? -1 : 1,
    );
    try {
      await this.caps.http.retry(
        async () => {
          const locked: WriteItem[] = [];
          const chunks = chunksOf(pending, COLLECTION_LIMIT);
          const body = (chunk: readonly WriteItem[]) => ({
            allOrNone: false,
            records: chunk.map((i) => ({ attributes: { type: i.obj.sobject }, id: i.id, ...i.values })),
          });
          if (chunks.length === 1) {
            // one Collections request: sent as it is (the same one API call as a composite of one)
            const chunk = chunks[0]!;
            let saved: SaveResult[];
            try {
              calls += 1;
              saved = await this.client.request<SaveResult[]>('update', {
                method: 'PATCH',
                url: '/composite/sobjects',
                body: JSON.stringify(body(chunk)),
                headers: { 'content-type': 'application/json' },
              });
            } catch (e) {
              if (!(e instanceof SfApiError)) throw e;
              // the whole request was refused (400 JSON_PARSER_ERROR, INVALID_FIELD, ...): every record in it failed
              chunk.forEach((i) => results.set(i.id, failure(e.errorCode, e.message)));
              return;
            }
            this.readSaved(chunk, saved, results, locked);
          } else {
            // up to five Collections updates (200 records each) per Composite call: one API call for 1,000 records
            for (const group of groupsOf(chunks)) {
              const subs: Subrequest[] = group.map((chunk, i) => ({
                method: 'PATCH',
                url: `/services/data/v${this.cfg.apiVersion}/composite/sobjects`,
                referenceId: `update${i}`,
                body: body(chunk),
              }));
              let res: Map<string, SubResult>;
              try {
                calls += 1;
                res = await runComposite(this.client, subs);
              } catch (e) {
                if (!(e instanceof SfApiError)) throw e;
                // the composite call itself was refused: every record in it failed, with Salesforce's reason
                for (const chunk of group) chunk.forEach((i) => results.set(i.id, failure(e.errorCode, e.message)));
                continue;
              }
              group.forEach((chunk, i) => {
                const r = res.get(`update${i}`)!;
                if (r.httpStatusCode >= 200 && r.httpStatusCode < 300) {
                  this.readSaved(chunk, Array.isArray(r.body) ? (r.body as SaveResult[]) : [], results, locked);
                  return;
                }
                // this subrequest failed as a whole: its records (and only its records) fail with its error
                const err = subError(r);
                chunk.forEach((item) =>
                  results.set(
                    item.id,
                    failure(err.errorCode, err.message, transientSub(err) || RETRYABLE_RECORD_CODES.has(err.errorCode)),
                  ),
                );
              });
            }
          }
          if (locked.length > 0) {
            pending = locked;
            throw new LockedRows(locked.length);
          }
        },
        (e) => (e instanceof LockedRows ? { retry: true, reason: e.message } : { retry: false }),
        LOCK_RETRY,
        this.caps.clock,
        {
          onRetry: ({ attempt, delayMs, reason }) =>
            this.caps.logger.warn('salesforce records locked; retrying them', {
              target: this.caps.targetName,
              attempt,
              delayMs,
              reason,
            }),
        },
      );
    } catch (e) {
      if (!(e instanceof LockedRows)) throw e;
      // still locked after the last attempt: already recorded as failed-retryable
    }
    return calls;
  }

  /** Per-record results of one Collections update, read by position; locked records are collected for a retry. */
  private readSaved(
    chunk: readonly WriteItem[],
    saved: readonly SaveResult[],
    results: Map<string, WriteResult>,
    locked: WriteItem[],
  ): void {
    chunk.forEach((item, idx) => {
      const r = saved[idx];
      if (!r) {
        results.set(item.id, failure('NO_RESULT', 'Salesforce returned no result for this record'));
      } else if (r.success) {
        results.set(item.id, { ok: true });
      } else {
        const err = r.errors?.[0];
        const code = err?.statusCode ?? err?.errorCode ?? 'UNKNOWN_ERROR';
        const fields = err?.fields && err.fields.length > 0 ? ` (fields: ${err.fields.join(', ')})` : '';
        results.set(item.id, failure(code, `${err?.message ?? 'no message'}${fields}`));
        if (code === 'UNABLE_TO_LOCK_ROW') locked.push(item);
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Bulk API 2.0

  /**
   * One ingest job (operation update, CSV `Id,<field>,<extra fields>`): create, upload, UploadComplete, poll,
   * then read successfulResults / failedResults / unprocessedrecords back into per-record results.
   */
  private async writeBulk(
    obj: ResolvedObject,
    items: readonly WriteItem[],
    results: Map<string, WriteResult>,
  ): Promise<void> {
    const columns = ['Id', obj.field];
    for (const i of items) for (const k of Object.keys(i.values)) if (!columns.includes(k)) columns.push(k);
    const csv = toCsv(
      columns,
      items.map((i) => columns.map((c) => (c === 'Id' ? i.id : i.values[c] === undefined ? '' : String(i.values[c])))),
    );
    const json = { 'content-type': 'application/json; charset=utf-8' };
    let job: IngestJobInfo;
    try {
      job = await this.client.request<IngestJobInfo>('bulk create job', {
        method: 'POST',
        url: '/jobs/ingest',
        body: JSON.stringify({
          object: obj.sobject,
          operation: 'update',
          contentType: 'CSV',
          columnDelimiter: 'COMMA',
          lineEnding: 'LF',
        }),
        headers: json,
      });
      this.caps.logger.info('salesforce bulk job created', {
        target: this.caps.targetName,
        object: obj.sobject,
        job: job.id,
        records: items.length,
      });
      await this.client.request('bulk upload', {
        method: 'PUT',
        url: `/jobs/ingest/${job.id}/batches`,
        body: csv,
        headers: { 'content-type': 'text/csv' },
      });
      await this.client.request('bulk close', {
        method: 'PATCH',
        url: `/jobs/ingest/${job.id}`,
        body: JSON.stringify({ state: 'UploadComplete' }),
        headers: json,
      });
    } catch (e) {
      if (!(e instanceof SfApiError)) throw e;
      items.forEach((i) =>
        results.set(i.id, failure(e.errorCode, `Bulk API 2.0 job for ${obj.sobject} refused: ${e.message}`)),
      );
      return;
    }

    const started = this.caps.clock.now().getTime();
    let wait = BULK_POLL.firstMs;
    let info: IngestJobInfo = job;
    for (;;) {
      await this.caps.clock.sleep(wait);
      info = await this.client.request<IngestJobInfo>('bulk poll', { method: 'GET', url: `/jobs/ingest/${job.id}` });
      if (info.state === 'JobComplete' || info.state === 'Failed' || info.state === 'Aborted') break;
      if (this.caps.clock.now().getTime() - started > BULK_POLL.timeoutMs) {
        this.caps.logger.warn('salesforce bulk job still running; leaving its records for a later run', {
          target: this.caps.targetName,
          job: job.id,
          state: info.state,
        });
        items.forEach((i) =>
          results.set(
            i.id,
            failure(
              'NO_RESULT',
              `Bulk job ${job.id} still ${info.state} after ${Math.round(BULK_POLL.timeoutMs / 60_000)} min`,
            ),
          ),
        );
        return;
      }
      wait = Math.min(BULK_POLL.maxMs, Math.round(wait * BULK_POLL.factor));
    }
    if (info.state !== 'JobComplete') {
      this.caps.logger.warn('salesforce bulk job did not complete', {
        target: this.caps.targetName,
        job: job.id,
        state: info.state,
        error: info.errorMessage,
      });
    }

    const text = { responseType: 'text/plain' };
    const base = `/jobs/ingest/${job.id}`;
    const ok = parseCsv(
      await this.client.request<string>(
        'bulk successfulResults',
        { method: 'GET', url: `${base}/successfulResults` },
        text,
      ),
    );
    // A complete job that processed every record with no failure has nothing to say in the other two result
    // sets: skip those requests (5 calls per job instead of 7).
    const clean =
      info.state === 'JobComplete' && info.numberRecordsFailed === 0 && info.numberRecordsProcessed === items.length;
    const failed = clean
      ? []
      : parseCsv(
          await this.client.request<string>(
            'bulk failedResults',
            { method: 'GET', url: `${base}/failedResults` },
            text,
          ),
        );
    const unprocessed = clean
      ? []
      : parseCsv(
          await this.client.request<string>(
            'bulk unprocessedrecords',
            { method: 'GET', url: `${base}/unprocessedrecords` },
            text,
          ),
        );
    const known = new Set(items.map((i) => i.id));
    const byId = new Map(items.map((i) => [i.id, i]));
    for (const row of ok) {
      const id = row['sf__Id'] || row['Id'];
      if (id && known.has(id)) results.set(id, { ok: true });
    }
    const locked: WriteItem[] = [];
    for (const row of failed) {
      const id = row['Id'] || row['sf__Id'];
      if (!id || !known.has(id)) continue;
      const raw = row['sf__Error'] ?? '';
      const colon = raw.indexOf(':');
      const code = colon > 0 ? raw.slice(0, colon) : raw || 'UNKNOWN_ERROR';
      const message = colon > 0 ? raw.slice(colon + 1) : raw;
      results.set(id, failure(code, message));
      if (code === 'UNABLE_TO_LOCK_ROW') locked.push(byId.get(id)!);
    }
    for (const row of unprocessed) {
      const id = row['Id'];
      if (id && known.has(id))
        results.set(
          id,
          failure(
            'UNPROCESSED',
            `not processed by Bulk job ${job.id} (${info.state}${info.errorMessage ? `: ${info.errorMessage}` : ''})`,
          ),
        );
    }
    for (const i of items) {
      if (!results.has(i.id))
        results.set(i.id, failure('NO_RESULT', `no result for this record in Bulk job ${job.id} (${info.state})`));
    }
    this.caps.logger.info('salesforce bulk job finished', {
      target: this.caps.targetName,
      job: job.id,
      state: info.state,
      succeeded: ok.length,
      failed: failed.length,
      unprocessed: unprocessed.length,
    });
    // Lock contention in a job is worth one more go through sObject Collections (with its own lock retries).
    if (locked.length > 0 && locked.length <= this.cfg.bulkThreshold) await this.writeCollections(locked, results);
  }
}

function countKinds(outcomes: readonly Outcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) out[o.kind] = (out[o.kind] ?? 0) + 1;
  return out;
}
