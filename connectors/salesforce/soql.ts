/**
 * SOQL text for the email lookups, and chunking so that no query URL passes Salesforce's limit.
 * Pure functions: no I/O.
 */
import { ResolvedObject } from './config';

/** Salesforce rejects a request whose URL plus headers exceed 16,384 bytes. */
export const MAX_REQUEST_LINE_AND_HEADERS = 16_384;
/** What we leave for headers (Authorization: Bearer <~120 chars>, User-Agent, Accept, ...). */
export const HEADER_ALLOWANCE = 2_048;
/** The longest query URL we send. */
export const MAX_QUERY_URL_BYTES = MAX_REQUEST_LINE_AND_HEADERS - HEADER_ALLOWANCE;

/**
 * A SOQL string literal: backslash first, then quote; control characters as SOQL escape sequences.
 * https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
 */
export function soqlLiteral(value: string): string {
  const escaped = value
    .replace(/\\/g, '\\\\')
    .replace(/'/g, "\\'")
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t')
    .replace(/\f/g, '\\f')
    .replace(/\u0008/g, '\\b');
  return `'${escaped}'`;
}

/** The lookup for one chunk. Never call it with an empty list (a SOQL `IN ()` is a syntax error). */
export function lookupSoql(obj: ResolvedObject, emails: readonly string[]): string {
  if (emails.length === 0) throw new Error('lookupSoql: refusing to build a query with an empty email list');
  const fields = ['Id', obj.emailField, obj.field].filter((f, i, all) => all.indexOf(f) === i).join(', ');
  const where = [`${obj.emailField} IN (${emails.map(soqlLiteral).join(',')})`, ...obj.conditions].join(' AND ');
  return `SELECT ${fields} FROM ${obj.sobject} WHERE ${where}`;
}

/**
 * The URL jsforce sends for a query (`{instance}/services/data/v{version}/query?q=...`, encodeURIComponent).
 * The WHATWG URL parser under node-fetch may further encode `'` as `%27` in a query string, so lengths are
 * computed with that encoding: the longer of the two forms.
 */
export function queryUrl(instanceUrl: string, apiVersion: string, soql: string): string {
  return `${instanceUrl}/services/data/v${apiVersion}/query?q=${encodeQuery(soql)}`;
}

function encodeQuery(s: string): string {
  return encodeURIComponent(s).replace(/'/g, '%27');
}

export interface LookupChunk {
  readonly emails: readonly string[];
  readonly soql: string;
  readonly urlBytes: number;
}

export interface ChunkPlan {
  readonly chunks: readonly LookupChunk[];
  /** Emails that alone would make a URL too long (not valid email addresses in practice). */
  readonly tooLong: readonly string[];
}

/**
 * Split `emails` into queries of at most `maxPerChunk` emails whose URL stays within `maxUrlBytes`.
 * URLs are ASCII after percent-encoding, so string length equals byte length.
 */
export function planLookupChunks(
  obj: ResolvedObject,
  emails: readonly string[],
  opts: { instanceUrl: string; apiVersion: string; maxPerChunk: number; maxUrlBytes?: number },
): ChunkPlan {
  const maxUrl = opts.maxUrlBytes ?? MAX_QUERY_URL_BYTES;
  // URL length of a query = base (everything but the list) + encoded literals + encoded separators.
  const probe = lookupSoql(obj, ['x']);
  const baseBytes = queryUrl(opts.instanceUrl, opts.apiVersion, probe).length - encodeQuery(soqlLiteral('x')).length;
  const sepBytes = encodeQuery(',').length;
  const chunks: LookupChunk[] = [];
  const tooLong: string[] = [];
  let current: string[] = [];
  let bytes = baseBytes;
  const flush = (): void => {
    if (current.length === 0) return;
    const soql = lookupSoql(obj, current);
    const urlBytes = queryUrl(opts.instanceUrl, opts.apiVersion, soql).length;
    if (urlBytes !== bytes) throw new Error(`planLookupChunks: URL length estimate ${bytes} != ${urlBytes}`);
    chunks.push({ emails: current, soql, urlBytes });
    current = [];
    bytes = baseBytes;
  };
  for (const email of emails) {
    const litBytes = encodeQuery(soqlLiteral(email)).length;
    if (baseBytes + litBytes > maxUrl) {
      tooLong.push(email);
      continue;
    }
    const add = litBytes + (current.length > 0 ? sepBytes : 0);
    if (current.length >= opts.maxPerChunk || bytes + add > maxUrl) flush();
    bytes += litBytes + (current.length > 0 ? sepBytes : 0);
    current.push(email);
  }
  flush();
  return { chunks, tooLong };
}
