/**
 * One Currents file's load, inside the transaction that claimed its manifest row: open the
 * object, decode the Avro, map its writer schema, make sure the event table fits, write the
 * new events (write-events.ts: straight into the table, each row once; or, when that cannot
 * be done, through a staging table), and mark the row loaded — all before the caller commits,
 * so the events and the row commit together and a crash loads nothing twice.
 * A file that is at fault rolls back to a savepoint and is marked failed with the claim still
 * held, so no other process picks it up in between; a file S3 did not deliver stays pending.
 */
import type { Readable } from 'node:stream';
import { AppError, AvroDecodeError, DatabaseError, messageOf, MissingObjectError, SchemaMismatchError, TransientSourceError } from '../errors.js';
import type { Connection, Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import { openAvroFile } from './avro/decode-avro.js';
import { ensureEventTable, hasIdColumn, resolveEventTable } from './event-tables.js';
import { markFileAttempted, markFileFailed, markFileLoaded, type ClaimedFile } from './manifest.js';
import { mapSchema, type FormatStats } from './map-schema.js';
import { readBatches } from './read-batches.js';
import type { Turn } from './table-turns.js';
import type { CurrentsSource } from './source/currents-source.js';
import { RestartStaged, writeDirect, writeStaged } from './write-events.js';

export interface LoadFileContext {
  /** The pool, for the event-table DDL, which runs in its own short transaction. */
  db: Database;
  source: CurrentsSource;
  stateSchema: string;
  targetSchema: string;
  runId: number;
  log: Logger;
}

/** What became of a claimed file; the manifest row already says the same. */
export type FileLoad =
  | { outcome: 'loaded'; records: number; inserted: number; nulReplaced: number }
  | { outcome: 'failed'; error: string; recordIndex: number | null }
  | { outcome: 'pending'; error: string };

/** What the caller may add to a file's load. */
export interface LoadHints {
  /** The file's body, opened before the claim (load-pending.ts); undefined when that failed, and the file is opened again. */
  body?: Promise<Readable | undefined>;
  /** Called once the file has been read to its end (its last rows may still be being written). */
  onRead?: () => void;
}

/**
 * Load `file` on `tx`, the connection whose open transaction holds the file's claim. `turn`
 * is the file's place among the files this process loads (table-turns.ts); the caller gives
 * it back once the transaction has ended. Without it the file is on its own.
 */
export async function loadFile(ctx: LoadFileContext, tx: Connection, file: ClaimedFile, turn: Turn, hints: LoadHints = {}): Promise<FileLoad> {
  await tx.query('SAVEPOINT file');
  const first = await loadOnce(ctx, tx, file, turn, false, hints);
  // Rare: another process wrote one of these ids between a lookup and the COPY, or a long id
  // needs the table altered first. Nothing of the direct write is left; the file is read again
  // and loaded the way that always works.
  // Staged, an attempt never asks to be staged again.
  return first === RESTAGE ? ((await loadOnce(ctx, tx, file, turn, true)) as FileLoad) : first;
}

/** loadOnce's answer when the direct write could not get past the file (see mustStage). */
const RESTAGE = Symbol('restage');

/** One attempt at the file, directly or (`staged`) through the staging table; rolled back to the file's savepoint when it fails. */
async function loadOnce(ctx: LoadFileContext, tx: Connection, file: ClaimedFile, turn: Turn, staged: boolean, hints: LoadHints = {}): Promise<FileLoad | typeof RESTAGE> {
  const source = ctx.source.name;
  let body: Readable | undefined;
  try {
    const table = await resolveEventTable(ctx.db, ctx.stateSchema, ctx.targetSchema, file.eventType);
    const early = await hints.body;
    // A body opened early whose connection broke before anything read it is opened again.
    if (early?.errored) early.destroy();
    body = early && !early.errored ? early : await ctx.source.open(file.key);
    const avro = await openAvroFile(body);
    const fields = mapSchema(avro.type);
    const plan = await ensureEventTable(ctx.db, tx, ctx.targetSchema, table, fields);
    const stats: FormatStats = { nul: 0 };
    const target = { tx, schema: ctx.targetSchema, table, plan };
    const batches = thenCall(readBatches(avro, plan, file.key, stats), hints.onRead);
    const write = staged || !hasIdColumn(plan) ? writeStaged : writeDirect;
    const { records, inserted, staged: viaStage, redone } = await write(target, batches, turn);
    // The file's savepoint is left to the COMMIT that follows (one round trip less a file).
    await markFileLoaded(tx, ctx.stateSchema, source, file, { targetTable: `${ctx.targetSchema}.${table}`, records, inserted, runId: ctx.runId, nulReplaced: stats.nul });
    ctx.log.info('loaded file', { key: file.key, rows: inserted, duplicates: records - inserted, ...(viaStage ? { staged: viaStage } : {}), ...(redone ? { batchesRedone: redone } : {}), ...(stats.nul ? { nulReplaced: stats.nul } : {}) });
    return { outcome: 'loaded', records, inserted, nulReplaced: stats.nul };
  } catch (error) {
    if (error instanceof DatabaseError && error.code === '40P01') {
      // This file and another session each wait for a row the other wrote. The other session
      // waits for this whole transaction, not the savepoint: only ending it lets the other go
      // on, so the caller rolls it back and claims the file again.
      throw new DeadlockedFile(file.key, { cause: error });
    }
    await tx.query('ROLLBACK TO SAVEPOINT file');
    const message = messageOf(error);
    if (!staged && mustStage(error)) {
      ctx.log.info('loading the file again through the staging table', { key: file.key, reason: message.split('\n')[0] });
      return RESTAGE;
    }
    if (error instanceof TransientSourceError || isStreamError(error)) {
      // The file may be fine; the network was not. Leave it pending for the next run.
      await markFileAttempted(tx, ctx.stateSchema, source, file, message);
      ctx.log.warn('could not read file; it stays pending', { key: file.key, error: message });
      return { outcome: 'pending', error: message };
    }
    if (isEnvironmentError(error)) {
      // Not the file's fault (a lost connection, a full disk): the run stops, and says where.
      if (error instanceof DatabaseError) throw new DatabaseError(`loading ${file.key}: ${error.message}`, error.code, error.position, { cause: error });
      throw error;
    }
    // Anything else is this file's doing (its bytes, schema, names or values): it fails alone,
    // once, with the reason, and never stops the run or the next runs.
    const recordIndex = error instanceof AvroDecodeError ? (error.recordIndex ?? null) : null;
    const reason = error instanceof MissingObjectError ? `gone: ${message}` : message.split('\n')[0]!.slice(0, 1000);
    await markFileFailed(tx, ctx.stateSchema, source, file, { error: reason, recordIndex, runId: ctx.runId });
    ctx.log.error('file failed', { key: file.key, error: reason, record: recordIndex ?? undefined });
    return { outcome: 'failed', error: reason, recordIndex };
  } finally {
    // Read to the end, or abandoned by a failed write: either way the object is done with.
    body?.destroy();
  }
}

/** `batches`, then `done` once they are all read. */
async function* thenCall<T>(batches: AsyncGenerator<T>, done?: () => void): AsyncGenerator<T> {
  yield* batches;
  done?.();
}

/** What the direct write cannot get past, and loading the file through the staging table can. */
function mustStage(error: unknown): boolean {
  return error instanceof RestartStaged || (error instanceof DatabaseError && error.code === '23505');
}

/** The file's transaction must be rolled back, and the file claimed again (a deadlock). */
export class DeadlockedFile extends Error {
  constructor(
    readonly key: string,
    options: { cause: unknown },
  ) {
    super(`loading ${key}: deadlock detected`, options);
  }
}

/**
 * A failure of the environment, not of the file: the connection (08), resources such as disk
 * or memory (53), an operator's cancel or shutdown (57), the server itself (58, XX), and
 * waiting on other sessions (a lock_timeout, 55P03; a serialization failure, 40001): the file
 * stays pending for the next run rather than being marked failed. Every
 * other error while loading a file is the file's: before, only a short list of SQLSTATEs was,
 * and one odd file (a 9 kB id, 1,600 fields, a 64-byte table name) aborted every run.
 */
function isEnvironmentError(error: unknown): boolean {
  if (error instanceof DatabaseError) return /^(08|53|57|58|XX)|^55P03$|^40001$/.test(error.code ?? '') || error.code === undefined;
  return error instanceof AppError && !(error instanceof AvroDecodeError || error instanceof SchemaMismatchError || error instanceof MissingObjectError);
}

/** The body stream broke while it was read: a network failure, not a bad file. */
function isStreamError(error: unknown): boolean {
  const code = (error as { code?: string })?.code ?? '';
  return ['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED'].includes(code);
}
