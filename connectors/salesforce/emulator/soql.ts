/**
 * A small SOQL subset for the Salesforce emulator, enough for a suppression connector's lookups:
 *
 *   SELECT f1, f2 FROM Contact|Lead|Account
 *     [WHERE cond] [ORDER BY f [ASC|DESC], ...] [LIMIT n] [OFFSET n]
 *   cond := cond AND cond | cond OR cond | NOT cond | ( cond )
 *         | field [NOT] IN ( literal, ... ) | field (= | != | <> | < | <= | > | >=) literal | field LIKE 'pattern'
 *   literal := 'string' (escapes \' \" \\ \n \r \t \b \f \_ \%; other control characters are MALFORMED_QUERY)
 *            | true | false | null | number | date(-time)
 *
 * Text comparisons (=, IN, LIKE) are case-insensitive like Salesforce's; Ids compare by their 15-character
 * case-sensitive form, so 15- and 18-character ids match.
 */
import { to18 } from '../../../src/sdk/emulator';

export type Literal =
  | { kind: 'string'; value: string }
  | { kind: 'bool'; value: boolean }
  | { kind: 'null' }
  | { kind: 'number'; value: number }
  | { kind: 'datetime'; value: string };

export type Cond =
  | { op: 'and' | 'or'; left: Cond; right: Cond }
  | { op: 'not'; cond: Cond }
  | { op: 'in' | 'notin'; field: string; values: Literal[] }
  | { op: '=' | '!=' | '<' | '<=' | '>' | '>=' | 'like'; field: string; value: Literal };

export interface SoqlQuery {
  fields: string[];
  object: string;
  where: Cond | null;
  orderBy: Array<{ field: string; desc: boolean }>;
  limit: number | null;
  offset: number | null;
}

export class SoqlError extends Error {
  constructor(
    message: string,
    readonly code: 'MALFORMED_QUERY' | 'INVALID_FIELD' | 'INVALID_TYPE' | 'INVALID_QUERY_FILTER_OPERATOR',
  ) {
    super(message);
    this.name = 'SoqlError';
  }
}

type Tok =
  | { t: 'ident'; v: string; pos: number }
  | { t: 'string'; v: string; pos: number }
  | { t: 'number'; v: number; pos: number }
  | { t: 'datetime'; v: string; pos: number }
  | { t: 'punct'; v: string; pos: number };

/** Control characters SOQL has no escape sequence for: not allowed in a string literal. */
const UNESCAPABLE_CONTROL = /[\u0000-\u0007\u000B\u000E-\u001F\u007F]/;

const ESCAPES: Record<string, string> = {
  "'": "'",
  '"': '"',
  '\\': '\\',
  n: '\n',
  r: '\r',
  t: '\t',
  b: '\b',
  f: '\f',
  _: '\\_',
  '%': '\\%',
};

export function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const ch = src[i];
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === "'") {
      const start = i;
      i++;
      let s = '';
      let closed = false;
      while (i < src.length) {
        const c = src[i];
        if (c === '\\') {
          const e = src[i + 1];
          if (e === undefined || !(e in ESCAPES)) {
            throw new SoqlError(
              `Invalid string literal '${src.slice(start, i + 2)}'. Illegal character sequence '\\${e ?? ''}' in string literal.`,
              'MALFORMED_QUERY',
            );
          }
          s += ESCAPES[e];
          i += 2;
          continue;
        }
        if (c === "'") {
          closed = true;
          i++;
          break;
        }
        if (UNESCAPABLE_CONTROL.test(c)) {
          // Salesforce refuses the whole query over one such literal (400 MALFORMED_QUERY).
          throw new SoqlError(
            `Invalid string literal '${src.slice(start, i)}...'. Illegal character U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')} in string literal.`,
            'MALFORMED_QUERY',
          );
        }
        s += c;
        i++;
      }
      if (!closed)
        throw new SoqlError(`unexpected token: unterminated string literal at position ${start}`, 'MALFORMED_QUERY');
      out.push({ t: 'string', v: s, pos: start });
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '!=' || two === '<>' || two === '<=' || two === '>=') {
      out.push({ t: 'punct', v: two === '<>' ? '!=' : two, pos: i });
      i += 2;
      continue;
    }
    if ('(),=<>'.includes(ch)) {
      out.push({ t: 'punct', v: ch, pos: i });
      i++;
      continue;
    }
    const dt = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2}))?/.exec(src.slice(i));
    if (dt) {
      out.push({ t: 'datetime', v: dt[0], pos: i });
      i += dt[0].length;
      continue;
    }
    const num = /^-?\d+(\.\d+)?/.exec(src.slice(i));
    if (num) {
      out.push({ t: 'number', v: Number(num[0]), pos: i });
      i += num[0].length;
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(src.slice(i));
    if (id) {
      out.push({ t: 'ident', v: id[0], pos: i });
      i += id[0].length;
      continue;
    }
    throw new SoqlError(`unexpected token: '${ch}' at position ${i}`, 'MALFORMED_QUERY');
  }
  return out;
}

