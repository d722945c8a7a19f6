/**
 * From an Avro writer schema to PostgreSQL values, by field name (never position: Braze adds
 * optional fields in the middle of records). string/enum → text, int/long → bigint (exact,
 * beyond 2^53 too), float → double precision holding the shortest decimal that reads back as
 * the same float (3.14, not 3.140000104904175), double → double precision, decimal → numeric
 * with its scale, boolean → boolean, bytes/fixed → bytea, ["null", X] → nullable X, anything
 * nested or ambiguous → jsonb. A string field named `properties` (custom events, purchases)
 * holds JSON and is stored as jsonb; text that is not valid JSON is kept as a JSON string.
 *
 * PostgreSQL cannot store U+0000 in text or jsonb: it is replaced by U+FFFD (the Unicode
 * replacement character), counted per file, and never fails a file.
 * Which fields become columns and which go to the table's `extra_fields` jsonb is decided
 * against the table in event-tables.ts.
 */
import type avro from 'avsc';
import { AvroDecodeError } from '../errors.js';

export type PgType = 'text' | 'bigint' | 'double precision' | 'numeric' | 'boolean' | 'bytea' | 'jsonb';

/** Counted while a file is formatted. */
export interface FormatStats {
  /** NUL characters replaced by U+FFFD. */
  nul: number;
}

export interface EventColumn {
  name: string;
  pgType: PgType;
  /** How to turn a decoded value into COPY text. */
  format: (value: unknown, stats: FormatStats) => string;
  /** The value as it goes into the extra_fields jsonb (when the field cannot be a column). */
  json: (value: unknown, stats: FormatStats) => unknown;
}

/** Columns braze-bridge adds to every event table: a field named exactly so goes to extra_fields. */
export const ADDED_COLUMNS = ['occurred_at', 'source_key', 'loaded_at', 'id_key', 'extra_fields'];

export function mapSchema(type: avro.Type): EventColumn[] {
  const t = type as unknown as { typeName: string; fields?: Array<{ name: string; type: avro.Type }> };
  if (t.typeName !== 'record' || !t.fields) throw new AvroDecodeError(`the writer schema is a ${t.typeName}, not a record`);
  const columns = t.fields.map((f) => {
    const base = baseTypeName(f.type);
    const pgType = f.name === 'properties' && base === 'string' ? 'jsonb' : pgTypeOf(base);
    return { name: f.name, pgType, format: formatter(pgType, base, f.name === 'properties'), json: jsonValue(base, f.name === 'properties') };
  });
  const id = columns.find((c) => c.name === 'id');
  if (!id || id.pgType !== 'text') throw new AvroDecodeError('the records have no string field "id" to deduplicate events by');
  return columns;
}

function baseTypeName(type: avro.Type): string {
  const t = type as unknown as { typeName: string; types?: avro.Type[] };
  if (t.typeName === 'union:unwrapped' || t.typeName === 'union:wrapped') {
    const members = t.types!.filter((m) => (m as unknown as { typeName: string }).typeName !== 'null');
    return members.length === 1 ? baseTypeName(members[0]!) : 'union';
  }
  if (t.typeName === 'logical:decimal') return 'decimal';
  if (t.typeName.startsWith('abstract:')) return t.typeName.slice('abstract:'.length);
  return t.typeName.startsWith('logical:') ? baseTypeName((type as unknown as { underlyingType: avro.Type }).underlyingType) : t.typeName;
}

function pgTypeOf(base: string): PgType {
  switch (base) {
    case 'string':
    case 'enum':
    case 'null':
      return 'text';
    case 'int':
    case 'long':
      return 'bigint';
    case 'float':
    case 'double':
      return 'double precision';
    case 'decimal':
      return 'numeric';
    case 'boolean':
      return 'boolean';
    case 'bytes':
    case 'fixed':
      return 'bytea';
    default:
      return 'jsonb';
  }
}

/** The shortest decimal that reads back as the same 32-bit float: 3.14 for Avro float 3.14. */
export function float32Text(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
  for (let p = 1; p <= 9; p++) {
    const n = Number(x.toPrecision(p));
    if (Math.fround(n) === x) return String(n);
  }
  return String(x);
}

/** COPY text format: backslash, tab, newline and carriage return escaped; NULL is \N. */
export function copyEscape(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : s;
}

/** U+0000 → U+FFFD in a string, counted. */
export function replaceNul(s: string, stats: FormatStats): string {
  if (!s.includes('\u0000')) return s;
  return s.replace(/\u0000/g, () => {
    stats.nul++;
    return '\uFFFD';
  });
}

/** JSON text with \u0000 escapes (and raw NULs) replaced by U+FFFD; an escaped backslash before "u0000" is left alone. */
export function replaceJsonNul(text: string, stats: FormatStats): string {
  const raw = replaceNul(text, stats);
  if (!raw.includes('\\u0000')) return raw;
  return raw.replace(/\\\\|\\u0000/g, (m) => {
    if (m === '\\\\') return m;
    stats.nul++;
    return '\\ufffd';
  });
}

/** JSON text of any decoded value: bytes as base64, longs beyond 2^53 as exact strings. */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (Buffer.isBuffer(x) ? x.toString('base64') : typeof x === 'bigint' ? (Number.isSafeInteger(Number(x)) ? Number(x) : x.toString()) : x));
}

function jsonValue(base: string, jsonString: boolean): (value: unknown, stats: FormatStats) => unknown {
  return (v, stats) => {
    if (v === null || v === undefined) return null;
    if (base === 'float' && typeof v === 'number') return Number(float32Text(v));
    if (jsonString) {
      try {
        return JSON.parse(replaceJsonNul(String(v), stats));
      } catch {
        return replaceNul(String(v), stats);
      }
    }
    return JSON.parse(replaceJsonNul(toJson(v), stats));
  };
}

function formatter(pgType: PgType, base: string, jsonString: boolean): (value: unknown, stats: FormatStats) => string {
  const nullable = (f: (v: unknown, stats: FormatStats) => string) => (v: unknown, stats: FormatStats) => (v === null || v === undefined ? '\\N' : f(v, stats));
  switch (pgType) {
    case 'text':
      return nullable((v, stats) => copyEscape(replaceNul(String(v), stats)));
    case 'bigint':
    case 'numeric':
      return nullable((v) => String(v));
    case 'double precision':
      return base === 'float' ? nullable((v) => float32Text(v as number)) : nullable((v) => String(v));
    case 'boolean':
      return nullable((v) => (v ? 't' : 'f'));
    case 'bytea':
      return nullable((v) => `\\\\x${(v as Buffer).toString('hex')}`);
    case 'jsonb':
      if (jsonString) {
        return nullable((v, stats) => {
          const text = replaceJsonNul(String(v), stats);
          try {
            JSON.parse(text);
            return copyEscape(text);
          } catch {
            // Not JSON: keep it, as a JSON string, so it stays queryable and is never lost.
            return copyEscape(replaceJsonNul(JSON.stringify(text), stats));
          }
        });
      }
      return nullable((v, stats) => copyEscape(replaceJsonNul(toJson(v), stats)));
  }
}
