/**
 * avsc options that keep Currents values exact. By default avsc refuses a long beyond 2^53
 * ("potential precision loss") and reads a decimal as its raw bytes, losing the scale.
 * Here every long is a bigint and a decimal is its exact decimal text ("12.50").
 */
import avro from 'avsc';

/** Avro long as a bigint, always: a valid long never fails its file. */
const BigLong = avro.types.LongType.__with({
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(),
  toBuffer: (n: bigint) => {
    const buf = Buffer.alloc(8);
    buf.writeBigInt64LE(BigInt(n));
    return buf;
  },
  fromJSON: (n: number | string) => BigInt(n),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a === b ? 0 : a < b ? -1 : 1),
});

/** The decimal logical type (bytes or fixed, two's complement big-endian) as exact text. */
class DecimalType extends avro.types.LogicalType {
  readonly scale: number;
  readonly precision: number;
  constructor(schema: { scale?: number; precision?: number }, opts?: object) {
    super(schema as never, opts as never);
    this.scale = schema.scale ?? 0;
    this.precision = schema.precision ?? 0;
  }
  /** Kept when the schema is written out (a file encoded with this type keeps its scale). */
  override _export(schema: avro.Schema): void {
    Object.assign(schema as object, { precision: this.precision, scale: this.scale });
  }
  override _fromValue(buf: Buffer): string {
    return decimalText(buf, this.scale);
  }
  override _toValue(text: string): Buffer {
    const [int, frac = ''] = text.replace('-', '').split('.');
    let n = BigInt(int! + frac.padEnd(this.scale, '0').slice(0, this.scale));
    if (text.startsWith('-')) n = -n;
    const hex = (n < 0n ? (1n << 128n) + n : n).toString(16);
    const bytes = Buffer.from(hex.padStart(hex.length + (hex.length % 2), '0'), 'hex');
    return n < 0n ? bytes.subarray(bytes.length - 16) : bytes[0]! & 0x80 ? Buffer.concat([Buffer.alloc(1), bytes]) : bytes;
  }
}

/** Two's complement big-endian bytes and a scale → "-12.50". */
export function decimalText(buf: Buffer, scale: number): string {
  if (buf.length === 0) return '0';
  let n = BigInt(`0x${buf.toString('hex')}`);
  if (buf[0]! & 0x80) n -= 1n << BigInt(buf.length * 8);
  const negative = n < 0n;
  const digits = (negative ? -n : n).toString().padStart(scale + 1, '0');
  const text = scale > 0 ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return negative ? `-${text}` : text;
}

/** Options for `avro.Type.forSchema` when reading Currents files; avsc adds named types to the registry, so each call gets its own. */
export function exactTypeOptions(): Partial<avro.ForSchemaOptions> {
  return { registry: { long: BigLong }, logicalTypes: { decimal: DecimalType } } as unknown as Partial<avro.ForSchemaOptions>;
}
