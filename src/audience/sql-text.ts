/**
 * Just enough of PostgreSQL's lexical rules to find where an audience's one statement ends:
 * string literals ('…', E'…', "…", $tag$…$tag$), line comments and nested block comments are
 * skipped, and every `;` outside them is a statement end. A `;` followed by anything but
 * whitespace and comments means a second statement, which an audience file may not have.
 */

export interface StatementEnd {
  /** The SQL up to (not including) the first top-level `;`, or all of it. */
  body: string;
  /** Offset in the text where a second statement starts, if there is one. */
  secondAt?: number;
}

/** A character that continues an identifier: letters (any non-ASCII too), digits, _ and $. */
const IDENT = /[A-Za-z0-9_$\u0080-\uffff]/;

export function splitStatement(sql: string): StatementEnd {
  let end: number | undefined;
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '-' && next === '-') {
      // PostgreSQL ends a line comment at a carriage return as well as a newline.
      const nl = sql.slice(i).search(/[\r\n]/);
      i = nl < 0 ? n : i + nl + 1;
    } else if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (c === "'" || c === '"') {
      // E'…' strings may also escape a quote with a backslash.
      const escapes = c === "'" && /[eE]/.test(sql[i - 1] ?? '') && !IDENT.test(sql[i - 2] ?? '');
      i++;
      while (i < n) {
        if (sql[i] === c && sql[i + 1] === c) i += 2;
        else if (sql[i] === c) break;
        else if (escapes && sql[i] === '\\') i += 2;
        else i++;
      }
      i++;
    } else if (c === '$') {
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i));
      if (tag && !IDENT.test(sql[i - 1] ?? '')) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? n : close + tag[0].length;
      } else i++;
    } else if (c === ';') {
      if (end === undefined) end = i;
      i++;
    } else {
      if (end !== undefined && !/\s/.test(c)) return { body: sql.slice(0, end), secondAt: i };
      i++;
    }
  }
  return { body: end === undefined ? sql : sql.slice(0, end) };
}
