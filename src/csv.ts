/** CSV for `audit --format csv`, through csv-stringify (RFC 4180 quoting). */
import { stringify } from 'csv-stringify/sync';

export function toCsv(rows: readonly (readonly unknown[])[]): string {
  return stringify(
    rows.map((r) => r.map((v) => (v === null || v === undefined ? '' : String(v)))),
    { record_delimiter: '\n' },
  );
}
