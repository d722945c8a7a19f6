/**
 * From an Avro writer schema to PostgreSQL columns, by field name (never position: Braze adds
 * optional fields in the middle of records). string/enum → text, int/long → bigint,
 * float/double → double precision, boolean → boolean, bytes/fixed → bytea, ["null", X] →
 * nullable X, anything nested or ambiguous → jsonb. A string field named `properties`
 * (custom events, purchases) holds JSON and is stored as jsonb; text that is not valid JSON is
 * kept as a JSON string rather than dropped.
 */
import type avro from 'avsc';
import { AvroDecodeError } from '../errors.js';

export type PgType = 'text' | 'bigint' | 'double precision' | 'boolean' | 'bytea' | 'jsonb';

export interface EventColumn {
  name: string;
  pgType: PgType;
  /** How to turn a decoded value into COPY text. */
  format: (value: unknown) => string;
}

/** Columns braze-bridge adds to every event table. */
export const ADDED_COLUMNS = ['occurred_at', 'source_key', 'loaded_at'];
const FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function mapSchema(type: avro.Type): EventColumn[] {
  const t = type as unknown as { typeName: string; fields?: Array<{ name: string; type: avro.Type }> };
  if (t.typeName !== 'record' || !t.fields) throw new AvroDecodeError(`the writer schema is a ${t.typeName}, not a record`);
  const columns = t.fields.map((f) => {
    if (!FIELD.test(f.name)) throw new AvroDecodeError(`field name "${f.name.slice(0, 80)}" is not a plain Avro name`);
    if (ADDED_COLUMNS.includes(f.name.toLowerCase())) throw new AvroDecodeError(`field "${f.name}" clashes with a column braze-bridge adds`);
    const pgType = f.name === 'properties' && baseTypeName(f.type) === 'string' ? 'jsonb' : pgTypeOf(f.type);
    return { name: f.name, pgType, format: formatter(pgType, f.name === 'properties') };
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
  return t.typeName.startsWith('logical:') ? baseTypeName((type as unknown as { underlyingType: avro.Type }).underlyingType) : t.typeName;
}

function pgTypeOf(type: avro.Type): PgType {
  switch (baseTypeName(type)) {
    case 'string':
    case 'enum':
      return 'text';
    case 'int':
    case 'long':
      return 'bigint';
    case 'float':
    case 'double':
      return 'double precision';
    case 'boolean':
      return 'boolean';
    case 'bytes':
    case 'fixed':
      return 'bytea';
    case 'null':
      return 'text';
    default:
      return 'jsonb';
  }
}

/** COPY text format: backslash, tab, newline and carriage return escaped; NULL is \N. */
export function copyEscape(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : s;
}

function formatter(pgType: PgType, jsonString: boolean): (value: unknown) => string {
  const nullable = (f: (v: unknown) => string) => (v: unknown) => (v === null || v === undefined ? '\\N' : f(v));
  switch (pgType) {
    case 'text':
      return nullable((v) => copyEscape(String(v)));
    case 'bigint':
    case 'double precision':
      return nullable((v) => String(v));
    case 'boolean':
      return nullable((v) => (v ? 't' : 'f'));
    case 'bytea':
      return nullable((v) => `\\\\x${(v as Buffer).toString('hex')}`);
    case 'jsonb':
      if (jsonString) {
        return nullable((v) => {
          const text = String(v);
          try {
            JSON.parse(text);
            return copyEscape(text);
          } catch {
            // Not JSON: keep it, as a JSON string, so it stays queryable and is never lost.
            return copyEscape(JSON.stringify(text));
          }
        });
      }
      return nullable((v) => copyEscape(JSON.stringify(v, (_k, x) => (Buffer.isBuffer(x) ? x.toString('base64') : x))));
  }
}
