/**
 * The Currents manifest: every statement on `currents_files` (a row per object version, key +
 * ETag, under a source), for ingest, `currents status` and the metrics file, so that the state
 * machine (pending → loaded | failed, failed → pending on --retry-failed) reads in one place. A
 * row moves to 'loaded' only in the transaction that loaded its events, and workers claim rows
 * with FOR UPDATE SKIP LOCKED: each file is loaded once however many processes run.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';

const files = (schema: string) => `${escapeIdentifier(schema)}.currents_files`;

/** A manifest row's state: pending until loaded, or failed for good until --retry-failed. */
export type FileStatus = 'pending' | 'loaded' | 'failed';

/** The files one run works on: its source and the --event-types / --since / --until window. */
export interface FileScope {
  /** `s3://bucket` or `file:///dir`, as the source names itself. */
  source: string;
  /** The key prefix of --source (s3://bucket/<prefix>), '' for a folder: keys are stored whole. */
  prefix: string;
  /** Null or empty: every event type. */
  eventTypes: readonly string[] | null;
  since: Date | null;
  until: Date | null;
}

/** An object a run listed and chose, before it is registered. */
export interface DiscoveredFile {
  key: string;
  etag: string;
  size: number;
  eventType: string;
  /** The date= hour of the key (UTC). */
  hour: Date;
}

/** A row a worker claimed: the object version to load. */
export interface ClaimedFile {
  key: string;
  etag: string;
  eventType: string;
}

/** The scope as a WHERE clause on parameters $1..$5, and its values. */
function scopeWhere(scope: FileScope): { sql: string; values: unknown[] } {
  return {
    sql: `source = $1 AND ($2::text[] IS NULL OR event_type = ANY($2)) AND ($3::timestamptz IS NULL OR hour >= $3) AND ($4::timestamptz IS NULL OR hour <= $4) AND starts_with(key, $5::text)`,
    values: [scope.source, scope.eventTypes && scope.eventTypes.length > 0 ? [...scope.eventTypes] : null, scope.since, scope.until, scope.prefix],
  };
}

/**
 * Register listed files (one statement per batch); returns how many were new. A known file not
 * loaded yet notes that this listing saw it (`listed_at`, for markGoneFiles), unless a loader
 * holds its row: it is there, being loaded. Updating such rows as they conflicted made a listing
 * wait for another process's file load while it held the other rows it had updated, which that
 * process's claims then skipped: its workers stopped and its run ended partial (seen in CI).
 */
export async function registerFiles(db: Queryable, schema: string, source: string, batch: readonly DiscoveredFile[]): Promise<number> {
  if (batch.length === 0) return 0;
  const { rows } = await db.query<{ n: string }>(
    `WITH ins AS (INSERT INTO ${files(schema)} (source, key, etag, size, event_type, hour, listed_at)
       SELECT DISTINCT ON (k, e) $1, k, e, z, t, h, now() FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[]) AS u(k, e, z, t, h)
       ON CONFLICT (source, key, etag) DO NOTHING RETURNING 1),
     seen AS (UPDATE ${files(schema)} AS f SET listed_at = now()
       FROM (SELECT x.ctid AS row FROM ${files(schema)} AS x JOIN unnest($2::text[], $3::text[]) AS u(k, e) ON x.source = $1 AND x.key = u.k AND x.etag = u.e
              WHERE x.status <> 'loaded' FOR NO KEY UPDATE OF x SKIP LOCKED) AS known WHERE f.ctid = known.row)
     SELECT count(*) AS n FROM ins`,
    [source, batch.map((b) => b.key), batch.map((b) => b.etag), batch.map((b) => b.size), batch.map((b) => b.eventType), batch.map((b) => b.hour)],
  );
  return Number(rows[0]!.n);
}

/** The database's clock, read before a listing starts: what `markGoneFiles` compares `listed_at` with. */
export async function listingStartedAt(db: Queryable): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now() AS now');
  return rows[0]!.now;
}

/** The error of a pending file whose object a complete listing no longer contained. */
export const GONE_FROM_BUCKET = 'gone from the bucket before it was loaded (deleted, or expired by a lifecycle rule); not in the listing';

