/**
 * `currents ingest`: discover Currents files, then load each exactly once. A worker claims a
 * pending file with FOR UPDATE SKIP LOCKED and keeps that row lock for the whole load; the
 * file's rows and its manifest row's move to 'loaded' commit together. A crash at any moment
 * leaves each file fully loaded or not at all, and any number of processes split the work.
 * This module only orchestrates: the manifest SQL is in manifest.ts, the workers in
 * load-pending.ts, one file's load in load-file.ts, the event-table DDL in event-tables.ts.
 */
import { ConfigError, exitCodeFor, messageOf, outcomeOfError, type ExitCode, type Outcome } from '../errors.js';
import type { Database } from '../db/pool.js';
import { finishRun, startRun } from '../run/run-store.js';
import { sweepAbandonedRuns, withRunLock } from '../run/run-lock.js';
import type { Logger } from '../log.js';
import { ensureEventSchema } from './event-tables.js';
import type { FileLoad } from './load-file.js';
import { loadPending } from './load-pending.js';
import { countFilesByStatus, countUnclaimedPending, listingStartedAt, markGoneFiles, registerFiles, resetFailedFiles, type ClaimedFile, type DiscoveredFile, type FileScope } from './manifest.js';
import { parseKey } from './parse-key.js';
import type { CurrentsSource } from './source/currents-source.js';

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

/** Per event type: files loaded, rows inserted, duplicate events skipped, files failed. */
export interface TypeSummary {
  files: number;
  rows: number;
  duplicates: number;
  failed: number;
}

export interface IngestSummary {
  runId: number;
  source: string;
  /** succeeded, partial (a file failed, was gone or was left pending, or a key was refused) or interrupted (stopped by a signal). */
  status: Outcome;
  exitCode: ExitCode;
  discovered: { listed: number; currents: number; ignored: number; refused: number; new: number };
  /** Keys that look like Currents files but cannot be read as one (an impossible date=), with the reason; the first 20. */
  refusedKeys: Array<{ key: string; reason: string }>;
  /** NUL characters replaced by U+FFFD in the files loaded (PostgreSQL cannot store them). */
  nulReplaced: number;
  /** `gone`: pending files whose object the listing no longer contained, now marked failed (not in `failed`). */
  files: { loaded: number; alreadyLoaded: number; failed: number; gone: number; leftPending: number };
  /** The first 20 gone files. */
  goneKeys: string[];
  rows: number;
  duplicates: number;
  perType: Record<string, TypeSummary>;
  failures: Array<{ key: string; error: string; recordIndex: number | null }>;
  durationMs: number;
}

/** Files registered per statement while listing. */
const REGISTER_CHUNK = 1000;

export async function ingest(db: Database, log: Logger, options: IngestOptions): Promise<IngestSummary> {
  const started = Date.now();
  await sweepAbandonedRuns(db, options.stateSchema, 'ingest');
  const runId = await startRun(db, options.stateSchema, { job: 'ingest', args: { source: options.source.name, ...options.args } });
  return withRunLock(db, options.stateSchema, runId, () => ingestRun(db, log.child({ run: runId }), options, runId, started));
}

