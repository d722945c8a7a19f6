/** The run history and per-member failures, shared by every job. */
import { lockKey } from '../db/migrate.js';
import { escapeIdentifier, type Database, type Queryable } from '../db/pool.js';

export type RunStatus = 'running' | 'succeeded' | 'partial' | 'failed' | 'aborted' | 'interrupted' | 'abandoned';

export async function startRun(db: Queryable, schema: string, run: { job: string; audience?: string; args: object }): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO ${escapeIdentifier(schema)}.runs (job, audience, status, args) VALUES ($1, $2, 'running', $3) RETURNING id`,
    [run.job, run.audience ?? null, JSON.stringify(run.args)],
  );
  return Number(rows[0]!.id);
}

export async function finishRun(db: Queryable, schema: string, id: number, end: { status: RunStatus; counts: object; error?: string }): Promise<void> {
  await db.query(`UPDATE ${escapeIdentifier(schema)}.runs SET status = $2, counts = $3, error = $4, finished_at = now() WHERE id = $1`, [
    id,
    end.status,
    JSON.stringify(end.counts),
    end.error ?? null,
  ]);
}

/**
 * Runs still marked running whose lock we now hold died without finishing (kill -9, lost
 * machine): say so rather than leave them running forever.
 */
export async function abandonStaleRuns(db: Queryable, schema: string, job: string, audience: string): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE ${escapeIdentifier(schema)}.runs SET status = 'abandoned', finished_at = now(), error = 'the process stopped without finishing (killed or crashed)'
      WHERE job = $1 AND audience = $2 AND status = 'running'`,
    [job, audience],
  );
  return rowCount ?? 0;
}

export interface MemberFailure {
  memberKey: string | null;
  reason: string;
}

export async function recordFailures(db: Queryable, schema: string, runId: number, audience: string, failures: readonly MemberFailure[]): Promise<void> {
  if (failures.length === 0) return;
  await db.query(
    `INSERT INTO ${escapeIdentifier(schema)}.member_failures (run_id, audience, member_key, reason)
     SELECT $1, $2, k, r FROM unnest($3::text[], $4::text[]) AS u(k, r)`,
    [runId, audience, failures.map((f) => f.memberKey), failures.map((f) => f.reason)],
  );
}

/**
 * Runs without an audience lock (ingest, forward) hold a session advisory lock keyed by their
 * id while they work. A run still marked running whose lock can be taken has no live owner:
 * it was killed, so say so. (Sync runs are swept under their audience lock instead.)
 */
export async function withRunLock<T>(db: Database, schema: string, runId: number, fn: () => Promise<T>): Promise<T> {
  return db.withConnection(async (conn) => {
    await conn.query('SELECT pg_advisory_lock($1, $2)', [lockKey(schema, 'run'), runId % 2 ** 31]);
    try {
      return await fn();
    } finally {
      await conn.query('SELECT pg_advisory_unlock($1, $2)', [lockKey(schema, 'run'), runId % 2 ** 31]).catch(() => {});
    }
  });
}

export async function sweepAbandonedRuns(db: Database, schema: string, job: string): Promise<number> {
  const { rows } = await db.query<{ id: string }>(`SELECT id FROM ${escapeIdentifier(schema)}.runs WHERE job = $1 AND status = 'running'`, [job]);
  let swept = 0;
  for (const { id } of rows) {
    await db.withConnection(async (conn) => {
      const key = [lockKey(schema, 'run'), Number(id) % 2 ** 31];
      const { rows: got } = await conn.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', key);
      if (!got[0]!.ok) return; // its process is alive
      try {
        const { rowCount } = await conn.query(
          `UPDATE ${escapeIdentifier(schema)}.runs SET status = 'abandoned', finished_at = now(), error = 'the process stopped without finishing (killed or crashed)' WHERE id = $1 AND status = 'running'`,
          [id],
        );
        swept += rowCount ?? 0;
      } finally {
        await conn.query('SELECT pg_advisory_unlock($1, $2)', key);
      }
    });
  }
  return swept;
}
