/**
 * Who may run, and finding runs that died. An audience sync holds a session lock per audience,
 * so two syncs of one audience never send at once. Ingest and forward runs, which have no
 * audience, hold a lock keyed by their own run id while they work: a run still marked running
 * whose lock can be taken has no live owner, so it was killed.
 */
import { lock, lockHolder, lockKey, tryLock, unlock } from '../db/locks.js';
import type { Connection, Database } from '../db/pool.js';
import { markAbandoned, runningRuns } from './run-store.js';

const AUDIENCE = 1;

/** Take the audience's lock on this connection, or say which backend holds it. */
export async function tryAudienceLock(conn: Connection, schema: string, audience: string): Promise<{ ok: true } | { ok: false; holderPid?: number }> {
  const key = lockKey(schema, `audience:${audience}`);
  if (await tryLock(conn, key, AUDIENCE)) return { ok: true };
  return { ok: false, holderPid: await lockHolder(conn, key, AUDIENCE) };
}

export async function releaseAudienceLock(conn: Connection, schema: string, audience: string): Promise<void> {
  await unlock(conn, lockKey(schema, `audience:${audience}`), AUDIENCE);
}

const runLockOf = (schema: string, runId: number) => [lockKey(schema, 'run'), runId % 2 ** 31] as const;

/** Hold the run's own lock while `fn` works, on a dedicated connection. */
export async function withRunLock<T>(db: Database, schema: string, runId: number, fn: () => Promise<T>): Promise<T> {
  return db.withConnection(async (conn) => {
    await lock(conn, ...runLockOf(schema, runId));
    try {
      return await fn();
    } finally {
      await unlock(conn, ...runLockOf(schema, runId));
    }
  });
}

/** Mark the job's runs whose process is gone `abandoned`; returns how many. */
export async function sweepAbandonedRuns(db: Database, schema: string, job: string): Promise<number> {
  let swept = 0;
  for (const id of await runningRuns(db, schema, job)) {
    await db.withConnection(async (conn) => {
      if (!(await tryLock(conn, ...runLockOf(schema, id)))) return; // its process is alive
      try {
        swept += await markAbandoned(conn, schema, id);
      } finally {
        await unlock(conn, ...runLockOf(schema, id));
      }
    });
  }
  return swept;
}
