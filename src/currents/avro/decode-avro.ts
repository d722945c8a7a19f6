/**
 * Reads an Avro object container file from any Readable, block by block, in bounded memory,
 * and knows nothing of S3. avsc parses the writer schema and decodes records; the container
 * framing is read here so that a truncated or corrupt file is an error with the record index,
 * never a silently shorter file (avsc's BlockDecoder drops an incomplete last block).
 * Codecs: null, deflate, snappy (with its CRC-32 check).
 */
import { promisify } from 'node:util';
import { inflateRaw } from 'node:zlib';
import avro from 'avsc';
import snappy from 'snappyjs';
import { AvroDecodeError } from '../../errors.js';
import { exactTypeOptions } from './exact-types.js';

const inflate = promisify(inflateRaw);
const MAGIC = Buffer.from('Obj\x01', 'latin1');

export interface AvroFile {
  /** The writer schema embedded in the file. */
  type: avro.Type;
  codec: string;
  /** The records, in file order. Throws AvroDecodeError on a corrupt or truncated file. */
  records(): AsyncGenerator<Record<string, unknown>>;
  /**
   * The same records as blocks of Avro binary, decompressed and checked, for a reader that
   * decodes them itself. Either this or `records()`, once: both read the one stream.
   */
  blocks(): AsyncGenerator<AvroBlock>;
}

/** `count` records in Avro binary, the first of them record number `first` of the file. */
export interface AvroBlock {
  data: Buffer;
  count: number;
  first: number;
}

type Source = AsyncIterable<Buffer | string>;

/** A pull reader over a byte stream: ensures n bytes are buffered, or reports end of input. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private pos = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer | string>;
  constructor(source: Source) {
    this.it = source[Symbol.asyncIterator]();
  }
  get buffered(): number {
    return this.buf.length - this.pos;
  }
  /** True when n bytes are available; false when the input ended first. */
  async ensure(n: number): Promise<boolean> {
    while (this.buffered < n) {
      if (this.done) return false;
      const next = await this.it.next();
      if (next.done) {
        this.done = true;
        continue;
      }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
      this.buf = this.pos > 0 ? Buffer.concat([this.buf.subarray(this.pos), chunk]) : Buffer.concat([this.buf, chunk]);
      this.pos = 0;
    }
    return true;
  }
  async atEnd(): Promise<boolean> {
    return !(await this.ensure(1));
  }
  take(n: number): Buffer {
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** A zig-zag varint long, as Avro writes block counts and sizes. */
  async long(what: string): Promise<number> {
    let result = 0;
    let shift = 1;
    for (let i = 0; i < 10; i++) {
      if (!(await this.ensure(1))) throw new AvroDecodeError(`truncated file: the input ended inside ${what}`);
      const byte = this.buf[this.pos++]!;
      result += (byte & 0x7f) * shift;
      if ((byte & 0x80) === 0) return result % 2 === 0 ? result / 2 : -(result + 1) / 2;
      shift *= 128;
    }
    throw new AvroDecodeError(`corrupt file: ${what} is not a valid varint`);
  }
  async bytes(n: number, what: string): Promise<Buffer> {
    if (!(await this.ensure(n))) throw new AvroDecodeError(`truncated file: the input ended inside ${what}`);
    return this.take(n);
  }
}

const MAX_BLOCK = 256 * 1024 * 1024;
export const RUNS_PAST = 'corrupt file: a record runs past the end of its block';
export const TOO_LONG = 'corrupt file: a block holds more bytes than its records';

