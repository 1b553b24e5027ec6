import { strict as assert } from 'assert';
import { parseCsv, toCsv } from '../../../src/emulators/csv';
import { makeSfId, to18 } from '../../../src/emulators/sfid';
import { FieldDef, SoqlError, escapeSoql, evaluate, parseSoql, validateQuery } from '../emulator/soql';

const FIELDS: FieldDef[] = [
  { name: 'Id', type: 'id', updateable: false },
  { name: 'Email', type: 'email', updateable: true },
  { name: 'IsConverted', type: 'boolean', updateable: false },
  { name: 'LastModifiedDate', type: 'datetime', updateable: false },
];

describe('emulator: SOQL subset, CSV and Salesforce ids', () => {
  it('parses SELECT ... FROM ... WHERE Email IN (...) AND IsConverted = false', () => {
    const q = parseSoql(
      "select Id, Email from Lead where Email in ('A@x.com', 'b@x.com') and IsConverted = false limit 10",
    );
    assert.deepEqual(q.fields, ['Id', 'Email']);
    assert.equal(q.object, 'Lead');
    assert.equal(q.limit, 10);
    assert.equal(q.where?.op, 'and');
    validateQuery(q, FIELDS);
    const row = {
      Id: makeSfId('00Q', 1),
      Email: 'a@X.COM',
      IsConverted: false,
      LastModifiedDate: '2025-01-01T00:00:00.000Z',
    };
    assert.equal(evaluate(q.where!, row, FIELDS, 'Lead'), true);
    assert.equal(evaluate(q.where!, { ...row, IsConverted: true }, FIELDS, 'Lead'), false);
    assert.equal(evaluate(q.where!, { ...row, Email: 'c@x.com' }, FIELDS, 'Lead'), false);
  });

  it("handles escaped \\' and \\\\ in literals, and escapeSoql produces them", () => {
    const email = "o'neil\\b@x.com";
    const q = parseSoql(`SELECT Id FROM Contact WHERE Email = '${escapeSoql(email)}'`);
    assert.equal(evaluate(q.where!, { Id: 'x', Email: "O'Neil\\B@x.com" }, FIELDS, 'Contact'), true);
    assert.throws(
      () => parseSoql("SELECT Id FROM Contact WHERE Email = 'o'neil@x.com'"),
      (e: unknown) => e instanceof SoqlError && e.code === 'MALFORMED_QUERY',
    );
    assert.throws(() => parseSoql("SELECT Id FROM Contact WHERE Email = 'bad\\q'"), /Illegal character sequence/);
    assert.throws(() => parseSoql("SELECT Id FROM Contact WHERE Email = 'open"), /unterminated/);
  });

  it('supports OR, NOT, parentheses, NOT IN, LIKE, null and datetime literals', () => {
    const q = parseSoql(
      "SELECT Id FROM Contact WHERE (Email LIKE '%@x.com' OR Email = null) AND NOT Email NOT IN ('a@x.com') AND LastModifiedDate >= 2025-01-01T00:00:00Z",
    );
    validateQuery(q, FIELDS);
    const row = { Id: 'x', Email: 'a@x.com', IsConverted: false, LastModifiedDate: '2025-03-01T00:00:00.000Z' };
    assert.equal(evaluate(q.where!, row, FIELDS, 'Contact'), true);
    assert.equal(
      evaluate(q.where!, { ...row, LastModifiedDate: '2024-03-01T00:00:00.000Z' }, FIELDS, 'Contact'),
      false,
    );
  });

  it('reports unknown fields as INVALID_FIELD and type mismatches', () => {
    assert.throws(
      () => validateQuery(parseSoql('SELECT Id, Nope FROM Contact'), FIELDS),
      (e: unknown) => e instanceof SoqlError && e.code === 'INVALID_FIELD',
    );
    const q = parseSoql("SELECT Id FROM Lead WHERE IsConverted = 'false'");
    assert.throws(() => evaluate(q.where!, { Id: 'x', IsConverted: false }, FIELDS, 'Lead'), /boolean/);
    assert.throws(() => parseSoql('SELECT FROM Contact'), SoqlError);
    assert.throws(() => parseSoql('SELECT Id FROM Contact WHERE'), SoqlError);
  });

  it('compares Ids by their 15-character form', () => {
    const id18 = makeSfId('003', 42);
    assert.equal(id18.length, 18);
    assert.equal(to18(id18.slice(0, 15)), id18);
    const q = parseSoql(`SELECT Id FROM Contact WHERE Id = '${id18.slice(0, 15)}'`);
    assert.equal(evaluate(q.where!, { Id: id18 }, FIELDS, 'Contact'), true);
  });

  it('CSV: quotes, doubled quotes, embedded newlines, CRLF; output quotes every field', () => {
    const rows = parseCsv('Id,Name\r\n1,"a, ""b""\nc"\r\n2,plain\r\n');
    assert.deepEqual(rows, [
      ['Id', 'Name'],
      ['1', 'a, "b"\nc'],
      ['2', 'plain'],
    ]);
    assert.equal(
      toCsv([
        ['sf__Id', 'sf__Error'],
        ['1', 'X:"y"'],
      ]),
      '"sf__Id","sf__Error"\n"1","X:""y"""\n',
    );
    assert.deepEqual(parseCsv(toCsv(rows, 'CRLF')), rows);
    assert.throws(() => parseCsv('"open'), /unterminated/);
  });
});
