/**
 * Splits SQL text into its statements at the semicolons outside quotes, comments and trigger
 * bodies (CREATE TRIGGER ... BEGIN ... END); blank statements and comments alone are dropped.
 */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let depth = 0;
  let i = 0;
  const push = (end: number) => {
    const text = sql.slice(start, end).trim();
    if (stripComments(text).trim() !== "") statements.push(text);
    start = end + 1;
  };
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === "'" || c === '"' || c === "`" || c === "[") {
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      for (;;) {
        if (j >= sql.length) break;
        if (sql[j] === close) {
          if (close !== "]" && sql[j + 1] === close) j += 2;
          else break;
        } else j++;
      }
      i = j + 1;
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i);
      i = end < 0 ? sql.length : end + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? sql.length : end + 2;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i;
      while (j < sql.length && /[A-Za-z0-9_$]/.test(sql[j]!)) j++;
      const word = sql.slice(i, j).toUpperCase();
      // why: inside a trigger body, semicolons end the body's statements, not the CREATE TRIGGER.
      if (word === "BEGIN" && /\bTRIGGER\b/i.test(stripComments(sql.slice(start, i)))) depth++;
      else if (word === "END" && depth > 0) depth--;
      i = j;
    } else {
      if (c === ";" && depth === 0) push(i);
      i++;
    }
  }
  push(sql.length);
  return statements;
}

/**
 * The one statement of `sql` to be wrapped in another (a subquery, INSERT … SELECT): without its
 * final semicolon and what follows it (a comment after the `;` would otherwise end up inside the
 * wrapper, which PostgreSQL refuses). Text of several statements is returned trimmed, as it is.
 */
export function statementBody(sql: string): string {
  const statements = splitStatements(sql);
  return statements.length === 1 ? statements[0]! : sql.trim().replace(/;\s*$/, "");
}

function stripComments(sql: string): string {
  return sql.replace(/--[^\n]*/g, "").replace(/\/\*[\s\S]*?(\*\/|$)/g, "");
}