class Parser {
  private i = 0;
  constructor(
    private readonly toks: Tok[],
    private readonly src: string,
  ) {}

  private peek(): Tok | undefined {
    return this.toks[this.i];
  }

  private fail(msg?: string): never {
    const t = this.peek();
    throw new SoqlError(
      msg ?? (t ? `unexpected token: '${String(t.v)}'` : `unexpected end of query: ${this.src}`),
      'MALFORMED_QUERY',
    );
  }

  private kw(word: string): boolean {
    const t = this.peek();
    if (t && t.t === 'ident' && t.v.toUpperCase() === word) {
      this.i++;
      return true;
    }
    return false;
  }

  private expectKw(word: string): void {
    if (!this.kw(word)) this.fail();
  }

  private punct(p: string): boolean {
    const t = this.peek();
    if (t && t.t === 'punct' && t.v === p) {
      this.i++;
      return true;
    }
    return false;
  }

  private ident(): string {
    const t = this.peek();
    if (!t || t.t !== 'ident') this.fail();
    this.i++;
    return t.v as string;
  }

  parse(): SoqlQuery {
    this.expectKw('SELECT');
    const fields = [this.ident()];
    while (this.punct(',')) fields.push(this.ident());
    this.expectKw('FROM');
    const object = this.ident();
    let where: Cond | null = null;
    if (this.kw('WHERE')) where = this.orExpr();
    const orderBy: SoqlQuery['orderBy'] = [];
    if (this.kw('ORDER')) {
      this.expectKw('BY');
      do {
        const field = this.ident();
        let desc = false;
        if (this.kw('DESC')) desc = true;
        else this.kw('ASC');
        if (this.kw('NULLS')) {
          if (!this.kw('FIRST')) this.expectKw('LAST');
        }
        orderBy.push({ field, desc });
      } while (this.punct(','));
    }
    let limit: number | null = null;
    let offset: number | null = null;
    if (this.kw('LIMIT')) {
      const t = this.peek();
      if (!t || t.t !== 'number' || !Number.isInteger(t.v) || t.v < 0) this.fail();
      limit = t.v as number;
      this.i++;
    }
    if (this.kw('OFFSET')) {
      const t = this.peek();
      if (!t || t.t !== 'number' || !Number.isInteger(t.v) || t.v < 0) this.fail();
      offset = t.v as number;
      this.i++;
    }
    if (this.peek()) this.fail();
    return { fields, object, where, orderBy, limit, offset };
  }

  private orExpr(): Cond {
    let left = this.andExpr();
    while (this.kw('OR')) left = { op: 'or', left, right: this.andExpr() };
    return left;
  }

  private andExpr(): Cond {
    let left = this.notExpr();
    while (this.kw('AND')) left = { op: 'and', left, right: this.notExpr() };
    return left;
  }

  private notExpr(): Cond {
    if (this.kw('NOT')) return { op: 'not', cond: this.notExpr() };
    if (this.punct('(')) {
      const c = this.orExpr();
      if (!this.punct(')')) this.fail();
      return c;
    }
    return this.comparison();
  }

  private literal(): Literal {
    const t = this.peek();
    if (!t) this.fail();
    this.i++;
    switch (t.t) {
      case 'string':
        return { kind: 'string', value: t.v };
      case 'number':
        return { kind: 'number', value: t.v };
      case 'datetime':
        return { kind: 'datetime', value: t.v };
      case 'ident': {
        const u = t.v.toUpperCase();
        if (u === 'TRUE' || u === 'FALSE') return { kind: 'bool', value: u === 'TRUE' };
        if (u === 'NULL') return { kind: 'null' };
        this.i--;
        return this.fail();
      }
      default:
        this.i--;
        return this.fail();
    }
  }

  private comparison(): Cond {
    const field = this.ident();
    const not = this.kw('NOT');
    if (this.kw('IN')) {
      if (!this.punct('(')) this.fail();
      const values = [this.literal()];
      while (this.punct(',')) values.push(this.literal());
      if (!this.punct(')')) this.fail();
      return { op: not ? 'notin' : 'in', field, values };
    }
    if (not) this.fail();
    if (this.kw('LIKE')) {
      const v = this.literal();
      if (v.kind !== 'string') this.fail('LIKE needs a string pattern');
      return { op: 'like', field, value: v };
    }
    const t = this.peek();
    if (!t || t.t !== 'punct' || !['=', '!=', '<', '<=', '>', '>='].includes(t.v)) this.fail();
    this.i++;
    return { op: t.v as '=' | '!=' | '<' | '<=' | '>' | '>=', field, value: this.literal() };
  }
}

export function parseSoql(src: string): SoqlQuery {
  return new Parser(tokenize(src), src).parse();
}

/** Escape a value for a SOQL string literal (what a client must do before building `IN ('...')`). */
export function escapeSoql(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
}

// ------------------------------------------------------------------------------------------ evaluation

