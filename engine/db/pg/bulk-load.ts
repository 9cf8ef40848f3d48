import { quoteIdent, type BulkFate, type BulkLoad, type BulkWriter, type SqlDatabase, type SqlValue } from "../database.js";
import { PgServerError } from "./sync-connection.js";

/** Rows per COPY: enough that the statements around it cost nothing per row, few enough that a batch's memory stays small. */
const batchRows = 20_000;

const stage = "pg_temp.pipeline_load_stage";
const ord = quoteIdent("pipeline load ord");

/**
 * A load step's rows on PostgreSQL: each batch is COPYed (text format) into a temporary staging
 * table, the stored rows with the batch's keys are compared with it in one query, and one
 * set-based `INSERT … ON CONFLICT` writes it. What becomes of each row (inserted, unchanged,
 * updated, a conflict with the values it met) is decided in file order as the row-by-row path
 * decides it: within a batch, a key's first line meets the stored row, each later line meets what
 * the lines before it left. A broken constraint or a value the server refuses rolls the batch back
 * (a savepoint) and the caller writes its rows one by one, which rejects exactly the rows at fault.
 */
export function pgBulkWriter(db: SqlDatabase, copyIn: (sql: string, data: string) => number, load: BulkLoad): BulkWriter {
  const table = quoteIdent(load.table);
  const columns = load.columns.map(quoteIdent);
  const list = columns.join(", ");
  const keyed = load.key.length > 0;
  const keyColumns = load.key.map(quoteIdent);
  const keyPositions = load.key.map((column) => load.columns.indexOf(column));
  const others = columns.filter((_, i) => !keyPositions.includes(i));
  const row = (alias: string, names: string[]) => `ROW(${names.map((name) => `${alias}.${name}`).join(", ")})`;

  db.exec(
    `DROP TABLE IF EXISTS ${stage}; CREATE TEMP TABLE pipeline_load_stage ON COMMIT DROP AS SELECT 0::integer AS ${ord}, ${list} FROM ${table} WITH NO DATA`,
  );
  const copy = `COPY ${stage} (${ord}, ${list}) FROM STDIN`;
  // why: the stored rows a batch's keys meet; their values only when they differ and a conflict may have to show them.
  const stored = `SELECT s.${ord}, ${row("s", columns)} IS NOT DISTINCT FROM ${row("t", columns)} AS "pipeline same"${
    load.lastWins ? "" : `, ${columns.map((c) => `t.${c}`).join(", ")}`
  } FROM ${stage} s JOIN ${table} t ON ${keyColumns.map((k) => `s.${k} = t.${k}`).join(" AND ")}`;
  const firstOrLast = load.lastWins ? "DESC" : "";
  const onConflict =
    load.lastWins && others.length > 0
      ? `DO UPDATE SET ${others.map((c) => `${c} = EXCLUDED.${c}`).join(", ")} WHERE ${row("t", others)} IS DISTINCT FROM ${row("EXCLUDED", others)}`
      : "DO NOTHING";
  const upsert = `INSERT INTO ${table} AS t (${list}) SELECT ${list} FROM (SELECT DISTINCT ON (${keyColumns.join(", ")}) ${ord}, ${list}
    FROM ${stage} ORDER BY ${keyColumns.join(", ")}, ${ord} ${firstOrLast}) AS d ORDER BY ${ord}
    ON CONFLICT (${keyColumns.join(", ")}) ${onConflict}`;
  const append = `INSERT INTO ${table} (${list}) SELECT ${list} FROM ${stage} ORDER BY ${ord}`;

  const keyOf = (values: readonly SqlValue[]) => keyPositions.map((i) => `${typeof values[i]}:${String(values[i])}`).join("\u0000");
  const hasNullKey = (values: readonly SqlValue[]) => keyPositions.some((i) => values[i] === null);
  const equal = (a: readonly SqlValue[], b: readonly SqlValue[]) => a.every((value, i) => value === b[i]);

  /** Each row's fate in file order, from the stored rows its key met; `inserts` counts the rows the upsert must insert. */
  const decide = (rows: readonly SqlValue[][], met: Map<number, { same: boolean; values: SqlValue[] | undefined }>) => {
    const fates: BulkFate[] = [];
    const held = new Map<string, readonly SqlValue[]>();
    let inserts = 0;
    rows.forEach((values, i) => {
      const key = keyOf(values);
      const current = held.get(key);
      if (current === undefined) {
        const stored = met.get(i);
        if (!stored) {
          inserts++;
          held.set(key, values);
          fates.push({ kind: "inserted" });
        } else if (stored.same) {
          held.set(key, values);
          fates.push({ kind: "unchanged" });
        } else if (load.lastWins) {
          held.set(key, values);
          fates.push({ kind: "updated" });
        } else {
          held.set(key, stored.values!);
          fates.push({ kind: "conflict", stored: stored.values! });
        }
      } else if (equal(current, values)) fates.push({ kind: "unchanged" });
      else if (load.lastWins) {
        held.set(key, values);
        fates.push({ kind: "updated" });
      } else fates.push({ kind: "conflict", stored: [...current] });
    });
    return { fates, inserts };
  };

  return {
    batchRows,
    write(rows) {
      // why: a NULL key meets no stored row and no other line (`=` is never true there); the row path inserts each such row, in file order.
      if (rows.length === 0 || (keyed && rows.some(hasNullKey))) return rows.length === 0 ? [] : undefined;
      db.exec(`TRUNCATE ${stage}; SAVEPOINT pipeline_bulk`);
      const undo = () => {
        db.exec("ROLLBACK TO pipeline_bulk; RELEASE pipeline_bulk");
        return undefined;
      };
      try {
        copyIn(copy, copyText(rows));
        let fates: BulkFate[];
        if (!keyed) {
          db.run(append);
          fates = rows.map(() => ({ kind: "inserted" }));
        } else {
          const met = new Map<number, { same: boolean; values: SqlValue[] | undefined }>();
          for (const found of db.all(stored)) {
            const values = load.lastWins ? undefined : load.columns.map((column) => found[column] ?? null);
            met.set(Number(found["pipeline load ord"]), { same: found["pipeline same"] === 1, values });
          }
          const decided = decide(rows, met);
          fates = decided.fates;
          const updates = load.lastWins && fates.some((fate) => fate.kind === "updated");
          const written = decided.inserts > 0 || updates ? db.run(upsert) : 0;
          // why: under first-wins every row written is an insert; another count means a key was stored meanwhile by another session.
          if (!load.lastWins && written !== decided.inserts) return undo();
        }
        db.exec("RELEASE pipeline_bulk");
        return fates;
      } catch (error) {
        // why: a broken constraint (23…) or a value the server refuses (22…): the row path finds the rows at fault.
        if (error instanceof PgServerError && /^2[23]/.test(error.code ?? "")) return undo();
        throw error;
      }
    },
    free() {
      db.exec(`DROP TABLE IF EXISTS ${stage}`);
    },
  };
}

/** Rows as COPY's text format: tab between fields, `\N` for NULL, backslash, tab and line ends escaped, `ord` first. */
export function copyText(rows: readonly SqlValue[][]): string {
  const lines: string[] = new Array<string>(rows.length);
  for (let r = 0; r < rows.length; r++) {
    let line = String(r);
    for (const value of rows[r]!) line += "\t" + copyField(value);
    lines[r] = line;
  }
  return lines.join("\n") + "\n";
}

function copyField(value: SqlValue): string {
  if (value === null) return "\\N";
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (value instanceof Uint8Array) return `\\\\x${Buffer.from(value).toString("hex")}`;
  return /[\\\t\n\r]/.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => escapes[c]!) : value;
}

const escapes: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };
