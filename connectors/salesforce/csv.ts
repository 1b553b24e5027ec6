/**
 * CSV for Bulk API 2.0 jobs created with `columnDelimiter: COMMA`, `lineEnding: LF`, through the maintained
 * csv-parse / csv-stringify libraries.
 *
 * Why not jsforce's own `parseCSV`: it configures csv-parse with SIX delimiters at once (`,` `;` `|` tab `^`
 * and backquote), so an unquoted Salesforce error message containing `;` or `|` splits into extra columns and
 * the whole result set fails to parse. Our jobs are comma-only, so we parse with a comma only.
 */
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';

/** Quote every value (so commas, quotes, newlines in audit text are safe); `""` doubles an inner quote. */
export function toCsv(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string>>): string {
  return stringify([header as string[], ...(rows as string[][])], {
    quoted: true,
    quoted_empty: true,
    record_delimiter: '\n',
  });
}

/** Parse CSV text with a header row into records keyed by column name. Empty text gives []. */
export function parseCsv(text: string): Array<Record<string, string>> {
  if (text.trim() === '') return [];
  return parse(text, {
    columns: true,
    delimiter: ',',
    bom: true,
    skip_empty_lines: true,
    relax_column_count: true,
  }) as Array<Record<string, string>>;
}
