/**
 * `currents ingest`: discover Currents files, then load each exactly once. A worker claims a
 * pending file with FOR UPDATE SKIP LOCKED and keeps that row lock for the whole load; the
 * file's rows and its manifest row's move to 'loaded' commit together. A crash at any moment
 * leaves each file fully loaded or not at all, and any number of processes split the work.
 */
import { AppError, AvroDecodeError, DatabaseError, ExitCode, messageOf, MissingObjectError, SchemaMismatchError, TransientSourceError } from '../errors.js';
import { copyFrom, escapeIdentifier, type Connection, type Database } from '../db/pool.js';
import { finishRun, startRun } from '../run/run-store.js';
import { sweepAbandonedRuns, withRunLock } from '../run/run-lock.js';
import { lockKey } from '../db/locks.js';
import type { Logger } from '../log.js';
import { openAvroFile } from './avro/decode-avro.js';
import { ensureEventTable } from './event-tables.js';
import { mapSchema, type EventColumn } from './map-schema.js';
import { parseKey, tableName } from './parse-key.js';
import type { CurrentsSource } from './source/open-source.js';

export interface IngestOptions {
  source: CurrentsSource;
  stateSchema: string;
  targetSchema: string;
  eventTypes?: readonly string[];
  since?: Date;
  until?: Date;
  retryFailed?: boolean;
  concurrency: number;
  /** Recorded in the run history. */
  args?: object;
  /** Aborted on SIGTERM/SIGINT: no new file is claimed; files in flight finish. */
  stop?: AbortSignal;
  /** Called after each file, for a progress display. */
  onProgress?: (p: { done: number; total: number; rows: number }) => void;
}

export interface TypeSummary {
  files: number;
  rows: number;
  duplicates: number;
  failed: number;
}

export interface IngestSummary {
  runId: number;
  source: string;
  status: 'succeeded' | 'partial' | 'interrupted';
  exitCode: ExitCode;
  discovered: { listed: number; currents: number; ignored: number; new: number };
  files: { loaded: number; alreadyLoaded: number; failed: number; leftPending: number };
  rows: number;
  duplicates: number;
  perType: Record<string, TypeSummary>;
  failures: Array<{ key: string; error: string; recordIndex: number | null }>;
  durationMs: number;
}

interface FileRow {
  key: string;
  etag: string;
  event_type: string;
}

const REGISTER_CHUNK = 1000;

export async function ingest(db: Database, log: Logger, options: IngestOptions): Promise<IngestSummary> {
  const started = Date.now();
  const source = options.source;
  await sweepAbandonedRuns(db, options.stateSchema, 'ingest');
  const runId = await startRun(db, options.stateSchema, { job: 'ingest', args: { source: source.name, ...options.args } });
  return withRunLock(db, options.stateSchema, runId, () => ingestRun(db, log, options, runId, started));
}

