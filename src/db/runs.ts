/** The run history and per-member failures, shared by every job. */
import { escapeIdentifier, type Queryable } from './pool.js';

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