export async function openAvroFile(source: Source): Promise<AvroFile> {
  const r = new ByteReader(source);
  // A file shorter than the magic is not Avro; a stream that breaks is not the file's fault.
  const magic = await r.bytes(4, 'the header').catch((error: unknown) => {
    if (error instanceof AvroDecodeError) return Buffer.alloc(0);
    throw error;
  });
  if (!magic.equals(MAGIC)) throw new AvroDecodeError('not an Avro object container file (bad magic bytes)');

  const meta = new Map<string, Buffer>();
  for (;;) {
    let count = await r.long('the header');
    if (count === 0) break;
    if (count < 0) {
      count = -count;
      await r.long('the header');
    }
    for (let i = 0; i < count; i++) {
      const key = (await r.bytes(await r.long('the header'), 'the header')).toString('utf8');
      meta.set(key, Buffer.from(await r.bytes(await r.long('the header'), 'the header')));
    }
  }
  const sync = Buffer.from(await r.bytes(16, 'the header'));
  const codec = meta.get('avro.codec')?.toString('utf8') || 'null';
  const decompress = decompressors[codec];
  if (!decompress) throw new AvroDecodeError(`unsupported codec "${codec}" (braze-bridge reads null, deflate and snappy)`);
  let type: avro.Type;
  try {
    type = avro.Type.forSchema(JSON.parse(meta.get('avro.schema')?.toString('utf8') ?? 'null'), exactTypeOptions());
  } catch (error) {
    throw new AvroDecodeError(`the embedded writer schema is invalid: ${(error as Error).message}`, undefined, { cause: error });
  }

  async function* blocks(): AsyncGenerator<AvroBlock> {
    const inflater = decompress!();
    let index = 0;
    try {
      while (!(await r.atEnd())) {
        const count = await r.long('a block header');
        const size = await r.long('a block header');
        if (count < 0 || size < 0 || size > MAX_BLOCK) throw new AvroDecodeError('corrupt file: impossible block header', index);
        const raw = await r.bytes(size, `the block holding record ${index}`);
        const marker = await r.bytes(16, `the block holding record ${index}`);
        if (!marker.equals(sync)) throw new AvroDecodeError('corrupt file: a block does not end with the sync marker', index);
        let data: Buffer;
        try {
          data = await inflater(raw);
        } catch (error) {
          throw new AvroDecodeError(`corrupt file: ${codec} block cannot be decompressed (${(error as Error).message})`, index, { cause: error });
        }
        yield { data, count, first: index };
        index += count;
      }
    } catch (error) {
      // Framing errors are found between records: name the first record not read.
      if (error instanceof AvroDecodeError && error.recordIndex === undefined) throw new AvroDecodeError(error.message, index, { cause: error });
      throw error;
    }
  }

  async function* records(): AsyncGenerator<Record<string, unknown>> {
    for await (const { data, count, first } of blocks()) {
      let pos = 0;
      for (let i = 0; i < count; i++) {
        let decoded: { value: unknown; offset: number };
        try {
          decoded = type.decode(data, pos);
        } catch (error) {
          throw new AvroDecodeError(`corrupt record: ${(error as Error).message}`, first + i, { cause: error });
        }
        if (decoded.offset < 0) throw new AvroDecodeError(RUNS_PAST, first + i);
        pos = decoded.offset;
        yield decoded.value as Record<string, unknown>;
      }
      if (pos !== data.length) throw new AvroDecodeError(TOO_LONG, first + count);
    }
  }
  return { type, codec, records, blocks };
}

/**
 * Per codec, a decompressor for one file's blocks. Deflate runs on libuv's threads, with an
 * output buffer sized from the file's last block: with zlib's default of 16 kB, a 256 kB block
 * took sixteen round trips between the threads and a copy to join the pieces, and inflating the
 * bench's million events cost 0.45–0.65 s of wall time against 0.18–0.20 s. (Inflating the next
 * blocks while one is decoded was tried too: Node waited less for rows, but took CPU from
 * PostgreSQL on a 2-core machine, and whole ingests were 0.2–0.55 s slower in three pairs.)
 */
const decompressors: Record<string, () => (data: Buffer) => Promise<Buffer>> = {
  null: () => async (data) => data,
  deflate: () => {
    let ratio = 16;
    return async (data) => {
      const chunkSize = Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, Math.ceil(data.length * ratio * 1.125) + 1024));
      const out = await inflate(data, { chunkSize });
      // Bounded, so that after a block of one repeated byte the next gets no 4 MB buffer it would hold.
      if (data.length > 0) ratio = Math.min(MAX_RATIO, Math.max(1, out.length / data.length));
      return out;
    };
  },
  snappy: () => async (data) => {
    // Avro's snappy blocks end with the CRC-32 (big-endian) of the uncompressed data.
    const body = snappy.uncompress(data.subarray(0, data.length - 4)) as Buffer;
    const out = Buffer.from(body.buffer, body.byteOffset, body.length);
    if (crc32(out) !== data.readUInt32BE(data.length - 4)) throw new Error('CRC-32 mismatch');
    return out;
  },
};
/** Bounds of the output buffer zlib is given per block (a larger block takes several), and of the ratio it is sized by. */
const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 4 * 1024 * 1024;
const MAX_RATIO = 32;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