async function ingestRun(db: Database, log: Logger, options: IngestOptions, runId: number, started: number): Promise<IngestSummary> {
  const s = escapeIdentifier(options.stateSchema);
  const source = options.source;
  const runLog = log.child({ run: runId });
  const summary: IngestSummary = {
    runId,
    source: source.name,
    status: 'succeeded',
    exitCode: ExitCode.ok,
    discovered: { listed: 0, currents: 0, ignored: 0, new: 0 },
    files: { loaded: 0, alreadyLoaded: 0, failed: 0, leftPending: 0 },
    rows: 0,
    duplicates: 0,
    perType: {},
    failures: [],
    durationMs: 0,
  };
  const types = options.eventTypes && options.eventTypes.length > 0 ? [...options.eventTypes] : null;
  const wanted = (eventType: string, hour: Date) =>
    (!types || types.includes(eventType)) && (!options.since || hour >= options.since) && (!options.until || hour <= options.until);

  try {
    await ensureSchema(db, options.targetSchema);
    // 1. Discovery: every key under the prefix; register the Currents files we want.
    let batch: Array<{ key: string; etag: string; size: number; eventType: string; hour: Date }> = [];
    const register = async () => {
      if (batch.length === 0) return;
      const { rowCount } = await db.query(
        `INSERT INTO ${s}.currents_files (source, key, etag, size, event_type, hour)
         SELECT $1, k, e, z, t, h FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[]) AS u(k, e, z, t, h)
         ON CONFLICT DO NOTHING`,
        [source.name, batch.map((b) => b.key), batch.map((b) => b.etag), batch.map((b) => b.size), batch.map((b) => b.eventType), batch.map((b) => b.hour)],
      );
      summary.discovered.new += rowCount ?? 0;
      batch = [];
    };
    for await (const object of source.list()) {
      summary.discovered.listed++;
      const parsed = parseKey(object.key);
      if ('skip' in parsed) {
        summary.discovered.ignored++;
        runLog.debug('ignoring key', { key: object.key, reason: parsed.skip });
        continue;
      }
      summary.discovered.currents++;
      if (!wanted(parsed.eventType, parsed.hour)) continue;
      batch.push({ ...object, eventType: parsed.eventType, hour: parsed.hour });
      if (batch.length >= REGISTER_CHUNK) await register();
    }
    await register();
    runLog.info('discovered', { ...summary.discovered });

    const filter = `source = $1 AND ($2::text[] IS NULL OR event_type = ANY($2)) AND ($3::timestamptz IS NULL OR hour >= $3) AND ($4::timestamptz IS NULL OR hour <= $4)`;
    const filterArgs = [source.name, types, options.since ?? null, options.until ?? null];
    if (options.retryFailed) {
      const { rowCount } = await db.query(`UPDATE ${s}.currents_files SET status = 'pending' WHERE status = 'failed' AND ${filter}`, filterArgs);
      runLog.info('retrying failed files', { files: rowCount ?? 0 });
    }
    const counts = await db.query<{ status: string; n: string }>(`SELECT status, count(*) AS n FROM ${s}.currents_files WHERE ${filter} GROUP BY status`, filterArgs);
    const byStatus = Object.fromEntries(counts.rows.map((r) => [r.status, Number(r.n)]));
    summary.files.alreadyLoaded = byStatus.loaded ?? 0;
    const total = byStatus.pending ?? 0;

    // 2. Load: workers claim pending files until none is left for this run. A file left
    // pending by a read error is not claimed again in the same run.
    const unreadable = new Set<string>();
    let done = 0;
    const worker = () =>
      db.withConnection(async (conn) => {
        for (;;) {
          if (options.stop?.aborted) return;
          await conn.query('BEGIN');
          let committed = false;
          try {
            const claim = await conn.query<FileRow>(
              `SELECT key, etag, event_type FROM ${s}.currents_files
                WHERE status = 'pending' AND ${filter} AND NOT (key = ANY($5::text[]))
                ORDER BY hour, key LIMIT 1 FOR UPDATE SKIP LOCKED`,
              [...filterArgs, [...unreadable]],
            );
            const file = claim.rows[0];
            if (!file) {
              await conn.query('COMMIT');
              committed = true;
              return;
            }
            if ((await processFile(db, conn, options, runId, file, summary, runLog)) === 'pending') unreadable.add(file.key);
            await conn.query('COMMIT');
            committed = true;
            done++;
            options.onProgress?.({ done, total, rows: summary.rows });
          } finally {
            if (!committed) await conn.query('ROLLBACK').catch(() => {});
          }
        }
      });
    await Promise.all(Array.from({ length: options.concurrency }, worker));

    // Files still pending that nobody is loading (another process's claims are locked, and
    // skipped): this run could not load them, typically because S3 did not answer.
    const pending = await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM (SELECT 1 FROM ${s}.currents_files WHERE status = 'pending' AND ${filter} FOR UPDATE SKIP LOCKED) AS open`,
      filterArgs,
    );
    summary.files.leftPending = Number(pending.rows[0]!.n);
    if (options.stop?.aborted) {
      summary.status = 'interrupted';
      summary.exitCode = ExitCode.aborted;
    } else if (summary.files.failed > 0 || summary.files.leftPending > 0) {
      summary.status = 'partial';
      summary.exitCode = ExitCode.partial;
    }
    summary.durationMs = Date.now() - started;
    await finishRun(db, options.stateSchema, runId, { status: summary.status, counts: { ...summary, failures: summary.failures.length } });
    runLog.info('finished', { loaded: summary.files.loaded, failed: summary.files.failed, rows: summary.rows, duplicates: summary.duplicates });
    return summary;
  } catch (error) {
    summary.durationMs = Date.now() - started;
    await finishRun(db, options.stateSchema, runId, { status: 'aborted', counts: { ...summary, failures: summary.failures.length }, error: messageOf(error) }).catch(() => {});
    throw error;
  }
}

/**
 * Inside the claiming transaction: decode, COPY into a staging table, insert new events,
 * mark the file loaded. A bad file rolls back to the savepoint and is marked failed with
 * the claim still held, so no other process picks it up in between.
 */
async function processFile(db: Database, conn: Connection, options: IngestOptions, runId: number, file: FileRow, summary: IngestSummary, log: Logger): Promise<'loaded' | 'failed' | 'pending'> {
  const s = escapeIdentifier(options.stateSchema);
  const where = `source = $1 AND key = $2 AND etag = $3`;
  const pk = [options.source.name, file.key, file.etag];
  const table = tableName(file.event_type);
  const perType = (summary.perType[file.event_type] ??= { files: 0, rows: 0, duplicates: 0, failed: 0 });
  await conn.query('SAVEPOINT file');
  try {
    const body = await options.source.open(file.key);
    const avro = await openAvroFile(body);
    const columns = mapSchema(avro.type);
    await ensureEventTable(db, options.targetSchema, table, columns);
    const result = await loadRows(conn, options.targetSchema, table, columns, file.key, avro.records());
    await conn.query(
      `UPDATE ${s}.currents_files SET status = 'loaded', target_table = $4, records = $5, rows_loaded = $6, duplicates = $7,
              error = NULL, record_index = NULL, attempts = attempts + 1, loaded_at = now(), run_id = $8 WHERE ${where}`,
      [...pk, `${options.targetSchema}.${table}`, result.records, result.inserted, result.records - result.inserted, runId],
    );
    await conn.query('RELEASE SAVEPOINT file');
    summary.files.loaded++;
    summary.rows += result.inserted;
    summary.duplicates += result.records - result.inserted;
    perType.files++;
    perType.rows += result.inserted;
    perType.duplicates += result.records - result.inserted;
    log.info('loaded file', { key: file.key, rows: result.inserted, duplicates: result.records - result.inserted });
    return 'loaded';
  } catch (error) {
    await conn.query('ROLLBACK TO SAVEPOINT file');
    const recordIndex = error instanceof AvroDecodeError ? (error.recordIndex ?? null) : null;
    const message = messageOf(error instanceof LoadError ? error.cause : error);
    if (error instanceof TransientSourceError || isStreamError(error)) {
      // The file may be fine; the network was not. Leave it pending for the next run.
      await conn.query(`UPDATE ${s}.currents_files SET attempts = attempts + 1, error = $4 WHERE ${where}`, [...pk, message]);
      log.warn('could not read file; it stays pending', { key: file.key, error: message });
      return 'pending';
    }
    if (!isFileError(error)) throw error;
    await conn.query(`UPDATE ${s}.currents_files SET status = 'failed', error = $4, record_index = $5, attempts = attempts + 1, run_id = $6 WHERE ${where}`, [
      ...pk,
      message,
      recordIndex,
      runId,
    ]);
    summary.files.failed++;
    perType.failed++;
    summary.failures.push({ key: file.key, error: message, recordIndex });
    log.error('file failed', { key: file.key, error: message, record: recordIndex ?? undefined });
    return 'failed';
  }
}

/** The target schema, created once behind a lock: concurrent CREATE SCHEMA IF NOT EXISTS can collide. */
async function ensureSchema(db: Database, schema: string): Promise<void> {
  await db.withTransaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1, 2)', [lockKey(schema, 'currents-schema')]);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`);
  });
}

