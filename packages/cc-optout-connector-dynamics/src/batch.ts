/**
 * Building a Dataverse `$batch` of change sets (one per group of records that must change together) and
 * reading its multipart/mixed answer back into one result per change set. Format: OData 4.01 batch
 * (multipart/mixed; each request an application/http part, binary transfer encoding, a Content-ID per
 * request in a change set); a failed change set answers with one application/http part holding the error,
 * a successful one with a nested multipart of per-request answers. Answers come in request order.
 */
import { randomUUID } from 'crypto';

export interface PatchRequest {
  /** Full URL of the record, e.g. https://org.crm.dynamics.com/api/data/v9.2/contacts(<id>) */
  url: string;
  body: Record<string, unknown>;
}

export interface BuiltBatch {
  boundary: string;
  body: string;
  /** Content-IDs of each change set's requests, in order. */
  changeSets: number[][];
}

export function buildBatch(
  changeSets: readonly (readonly PatchRequest[])[],
  id: () => string = randomUUID,
): BuiltBatch {
  const boundary = `batch_${id()}`;
  const lines: string[] = [];
  const ids: number[][] = [];
  let contentId = 0;
  for (const cs of changeSets) {
    const csb = `changeset_${id()}`;
    lines.push(`--${boundary}`, `Content-Type: multipart/mixed; boundary=${csb}`, '');
    const mine: number[] = [];
    for (const r of cs) {
      contentId++;
      mine.push(contentId);
      lines.push(
        `--${csb}`,
        'Content-Type: application/http',
        'Content-Transfer-Encoding: binary',
        `Content-ID: ${contentId}`,
        '',
        `PATCH ${r.url} HTTP/1.1`,
        'Content-Type: application/json',
        // no upsert: a record deleted since the lookup answers 404 instead of being created again
        'If-Match: *',
        '',
        JSON.stringify(r.body),
      );
    }
    lines.push(`--${csb}--`, '');
    ids.push(mine);
  }
  lines.push(`--${boundary}--`, '');
  return { boundary, body: lines.join('\r\n'), changeSets: ids };
}

export interface PartResponse {
  status: number;
  contentId: number | null;
  body: string;
}

export type ChangeSetResult =
  | { ok: true; responses: PartResponse[] }
  | { ok: false; failure: PartResponse }
  /** No answer for this change set: the batch stopped before it (or the answer was cut). */
  | { ok: false; failure: null };

export class BatchAnswerError extends Error {}

function boundaryParam(contentType: string): string | null {
  if (!/^\s*multipart\/mixed/i.test(contentType)) return null;
  const m = /boundary=("([^"]+)"|[^;\s]+)/i.exec(contentType);
  return m ? (m[2] ?? m[1]) : null;
}

interface Part {
  headers: Record<string, string>;
  body: string;
}

function splitParts(body: string, boundary: string): Part[] {
  const out: Part[] = [];
  const re = /\r?\n/;
  const lines = body.split(re);
  let cur: string[] | null = null;
  for (const line of lines) {
    const t = line.trimEnd();
    if (t === `--${boundary}` || t === `--${boundary}--`) {
      if (cur) out.push(toPart(cur));
      if (t.endsWith('--') && t !== `--${boundary}`) return out;
      cur = [];
      continue;
    }
    if (cur) cur.push(line);
  }
  throw new BatchAnswerError(`the $batch answer does not close its boundary ${boundary}`);
}

function toPart(lines: string[]): Part {
  const blank = lines.findIndex((l) => l.trim() === '');
  const head = blank < 0 ? lines : lines.slice(0, blank);
  const headers: Record<string, string> = {};
  for (const h of head) {
    const i = h.indexOf(':');
    if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  return { headers, body: blank < 0 ? '' : lines.slice(blank + 1).join('\r\n') };
}

function httpResponse(p: Part): PartResponse {
  const lines = p.body.split(/\r?\n/);
  const m = /^HTTP\/1\.1\s+(\d{3})/.exec(lines[0] ?? '');
  if (!m) throw new BatchAnswerError(`a $batch answer part has no status line`);
  const blank = lines.findIndex((l, i) => i > 0 && l.trim() === '');
  const cid = p.headers['content-id'];
  return {
    status: Number(m[1]),
    contentId: cid !== undefined && /^\d+$/.test(cid) ? Number(cid) : null,
    body:
      blank < 0
        ? ''
        : lines
            .slice(blank + 1)
            .join('\n')
            .trim(),
  };
}

/** One result per change set of `built`, from the answer's Content-Type and body. */
export function parseBatchAnswer(built: BuiltBatch, contentType: string, body: string): ChangeSetResult[] {
  const boundary = boundaryParam(contentType);
  if (!boundary)
    throw new BatchAnswerError(`the $batch answer is not multipart/mixed (Content-Type "${contentType.slice(0, 60)}")`);
  const parts = splitParts(body, boundary);
  const results: ChangeSetResult[] = [];
  for (let i = 0; i < built.changeSets.length; i++) {
    const p = parts[i];
    if (!p) {
      results.push({ ok: false, failure: null });
      continue;
    }
    const inner = boundaryParam(p.headers['content-type'] ?? '');
    if (inner) {
      const responses = splitParts(p.body, inner).map(httpResponse);
      const bad = responses.find((r) => r.status >= 300);
      const want = new Set(built.changeSets[i]);
      const got = new Set(responses.map((r) => r.contentId));
      if (bad) results.push({ ok: false, failure: bad });
      else if ([...want].some((id) => !got.has(id)))
        throw new BatchAnswerError(`the answer to change set ${i + 1} lacks some of its requests' answers`);
      else results.push({ ok: true, responses });
    } else {
      // Dataverse answers a change set that succeeded with a nested changesetresponse; a bare part is how a
      // failed one answers. A bare success counts only when it names the one request by its Content-ID (an
      // answer matched by position alone, e.g. from a proxy, never turns into an "applied" that did not happen).
      const r = httpResponse(p);
      const one = built.changeSets[i].length === 1 ? built.changeSets[i][0] : undefined;
      if (r.status < 300 && one !== undefined && r.contentId === one) results.push({ ok: true, responses: [r] });
      else
        results.push({
          ok: false,
          failure:
            r.status < 300
              ? {
                  ...r,
                  status: 500,
                  body: `a change set answered with a single part that does not name its request (Content-ID ${r.contentId ?? 'missing'})`,
                }
              : r,
        });
    }
  }
  return results;
}