async function ingestRun(db: Database, log: Logger, options: IngestOptions, runId: number, started: number): Promise<IngestSummary> {
  const summary: IngestSummary = {
    runId,
    source: options.source.name,
    status: 'succeeded',
    exitCode: exitCodeFor('succeeded'),
    discovered: { listed: 0, currents: 0, ignored: 0, refused: 0, new: 0 },
    refusedKeys: [],
    nulReplaced: 0,
    files: { loaded: 0, alreadyLoaded: 0, failed: 0, gone: 0, leftPending: 0 },
    goneKeys: [],
    rows: 0,
    duplicates: 0,
    perType: {},
    failures: [],
    durationMs: 0,
  };
  const scope: FileScope = {
    source: options.source.name,
    prefix: options.source.prefix,
    eventTypes: options.eventTypes && options.eventTypes.length > 0 ? options.eventTypes : null,
    since: options.since ?? null,
    until: options.until ?? null,
  };
  try {
    await ensureEventSchema(db, options.targetSchema);
    const listedSince = await listingStartedAt(db);
    // Throws if the listing breaks off: only a complete listing may say a file is gone.
    await discover(db, log, options, scope, summary);
    log.info('discovered', { ...summary.discovered });
    if (summary.discovered.currents === 0 && summary.discovered.refused === 0) {
      // An empty or mistyped prefix: say so, rather than "already loaded" and exit 0.
      throw new ConfigError([
        `no Currents files under ${options.source.location}${summary.discovered.listed > 0 ? ` (${summary.discovered.listed} other keys)` : ''}: check the bucket and prefix in --source`,
      ]);
    }
    if (options.retryFailed) log.info('retrying failed files', { files: await resetFailedFiles(db, options.stateSchema, scope) });
    // After --retry-failed, so a retried file that is gone is not claimed only to fail on NoSuchKey.
    const gone = await markGoneFiles(db, options.stateSchema, scope, listedSince, runId);
    summary.files.gone = gone.length;
    summary.goneKeys = gone.slice(0, 20).map((g) => g.key);
    if (gone.length > 0) log.warn('pending files gone from the bucket, marked failed', { files: gone.length, first: gone[0]!.key });
    const counts = await countFilesByStatus(db, options.stateSchema, scope);
    summary.files.alreadyLoaded = counts.loaded;

    let done = 0;
    const record = (file: ClaimedFile, load: FileLoad) => {
      const perType = (summary.perType[file.eventType] ??= { files: 0, rows: 0, duplicates: 0, failed: 0 });
      if (load.outcome === 'loaded') {
        summary.files.loaded++;
        summary.rows += load.inserted;
        summary.nulReplaced += load.nulReplaced;
        summary.duplicates += load.records - load.inserted;
        perType.files++;
        perType.rows += load.inserted;
        perType.duplicates += load.records - load.inserted;
      } else if (load.outcome === 'failed') {
        summary.files.failed++;
        perType.failed++;
        summary.failures.push({ key: file.key, error: load.error, recordIndex: load.recordIndex });
      }
      options.onProgress?.({ done: ++done, total: counts.pending, rows: summary.rows });
    };
    await loadPending(db, { db, source: options.source, stateSchema: options.stateSchema, targetSchema: options.targetSchema, runId, log }, options, scope, record);

    summary.files.leftPending = await countUnclaimedPending(db, options.stateSchema, scope);
    if (options.stop?.aborted) summary.status = 'interrupted';
    // A refused key or a gone file is data that will not be loaded: someone must notice, as for a failed file.
    else if (summary.files.failed > 0 || summary.files.gone > 0 || summary.files.leftPending > 0 || summary.discovered.refused > 0) summary.status = 'partial';
    summary.exitCode = exitCodeFor(summary.status);
    summary.durationMs = Date.now() - started;
    await finishRun(db, options.stateSchema, runId, { status: summary.status, counts: { ...summary, failures: summary.failures.length } });
    log.info('finished', { loaded: summary.files.loaded, failed: summary.files.failed, rows: summary.rows, duplicates: summary.duplicates });
    return summary;
  } catch (error) {
    summary.durationMs = Date.now() - started;
    await finishRun(db, options.stateSchema, runId, { status: outcomeOfError(error), counts: { ...summary, failures: summary.failures.length }, error: messageOf(error) }).catch(() => {});
    throw error;
  }
}

/**
 * List every key under the prefix and register the Currents files the run wants, counting
 * into `found` as it goes, so a listing that fails half-way still records what it saw.
 */
async function discover(db: Database, log: Logger, options: IngestOptions, scope: FileScope, summary: IngestSummary): Promise<void> {
  const found = summary.discovered;
  const wanted = (eventType: string, hour: Date) =>
    (!scope.eventTypes || scope.eventTypes.includes(eventType)) && (!scope.since || hour >= scope.since) && (!scope.until || hour <= scope.until);
  let batch: DiscoveredFile[] = [];
  const register = async () => {
    found.new += await registerFiles(db, options.stateSchema, scope.source, batch);
    batch = [];
  };
  for await (const object of options.source.list()) {
    found.listed++;
    const parsed = parseKey(object.key);
    if ('skip' in parsed) {
      if (parsed.refused) {
        found.refused++;
        if (summary.refusedKeys.length < 20) summary.refusedKeys.push({ key: object.key, reason: parsed.skip });
        log.warn('refusing key', { key: object.key, reason: parsed.skip });
        continue;
      }
      found.ignored++;
      log.debug('ignoring key', { key: object.key, reason: parsed.skip });
      continue;
    }
    found.currents++;
    if (!wanted(parsed.eventType, parsed.hour)) continue;
    batch.push({ ...object, eventType: parsed.eventType, hour: parsed.hour });
    if (batch.length >= REGISTER_CHUNK) await register();
  }
  await register();
}
