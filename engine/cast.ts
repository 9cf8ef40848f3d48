import { defaultFalseValues, defaultTrueValues, type ColumnMapping, type ColumnSpec } from "./config/schema.js";
import type { SqlValue } from "./db/database.js";
import { clip } from "./errors.js";

/** The result of casting one field: a stored value, or why it cannot be stored. */
export type CastResult = { ok: true; value: SqlValue } | { ok: false; reason: string };

/** Turns one CSV field into the value stored for a column. */
export type Caster = (field: string) => CastResult;

/** A mapping in its long form, its header named. */
export type MappingOptions = Exclude<ColumnMapping, string | null> & { from: string };

/** The long form of a column mapping (a bare string names the source column; no mapping, or no `from`, the column's own name). */
export function mappingOptions(mapping: ColumnMapping, target: string): MappingOptions {
  if (mapping === null) return { from: target };
  return typeof mapping === "string" ? { from: mapping } : { ...mapping, from: mapping.from ?? target };
}

/** The date formats a mapping's `format` may use: tokens yyyy, MM, dd (M and d accept one digit). */
export const dateTokens = /yyyy|MM|dd|M|d/g;

/** Checks a date format; returns a message when it is unusable. */
export function checkDateFormat(format: string): string | undefined {
  const tokens = format.match(dateTokens) ?? [];
  const kinds = tokens.map((t) => t[0]);
  for (const kind of ["y", "M", "d"]) {
    if (kinds.filter((k) => k === kind).length !== 1) return `date format "${format}" must contain yyyy, MM (or M) and dd (or d) once each`;
  }
  return undefined;
}

/** Builds the caster of one column from its declaration and its mapping. */
export function makeCaster(column: ColumnSpec, options: MappingOptions, required: boolean): Caster {
  const trim = options.trim ?? true;
  const convert = converter(column, options);
  return (field) => {
    const text = trim ? field.trim() : field;
    if (text === "") return required ? { ok: false, reason: "a value is required, the field is empty" } : { ok: true, value: null };
    return convert(text);
  };
}

function converter(column: ColumnSpec, options: MappingOptions): (text: string) => CastResult {
  switch (column.type) {
    case "text":
      return (text) => ({ ok: true, value: text });
    case "integer":
      return castInteger;
    case "decimal":
      return decimalCaster(column.scale ?? 0, options.decimal_separator ?? ".");
    case "real":
      return (text) => {
        const value = Number(text);
        return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) && Number.isFinite(value)
          ? { ok: true, value }
          : { ok: false, reason: `${JSON.stringify(clip(text))} is not a number` };
      };
    case "date":
      return dateCaster(options.format ?? "yyyy-MM-dd");
    case "boolean": {
      const yes = new Set((options.true_values ?? defaultTrueValues).map((v) => v.toLowerCase()));
      const no = new Set((options.false_values ?? defaultFalseValues).map((v) => v.toLowerCase()));
      return (text) => {
        const key = text.toLowerCase();
        if (yes.has(key)) return { ok: true, value: 1 };
        if (no.has(key)) return { ok: true, value: 0 };
        return {
          ok: false,
          reason: `${JSON.stringify(clip(text))} is not a boolean (true: ${[...yes].join("/")}; false: ${[...no].join("/")})`,
        };
      };
    }
  }
}

function castInteger(text: string): CastResult {
  // why: the common case, a few plain digits, is read without a regular expression (millions of rows).
  if (text.length <= 15) {
    let value = 0;
    let i = 0;
    for (; i < text.length; i++) {
      const digit = text.charCodeAt(i) - 48;
      if (digit < 0 || digit > 9) break;
      value = value * 10 + digit;
    }
    if (i === text.length && i > 0) return { ok: true, value };
  }
  if (!/^[+-]?\d+$/.test(text)) return { ok: false, reason: `${JSON.stringify(clip(text))} is not an integer` };
  const value = Number(text);
  if (!Number.isSafeInteger(value))
    return { ok: false, reason: `${clip(text)} is outside the exact integer range (±${Number.MAX_SAFE_INTEGER})` };
  return { ok: true, value };
}

/** A decimal with up to `scale` places, stored exactly as an integer count of 10^-scale units. */
function decimalCaster(scale: number, separator: "." | ","): (text: string) => CastResult {
  const pattern = separator === "." ? /^([+-]?)(\d+)(?:\.(\d*))?$/ : /^([+-]?)(\d+)(?:,(\d*))?$/;
  return (text) => {
    const match = pattern.exec(text);
    if (!match) return { ok: false, reason: `${JSON.stringify(clip(text))} is not a decimal number (separator "${separator}")` };
    const [, sign, whole, fraction = ""] = match;
    if (fraction.length > scale) {
      return { ok: false, reason: `${JSON.stringify(clip(text))} has more than ${scale} decimal place${scale === 1 ? "" : "s"}` };
    }
    const digits = (whole! + fraction.padEnd(scale, "0")).replace(/^0+(?=\d)/, "");
    const value = Number(digits);
    if (!Number.isSafeInteger(value)) return { ok: false, reason: `${clip(text)} is too large to store exactly` };
    return { ok: true, value: sign === "-" && value !== 0 ? -value : value };
  };
}

const daysInMonth = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** yyyy-MM-dd checked digit by digit, without a Date; undefined when it is not a real date in that form. */
function isoDate(text: string): string | undefined {
  if (text.length !== 10 || text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45) return undefined;
  let year = 0;
  for (let i = 0; i < 4; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return undefined;
    year = year * 10 + digit;
  }
  const two = (at: number) => {
    const a = text.charCodeAt(at) - 48;
    const b = text.charCodeAt(at + 1) - 48;
    return a < 0 || a > 9 || b < 0 || b > 9 ? -1 : a * 10 + b;
  };
  const month = two(5);
  const day = two(8);
  if (month < 1 || month > 12 || day < 1) return undefined;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return day <= (month === 2 && leap ? 29 : daysInMonth[month - 1]!) ? text : undefined;
}

function dateCaster(format: string): (text: string) => CastResult {
  const general = generalDateCaster(format);
  if (format !== "yyyy-MM-dd") return general;
  return (text) => {
    const iso = isoDate(text);
    return iso === undefined ? general(text) : { ok: true, value: iso };
  };
}

function generalDateCaster(format: string): (text: string) => CastResult {
  const escape = (literal: string) => literal.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const order: string[] = [];
  let source = "";
  let last = 0;
  for (const token of format.matchAll(dateTokens)) {
    source += escape(format.slice(last, token.index));
    source += token[0] === "yyyy" ? "(\\d{4})" : token[0].length === 2 ? "(\\d{2})" : "(\\d{1,2})";
    order.push(token[0][0]!);
    last = token.index + token[0].length;
  }
  source += escape(format.slice(last));
  const pattern = new RegExp(`^${source}$`);
  return (text) => {
    const match = pattern.exec(text);
    if (!match) return { ok: false, reason: `${JSON.stringify(clip(text))} does not match the date format ${format}` };
    const part = (kind: string) => Number(match[order.indexOf(kind) + 1]);
    const [year, month, day] = [part("y"), part("M"), part("d")];
    const date = new Date(0);
    date.setUTCFullYear(year, month - 1, day);
    if (month < 1 || month > 12 || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
      return { ok: false, reason: `${JSON.stringify(clip(text))} is not a real date (format ${format})` };
    }
    return { ok: true, value: `${String(year).padStart(4, "0")}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}` };
  };
}
