/**
 * One Currents file's load, inside the transaction that claimed its manifest row: open the
 * object, decode the Avro, map its writer schema, make sure the event table fits, COPY the
 * records to a staging table, insert the new events, and mark the row loaded — all before the
 * caller commits, so the events and the row commit together and a crash loads nothing twice.
 * A file that is at fault rolls back to a savepoint and is marked failed with the claim still
 * held, so no other process picks it up in between; a file S3 did not deliver stays pending.
 */
import { AvroDecodeError, DatabaseError, messageOf, MissingObjectError, SchemaMismatchError, TransientSourceError } from '../errors.js';
import { copyFrom, escapeIdentifier, type Connection, type Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import { openAvroFile } from './avro/decode-avro.js';
import { ensureEventTable } from './event-tables.js';
import { markFileAttempted, markFileFailed, markFileLoaded, type ClaimedFile } from './manifest.js';
import { mapSchema, type EventColumn } from './map-schema.js';
import { tableName } from './parse-key.js';
import type { CurrentsSource } from './source/currents-source.js';

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
  | { outcome: 'loaded'; records: number; inserted: number }
  | { outcome: 'failed'; error: string; recordIndex: number | null }
  | { outcome: 'pending'; error: string };

/** Load `file` on `tx`, the connection whose open transaction holds the file's claim. */
export async function loadFile(ctx: LoadFileContext, tx: Connection, file: ClaimedFile): Promise<FileLoad> {
  const table = tableName(file.eventType);
  const source = ctx.source.name;
  await tx.query('SAVEPOINT file');
  try {
    const body = await ctx.source.open(file.key);
    const avro = await openAvroFile(body);
    const columns = mapSchema(avro.type);
    await ensureEventTable(ctx.db, ctx.targetSchema, table, columns);
    const { records, inserted } = await insertEvents(tx, ctx.targetSchema, table, columns, file.key, avro.records());
    await markFileLoaded(tx, ctx.stateSchema, source, file, { targetTable: `${ctx.targetSchema}.${table}`, records, inserted, runId: ctx.runId });
    await tx.query('RELEASE SAVEPOINT file');
    ctx.log.info('loaded file', { key: file.key, rows: inserted, duplicates: records - inserted });
    return { outcome: 'loaded', records, inserted };
  } catch (error) {
    await tx.query('ROLLBACK TO SAVEPOINT file');
    const message = messageOf(error);
    if (error instanceof TransientSourceError || isStreamError(error)) {
      // The file may be fine; the network was not. Leave it pending for the next run.
      await markFileAttempted(tx, ctx.stateSchema, source, file, message);
      ctx.log.warn('could not read file; it stays pending', { key: file.key, error: message });
      return { outcome: 'pending', error: message };
    }
    if (!isFileError(error)) {
      // Not the file's fault (a lost connection, a full disk): the run stops, and says where.
      if (error instanceof DatabaseError) throw new DatabaseError(`loading ${file.key}: ${error.message}`, error.code, error.position, { cause: error });
      throw error;
    }
    const recordIndex = error instanceof AvroDecodeError ? (error.recordIndex ?? null) : null;
    await markFileFailed(tx, ctx.stateSchema, source, file, { error: message, recordIndex, runId: ctx.runId });
    ctx.log.error('file failed', { key: file.key, error: message, record: recordIndex ?? undefined });
    return { outcome: 'failed', error: message, recordIndex };
  }
}

/** A failure that is the file's fault (its bytes, schema or values), not the environment's. */
function isFileError(error: unknown): boolean {
  if (error instanceof AvroDecodeError || error instanceof SchemaMismatchError || error instanceof MissingObjectError) return true;
  // Data exceptions and not-null violations: values PostgreSQL will not take.
  return error instanceof DatabaseError && (/^22/.test(error.code ?? '') || error.code === '23502');
}

/** The body stream broke while it was read: a network failure, not a bad file. */
function isStreamError(error: unknown): boolean {
  const code = (error as { code?: string })?.code ?? '';
  return ['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED'].includes(code);
}

/** COPY the records into a staging table, then insert the events not yet loaded. */
async function insertEvents(tx: Connection, schema: string, table: string, columns: readonly EventColumn[], key: string, records: AsyncGenerator<Record<string, unknown>>) {
  const names = columns.map((c) => escapeIdentifier(c.name));
  await tx.query(`CREATE TEMP TABLE bb_stage (${columns.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}`).join(', ')}) ON COMMIT DROP`);
  let count = 0;
  let decodeError: unknown;
  async function* lines(): AsyncGenerator<string> {
    let chunk = '';
    try {
      for await (const record of records) {
        let line = '';
        for (let i = 0; i < columns.length; i++) {
          const c = columns[i]!;
          line += (i === 0 ? '' : '\t') + c.format(record[c.name]);
        }
        chunk += `${line}\n`;
        count++;
        if (chunk.length >= 65536) {
          yield chunk;
          chunk = '';
        }
      }
    } catch (error) {
      decodeError = error;
      throw error;
    }
    if (chunk) yield chunk;
  }
  try {
    await copyFrom(tx, `COPY bb_stage (${names.join(', ')}) FROM STDIN`, lines());
  } catch (error) {
    // The COPY fails because our source threw: report the source's error, not the COPY's.
    throw decodeError ?? error;
  }
  const hasTime = columns.some((c) => c.name === 'time' && c.pgType === 'bigint');
  const insert = (dedupe: boolean) =>
    tx.query(
      `INSERT INTO ${escapeIdentifier(schema)}.${escapeIdentifier(table)} (${names.join(', ')}, occurred_at, source_key)
       SELECT ${names.join(', ')}, ${hasTime ? 'to_timestamp("time")' : 'NULL'}, $1 FROM bb_stage${dedupe ? ' ORDER BY id ON CONFLICT (id) DO NOTHING' : ''}`,
      [key],
    );
  // Most files hold only new events: a plain INSERT is about twice as fast as ON CONFLICT.
  // When an id is already there (Currents delivers at least once) or repeats in the file, or a
  // concurrent load of the same ids deadlocks, redo it with ON CONFLICT DO NOTHING in id
  // order, which skips them and cannot deadlock with another load doing the same.
  await tx.query('SAVEPOINT insert_events');
  let inserted;
  for (let attempt = 0; ; attempt++) {
    try {
      inserted = await insert(attempt > 0);
      break;
    } catch (error) {
      if (!(error instanceof DatabaseError && (error.code === '23505' || error.code === '40P01')) || attempt >= 3) throw error;
      await tx.query('ROLLBACK TO SAVEPOINT insert_events');
    }
  }
  await tx.query('DROP TABLE bb_stage');
  return { records: count, inserted: inserted.rowCount ?? 0 };
}
