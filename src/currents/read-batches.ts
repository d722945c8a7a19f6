/**
 * A file's records as batches of COPY text, each record decoded and formatted once: straight
 * from the Avro bytes where transcode-records.ts can, else record by record through avsc and
 * map-schema.ts. A batch is bounded in rows and bytes, so a 200 MB file is held a few megabytes
 * at a time, and its text is UTF-8 in one buffer outside the JavaScript heap (holding 20,000
 * lines as strings until their batch was written cost more in garbage collection than the
 * decoding). `ahead` decodes the next batches while one is written, so that Node's decoding
 * and PostgreSQL's writing overlap.
 */
import { AvroDecodeError } from '../errors.js';
import { TOO_LONG, type AvroFile } from './avro/decode-avro.js';
import { hasTimeColumn, type TablePlan } from './event-tables.js';
import { copyEscape, replaceNul, type FormatStats } from './map-schema.js';
import { occurredAt } from './occurred-at.js';
import { transcoderFor, type RowFacts, type RowOut } from './transcode-records.js';

/** Records per batch at most: also the most ids one lookup sends (write-events.ts). */
export const BATCH_ROWS = 20_000;
/** Bytes of COPY text per batch, unless one line alone is longer. */
const BATCH_BYTES = 2 * 1024 * 1024;
/**
 * The first batch of a file is smaller, so that its first COPY starts a block or so after the
 * file is opened and the next batches decode while it is written (1M events in 10 files: 0.06
 * to 0.5 s sooner in five of six alternating runs).
 */
const FIRST_BATCH_BYTES = 256 * 1024;
/** Characters of formatted lines encoded at once. */
const CHUNK_CHARS = 64 * 1024;
/**
 * Records decoded between two turns of the event loop (a power of two, less one, as a mask).
 * Decoding runs ahead while the file's batches are written, on the thread that also reads the
 * database's answers: a block decoded in one go held up each SAVEPOINT, lookup and RELEASE
 * behind it (1M events: those round trips took 0.87-1.08 s in all, 0.67-0.79 s with a turn
 * every 256 records).
 */
const TURN_EVERY = 255;
/** A turn of the event loop: the database's answers that came meanwhile are read. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface RowBatch {
  /** Records in the batch. */
  rows: number;
  /**
   * The records as COPY text, one line each with its newline: its columns, extra_fields (when
   * the table has fields there), occurred_at and source_key.
   */
  text: Buffer;
  /** Where line i ends in `text`; it starts where line i - 1 ends. */
  ends: Uint32Array;
  /**
   * Where each record's id is in `text`, when its bytes there are the id as stored (printable
   * ASCII, the usual case): no string is made of most ids, so a batch queued to be written
   * holds no objects for the garbage collector to copy from one generation to the next.
   * Else -1, and the id is in `ids` (or is not a string). See idOf.
   */
  idFrom: Int32Array;
  idTo: Int32Array;
  /** The ids that are not in `text` as stored, by row. */
  ids: Map<number, string>;
  /**
   * 1 when a record's occurred_at is in its line; 0 (\N there) when only PostgreSQL can say what
   * to_timestamp("time") is (occurred-at.ts): the row takes the staging table, whose insert
   * computes it there, as before.
   */
  timed: Uint8Array;
  /** Once the batch is written: its buffer may be filled again (kept otherwise: nothing to do). */
  done(): void;
}

/** The records of `avro` for `plan`, from the file `key`, counting replaced NULs into `stats`. */
export function readBatches(avro: AvroFile, plan: TablePlan, key: string, stats: FormatStats): AsyncGenerator<RowBatch> {
  const transcode = transcoderFor(avro.type, plan, key, stats);
  if (!transcode) return formatRecords(avro.records(), plan, key, stats);
  return (async function* () {
    const batch = new BatchBuilder();
    const facts: RowFacts = { idFrom: -1, idTo: -1, id: undefined, timed: true };
    // Counted across blocks: Braze's blocks may hold fewer records than a turn.
    let n = 0;
    try {
      for await (const block of avro.blocks()) {
        let pos = 0;
        for (let i = 0; i < block.count; i++) {
          try {
            pos = transcode(block.data, pos, batch, facts);
          } catch (error) {
            if (error instanceof AvroDecodeError) throw new AvroDecodeError(error.message, block.first + i, { cause: error });
            throw error;
          }
          if (batch.endRow(facts)) yield batch.take();
          if ((++n & TURN_EVERY) === 0) await turn();
        }
        if (pos !== block.data.length) throw new AvroDecodeError(TOO_LONG, block.first + block.count);
      }
      if (batch.rows > 0) yield batch.take();
    } finally {
      batch.release();
    }
  })();
}

