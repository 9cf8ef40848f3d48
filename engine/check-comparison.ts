/** Comparison operators, each with its negation: `NOT (a op b)` and `a negation b` are true, false or NULL together. */
const negations: Record<string, string> = {
  "<": ">=",
  "<=": ">",
  ">": "<=",
  ">=": "<",
  "=": "<>",
  "==": "<>",
  "<>": "=",
  "!=": "=",
};

/** Functions an operand may call: their value depends only on their arguments (no chance, no connection state). */
const plainFunctions = new Set([
  "date",
  "time",
  "datetime",
  "julianday",
  "unixepoch",
  "strftime",
  "abs",
  "coalesce",
  "ifnull",
  "lower",
  "upper",
  "length",
  "round",
  "substr",
  "trim",
  "cast",
]);

type Token = { kind: "word" | "quoted" | "string" | "number" | "parameter" | "operator" | "open" | "close" | "other"; text: string };

/**
 * For an `expression` check that is one comparison of two plain operands (`date <= date(:run_started_at)`):
 * the condition its failing rows satisfy, the comparison negated (`date > date(:run_started_at)`), a form SQLite
 * can answer from an index on the column, unlike `NOT (…)`. Both select the same rows: for any two values,
 * `NOT (a <= b)` and `a > b` are true, false or NULL together. An operand is a column, a literal, a parameter or a
 * call of a plain function (its arguments anything balanced, without a subquery); anything else (`AND`, `OR`,
 * `COLLATE`, a comment, a unary operator but a number's sign) is undefined: the check then runs as written.
 */
export function negatedComparison(expression: string): string | undefined {
  const tokens = tokenize(expression);
  if (!tokens) return undefined;
  let at = 0;
  const operand = (): string | undefined => {
    const start = at;
    const token = tokens[at];
    if (!token) return undefined;
    if (token.kind === "operator" && (token.text === "-" || token.text === "+") && tokens[at + 1]?.kind === "number") {
      at += 2;
      return tokens
        .slice(start, at)
        .map((t) => t.text)
        .join("");
    }
    if (token.kind === "word" && tokens[at + 1]?.kind === "open") {
      if (!plainFunctions.has(token.text.toLowerCase())) return undefined;
      let depth = 0;
      for (at++; at < tokens.length; at++) {
        const inner = tokens[at]!;
        if (inner.kind === "word" && inner.text.toLowerCase() === "select") return undefined;
        if (inner.kind === "open") depth++;
        if (inner.kind === "close" && --depth === 0) break;
      }
      if (depth !== 0) return undefined;
      at++;
      return tokens
        .slice(start, at)
        .map((t) => t.text)
        .join(" ");
    }
    if (["word", "quoted", "string", "number", "parameter"].includes(token.kind)) {
      at++;
      return token.text;
    }
    return undefined;
  };
  const left = operand();
  const op = tokens[at];
  if (left === undefined || op?.kind !== "operator" || negations[op.text] === undefined) return undefined;
  at++;
  const right = operand();
  if (right === undefined || at !== tokens.length) return undefined;
  return `${left} ${negations[op.text]} ${right}`;
}

/** The expression's tokens, or undefined when it holds a comment or something not understood. */
function tokenize(text: string): Token[] | undefined {
  const tokens: Token[] = [];
  const match = (pattern: RegExp, at: number) => {
    pattern.lastIndex = at;
    return pattern.exec(text)?.[0];
  };
  for (let at = 0; at < text.length;) {
    const c = text[at]!;
    if (/\s/.test(c)) {
      at++;
      continue;
    }
    const rules: [Token["kind"], RegExp][] = [
      ["string", /'(?:[^']|'')*'/y],
      ["quoted", /"(?:[^"]|"")*"/y],
      ["number", /(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w$])/y],
      ["parameter", /[:@$][A-Za-z_][A-Za-z0-9_]*/y],
      ["word", /[A-Za-z_][A-Za-z0-9_$]*/y],
      ["operator", /<=|>=|==|!=|<>|<(?![<>=])|>(?![>=])|=|[-+](?![-])/y],
      ["open", /\(/y],
      ["close", /\)/y],
      ["other", /,|\|\||[*%.&|~]/y],
    ];
    const found = rules.map(([kind, pattern]) => ({ kind, text: match(pattern, at) })).find((rule) => rule.text !== undefined);
    if (!found || found.text === undefined) return undefined;
    tokens.push({ kind: found.kind, text: found.text });
    at += found.text.length;
  }
  return tokens;
}
