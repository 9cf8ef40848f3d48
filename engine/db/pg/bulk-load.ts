import { quoteIdent, type BulkFate, type BulkLoad, type BulkWriter, type SqlDatabase, type SqlValue } from "../database.js";
import { setForeignKeysAside } from "./foreign-keys.js";
import { PgServerError, type SyncPgConnection } from "./sync-connection.js";

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
export function pgBulkWriter(
  db: SqlDatabase,
  connection: Pick<SyncPgConnection, "copyIn" | "send" | "collect">,
  load: BulkLoad,
  setBarrier: (barrier: (() => void) | undefined) => void,
): BulkWriter {
  const table = quoteIdent(load.table);
  const columns = load.columns.map(quoteIdent);
  const list = columns.join(", ");
  const keyed = load.key.length > 0;
  const keyColumns = load.key.map(quoteIdent);
  const keyPositions = load.key.map((column) => load.columns.indexOf(column));
  const others = columns.filter((_, i) => !keyPositions.includes(i));
  const row = (alias: string, names: string[]) => `ROW(${names.map((name) => `${alias}.${name}`).join(", ")})`;

  // why: made at the first batch, so that a step with nothing to write (304, same content) costs the server nothing.
  let staged = false;
  const makeStage = () => {
    if (staged) return;
    staged = true;
    setForeignKeysAside(db, load.table);
    db.exec(
      `DROP TABLE IF EXISTS ${stage}; CREATE TEMP TABLE pipeline_load_stage ON COMMIT DROP AS SELECT 0::integer AS ${ord}, ${list} FROM ${table} WITH NO DATA`,
    );
  };
  const copy = `COPY ${stage} (${ord}, ${list}) FROM STDIN`;
  // why: the stored rows a batch's keys meet: the equal ones as one array of positions (a re-read meets mostly those), the
  // others with their values when a conflict may have to show them.
  const shown = load.lastWins ? [] : columns;
  const stored = `WITH met AS MATERIALIZED (SELECT s.${ord} AS o, ${row("s", columns)} IS NOT DISTINCT FROM ${row("t", columns)} AS same${shown.map((c) => `, t.${c}`).join("")}
      FROM ${stage} s JOIN ${table} t ON ${keyColumns.map((k) => `s.${k} = t.${k}`).join(" AND ")})
    SELECT NULL AS ${ord}, (SELECT array_agg(o) FROM met WHERE same) AS "pipeline same"${shown.map((c) => `, NULL AS ${c}`).join("")}
    UNION ALL SELECT o, NULL${shown.map((c) => `, ${c}`).join("")} FROM met WHERE NOT same`;
  const firstOrLast = load.lastWins ? "DESC" : "";
  const onConflict =
    load.lastWins && others.length > 0
      ? `DO UPDATE SET ${others.map((c) => `${c} = EXCLUDED.${c}`).join(", ")} WHERE ${row("t", others)} IS DISTINCT FROM ${row("EXCLUDED", others)}`
      : "DO NOTHING";
  const upsert = `INSERT INTO ${table} AS t (${list}) SELECT ${list} FROM (SELECT DISTINCT ON (${keyColumns.join(", ")}) ${ord}, ${list}
    FROM ${stage} ORDER BY ${keyColumns.join(", ")}, ${ord} ${firstOrLast}) AS d ORDER BY ${ord}
    ON CONFLICT (${keyColumns.join(", ")}) ${onConflict}`;
  const append = `INSERT INTO ${table} (${list}) SELECT ${list} FROM ${stage} ORDER BY ${ord}`;
  // why: while no key of a batch is stored or repeated (a first load, appended rows), a plain INSERT takes every row, at COPY's speed.
  let optimistic = true;

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

  /** Decides the staged batch against the stored rows and writes it in one upsert; undefined when a constraint stopped it (nothing written). */
  const decideStaged = (rows: readonly SqlValue[][]): BulkFate[] | undefined => {
    db.exec("SAVEPOINT pipeline_bulk");
    try {
      const met = new Map<number, { same: boolean; values: SqlValue[] | undefined }>();
      // why: the planner needs the batch's size to probe the stored rows by their key rather than hash them all.
      db.exec(`ANALYZE ${stage}`);
      const [same, ...others] = db.all(stored);
      for (const position of (same?.["pipeline same"] ?? []) as unknown as number[]) met.set(position, { same: true, values: undefined });
      for (const found of others) {
        const values = load.lastWins ? undefined : load.columns.map((column) => found[column] ?? null);
        met.set(Number(found["pipeline load ord"]), { same: false, values });
      }
      const { fates, inserts } = decide(rows, met);
      const updates = load.lastWins && fates.some((fate) => fate.kind === "updated");
      const written = inserts > 0 || updates ? db.run(upsert) : 0;
      // why: under first-wins every row written is an insert; another count means a key was stored meanwhile by another session.
      if (!load.lastWins && written !== inserts) return undo();
      db.exec("RELEASE pipeline_bulk");
      optimistic = inserts === rows.length;
      return fates;
    } catch (error) {
      if (refused(error)) return undo();
      throw error;
    }
  };
  const undo = () => {
    db.exec("ROLLBACK TO pipeline_bulk; RELEASE pipeline_bulk");
    return undefined;
  };

  let pending: { rows: readonly SqlValue[][]; settle: (fates: BulkFate[] | undefined) => void } | undefined;
  /** Settles the batch the server is writing: every row inserted, or (a key stored or repeated) decided in SQL, or row by row. */
  const settlePending = () => {
    const batch = pending;
    if (!batch) return;
    pending = undefined;
    setBarrier(undefined);
    const outcome = connection.collect();
    if (outcome.ok) return batch.settle(batch.rows.map(() => ({ kind: "inserted" })));
    if (!refused(outcome.error)) throw outcome.error;
    optimistic = false;
    // why: the insert stopped on a key already stored or repeated, the staged rows kept; a refused COPY or append goes row by row.
    batch.settle(keyed && outcome.failedAt === insertStep ? decideStaged(batch.rows) : undefined);
  };
  const insertStep = 3;

  return {
    batchRows,
    write(rows, settle) {
      settlePending();
      // why: a NULL key meets no stored row and no other line (`=` is never true there); the row path inserts each such row, in file order.
      if (rows.length === 0 || (keyed && rows.some(hasNullKey))) return settle(rows.length === 0 ? [] : undefined);
      makeStage();
      if (!keyed || optimistic) {
        // why: the server copies and inserts this batch while this thread reads the next; any other statement waits for it first.
        connection.send([
          { sql: `SAVEPOINT pipeline_bulk; TRUNCATE ${stage}` },
          { sql: copy, data: copyBytes(rows), onError: "ROLLBACK TO pipeline_bulk; RELEASE pipeline_bulk" },
          { sql: "SAVEPOINT pipeline_bulk_new" },
          {
            sql: append,
            onError: keyed
              ? "ROLLBACK TO pipeline_bulk_new; RELEASE pipeline_bulk_new; RELEASE pipeline_bulk"
              : "ROLLBACK TO pipeline_bulk; RELEASE pipeline_bulk",
          },
          { sql: "RELEASE pipeline_bulk_new; RELEASE pipeline_bulk" },
        ]);
        pending = { rows, settle };
        setBarrier(settlePending);
        return;
      }
      db.exec(`TRUNCATE ${stage}; SAVEPOINT pipeline_bulk`);
      try {
        connection.copyIn(copy, copyBytes(rows));
        db.exec("RELEASE pipeline_bulk");
      } catch (error) {
        if (!refused(error)) throw error;
        undo();
        return settle(undefined);
      }
      settle(decideStaged(rows));
    },
    drain: settlePending,
    free() {
      settlePending();
      if (staged) db.exec(`DROP TABLE IF EXISTS ${stage}`);
      staged = false;
    },
  };
}

/** A broken constraint (SQLSTATE 23…) or a value the server refuses (22…): the row path finds the rows at fault. */
function refused(error: unknown): boolean {
  return error instanceof PgServerError && /^2[23]/.test(error.code ?? "");
}

/** {@link copyText} as UTF-8 bytes in a buffer of their own, handed to the connection's thread without a copy. */
function copyBytes(rows: readonly SqlValue[][]): Uint8Array {
  return encoder.encode(copyText(rows));
}

const encoder = new TextEncoder();

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
