/** Result of substituting `${VAR}` references in one string. */
export interface Interpolated {
  value: string;
  /** Variables referenced without a default and absent from the environment. */
  missing: string[];
}

const reference = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Substitutes `${VAR}` and `${VAR:-default}` from `env`; `$$` stands for a literal `$`.
 * An empty variable counts as unset for `:-`, as in the shell.
 */
export function interpolate(text: string, env: Readonly<Record<string, string | undefined>>): Interpolated {
  const missing: string[] = [];
  const value = text.replace(reference, (whole, name: string | undefined, fallback: string | undefined) => {
    if (whole === "$$") return "$";
    const found = env[name!];
    if (found !== undefined && (found !== "" || fallback === undefined)) return found;
    if (fallback !== undefined) return fallback;
    missing.push(name!);
    return "";
  });
  return { value, missing };
}