/** A failure that is the file's fault (its bytes, schema or values), not the environment's. */
function isFileError(error: unknown): boolean {
  if (error instanceof AvroDecodeError || error instanceof SchemaMismatchError || error instanceof MissingObjectError) return true;
  const db = error instanceof LoadError ? error.cause : error;
  // Data exceptions and integrity violations: values PostgreSQL will not take.
  return db instanceof DatabaseError && (/^22/.test(db.code ?? '') || db.code === '23502');
}

function isStreamError(error: unknown): boolean {
  const code = (error as { code?: string })?.code ?? '';
  return ['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED'].includes(code);
}

class LoadError extends AppError {}

async function loadRows(conn: Connection, schema: string, table: string, columns: readonly EventColumn[], key: string, records: AsyncGenerator<Record<string, unknown>>) {
  const names = columns.map((c) => escapeIdentifier(c.name));
  await conn.query(`CREATE TEMP TABLE bb_stage (${columns.map((c) => `${escapeIdentifier(c.name)} ${c.pgType}`).join(', ')}) ON COMMIT DROP`);
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
    await copyFrom(conn, `COPY bb_stage (${names.join(', ')}) FROM STDIN`, lines());
  } catch (error) {
    // The COPY fails because our source threw: report the source's error, not the COPY's.
    if (decodeError) throw decodeError;
    throw new LoadError(`loading ${key} failed`, { cause: error });
  }
  const hasTime = columns.some((c) => c.name === 'time' && c.pgType === 'bigint');
  const insert = (dedupe: boolean) =>
    conn.query(
      `INSERT INTO ${escapeIdentifier(schema)}.${escapeIdentifier(table)} (${names.join(', ')}, occurred_at, source_key)
       SELECT ${names.join(', ')}, ${hasTime ? 'to_timestamp("time")' : 'NULL'}, $1 FROM bb_stage${dedupe ? ' ORDER BY id ON CONFLICT (id) DO NOTHING' : ''}`,
      [key],
    );
  // Most files hold only new events: a plain INSERT is about twice as fast as ON CONFLICT.
  // When an id is already there (Currents delivers at least once) or repeats in the file, or a
  // concurrent load of the same ids deadlocks, redo it with ON CONFLICT DO NOTHING in id
  // order, which skips them and cannot deadlock with another load doing the same.
  await conn.query('SAVEPOINT insert_events');
  let inserted;
  for (let attempt = 0; ; attempt++) {
    try {
      inserted = await insert(attempt > 0);
      break;
    } catch (error) {
      if (!(error instanceof DatabaseError && (error.code === '23505' || error.code === '40P01')) || attempt >= 3) throw error;
      await conn.query('ROLLBACK TO SAVEPOINT insert_events');
    }
  }
  await conn.query('DROP TABLE bb_stage');
  return { records: count, inserted: inserted.rowCount ?? 0 };
}

