/**
 * RFC 4180 CSV for Bulk API 2.0 jobs created with `columnDelimiter: COMMA`, `lineEnding: LF`.
 *
 * Why not jsforce's `parseCSV`: it configures csv-parse with SIX delimiters at once (`,` `;` `|` tab `^` and
 * backquote), so an unquoted Salesforce error message containing `;` or `|` splits into extra columns and the
 * whole result set fails to parse. Comma-only parsing of our own jobs' results is small enough to own.
 */

/** Quote every value (so commas, quotes, newlines in audit text are safe); `""` doubles an inner quote. */
export function toCsv(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string>>): string {
  const line = (cells: ReadonlyArray<string>): string => cells.map((c) => `"${c.replace(/"/g, '""')}"`).join(',');
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** Parse CSV text with a header row into records keyed by column name. Empty text gives []. */
export function parseCsv(text: string): Array<Record<string, string>> {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let i = 0;
  const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const endRow = (): void => {
    row.push(cell);
    cell = '';
    if (!(row.length === 1 && row[0] === '')) rows.push(row);
    row = [];
  };
  while (i < s.length) {
    const ch = s[i]!;
    if (quoted) {
      if (ch === '"') {
        if (s[i + 1] === '"') {
          cell += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i += 1;
        continue;
      }
      cell += ch;
      i += 1;
      continue;
    }
    if (ch === '"') {
      quoted = true;
    } else if (ch === ',') {
      row.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && s[i + 1] === '\n') i += 1;
      endRow();
    } else {
      cell += ch;
    }
    i += 1;
  }
  if (cell !== '' || row.length > 0) endRow();
  if (rows.length === 0) return [];
  const [header, ...body] = rows;
  return body.map((cells) => {
    const rec: Record<string, string> = {};
    header!.forEach((h, j) => {
      rec[h] = cells[j] ?? '';
    });
    return rec;
  });
}