/** Records one by one: each formatted by map-schema.ts, the lines encoded about 64 kB at a time. */
async function* formatRecords(records: AsyncIterable<Record<string, unknown>>, plan: TablePlan, key: string, stats: FormatStats): AsyncGenerator<RowBatch> {
  const { columns, extra } = plan;
  const hasTime = hasTimeColumn(plan);
  const ignored: FormatStats = { nul: 0 };
  const source = `\t${copyEscape(key)}\n`;
  const batch = new BatchBuilder();
  let chunk = '';
  const lines: string[] = []; // the lines in chunk
  const ids: Array<string | undefined> = [];
  const timed: boolean[] = [];
  const encode = () => {
    // At most 3 bytes of UTF-8 per UTF-16 unit.
    batch.room(chunk.length * 3);
    const from = batch.used;
    const bytes = batch.text.write(chunk, from);
    // All ASCII (the usual case): a line's bytes are its characters.
    const ascii = bytes === chunk.length;
    let end = from;
    for (let i = 0; i < lines.length; i++) {
      end += ascii ? lines[i]!.length : Buffer.byteLength(lines[i]!);
      batch.used = end;
      batch.endRow({ idFrom: -1, idTo: -1, id: ids[i], timed: timed[i]! });
    }
    batch.used = from + bytes;
    chunk = '';
    lines.length = ids.length = timed.length = 0;
  };
  let n = 0;
  try {
    for await (const record of records) {
      if ((++n & TURN_EVERY) === 0) await turn();
      let line = '';
      for (let i = 0; i < columns.length; i++) line += (i === 0 ? '' : '\t') + columns[i]!.format(record[columns[i]!.name], stats);
      if (extra.length > 0) {
        const bag: Record<string, unknown> = {};
        for (const c of extra) if (record[c.name] !== undefined) bag[c.name] = c.json(record[c.name], stats);
        line += `${columns.length > 0 ? '\t' : ''}${copyEscape(JSON.stringify(bag))}`;
      }
      const occurred = hasTime ? occurredAt(record.time) : '\\N';
      line += `\t${occurred ?? '\\N'}${source}`;
      chunk += line;
      lines.push(line);
      const id = record.id;
      // The id column's formatter has counted its NULs already.
      ids.push(typeof id === 'string' ? replaceNul(id, ignored) : undefined);
      timed.push(occurred !== undefined);
      if (batch.rows + lines.length === BATCH_ROWS || batch.used + chunk.length >= batch.limit) {
        encode();
        yield batch.take();
      } else if (chunk.length >= CHUNK_CHARS) encode();
    }
    encode();
    if (batch.rows > 0) yield batch.take();
  } finally {
    batch.release();
  }
}

/** A batch buffer's size: room for the last line past BATCH_BYTES. */
const BUFFER_BYTES = BATCH_BYTES + 256 * 1024;
/**
 * Written batches' memory kept for the next batches, of this file or the next: about as many as
 * can be in flight (per file loading, those ahead, the one being written and the one being
 * filled), so memory stays flat however long the file or many the files. Left to the garbage
 * collector, a batch's buffers were freed only by a full collection: a file of 200 events
 * allocated two, and 500 such files took 193 full collections, 2.2 s of the process's 8.7 CPU-s.
 */
const SPARE = 16;
const spare: Slab[] = [];
const keep = (slab: Slab) => {
  if (spare.length < SPARE) spare.push(slab);
};

/** The memory of one batch: its text and its per-row arrays. */
interface Slab {
  text: Buffer;
  ends: Uint32Array;
  idFrom: Int32Array;
  idTo: Int32Array;
  timed: Uint8Array;
}

const newSlab = (): Slab => ({
  text: Buffer.allocUnsafe(BUFFER_BYTES),
  ends: new Uint32Array(BATCH_ROWS),
  idFrom: new Int32Array(BATCH_ROWS),
  idTo: new Int32Array(BATCH_ROWS),
  timed: new Uint8Array(BATCH_ROWS),
});

