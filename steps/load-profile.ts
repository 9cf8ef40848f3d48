import { makeCaster, mappingOptions } from "../engine/cast.js";
import type { LoadStepSpec } from "../engine/config/schema.js";
import type { SqlValue } from "../engine/db/database.js";
import { isRequired } from "../engine/db/tables.js";
import { describeError, redactCredentials } from "../engine/errors.js";
import { describeText, describeValues, type Finding, type ProfiledSource, type SourceProfile } from "../engine/profile.js";
import { decodeText, parseCsv } from "../engine/sources/csv.js";
import { fetchSource, httpDefaults } from "../engine/sources/fetch.js";
import type { ProfileContext } from "../engine/step.js";

/** `profile` for a load step: reads its source with the step's http and csv options, and casts each mapped column as the load would. */
export async function profileLoad(step: LoadStepSpec, { pipeline, baseDir }: ProfileContext): Promise<ProfiledSource> {
  const table = pipeline.tables[step.table]!;
  const source = redactCredentials(step.source);
  const profile: SourceProfile = { step: step.name, source, table: step.table };
  try {
    const fetched = await fetchSource(step.source, { baseDir, http: { ...httpDefaults, ...step.http } });
    if (fetched.kind !== "body") throw new Error("unexpected 304");
    const bytes = fetched.bytes;
    const text = decodeText(bytes, step.csv?.encoding, source);
    Object.assign(profile, describeText(bytes, text, step.csv?.encoding));
    const csv = parseCsv(text, step.csv ?? {}, source);
    profile.header = csv.header;
    profile.rows = csv.records.length;
    const targetOf = new Map(Object.entries(step.columns).map(([target, m]) => [mappingOptions(m, target).from, target]));
    const rows = csv.records.map((r) => ({ line: r.line, values: {} as Record<string, SqlValue>, ok: true }));
    profile.columns = csv.header.map((name, index) => {
      const target = targetOf.get(name.trim());
      const spec = target ? table.columns[target] : undefined;
      const caster =
        target && spec ? makeCaster(spec, mappingOptions(step.columns[target]!, target), isRequired(table, target)) : undefined;
      const fields = csv.records.map((r) => r.fields[index]);
      const invalid: Finding[] = [];
      fields.forEach((field, i) => {
        const line = csv.records[i]!.line;
        if (field === undefined) {
          invalid.push({ line, value: "", reason: `the row has ${csv.records[i]!.fields.length} fields, the header ${csv.header.length}` });
          rows[i]!.ok = false;
          return;
        }
        if (!caster) return;
        const result = caster(field);
        if (result.ok) rows[i]!.values[target!] = result.value;
        else {
          invalid.push({ line, value: field, reason: result.reason });
          rows[i]!.ok = false;
        }
      });
      const declared = spec ? (spec.type === "decimal" ? `decimal(${spec.scale ?? 0})` : spec.type) : undefined;
      return { column: name, target, declared, ...describeValues(fields.filter((f): f is string => f !== undefined)), invalid };
    });
    return { profile, rows: rows.filter((r) => r.ok) };
  } catch (error) {
    profile.error = describeError(error).message;
    return { profile, rows: [] };
  }
}
