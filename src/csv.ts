/**
 * CSV for `audit --format csv` and plans, through csv-stringify (RFC 4180 quoting). Cells are vendor text (emails,
 * reasons, record ids): one starting with = + - @ tab or CR is prefixed with ' (`escape_formulas`), so a
 * spreadsheet shows it instead of running it as a formula (OWASP CSV injection).
 */
import { stringify } from 'csv-stringify/sync';

export function toCsv(rows: readonly (readonly unknown[])[]): string {
  return stringify(
    rows.map((r) => r.map((v) => (v === null || v === undefined ? '' : String(v)))),
    { record_delimiter: '\n', escape_formulas: true },
  );
}
