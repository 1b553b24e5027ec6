/**
 * Salesforce-shaped record ids: 15 case-sensitive characters plus the 3-character case-insensitive suffix,
 * computed with Salesforce's published algorithm, so that ids look and compare like the real ones.
 */

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const SUFFIX = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345';

export const KEY_PREFIX = { Contact: '003', Lead: '00Q', Account: '001', User: '005', Organization: '00D' } as const;

function base62(n: number, width: number): string {
  let s = '';
  let v = Math.floor(n);
  while (v > 0) {
    s = BASE62[v % 62] + s;
    v = Math.floor(v / 62);
  }
  return s.padStart(width, '0');
}

/** The 3-character suffix that turns a 15-character id into its 18-character form. */
export function idSuffix(id15: string): string {
  let out = '';
  for (let chunk = 0; chunk < 3; chunk++) {
    let bits = 0;
    for (let i = 0; i < 5; i++) {
      const ch = id15.charCodeAt(chunk * 5 + i);
      if (ch >= 65 && ch <= 90) bits |= 1 << i;
    }
    out += SUFFIX[bits];
  }
  return out;
}

/** An 18-character id: key prefix (3) + pod/instance part (5) + counter (7) + suffix (3). */
export function makeSfId(prefix: string, counter: number, pod = 'Dn000'): string {
  const id15 = prefix + pod + base62(counter, 7);
  return id15 + idSuffix(id15);
}

/** Normalise a 15- or 18-character id to its 18-character form; null when malformed. */
export function to18(id: string): string | null {
  if (/^[a-zA-Z0-9]{18}$/.test(id)) {
    const id15 = id.slice(0, 15);
    return id15 + idSuffix(id15);
  }
  if (/^[a-zA-Z0-9]{15}$/.test(id)) return id + idSuffix(id);
  return null;
}
