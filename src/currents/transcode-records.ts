/**
 * Avro records straight to COPY text, without making JavaScript objects or strings of them,
 * for the field types nearly every Currents event type is made of (84 of Braze's 94 v10
 * types): string, int, long and boolean, each alone or in a union with null. Any other type
 * in the schema, or a field that does not get a column of its own, and read-batches.ts takes
 * the records one by one through avsc and map-schema.ts instead.
 *
 * Why: decoding a record into an object of strings and formatting those again was two thirds
 * of Node's time per event, and Node, not PostgreSQL, was what an ingest waited for.
 *
 * The text is the same to the byte as map-schema.ts's: a string of printable ASCII without a
 * backslash is copied as it is; any other (an escape, a NUL, non-ASCII, invalid UTF-8) is
 * decoded and formatted exactly as map-schema.ts does, NULs counted. Errors are those of
 * decode-avro.ts: an invalid union branch, or a record running past its block.
 */
import type avro from 'avsc';
import { AvroDecodeError } from '../errors.js';
import { RUNS_PAST } from './avro/decode-avro.js';
import { hasTimeColumn, type TablePlan } from './event-tables.js';
import { copyEscape, replaceNul, type FormatStats } from './map-schema.js';
import { isoSeconds, writeIso } from './occurred-at.js';

/** Where a record's COPY text goes: a buffer with room made on request (read-batches.ts). */
export interface RowOut {
  text: Buffer;
  used: number;
  /** Make sure `bytes` more fit after `used` (text may be replaced by a larger buffer). */
  room(bytes: number): void;
}

/** What a record was, besides its text. */
export interface RowFacts {
  /**
   * The id: where in `out.text` its bytes are when they are the id as stored (printable ASCII,
   * the usual case: no string is made of it), else the id as stored (NUL replaced), or
   * undefined when not a string.
   */
  idFrom: number;
  idTo: number;
  id: string | undefined;
  /** Whether occurred_at was written (else \N, left to PostgreSQL). */
  timed: boolean;
}

/** Writes the record at `pos` of `data` as one COPY line to `out`, fills `facts`; returns the position after the record. */
export type Transcoder = (data: Buffer, pos: number, out: RowOut, facts: RowFacts) => number;

type Kind = 'string' | 'int' | 'long' | 'boolean';
interface Field {
  kind: Kind;
  /** The union branch that is null: 0 or 1; -1 when the field is not a union. */
  nullBranch: number;
  isId: boolean;
  isTime: boolean;
}

const TAB = 0x09;

/** A transcoder for records of `type` loaded by `plan`, or undefined when it cannot be used. */
export function transcoderFor(type: avro.Type, plan: TablePlan, key: string, stats: FormatStats): Transcoder | undefined {
  const record = type as unknown as { fields: Array<{ name: string; type: avro.Type }> };
  if (plan.extra.length > 0 || plan.columns.length !== record.fields.length) return undefined;
  const fields: Field[] = [];
  const hasTime = hasTimeColumn(plan);
  for (const [i, f] of record.fields.entries()) {
    const column = plan.columns[i]!;
    if (column.name !== f.name) return undefined;
    const shape = shapeOf(f.type);
    if (!shape || (f.name === 'properties' && shape.kind === 'string')) return undefined; // properties is jsonb
    fields.push({ ...shape, isId: f.name === 'id', isTime: hasTime && f.name === 'time' });
  }
  const suffix = Buffer.from(`${copyEscape(key)}\n`, 'utf8');
  const ignored: FormatStats = { nul: 0 };
  const input = new Input();

  return (data, pos, out, facts) => {
    input.data = data;
    input.pos = pos;
    facts.id = undefined;
    facts.idFrom = facts.idTo = -1;
    let time: number | bigint | null = null;
    for (let f = 0; f < fields.length; f++) {
      const field = fields[f]!;
      out.room(26);
      if (f > 0) out.text[out.used++] = TAB;
      if (field.nullBranch >= 0) {
        const branch = input.int();
        if (branch === field.nullBranch) {
          out.text[out.used++] = 0x5c; // \N
          out.text[out.used++] = 0x4e;
          continue;
        }
        if (branch !== 1 - field.nullBranch) throw new AvroDecodeError(`corrupt record: invalid union index: ${branch}`);
      }
      if (field.kind === 'string') {
        const from = out.used;
        const id = input.string(out, stats, field.isId);
        if (field.isId) {
          if (id === undefined) {
            facts.idFrom = from;
            facts.idTo = out.used;
          } else facts.id = replaceNul(id, ignored);
        }
      } else if (field.kind === 'boolean') {
        out.text[out.used++] = input.byte() ? 0x74 : 0x66; // t, f
      } else {
        const n = field.kind === 'int' ? input.int() : input.long();
        out.used = typeof n === 'number' ? writeInteger(out.text, out.used, n) : out.used + out.text.write(String(n), out.used, 'latin1');
        if (field.isTime) time = n;
      }
    }
    const seconds = isoSeconds(time);
    out.room(suffix.length + 24);
    out.text[out.used++] = TAB;
    if (typeof seconds === 'number') out.used = writeIso(out.text, out.used, seconds);
    else {
      out.text[out.used++] = 0x5c;
      out.text[out.used++] = 0x4e;
    }
    out.text[out.used++] = TAB;
    out.text.set(suffix, out.used);
    out.used += suffix.length;
    // Without a time field, time stays null and seconds null: the line is timed (\N).
    facts.timed = seconds !== undefined;
    return input.pos;
  };
}

