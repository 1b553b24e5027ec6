/**
 * The Composite resource (`POST /services/data/vXX.X/composite`): up to 25 subrequests per call, of which at
 * most 5 may be queries or sObject Collections operations, and "the entire series of requests counts as a
 * single call toward your API limits". Subrequest URLs travel in the JSON body, not in the request line.
 *
 * The connector sends only independent subrequests (lookups, or Collections updates) with `allOrNone: false`:
 * a failed subrequest leaves the others alone, and its result (`httpStatusCode`, `body`) is matched back by
 * `referenceId`, never by position (subrequests may be collated).
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite_post.htm
 */
import { SalesforceClient } from './client';
import { queryUrl } from './soql';

/** Queries (Query, QueryAll, Query More) and sObject Collections operations per composite call. */
export const COMPOSITE_MAX_HEAVY = 5;
/** Subrequests of any kind per composite call. */
export const COMPOSITE_MAX_SUBREQUESTS = 25;

export interface Subrequest {
  readonly method: 'GET' | 'PATCH' | 'POST';
  /** `/services/data/vXX.X/...` */
  readonly url: string;
  /** Letters, digits and underscores, starting with a letter. */
  readonly referenceId: string;
  readonly body?: unknown;
}

export interface SubResult {
  readonly referenceId: string;
  readonly httpStatusCode: number;
  readonly body: unknown;
}

/** One error of a failed subrequest (Salesforce error bodies are `[{errorCode, message, fields?}]`). */
export interface SubError {
  readonly status: number;
  readonly errorCode: string;
  readonly message: string;
}

/** The error a non-2xx subrequest carries (its first entry), or a description of an unreadable one. */
export function subError(r: SubResult): SubError {
  const first = Array.isArray(r.body)
    ? (r.body[0] as { errorCode?: unknown; message?: unknown } | undefined)
    : undefined;
  const errorCode = typeof first?.errorCode === 'string' ? first.errorCode : `HTTP_${r.httpStatusCode}`;
  const message = typeof first?.message === 'string' ? first.message : `subrequest answered HTTP ${r.httpStatusCode}`;
  return { status: r.httpStatusCode, errorCode, message };
}

/** A subrequest failure worth retrying on a later run (throttled, server side, or no result at all). */
export function transientSub(e: SubError): boolean {
  return e.status === 0 || e.status === 429 || e.status === 420 || e.status >= 500;
}

/** The subrequest URL of a SOQL query (the same encoding, hence the same length, as a GET /query URL). */
export function querySubUrl(apiVersion: string, soql: string): string {
  return queryUrl('', apiVersion, soql);
}

/**
 * One composite call with `subs` (at most COMPOSITE_MAX_HEAVY queries/Collections, which is all this
 * connector sends). Returns a result per referenceId; a subrequest Salesforce did not answer gets status 0.
 * Throws what SalesforceClient.request throws when the call itself fails (TargetHalt / SfApiError).
 */
export async function runComposite(
  client: SalesforceClient,
  subs: readonly Subrequest[],
): Promise<Map<string, SubResult>> {
  if (subs.length === 0) return new Map();
  if (subs.length > COMPOSITE_MAX_HEAVY)
    throw new Error(
      `runComposite: ${subs.length} subrequests; at most ${COMPOSITE_MAX_HEAVY} queries/Collections per call`,
    );
  const body = {
    allOrNone: false,
    compositeRequest: subs.map((s) => ({
      method: s.method,
      url: s.url,
      referenceId: s.referenceId,
      ...(s.body !== undefined ? { body: s.body } : {}),
    })),
  };
  const res = await client.request<{ compositeResponse?: unknown }>('composite', {
    method: 'POST',
    url: '/composite',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  const out = new Map<string, SubResult>();
  const list =
    res && Array.isArray(res.compositeResponse) ? (res.compositeResponse as Array<Record<string, unknown>>) : [];
  const wanted = new Set(subs.map((s) => s.referenceId));
  for (const r of list) {
    const id =
      typeof r.referenceId === 'string'
        ? r.referenceId
        : typeof r.referenceID === 'string'
          ? (r.referenceID as string)
          : undefined;
    if (!id || !wanted.has(id) || out.has(id)) continue;
    const status = Number(r.httpStatusCode);
    out.set(id, { referenceId: id, httpStatusCode: Number.isFinite(status) ? status : 0, body: r.body });
  }
  for (const s of subs) {
    if (!out.has(s.referenceId))
      out.set(s.referenceId, {
        referenceId: s.referenceId,
        httpStatusCode: 0,
        body: [{ errorCode: 'NO_RESULT', message: 'Salesforce returned no result for this subrequest' }],
      });
  }
  return out;
}

export function groupsOf<T>(xs: readonly T[], n = COMPOSITE_MAX_HEAVY): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}
