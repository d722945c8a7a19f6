/**
 * A batch of a file's rows as COPY text, and its memory: each batch's text is UTF-8 in one
 * buffer outside the JavaScript heap, with per-row arrays (where each line ends, where its id
 * is), all reused from batch to batch and file to file (read-batches.ts fills them,
 * write-events.ts writes them). Also the ids within one batch: a small open-addressing table.
 */
import type { RowFacts, RowOut } from './transcode-records.js';

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

/** Give the kept memory back (a run has ended; a long-lived process such as `schedule` goes on). */
export function dropSpareBatches(): void {
  spare.length = 0;
}

/** The text of a builder between batches: a batch takes its buffer with its first line. */
const NONE: Buffer = Buffer.alloc(0);

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
export class BatchBuilder implements RowOut {
  /** Taken when the batch's first line is written, so that a file's end takes none. */
  private slab: Slab | undefined;
  text: Buffer = NONE;
  used = 0;
  rows = 0;
  /** Bytes of text at which the batch is full. */
  limit = FIRST_BATCH_BYTES;
  private ids = new Map<number, string>();

  room(bytes: number): void {
    if (this.used + bytes <= this.text.length) return;
    if (!this.slab) {
      this.slab = spare.pop() ?? newSlab();
      this.text = this.slab.text;
      if (bytes <= this.text.length) return;
    }
    // A line longer than the rest of the buffer (a huge field): this batch gets a larger one.
    const text = Buffer.allocUnsafe(Math.max(2 * this.text.length, this.used + bytes));
    this.text.copy(text, 0, 0, this.used);
    this.text = text;
  }

  /** The line written last ends at `used`. True when the batch is full. */
  endRow(facts: RowFacts): boolean {
    // Every line is written (room made for it) before it is ended.
    const { ends, timed, idFrom, idTo } = this.slab!;
    ends[this.rows] = this.used;
    timed[this.rows] = facts.timed ? 1 : 0;
    idFrom[this.rows] = facts.idFrom;
    idTo[this.rows] = facts.idTo;
    if (facts.id !== undefined) this.ids.set(this.rows, facts.id);
    return ++this.rows === BATCH_ROWS || this.used >= this.limit;
  }

  /** The file has ended (or failed): the memory of the batch being filled goes to the next file. */
  release(): void {
    if (this.slab) keep(this.slab);
    this.slab = undefined;
    this.text = NONE;
    this.used = this.rows = 0;
  }

  /** The batch so far; the builder starts a new one. */
  take(): RowBatch {
    const slab = this.slab!;
    const { ends, idFrom, idTo, timed } = slab;
    const done = () => keep(slab);
    const batch = { rows: this.rows, text: this.text.subarray(0, this.used), ends, idFrom, idTo, ids: this.ids, timed, done };
    this.slab = undefined;
    this.limit = BATCH_BYTES;
    this.text = NONE;
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

/** Slots of the per-batch table of ids: the power of two at least three times BATCH_ROWS (short probes). */
export const BATCH_SLOTS = 2 ** Math.ceil(Math.log2(3 * BATCH_ROWS));

/** Whether a row before row `i`, in the batch being sorted, has its id (whose hash is `hash`). */
export function earlierInBatch(slots: Int32Array, batch: RowBatch, i: number, hash: number): boolean {
  for (let s = hash & (BATCH_SLOTS - 1); slots[s]! >= 0; s = (s + 1) & (BATCH_SLOTS - 1)) {
    if (sameId(batch, slots[s]!, i)) return true;
  }
  return false;
}

/** Whether rows j and i have the same id: both as bytes in the text (compared there), or both as strings. */
function sameId(batch: RowBatch, j: number, i: number): boolean {
  const a = batch.idFrom[j]!;
  const b = batch.idFrom[i]!;
  if (a >= 0 && b >= 0) return batch.text.compare(batch.text, b, batch.idTo[i]!, a, batch.idTo[j]!) === 0;
  // An id written as it is (printable ASCII) never equals one that was not.
  return a < 0 && b < 0 && batch.ids.get(j) === batch.ids.get(i);
}

/** The free slot for `hash`. */
export function freeSlot(slots: Int32Array, hash: number): number {
  let s = hash & (BATCH_SLOTS - 1);
  while (slots[s]! >= 0) s = (s + 1) & (BATCH_SLOTS - 1);
  return s;
}
