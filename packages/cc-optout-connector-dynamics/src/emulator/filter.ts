/**
 * The OData `$filter` subset the Dataverse emulator understands, written from the OData 4.01 URL conventions
 * (section 5.1.1) and the Dataverse "Filter rows" docs: comparison operators `eq` / `ne`, logical `and` / `or` /
 * `not`, parentheses, string literals in single quotes (a quote inside is doubled: 'o''brien@x.org'), integers,
 * `true` / `false` / `null`. Anything else is a syntax error (Dataverse answers 400).
 *
 * String comparison ignores case, as Dataverse's default (case-insensitive) database collation does.
 */
export type Literal = string | number | boolean | null;

export type Expr =
  | { kind: 'cmp'; op: 'eq' | 'ne'; field: string; value: Literal }
  | { kind: 'and' | 'or'; left: Expr; right: Expr }
  | { kind: 'not'; expr: Expr };

export class FilterSyntaxError extends Error {}

type Token = { t: 'id'; v: string } | { t: 'str'; v: string } | { t: 'num'; v: number } | { t: '(' } | { t: ')' };

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === '(' || c === ')') {
      out.push({ t: c });
      i++;
    } else if (c === "'") {
      let s = '';
      i++;
      for (;;) {
        if (i >= src.length) throw new FilterSyntaxError(`unterminated string literal at position ${i}`);
        if (src[i] === "'") {
          if (src[i + 1] === "'") {
            s += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        s += src[i++];
      }
      out.push({ t: 'str', v: s });
    } else if (/[0-9-]/.test(c)) {
      const m = /^-?[0-9]+/.exec(src.slice(i));
      if (!m) throw new FilterSyntaxError(`unexpected "${c}" at position ${i}`);
      out.push({ t: 'num', v: Number(m[0]) });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i))!;
      out.push({ t: 'id', v: m[0] });
      i += m[0].length;
    } else {
      throw new FilterSyntaxError(`unexpected "${c}" at position ${i}`);
    }
  }
  return out;
}

export function parseFilter(src: string): Expr {
  const toks = tokenize(src);
  let pos = 0;
  const peekId = (v: string): boolean => {
    const k = toks[pos];
    return !!k && k.t === 'id' && k.v === v;
  };
  const orExpr = (): Expr => {
    let left = andExpr();
    while (peekId('or')) {
      pos++;
      left = { kind: 'or', left, right: andExpr() };
    }
    return left;
  };
  const andExpr = (): Expr => {
    let left = unary();
    while (peekId('and')) {
      pos++;
      left = { kind: 'and', left, right: unary() };
    }
    return left;
  };
  const unary = (): Expr => {
    if (peekId('not')) {
      pos++;
      return { kind: 'not', expr: unary() };
    }
    const k = toks[pos];
    if (!k) throw new FilterSyntaxError('unexpected end of $filter');
    if (k.t === '(') {
      pos++;
      const e = orExpr();
      if (toks[pos]?.t !== ')') throw new FilterSyntaxError('missing ")"');
      pos++;
      return e;
    }
    if (k.t !== 'id') throw new FilterSyntaxError('expected a property name');
    pos++;
    const op = toks[pos];
    if (!op || op.t !== 'id' || (op.v !== 'eq' && op.v !== 'ne'))
      throw new FilterSyntaxError(`expected eq or ne after "${k.v}"`);
    pos++;
    const lit = toks[pos++];
    let value: Literal;
    if (!lit) throw new FilterSyntaxError('expected a literal');
    if (lit.t === 'str' || lit.t === 'num') value = lit.v;
    else if (lit.t === 'id' && (lit.v === 'true' || lit.v === 'false')) value = lit.v === 'true';
    else if (lit.t === 'id' && lit.v === 'null') value = null;
    else throw new FilterSyntaxError('expected a literal');
    return { kind: 'cmp', op: op.v, field: k.v, value };
  };
  const e = orExpr();
  if (pos !== toks.length) throw new FilterSyntaxError(`unexpected token at ${pos}`);
  return e;
}

export function fieldsOf(e: Expr, into: Set<string> = new Set()): Set<string> {
  if (e.kind === 'cmp') into.add(e.field);
  else if (e.kind === 'not') fieldsOf(e.expr, into);
  else {
    fieldsOf(e.left, into);
    fieldsOf(e.right, into);
  }
  return into;
}

function same(a: unknown, b: Literal): boolean {
  if (a === undefined) a = null;
  if (typeof a === 'string' && typeof b === 'string') return a.toLowerCase() === b.toLowerCase();
  return a === b;
}

export function evaluate(e: Expr, rec: Record<string, unknown>): boolean {
  switch (e.kind) {
    case 'cmp':
      return e.op === 'eq' ? same(rec[e.field], e.value) : !same(rec[e.field], e.value);
    case 'and':
      return evaluate(e.left, rec) && evaluate(e.right, rec);
    case 'or':
      return evaluate(e.left, rec) || evaluate(e.right, rec);
    case 'not':
      return !evaluate(e.expr, rec);
  }
}
