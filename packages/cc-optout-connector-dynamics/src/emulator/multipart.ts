/**
 * Reading and writing the multipart/mixed bodies of an OData `$batch` (OData 4.01 Part 1, section 11.7, and the
 * Dataverse "Execute batch operations using the Web API" article), for the emulator's side of the wire.
 * Lines end in CRLF when written; LF alone is accepted when read.
 */
export interface MimePart {
  headers: Record<string, string>;
  body: string;
}

export class MultipartError extends Error {}

/** `boundary` parameter of a multipart Content-Type, or null. */
export function boundaryOf(contentType: string | undefined): string | null {
  if (!contentType || !/^\s*multipart\/mixed\b/i.test(contentType)) return null;
  const m = /;\s*boundary=("([^"]+)"|[^;\s]+)/i.exec(contentType);
  return m ? (m[2] ?? m[1]) : null;
}

function parseHeaders(block: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of block.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const i = line.indexOf(':');
    if (i <= 0) throw new MultipartError(`malformed header line "${line.slice(0, 80)}"`);
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return headers;
}

/** Split a headers+blank line+body block. */
function splitHead(text: string): { head: string; body: string } {
  const m = /\r?\n\r?\n/.exec(text);
  if (!m) return { head: text, body: '' };
  return { head: text.slice(0, m.index), body: text.slice(m.index + m[0].length) };
}

export function parseMultipart(body: string, boundary: string): MimePart[] {
  const delim = `--${boundary}`;
  const lines = body.split(/\r?\n/);
  const parts: MimePart[] = [];
  let current: string[] | null = null;
  let closed = false;
  for (const line of lines) {
    const l = line.trimEnd();
    if (l === delim || l === `${delim}--`) {
      if (current) parts.push(toPart(current));
      current = l === delim ? [] : null;
      if (l !== delim) {
        closed = true;
        break;
      }
      continue;
    }
    if (current) current.push(line);
  }
  if (!closed) throw new MultipartError(`multipart body does not end with --${boundary}--`);
  return parts;
}

function toPart(lines: string[]): MimePart {
  const { head, body } = splitHead(lines.join('\r\n'));
  return { headers: parseHeaders(head), body: body.replace(/(\r?\n)+$/, '') };
}

export interface InnerRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** The HTTP request inside an application/http part: request line, headers, body. */
export function parseInnerRequest(text: string): InnerRequest {
  const { head, body } = splitHead(text);
  const [first, ...rest] = head.split(/\r?\n/);
  const m = /^([A-Z]+)\s+(\S+)(\s+HTTP\/1\.1)?\s*$/.exec(first ?? '');
  if (!m) throw new MultipartError(`malformed request line "${(first ?? '').slice(0, 80)}"`);
  return { method: m[1], url: m[2], headers: parseHeaders(rest.join('\n')), body };
}

export interface InnerResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  contentId?: string;
}

const REASONS: Record<number, string> = {
  200: 'OK',
  204: 'No Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  412: 'Precondition Failed',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function httpPart(r: InnerResponse): string {
  const lines = ['Content-Type: application/http', 'Content-Transfer-Encoding: binary'];
  if (r.contentId !== undefined) lines.push(`Content-ID: ${r.contentId}`);
  lines.push('', `HTTP/1.1 ${r.status} ${REASONS[r.status] ?? 'Status'}`);
  for (const [k, v] of Object.entries(r.headers ?? {})) lines.push(`${k}: ${v}`);
  lines.push('', r.body ?? '');
  return lines.join('\r\n');
}

/** A multipart/mixed body from already-rendered parts (each with its own part headers). */
export function renderMultipart(boundary: string, parts: string[]): string {
  return parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('') + `--${boundary}--\r\n`;
}