/**
 * After a listing of `scope` that ran to its end (started at `since`): pending files in scope
 * that it did not see, nor any listing started later, are gone from the bucket. They are marked
 * failed with the reason, or they would stay pending, and be waited for, forever. A file
 * another process is loading right now (its row is locked) is left to that load. Returns them.
 */
export async function markGoneFiles(db: Queryable, schema: string, scope: FileScope, since: Date, runId: number): Promise<Array<{ key: string; eventType: string }>> {
  const where = scopeWhere(scope);
  const { rows } = await db.query<{ key: string; event_type: string }>(
    `UPDATE ${files(schema)} AS f SET status = 'failed', error = $7, record_index = NULL, run_id = $8
       FROM (SELECT source, key, etag FROM ${files(schema)}
              WHERE status = 'pending' AND ${where.sql} AND (listed_at IS NULL OR listed_at < $6)
              FOR UPDATE SKIP LOCKED) AS gone
      WHERE (f.source, f.key, f.etag) = (gone.source, gone.key, gone.etag)
      RETURNING f.key, f.event_type`,
    [...where.values, since, GONE_FROM_BUCKET, runId],
  );
  return rows.map((r) => ({ key: r.key, eventType: r.event_type })).sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** --retry-failed: failed files in scope become pending again. Returns how many. */
export async function resetFailedFiles(db: Queryable, schema: string, scope: FileScope): Promise<number> {
  const where = scopeWhere(scope);
  const { rowCount } = await db.query(`UPDATE ${files(schema)} SET status = 'pending' WHERE status = 'failed' AND ${where.sql}`, where.values);
  return rowCount ?? 0;
}

/** Files in scope per status (absent statuses count 0). */
export async function countFilesByStatus(db: Queryable, schema: string, scope: FileScope): Promise<Record<FileStatus, number>> {
  const where = scopeWhere(scope);
  const { rows } = await db.query<{ status: FileStatus; n: string }>(`SELECT status, count(*) AS n FROM ${files(schema)} WHERE ${where.sql} GROUP BY status`, where.values);
  const counts: Record<FileStatus, number> = { pending: 0, loaded: 0, failed: 0 };
  for (const r of rows) counts[r.status] = Number(r.n);
  return counts;
}

/**
 * Inside a transaction: lock a pending file in scope that no other transaction holds and that
 * is not in `skipKeys` or of an event type in `skipTypes`, or undefined when none is left: the
 * oldest of `preferType` if it has one, else the oldest. The row lock is held until the caller
 * commits, so no other worker or process loads the same file meanwhile. Two statements rather
 * than one ordered by the preference, which could not use the index of open files: a backfill
 * of 300,000 pending files took 0.5 s per claim that way.
 */
export async function claimPendingFile(tx: Queryable, schema: string, scope: FileScope, choice: { skipKeys: readonly string[]; skipTypes: readonly string[]; preferType: string | null }): Promise<ClaimedFile | undefined> {
  const claim = (type: string | null) => oldestPending(tx, schema, scope, { ...choice, type }, 'FOR UPDATE SKIP LOCKED');
  return (choice.preferType !== null ? await claim(choice.preferType) : undefined) ?? (await claim(null));
}

/**
 * The file of `eventType` a claim would give next, other than `skipKeys`, so that its body can
 * be opened early. SKIP LOCKED passes over files other transactions have claimed; the brief
 * lock this takes (FOR KEY SHARE) ends with the statement.
 */
export function nextPendingFile(db: Queryable, schema: string, scope: FileScope, eventType: string, skipKeys: readonly string[]): Promise<ClaimedFile | undefined> {
  return oldestPending(db, schema, scope, { skipKeys, skipTypes: [], type: eventType }, 'FOR KEY SHARE SKIP LOCKED');
}

/** The oldest pending file in scope as `filter` narrows it (`type` null: any), locked as `lock` says. */
async function oldestPending(
  db: Queryable,
  schema: string,
  scope: FileScope,
  filter: { skipKeys: readonly string[]; skipTypes: readonly string[]; type: string | null },
  lock: 'FOR UPDATE SKIP LOCKED' | 'FOR KEY SHARE SKIP LOCKED',
): Promise<ClaimedFile | undefined> {
  const where = scopeWhere(scope);
  const { rows } = await db.query<{ key: string; etag: string; event_type: string }>(
    `SELECT key, etag, event_type FROM ${files(schema)}
      WHERE status = 'pending' AND ${where.sql} AND NOT (key = ANY($6::text[])) AND NOT (event_type = ANY($7::text[])) AND ($8::text IS NULL OR event_type = $8)
      ORDER BY hour, key LIMIT 1 ${lock}`,
    [...where.values, [...filter.skipKeys], [...filter.skipTypes], filter.type],
  );
  const row = rows[0];
  return row && { key: row.key, etag: row.etag, eventType: row.event_type };
}

/** In the transaction that inserted the file's events: they and this row commit together. */
export async function markFileLoaded(
  tx: Queryable,
  schema: string,
  source: string,
  file: ClaimedFile,
  load: { targetTable: string; records: number; inserted: number; runId: number; nulReplaced: number },
): Promise<void> {
  await tx.query(
    `UPDATE ${files(schema)} SET status = 'loaded', target_table = $4, records = $5, rows_loaded = $6, duplicates = $7,
            error = NULL, record_index = NULL, attempts = attempts + 1, loaded_at = now(), run_id = $8, nul_replaced = $9
      WHERE source = $1 AND key = $2 AND etag = $3`,
    [source, file.key, file.etag, load.targetTable, load.records, load.inserted, load.records - load.inserted, load.runId, load.nulReplaced],
  );
}

/** The file's own fault (bytes, schema, values, gone): later runs skip it until --retry-failed. */
export async function markFileFailed(
  tx: Queryable,
  schema: string,
  source: string,
  file: ClaimedFile,
  failure: { error: string; recordIndex: number | null; runId: number },
): Promise<void> {
  await tx.query(
    `UPDATE ${files(schema)} SET status = 'failed', error = $4, record_index = $5, attempts = attempts + 1, run_id = $6
      WHERE source = $1 AND key = $2 AND etag = $3`,
    [source, file.key, file.etag, failure.error, failure.recordIndex, failure.runId],
  );
}

/** A read that failed for the network's sake: the file stays pending, the attempt is recorded. */
export async function markFileAttempted(tx: Queryable, schema: string, source: string, file: ClaimedFile, error: string): Promise<void> {
  await tx.query(`UPDATE ${files(schema)} SET attempts = attempts + 1, error = $4 WHERE source = $1 AND key = $2 AND etag = $3`, [source, file.key, file.etag, error]);
}

/**
 * Pending files in scope that no transaction holds: what this run could not load (another
 * process's claims are locked, and skipped, so they do not count).
 */
export async function countUnclaimedPending(db: Queryable, schema: string, scope: FileScope): Promise<number> {
  const where = scopeWhere(scope);
  const { rows } = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM (SELECT 1 FROM ${files(schema)} WHERE status = 'pending' AND ${where.sql} FOR UPDATE SKIP LOCKED) AS open`,
    where.values,
  );
  return Number(rows[0]!.n);
}

/** `currents status`: one row per event type. */
export interface EventTypeRow {
  eventType: string;
  filesLoaded: number;
  rows: number;
  duplicates: number;
  failed: number;
  pending: number;
  /** Of the failed files, those whose object was gone from the bucket before it was loaded. */
  gone: number;
  /** Newest date= hour loaded. */
  newestHour: Date | null;
}

/** Files, rows and duplicates per event type, of one source or of all. */
export async function statusByEventType(db: Queryable, schema: string, source?: string): Promise<EventTypeRow[]> {
  const { rows } = await db.query<{ event_type: string; loaded: string; rows: string; dups: string; failed: string; pending: string; gone: string; newest: Date | null }>(
    `SELECT event_type, count(*) FILTER (WHERE status = 'loaded') AS loaded, coalesce(sum(rows_loaded), 0) AS rows, coalesce(sum(duplicates), 0) AS dups,
            count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE status = 'pending') AS pending,
            count(*) FILTER (WHERE status = 'failed' AND starts_with(error, 'gone')) AS gone, max(hour) FILTER (WHERE status = 'loaded') AS newest
       FROM ${files(schema)} WHERE $1::text IS NULL OR source = $1 GROUP BY event_type ORDER BY event_type`,
    [source ?? null],
  );
  return rows.map((r) => ({
    eventType: r.event_type,
    filesLoaded: Number(r.loaded),
    rows: Number(r.rows),
    duplicates: Number(r.dups),
    failed: Number(r.failed),
    pending: Number(r.pending),
    gone: Number(r.gone),
    newestHour: r.newest,
  }));
}

/** A failed file as `currents status` lists it. */
export interface FailedFileRow {
  key: string;
  eventType: string;
  error: string;
  recordIndex: number | null;
  attempts: number;
}

/** Failed files, oldest hour first, at most `limit`. */
export async function failedFiles(db: Queryable, schema: string, source?: string, limit = 100): Promise<FailedFileRow[]> {
  const { rows } = await db.query<{ key: string; event_type: string; error: string; record_index: string | null; attempts: number }>(
    `SELECT key, event_type, error, record_index, attempts FROM ${files(schema)}
      WHERE status = 'failed' AND ($1::text IS NULL OR source = $1) ORDER BY hour, key LIMIT $2`,
    [source ?? null, limit],
  );
  return rows.map((f) => ({ key: f.key, eventType: f.event_type, error: f.error, recordIndex: f.record_index === null ? null : Number(f.record_index), attempts: f.attempts }));
}

/**
 * The oldest and newest hour loaded, and the hours between them in which no file of any type
 * was loaded: Braze cannot replay data it failed to write, so a gap must be visible.
 */
export async function loadedHours(db: Queryable, schema: string, source?: string): Promise<{ oldest: Date | null; newest: Date | null; missing: Date[] }> {
  const { rows } = await db.query<{ oldest: Date | null; newest: Date | null; missing: Date[] | null }>(
    `WITH loaded AS (SELECT DISTINCT hour FROM ${files(schema)} WHERE status = 'loaded' AND ($1::text IS NULL OR source = $1)),
          bounds AS (SELECT min(hour) AS oldest, max(hour) AS newest FROM loaded)
     SELECT b.oldest, b.newest,
            ARRAY(SELECT h FROM generate_series(b.oldest, b.newest, interval '1 hour') AS h WHERE h NOT IN (SELECT hour FROM loaded) ORDER BY h) AS missing
       FROM bounds b`,
    [source ?? null],
  );
  const g = rows[0]!;
  return { oldest: g.oldest, newest: g.newest, missing: g.missing ?? [] };
}

/** What the metrics file says about Currents, over every source. */
export interface CurrentsMetrics {
  /** Files and rows loaded per event type and status. */
  byTypeAndStatus: Array<{ eventType: string; status: FileStatus; files: number; rows: number }>;
  /** The newest date= hour loaded per event type. */
  newestLoaded: Array<{ eventType: string; newest: Date }>;
}

export async function currentsMetrics(db: Queryable, schema: string): Promise<CurrentsMetrics> {
  const counts = await db.query<{ event_type: string; status: FileStatus; files: string; rows: string }>(
    `SELECT event_type, status, count(*) AS files, coalesce(sum(rows_loaded), 0) AS rows FROM ${files(schema)} GROUP BY 1, 2 ORDER BY 1, 2`,
  );
  const newest = await db.query<{ event_type: string; newest: Date }>(
    `SELECT event_type, max(hour) AS newest FROM ${files(schema)} WHERE status = 'loaded' GROUP BY 1 ORDER BY 1`,
  );
  return {
    byTypeAndStatus: counts.rows.map((r) => ({ eventType: r.event_type, status: r.status, files: Number(r.files), rows: Number(r.rows) })),
    newestLoaded: newest.rows.map((r) => ({ eventType: r.event_type, newest: r.newest })),
  };
}
