/**
 * The workers of one ingest run: each claims a pending file in a transaction of its own, loads
 * it (load-file.ts) and commits, until no file is left for the run. Orchestrated by ingest.ts.
 */
import type { Readable } from 'node:stream';
import { inTransaction, type Connection, type Database } from '../db/pool.js';
import { sleepUnless } from '../http/clock.js';
import type { IngestOptions } from './ingest.js';
import { DeadlockedFile, loadFile, type FileLoad, type LoadFileContext } from './load-file.js';
import { claimPendingFile, nextPendingFile, type ClaimedFile, type FileScope } from './manifest.js';
import { dropSpareBatches } from './row-batch.js';
import { TableTurns } from './table-turns.js';

/** Deadlocks a file may meet in one run before it is left pending for the next. */
const MAX_DEADLOCKS = 3;

/**
 * `concurrency` workers claim pending files, one transaction per file, until none is left for
 * this run or the stop signal fires. A file a read error left pending is not claimed again in
 * the same run, or a broken network would keep a worker retrying it forever; nor is one that
 * deadlocked with other sessions three times.
 *
 * Each worker keeps one connection, and an event type that one worker is loading is not
 * claimed by another: a table's files are written one after the other by one backend, which
 * opens the next file's body while it writes the last rows of the one before. Files of one
 * table could not be written at once anyway (table-turns.ts), and the same files spread over
 * four backends cost PostgreSQL about a fifth more CPU (1M events: 5.0–6.3 against 4.3–5.5
 * CPU-s in four of five alternating pairs, every other thing equal).
 */
export async function loadPending(
  db: Database,
  ctx: LoadFileContext,
  options: Pick<IngestOptions, 'source' | 'stateSchema' | 'concurrency' | 'stop'>,
  scope: FileScope,
  onFile: (file: ClaimedFile, load: FileLoad) => void,
): Promise<void> {
  const unreadable = new Set<string>();
  const deadlocks = new Map<string, number>();
  const turns = new TableTurns();
  /** The event types workers of this process are loading. */
  const busy = new Set<string>();
  /** Claims are made one at a time, so that two workers never take the same event type. */
  let claims: Promise<unknown> = Promise.resolve();
  /** A claim found nothing twice: later ones that find nothing do not look again. */
  let drained = false;
  /** A file for a worker loading `mine` (null: none yet), which then loads the file's type. */
  const claim = (tx: Connection, mine: string | null) => {
    const next = claims.then(async () => {
      // A stop that came while this claim waited for its turn starts no new file.
      if (options.stop?.aborted) return undefined;
      const pick = () =>
        claimPendingFile(tx, options.stateSchema, scope, {
          skipKeys: [...unreadable],
          skipTypes: [...busy].filter((type) => type !== mine),
          preferType: mine,
        });
      let file = await pick();
      // Another process looking at its next file (nextPendingFile) locks that row for a moment,
      // and a claim skips locked rows: finding nothing, look once more shortly after, or this
      // worker would stop, and the run report a file left pending, that nobody had claimed.
      // Once per run: when a second look finds nothing too, the files are loaded or held.
      if (!file && !drained) {
        await sleepUnless(RECLAIM_MS, options.stop ?? new AbortController().signal);
        if (!options.stop?.aborted) file = await pick();
        drained = !file;
      }
      if (mine !== null && file?.eventType !== mine) busy.delete(mine);
      if (file) busy.add(file.eventType);
      return file;
    });
    claims = next.catch(() => {});
    return next;
  };

  const worker = () =>
    db.withConnection(async (conn) => {
      let early: Early | undefined;
      /** The event type this worker loads, once it has claimed a file. */
      let mine: string | null = null;
      try {
        while (!options.stop?.aborted) {
          // Given back once the transaction has ended: until then the file's rows would block the same ids.
          const turn = turns.hold();
          const opened = early;
          early = undefined;
          // False once this file's load has ended: a read-ahead step that finishes later opens nothing.
          let loading = true;
          let claimed;
          try {
            const expected = await opened?.file;
            claimed = await inTransaction(conn, async () => {
              const file = await claim(conn, mine);
              mine = file?.eventType ?? null;
              if (!file) return undefined;
              const ours = expected !== undefined && expected.key === file.key && expected.etag === file.etag;
              // Another process took that file: its body is closed before this one is read.
              if (!ours) drop(opened);
              const onRead = () => {
                if (loading) early = openEarly(ctx, options, scope, file, unreadable);
              };
              const load = await loadFile(ctx, conn, file, turn, { body: ours ? opened!.body : undefined, onRead });
              // Before COMMIT frees the row: once free, another worker's claim must already skip it.
              if (load.outcome === 'pending') unreadable.add(file.key);
              return { file, load };
            }, ASYNC_COMMIT);
          } catch (error) {
            if (!(error instanceof DeadlockedFile)) throw error;
            // Rolled back, so the other session went on: claim the file again, a few times at most,
            // then leave it pending for the next run rather than fail a file that is not at fault.
            const times = (deadlocks.get(error.key) ?? 0) + 1;
            deadlocks.set(error.key, times);
            if (times >= MAX_DEADLOCKS) unreadable.add(error.key);
            ctx.log.warn('file deadlocked with another session; rolled back', { key: error.key, times, next: times >= MAX_DEADLOCKS ? 'next run' : 'again now' });
            continue;
          } finally {
            loading = false;
            turn.release();
            // Read already, or not used.
            drop(opened);
          }
          if (!claimed) return;
          // Counted once committed: the summary reports only what the manifest now says.
          onFile(claimed.file, claimed.load);
        }
      } finally {
        drop(early);
        if (mine !== null) busy.delete(mine);
      }
    });
  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker));
  } finally {
    dropSpareBatches();
  }
}