/** A safe integer's decimal digits at `at`, as String(n) writes them; returns the offset after. */
function writeInteger(buf: Buffer, at: number, n: number): number {
  if (n < 0 || n > 0x7fffffff) {
    // Beyond 31 bits (rare): let V8 write the digits.
    return at + buf.write(String(n), at, 'latin1');
  }
  let digits = 1;
  for (let x = n; x >= 10; x = (x / 10) | 0) digits++;
  for (let i = at + digits - 1; i >= at; i--) {
    const q = (n / 10) | 0;
    buf[i] = 0x30 + n - q * 10;
    n = q;
  }
  return at + digits;
}

/** string, int, long or boolean, or one of them in a union with null. */
function shapeOf(type: avro.Type): { kind: Kind; nullBranch: number } | undefined {
  const t = type as unknown as { typeName: string; types?: avro.Type[] };
  const kind = (x: avro.Type) => {
    const name = (x as unknown as { typeName: string }).typeName;
    return name === 'string' || name === 'int' || name === 'boolean' ? name : name === 'long' || name === 'abstract:long' ? 'long' : undefined;
  };
  if (t.typeName === 'union:unwrapped' && t.types!.length === 2) {
    const names = t.types!.map((x) => (x as unknown as { typeName: string }).typeName);
    const nullBranch = names.indexOf('null');
    // A union of two non-null types (["string", "int"]) is not ours: the record-by-record path reads it.
    if (nullBranch < 0) return undefined;
    const other = kind(t.types![1 - nullBranch]!);
    return other ? { kind: other, nullBranch } : undefined;
  }
  const k = kind(type);
  return k && { kind: k, nullBranch: -1 };
}

/** A reading position in a block, with Avro's primitive encodings. */
class Input {
  data: Buffer = Buffer.alloc(0);
  pos = 0;

  byte(): number {
    if (this.pos >= this.data.length) throw new AvroDecodeError(RUNS_PAST);
    return this.data[this.pos++]!;
  }

  /** A zig-zag varint as a number: exact to 2^53, as avsc reads ints, lengths and union branches. */
  int(): number {
    const first = this.data[this.pos];
    if (first !== undefined && first < 0x80) {
      // One byte (union branches, most lengths).
      this.pos++;
      return first & 1 ? -((first + 1) >>> 1) : first >>> 1;
    }
    let n = 0;
    let scale = 1;
    let b;
    do {
      b = this.byte();
      n += (b & 0x7f) * scale;
      scale *= 128;
    } while (b & 0x80);
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  }

  /** A zig-zag varint as an exact 64-bit value (a bigint past 2^53), as exact-types.ts reads a long. */
  long(): number | bigint {
    const start = this.pos;
    // A 64-bit value takes at most 10 bytes: a tenth with the continuation bit is corrupt. (avsc's
    // long reader, on the record-by-record path, accepts both corrupt forms as some value.)
    while (this.byte() & 0x80) {
      if (this.pos - start >= 10) throw new AvroDecodeError('corrupt record: a long takes more than 10 bytes');
    }
    if (this.pos - start <= 7) {
      this.pos = start;
      return this.int();
    }
    // The tenth byte holds the 64th bit alone: more would be a value no writer can encode.
    if (this.pos - start === 10 && this.data[this.pos - 1]! > 1) throw new AvroDecodeError('corrupt record: a long beyond 64 bits');
    let u = 0n;
    for (let i = this.pos - 1; i >= start; i--) u = (u << 7n) | BigInt(this.data[i]! & 0x7f);
    u = BigInt.asUintN(64, u);
    return BigInt.asIntN(64, (u >> 1n) ^ -(u & 1n));
  }

  /**
   * A string, written to `out` as COPY text. When `keep`, returns the string as avsc would have
   * read it, unless it was printable ASCII, written as it is (undefined otherwise).
   */
  string(out: RowOut, stats: FormatStats, keep: boolean): string | undefined {
    const length = this.int();
    const start = this.pos;
    const end = start + length;
    if (length < 0 || end > this.data.length) throw new AvroDecodeError(RUNS_PAST);
    this.pos = end;
    // At most 3 bytes out per byte in (an invalid byte becomes U+FFFD).
    out.room(length * 3);
    const data = this.data;
    const text = out.text;
    let at = out.used;
    let i = start;
    for (; i < end; i++) {
      const b = data[i]!;
      if (b < 0x20 || b > 0x7e || b === 0x5c) break;
      text[at++] = b;
    }
    if (i === end) {
      out.used = at;
      return undefined;
    }
    const value = data.toString('utf8', start, end);
    out.used += text.write(copyEscape(replaceNul(value, stats)), out.used);
    return keep ? value : undefined;
  }
}
