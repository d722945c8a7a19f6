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
import { BATCH_ROWS, BatchBuilder, type RowBatch } from './row-batch.js';
import { transcoderFor, type RowFacts } from './transcode-records.js';

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
const eventLoopTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

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
          if ((++n & TURN_EVERY) === 0) await eventLoopTurn();
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
      if ((++n & TURN_EVERY) === 0) await eventLoopTurn();
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
