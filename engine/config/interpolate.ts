/** Result of substituting `${VAR}` references in one string. */
export interface Interpolated {
  value: string;
  /** Variables referenced without a default and absent from the environment. */
  missing: string[];
  /** References that are not well formed (`${A` not closed, `${A:=x}`), with where they start in the text; absent when none. */
  malformed?: { index: number; message: string }[];
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Substitutes `${VAR}` and `${VAR:-default}` from `env`; `$$` stands for a literal `$`.
 * An empty variable counts as unset for `:-`, as in the shell. A default may itself hold
 * references (`${DB:-${HOME}/x.db}`); they are needed only when the default is used.
 */
export function interpolate(text: string, env: Env): Interpolated {
  const malformed: { index: number; message: string }[] = [];
  const { value, missing } = expand(text, 0, env, malformed, false);
  return malformed.length > 0 ? { value, missing, malformed } : { value, missing };
}

const variableName = /[A-Za-z_][A-Za-z0-9_]*/y;

/** Expands from `start` to the end of the text, or (inside a default) to its closing `}`, whose index is `end`. */
function expand(
  text: string,
  start: number,
  env: Env,
  malformed: { index: number; message: string }[],
  inDefault: boolean,
): { value: string; missing: string[]; end: number } {
  const missing: string[] = [];
  let value = "";
  let i = start;
  while (i < text.length) {
    const c = text[i]!;
    if (inDefault && c === "}") return { value, missing, end: i };
    if (c !== "$" || (text[i + 1] !== "$" && text[i + 1] !== "{")) {
      value += c;
      i++;
      continue;
    }
    if (text[i + 1] === "$") {
      value += "$";
      i += 2;
      continue;
    }
    const before = malformed.length;
    variableName.lastIndex = i + 2;
    const name = variableName.exec(text)?.[0];
    if (name === undefined) {
      malformed.push({ index: i, message: "${ must be followed by a variable name (letters, digits and _); write $$ for a literal $" });
      return { value, missing, end: text.length };
    }
    let j = i + 2 + name.length;
    let fallback: { value: string; missing: string[] } | undefined;
    if (text.startsWith(":-", j)) {
      const inner = expand(text, j + 2, env, malformed, true);
      fallback = inner;
      j = inner.end;
    }
    if (text[j] !== "}") {
      const close = text.indexOf("}", j);
      const what =
        j < text.length && fallback === undefined
          ? `${text.slice(i, close === -1 ? text.length : close + 1)} is not a form the runner knows: write \${${name}} or \${${name}:-default}`
          : `\${${name} is not closed: end it with }`;
      // why: a reference left open inside this one is reported once, there.
      if (malformed.length === before) malformed.push({ index: i, message: `${what} (write $$ for a literal $)` });
      return { value, missing, end: text.length };
    }
    const found = env[name];
    if (found !== undefined && (found !== "" || fallback === undefined)) value += found;
    else if (fallback !== undefined) {
      value += fallback.value;
      missing.push(...fallback.missing);
    } else missing.push(name);
    i = j + 1;
  }
  return { value, missing, end: i };
}