export type FieldType =
  'id' | 'string' | 'email' | 'boolean' | 'datetime' | 'date' | 'reference' | 'picklist' | 'textarea';

export interface FieldDef {
  name: string;
  type: FieldType;
  updateable: boolean;
}

export type Row = Record<string, string | number | boolean | null>;

/** Resolve a field name case-insensitively against the object's fields. */
export function resolveField(fields: readonly FieldDef[], name: string, object: string): FieldDef {
  const f = fields.find((d) => d.name.toLowerCase() === name.toLowerCase());
  if (!f) {
    throw new SoqlError(
      `No such column '${name}' on entity '${object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.`,
      'INVALID_FIELD',
    );
  }
  return f;
}

function idKey(v: unknown): string | null {
  if (typeof v !== 'string') return null;
  const id = to18(v);
  return id ? id.slice(0, 15) : null;
}

function likeToRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\' && (pattern[i + 1] === '_' || pattern[i + 1] === '%')) {
      re += pattern[i + 1];
      i++;
    } else if (c === '%') re += '.*';
    else if (c === '_') re += '.';
    else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'is');
}

function compare(def: FieldDef, actual: unknown, lit: Literal): number | null {
  // Returns <0, 0, >0 or null when not comparable (null semantics: only = null / != null match).
  if (lit.kind === 'null') return actual === null || actual === undefined || actual === '' ? 0 : 1;
  if (actual === null || actual === undefined) return null;
  switch (def.type) {
    case 'boolean':
      if (lit.kind !== 'bool')
        throw new SoqlError(
          `value of filter criterion for field '${def.name}' must be of type boolean and should not be enclosed in quotes`,
          'INVALID_FIELD',
        );
      return actual === lit.value ? 0 : 1;
    case 'id':
    case 'reference': {
      if (lit.kind !== 'string')
        throw new SoqlError(
          `value of filter criterion for field '${def.name}' must be of type id and should be enclosed in quotes`,
          'INVALID_FIELD',
        );
      const a = idKey(actual);
      const b = idKey(lit.value);
      if (b === null) throw new SoqlError(`invalid ID field: ${lit.value}`, 'INVALID_QUERY_FILTER_OPERATOR');
      return a === b ? 0 : (a ?? '') < b ? -1 : 1;
    }
    case 'datetime':
    case 'date': {
      if (lit.kind !== 'datetime')
        throw new SoqlError(
          `value of filter criterion for field '${def.name}' must be of type ${def.type} and should not be enclosed in quotes`,
          'INVALID_FIELD',
        );
      return Date.parse(String(actual)) - Date.parse(lit.value);
    }
    default: {
      if (lit.kind !== 'string')
        throw new SoqlError(
          `value of filter criterion for field '${def.name}' must be of type string and should be enclosed in quotes`,
          'INVALID_FIELD',
        );
      const a = String(actual).toLowerCase();
      const b = lit.value.toLowerCase();
      return a === b ? 0 : a < b ? -1 : 1;
    }
  }
}

export function evaluate(cond: Cond, row: Row, fields: readonly FieldDef[], object: string): boolean {
  switch (cond.op) {
    case 'and':
      return evaluate(cond.left, row, fields, object) && evaluate(cond.right, row, fields, object);
    case 'or':
      return evaluate(cond.left, row, fields, object) || evaluate(cond.right, row, fields, object);
    case 'not':
      return !evaluate(cond.cond, row, fields, object);
    case 'in':
    case 'notin': {
      const def = resolveField(fields, cond.field, object);
      const hit = cond.values.some((v) => compare(def, row[def.name], v) === 0);
      return cond.op === 'in' ? hit : !hit;
    }
    case 'like': {
      const def = resolveField(fields, cond.field, object);
      const v = row[def.name];
      return typeof v === 'string' && likeToRegex((cond.value as { value: string }).value).test(v);
    }
    default: {
      const def = resolveField(fields, cond.field, object);
      const c = compare(def, row[def.name], cond.value);
      if (cond.value.kind === 'null') return cond.op === '=' ? c === 0 : cond.op === '!=' ? c !== 0 : false;
      if (c === null) return cond.op === '!=';
      switch (cond.op) {
        case '=':
          return c === 0;
        case '!=':
          return c !== 0;
        case '<':
          return c < 0;
        case '<=':
          return c <= 0;
        case '>':
          return c > 0;
        case '>=':
          return c >= 0;
      }
    }
  }
  return false;
}

/** Check every field named in the query exists (INVALID_FIELD otherwise), before touching any row. */
export function validateQuery(q: SoqlQuery, fields: readonly FieldDef[]): void {
  for (const f of q.fields) resolveField(fields, f, q.object);
  for (const o of q.orderBy) resolveField(fields, o.field, q.object);
  const walk = (c: Cond | null): void => {
    if (!c) return;
    if (c.op === 'and' || c.op === 'or') {
      walk(c.left);
      walk(c.right);
    } else if (c.op === 'not') walk(c.cond);
    else if ('field' in c) resolveField(fields, c.field, q.object);
  };
  walk(q.where);
}
