/**
 * One Currents file's load, inside the transaction that claimed its manifest row: open the
 * object, decode the Avro, map its writer schema, make sure the event table fits, COPY the
 * records to a staging table, insert the new events, and mark the row loaded — all before the
 * caller commits, so the events and the row commit together and a crash loads nothing twice.
 * A file that is at fault rolls back to a savepoint and is marked failed with the claim still
 * held, so no other process picks it up in between; a file S3 did not deliver stays pending.
 */
import { AppError, AvroDecodeError, DatabaseError, messageOf, MissingObjectError, SchemaMismatchError, TransientSourceError } from '../errors.js';
import { copyFrom, escapeIdentifier, type Connection, type Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import { openAvroFile } from './avro/decode-avro.js';
import { addIdKey, ensureEventTable, resolveEventTable, type TablePlan } from './event-tables.js';
import { markFileAttempted, markFileFailed, markFileLoaded, type ClaimedFile } from './manifest.js';
import { copyEscape, mapSchema, type FormatStats } from './map-schema.js';
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
  | { outcome: 'loaded'; records: number; inserted: number; nulReplaced: number }
  | { outcome: 'failed'; error: string; recordIndex: number | null }
  | { outcome: 'pending'; error: string };

/** Load `file` on `tx`, the connection whose open transaction holds the file's claim. */
export async function loadFile(ctx: LoadFileContext, tx: Connection, file: ClaimedFile): Promise<FileLoad> {
  const source = ctx.source.name;
  await tx.query('SAVEPOINT file');
  try {
    const table = await resolveEventTable(ctx.db, ctx.stateSchema, ctx.targetSchema, file.eventType);
    const body = await ctx.source.open(file.key);
    const avro = await openAvroFile(body);
    const fields = mapSchema(avro.type);
    const plan = await ensureEventTable(ctx.db, tx, ctx.targetSchema, table, fields);
    const stats: FormatStats = { nul: 0 };
    const { records, inserted } = await insertEvents(tx, ctx.targetSchema, table, plan, file.key, avro.records(), stats);
    await markFileLoaded(tx, ctx.stateSchema, source, file, { targetTable: `${ctx.targetSchema}.${table}`, records, inserted, runId: ctx.runId, nulReplaced: stats.nul });
    await tx.query('RELEASE SAVEPOINT file');
    ctx.log.info('loaded file', { key: file.key, rows: inserted, duplicates: records - inserted, ...(stats.nul ? { nulReplaced: stats.nul } : {}) });
    return { outcome: 'loaded', records, inserted, nulReplaced: stats.nul };
  } catch (error) {
    await tx.query('ROLLBACK TO SAVEPOINT file');
    const message = messageOf(error);
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
  }
}

/**
 * A failure of the environment, not of the file: the connection (08), resources such as disk
 * or memory (53), an operator's cancel or shutdown (57), the server itself (58, XX). Every
 * other error while loading a file is the file's: before, only a short list of SQLSTATEs was,
 * and one odd file (a 9 kB id, 1,600 fields, a 64-byte table name) aborted every run.
 */
function isEnvironmentError(error: unknown): boolean {
  if (error instanceof DatabaseError) return /^(08|53|57|58|XX)/.test(error.code ?? '') || error.code === undefined;
  return error instanceof AppError && !(error instanceof AvroDecodeError || error instanceof SchemaMismatchError || error instanceof MissingObjectError);
}

/** The body stream broke while it was read: a network failure, not a bad file. */
function isStreamError(error: unknown): boolean {
  const code = (error as { code?: string })?.code ?? '';
  return ['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED'].includes(code);
}

/** COPY the records into a staging table, then insert the events not yet loaded. */
async function insertEvents(
  tx: Connection,
  schema: string,
  table: string,
  plan: TablePlan,
  key: string,
  records: AsyncGenerator<Record<string, unknown>>,
  stats: FormatStats,
) {
  const { columns, extra } = plan;
  const names = [...columns.map((c) => escapeIdentifier(c.name)), ...(extra.length > 0 ? ['extra_fields'] : [])];
  const defs = [...columns.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}`), ...(extra.length > 0 ? ['extra_fields jsonb'] : [])];
  await tx.query(`CREATE TEMP TABLE bb_stage (${defs.join(', ')}) ON COMMIT DROP`);
  let count = 0;
  let decodeError: unknown;
  async function* lines(): AsyncGenerator<string> {
    let chunk = '';
    try {
      for await (const record of records) {
        let line = '';
        for (let i = 0; i < columns.length; i++) {
          const c = columns[i]!;
          line += (i === 0 ? '' : '\t') + c.format(record[c.name], stats);
        }
        if (extra.length > 0) {
          const bag: Record<string, unknown> = {};
          for (const c of extra) if (record[c.name] !== undefined) bag[c.name] = c.json(record[c.name], stats);
          line += `${columns.length > 0 ? '\t' : ''}${copyEscape(JSON.stringify(bag))}`;
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
  if (!plan.idKey && columns.some((c) => c.name === 'id')) {
    const long = await tx.query(`SELECT 1 FROM bb_stage WHERE octet_length(id) > 1000 LIMIT 1`);
    if (long.rowCount) await addIdKey(tx, schema, table);
  }
  const hasTime = columns.some((c) => c.name === 'time' && c.pgType === 'bigint');
  const insert = (dedupe: boolean) =>
    tx.query(
      `INSERT INTO ${escapeIdentifier(schema)}.${escapeIdentifier(table)} (${names.join(', ')}, occurred_at, source_key)
       SELECT ${names.join(', ')}, ${hasTime ? 'to_timestamp("time")' : 'NULL'}, $1 FROM bb_stage${dedupe ? ' ORDER BY id ON CONFLICT DO NOTHING' : ''}`,
      [key],
    );
  // Most files hold only new events: a plain INSERT is about twice as fast as ON CONFLICT.
  // When an id is already there (Currents delivers at least once) or repeats in the file, or a
  // concurrent load of the same ids deadlocks, redo it with ON CONFLICT DO NOTHING in id
  // order, which skips them and cannot deadlock with another load doing the same. No conflict
  // target: the key is id_key or, on a table from before 0006, id, and another process may
  // have just moved it (addIdKey), which a cached plan would not know.
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