/** How long a claim that found nothing waits before it looks once more (see claim). */
const RECLAIM_MS = 10;

/**
 * A file's transaction: its COMMIT need not wait for the WAL to reach disk (5-20 ms a file with
 * fsync on). The rows and the file's move to loaded commit together or not at all, so what a
 * crash can undo is the last files' transactions, whole, and those files stay pending for the
 * next run. Only where synchronous_commit is PostgreSQL's default: a server or role set to wait
 * for a standby (remote_apply, remote_write) or to local keeps its choice. SET LOCAL ends with
 * the transaction, so the pool never gets the connection back changed.
 */
const ASYNC_COMMIT = `BEGIN; SELECT set_config('synchronous_commit', 'off', true) WHERE current_setting('synchronous_commit') = 'on'`;

/** The file a worker will likely claim next, and its body, opened before the claim. */
interface Early {
  file: Promise<ClaimedFile | undefined>;
  /** Undefined when there is no such file or it could not be opened: the load opens the file itself, and reports why. */
  body: Promise<Readable | undefined>;
}

/** Close a body opened early, once it has opened (closing one that was read is harmless). */
function drop(early: Early | undefined): void {
  void early?.body.then((body) => body?.destroy());
}

/**
 * Open the body of the next pending file of `after`'s event type, so that its first bytes (a
 * round trip to S3) arrive while `after`'s last rows are written. Only opened: nothing is read
 * until the file is claimed, and if another process claims it first the body is dropped.
 */
function openEarly(ctx: LoadFileContext, options: Pick<IngestOptions, 'source' | 'stateSchema'>, scope: FileScope, after: ClaimedFile, unreadable: ReadonlySet<string>): Early {
  const file = nextPendingFile(ctx.db, options.stateSchema, scope, after.eventType, [after.key, ...unreadable]).catch(() => undefined);
  const body = file
    .then(async (f) => {
      if (!f) return undefined;
      const opened = await options.source.open(f.key);
      // Nothing reads it yet: a connection reset meanwhile must not be an unhandled 'error'
      // event (the process would exit). The stream keeps the error, and reading it reports it.
      opened.on('error', () => {});
      return opened;
    })
    .catch(() => undefined);
  return { file, body };
}