/** The batch being filled: lines are written at `used`, then ended with `endRow`. */
class BatchBuilder implements RowOut {
  private slab = spare.pop() ?? newSlab();
  text = this.slab.text;
  used = 0;
  rows = 0;
  /** Bytes of text at which the batch is full. */
  limit = FIRST_BATCH_BYTES;
  private ids = new Map<number, string>();

  room(bytes: number): void {
    if (this.used + bytes <= this.text.length) return;
    // A line longer than the rest of the buffer (a huge field): this batch gets a larger one.
    const text = Buffer.allocUnsafe(Math.max(2 * this.text.length, this.used + bytes));
    this.text.copy(text, 0, 0, this.used);
    this.text = text;
  }

  /** The line written last ends at `used`. True when the batch is full. */
  endRow(facts: RowFacts): boolean {
    const { ends, timed, idFrom, idTo } = this.slab;
    ends[this.rows] = this.used;
    timed[this.rows] = facts.timed ? 1 : 0;
    idFrom[this.rows] = facts.idFrom;
    idTo[this.rows] = facts.idTo;
    if (facts.id !== undefined) this.ids.set(this.rows, facts.id);
    return ++this.rows === BATCH_ROWS || this.used >= this.limit;
  }

  /** The file has ended (or failed): the memory of the batch being filled goes to the next file. */
  release(): void {
    keep(this.slab);
    this.text = Buffer.alloc(0);
    this.used = this.rows = 0;
  }

  /** The batch so far; the builder starts a new one. */
  take(): RowBatch {
    const slab = this.slab;
    const { ends, idFrom, idTo, timed } = slab;
    const done = () => keep(slab);
    const batch = { rows: this.rows, text: this.text.subarray(0, this.used), ends, idFrom, idTo, ids: this.ids, timed, done };
    this.slab = spare.pop() ?? newSlab();
    this.limit = BATCH_BYTES;
    this.text = this.slab.text;
    this.used = 0;
    this.rows = 0;
    this.ids = new Map();
    return batch;
  }
}

/** Row i's id as stored, or undefined when it is not a string. */
export function idOf(batch: RowBatch, i: number): string | undefined {
  const from = batch.idFrom[i]!;
  return from >= 0 ? batch.text.toString('latin1', from, batch.idTo[i]) : batch.ids.get(i);
}

/**
 * The lines `picked` (in ascending order) of a batch, as runs of adjacent lines: slices of the
 * batch's buffer, never copied, except that runs of a few lines (scattered rows, such as those
 * left to the staging table) are gathered into one chunk rather than sent one by one.
 */
export function* linesOf(batch: RowBatch, picked: Iterable<number>): Generator<Buffer> {
  const small: Buffer[] = [];
  let size = 0;
  const gathered = () => {
    const chunk = small.length === 1 ? small[0]! : Buffer.concat(small, size);
    small.length = 0;
    size = 0;
    return chunk;
  };
  let from = -1;
  let to = -1;
  function* run(): Generator<Buffer> {
    const piece = batch.text.subarray(from, to);
    if (piece.length >= 16384) {
      if (size > 0) yield gathered();
      yield piece;
      return;
    }
    small.push(piece);
    size += piece.length;
    if (size >= 65536) yield gathered();
  }
  for (const i of picked) {
    const start = i === 0 ? 0 : batch.ends[i - 1]!;
    if (start !== to) {
      if (from >= 0) yield* run();
      from = start;
    }
    to = batch.ends[i]!;
  }
  if (from >= 0) yield* run();
  if (size > 0) yield gathered();
}

/**
 * Iterate `source` with up to `depth()` items produced ahead (at least one), so that decoding
 * goes on while the caller waits for the database.
 */
export async function* ahead<T>(source: AsyncGenerator<T>, depth: () => number): AsyncGenerator<T> {
  const queue: Array<Promise<IteratorResult<T>>> = [];
  const fill = () => {
    while (queue.length < Math.max(1, depth())) {
      const next = source.next();
      // Awaited in turn; until then a failure must not count as unhandled.
      next.catch(() => {});
      queue.push(next);
    }
  };
  try {
    fill();
    for (;;) {
      const item = await queue.shift()!;
      if (item.done) return;
      fill();
      yield item.value;
    }
  } finally {
    // The caller stopped early (its write failed): let the source close once its pending steps end.
    void source.return(undefined).catch(() => {});
  }
}
