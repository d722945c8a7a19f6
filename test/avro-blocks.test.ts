/**
 * The Avro reader sizes zlib's output for a block from the file's block before it. That may not
 * change what a file reads as: every record in order, whatever the blocks' compression ratios,
 * and for a broken file the first fault in file order, after every record before it.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { openAvroFile } from '../src/currents/avro/decode-avro.js';
import { AvroDecodeError } from '../src/errors.js';
import { encodeAvro } from './helpers/avro.js';

const schema = { type: 'record', name: 'Note', fields: [{ name: 'id', type: 'string' }, { name: 'note', type: 'string' }] };

/** Deterministic bytes that deflate cannot shrink. */
function noise(n: number, seed: number): string {
  let x = seed;
  let out = '';
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out += String.fromCharCode(33 + ((x >>> 16) % 94));
  }
  return out;
}

/** The blocks of a container file: record count, where the payload starts, its size. */
function blocksOf(file: Buffer): Array<{ count: number; start: number; size: number }> {
  let pos = 4;
  const long = () => {
    let n = 0;
    let shift = 1;
    for (;;) {
      const b = file[pos++]!;
      n += (b & 0x7f) * shift;
      if (!(b & 0x80)) return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
      shift *= 128;
    }
  };
  for (;;) {
    let count = long();
    if (count === 0) break;
    if (count < 0) {
      count = -count;
      long();
    }
    for (let i = 0; i < 2 * count; i++) {
      const length = long();
      pos += length;
    }
  }
  pos += 16;
  const blocks = [];
  while (pos < file.length) {
    const count = long();
    const size = long();
    blocks.push({ count, start: pos, size });
    pos += size + 16;
  }
  return blocks;
}

/** Every record of `file` read in small chunks, and the error that ended the reading, if any. */
async function readAll(file: Buffer): Promise<{ ids: string[]; notes: string[]; error?: AvroDecodeError }> {
  const chunks = Array.from({ length: Math.ceil(file.length / 1000) }, (_, i) => file.subarray(i * 1000, (i + 1) * 1000));
  const avro = await openAvroFile(Readable.from(chunks));
  const ids: string[] = [];
  const notes: string[] = [];
  try {
    for await (const r of avro.records()) {
      ids.push(r.id as string);
      notes.push(r.note as string);
    }
  } catch (error) {
    if (!(error instanceof AvroDecodeError)) throw error;
    return { ids, notes, error };
  }
  return { ids, notes };
}

const firstOf = (blocks: Array<{ count: number }>, k: number) => blocks.slice(0, k).reduce((n, b) => n + b.count, 0);

describe('Avro blocks', () => {
  it('reads every record in order whatever each block compresses to', async () => {
    // Blocks of about 4 kB that deflate shrinks a thousandfold, then not at all, then a single
    // record of 3 MB of one letter: each block's output outgrows the size guessed from the one before.
    const records = [
      ...Array.from({ length: 40 }, (_, i) => ({ id: `r${i}`, note: 'a'.repeat(3000) })),
      ...Array.from({ length: 40 }, (_, i) => ({ id: `n${i}`, note: noise(3000, i) })),
      { id: 'huge', note: 'b'.repeat(3_000_000) },
      ...Array.from({ length: 10 }, (_, i) => ({ id: `t${i}`, note: noise(50, 100 + i) })),
    ];
    for (const codec of ['deflate', 'snappy', 'null'] as const) {
      const file = await encodeAvro(schema, records, codec, 4096);
      expect(blocksOf(file).length).toBeGreaterThan(20);
      const read = await readAll(file);
      expect(read.error).toBeUndefined();
      expect(read.ids).toEqual(records.map((r) => r.id));
      expect(read.notes).toEqual(records.map((r) => r.note));
    }
  });

  it('reports the first broken block in file order, after every record before it', async () => {
    const records = Array.from({ length: 600 }, (_, i) => ({ id: `e${i}`, note: noise(40, i) }));
    const file = await encodeAvro(schema, records, 'deflate', 2048);
    const blocks = blocksOf(file);
    expect(blocks.length).toBeGreaterThan(8);

    // Block 3 cannot be inflated (0xff: a reserved deflate block type) and block 5's sync marker is wrong.
    const both = Buffer.from(file);
    both.fill(0xff, blocks[3]!.start, blocks[3]!.start + blocks[3]!.size);
    both.fill(0, blocks[5]!.start + blocks[5]!.size, blocks[5]!.start + blocks[5]!.size + 16);
    const broken = await readAll(both);
    expect(broken.error?.message).toMatch(/deflate block cannot be decompressed/);
    expect(broken.error?.recordIndex).toBe(firstOf(blocks, 3));
    expect(broken.ids).toEqual(records.slice(0, firstOf(blocks, 3)).map((r) => r.id));

    // Only the sync marker: blocks 0 to 4 are read, then the marker after block 5 names its first record.
    const marker = Buffer.from(file);
    marker.fill(0, blocks[5]!.start + blocks[5]!.size, blocks[5]!.start + blocks[5]!.size + 16);
    const unsynced = await readAll(marker);
    expect(unsynced.error?.message).toMatch(/does not end with the sync marker/);
    expect(unsynced.error?.recordIndex).toBe(firstOf(blocks, 5));
    expect(unsynced.ids).toEqual(records.slice(0, firstOf(blocks, 5)).map((r) => r.id));

    // Cut inside block 6: every record of blocks 0 to 5, then the truncation.
    const cut = file.subarray(0, blocks[6]!.start + Math.floor(blocks[6]!.size / 2));
    const truncated = await readAll(cut);
    expect(truncated.error?.message).toMatch(/truncated file/);
    expect(truncated.error?.recordIndex).toBe(firstOf(blocks, 6));
    expect(truncated.ids).toEqual(records.slice(0, firstOf(blocks, 6)).map((r) => r.id));
  });
});
