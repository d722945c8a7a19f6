/**
 * The run history: every statement on the `runs` and `member_failures` tables, for every job
 * (sync, backfill, ingest, forward), the status and failures commands, pruning and metrics.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';
import type { RunStatus } from '../errors.js';

const runs = (schema: string) => `${escapeIdentifier(schema)}.runs`;
const failuresTable = (schema: string) => `${escapeIdentifier(schema)}.member_failures`;
const ABANDONED = 'the process stopped without finishing (killed or crashed)';

export async function startRun(db: Queryable, schema: string, run: { job: string; audience?: string; args: object }): Promise<number> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO ${runs(schema)} (job, audience, status, args) VALUES ($1, $2, 'running', $3) RETURNING id`,
    [run.job, run.audience ?? null, JSON.stringify(run.args)],
  );
  return Number(rows[0]!.id);
}

export async function finishRun(db: Queryable, schema: string, id: number, end: { status: RunStatus; counts: object; error?: string }): Promise<void> {
  await db.query(`UPDATE ${runs(schema)} SET status = $2, counts = $3, error = $4, finished_at = now() WHERE id = $1`, [
    id,
    end.status,
    JSON.stringify(end.counts),
    end.error ?? null,
  ]);
}

/**
 * Runs of this job and audience still marked running, found by a run that now holds their
 * lock: they died without finishing (kill -9, lost machine). Say so rather than leave them
 * running forever.
 */
export async function abandonStaleRuns(db: Queryable, schema: string, job: string, audience: string): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE ${runs(schema)} SET status = 'abandoned', finished_at = now(), error = $3 WHERE job = $1 AND audience = $2 AND status = 'running'`,
    [job, audience, ABANDONED],
  );
  return rowCount ?? 0;
}

/** One run known to have no live owner. */
export async function markAbandoned(db: Queryable, schema: string, id: number): Promise<number> {
  const { rowCount } = await db.query(`UPDATE ${runs(schema)} SET status = 'abandoned', finished_at = now(), error = $2 WHERE id = $1 AND status = 'running'`, [id, ABANDONED]);
  return rowCount ?? 0;
}

/** Ids of the runs of a job still marked running. */
export async function runningRuns(db: Queryable, schema: string, job: string): Promise<number[]> {
  const { rows } = await db.query<{ id: string }>(`SELECT id FROM ${runs(schema)} WHERE job = $1 AND status = 'running'`, [job]);
  return rows.map((r) => Number(r.id));
}

export interface MemberFailure {
  memberKey: string | null;
  reason: string;
}

export async function recordFailures(db: Queryable, schema: string, runId: number, audience: string, failures: readonly MemberFailure[]): Promise<void> {
  if (failures.length === 0) return;
  await db.query(
    `INSERT INTO ${failuresTable(schema)} (run_id, audience, member_key, reason)
     SELECT $1, $2, k, r FROM unnest($3::text[], $4::text[]) AS u(k, r)`,
    [runId, audience, failures.map((f) => f.memberKey), failures.map((f) => f.reason)],
  );
}

/** Delete finished runs (and, by cascade, their failures) older than `keepDays`. */
/** Delete finished runs older than `keepDays`, adding them to run_totals in the same statement. */
export async function pruneRuns(db: Queryable, schema: string, keepDays: number): Promise<void> {
  await db.query(
    `WITH pruned AS (
       DELETE FROM ${runs(schema)} WHERE status <> 'running' AND started_at < now() - make_interval(days => $1::int)
       RETURNING job, coalesce(audience, '') AS audience, status)
     INSERT INTO ${escapeIdentifier(schema)}.run_totals AS t (job, audience, status, n)
     SELECT job, audience, status, count(*) FROM pruned GROUP BY 1, 2, 3
     ON CONFLICT (job, audience, status) DO UPDATE SET n = t.n + excluded.n`,
    [keepDays],
  );
}

/** A run as `status` shows it. */
export interface RunRow {
  id: number;
  job: string;
  audience: string | null;
  status: string;
  startedAt: string;
  durationMs: number | null;
  counts: Record<string, unknown>;
  error: string | null;
}

/** The last `perAudience` runs of every job and audience, or of one audience. */
export async function listRuns(db: Queryable, schema: string, options: { audience?: string; perAudience: number }): Promise<RunRow[]> {
  const { rows } = await db.query<{ id: string; job: string; audience: string | null; status: string; started_at: Date; finished_at: Date | null; counts: Record<string, unknown>; error: string | null }>(
    options.audience
      ? `SELECT * FROM ${runs(schema)} WHERE audience = $1 ORDER BY id DESC LIMIT $2`
      : `SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY job, audience ORDER BY id DESC) AS n FROM ${runs(schema)}) r WHERE n <= $1 ORDER BY job, audience, id DESC`,
    options.audience ? [options.audience, options.perAudience] : [options.perAudience],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    job: r.job,
    audience: r.audience,
    status: r.status,
    startedAt: r.started_at.toISOString(),
    durationMs: r.finished_at ? r.finished_at.getTime() - r.started_at.getTime() : null,
    counts: r.counts,
    error: r.error,
  }));
}

/** The last finished sync or backfill of an audience and its failed members. */
export async function lastRunFailures(db: Queryable, schema: string, audience: string, limit: number) {
  const run = await db.query<{ id: string; status: string; started_at: Date }>(
    `SELECT id, status, started_at FROM ${runs(schema)} WHERE audience = $1 AND job IN ('sync', 'backfill') AND status <> 'running' ORDER BY id DESC LIMIT 1`,
    [audience],
  );
  if (!run.rows[0]) return { audience, run: null, failures: [] as Array<{ member: string | null; reason: string }> };
  const { rows } = await db.query<{ member_key: string | null; reason: string }>(
    `SELECT member_key, reason FROM ${failuresTable(schema)} WHERE run_id = $1 ORDER BY member_key NULLS LAST LIMIT $2`,
    [run.rows[0].id, limit],
  );
  return {
    audience,
    run: { id: Number(run.rows[0].id), status: run.rows[0].status, startedAt: run.rows[0].started_at.toISOString() },
    failures: rows.map((r) => ({ member: r.member_key, reason: r.reason })),
  };
}

/** What the metrics file says about runs: outcomes, the last run and the last success per job and audience. */
export async function runMetrics(db: Queryable, schema: string) {
  const byOutcome = await db.query<{ job: string; audience: string | null; status: string; n: string }>(
    // Live runs plus those pruned: a counter that never decreases. (`running` is not an outcome yet.)
    `SELECT job, nullif(audience, '') AS audience, status, sum(n) AS n FROM (
       SELECT job, coalesce(audience, '') AS audience, status, count(*) AS n FROM ${runs(schema)} WHERE status <> 'running' GROUP BY 1, 2, 3
       UNION ALL SELECT job, audience, status, n FROM ${escapeIdentifier(schema)}.run_totals) r
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
  );
  const last = await db.query<{ job: string; audience: string | null; status: string; counts: Record<string, unknown>; started_at: Date; finished_at: Date }>(
    `SELECT DISTINCT ON (job, audience) job, audience, status, counts, started_at, finished_at FROM ${runs(schema)}
      WHERE status <> 'running' ORDER BY job, audience, id DESC`,
  );
  const success = await db.query<{ job: string; audience: string | null; t: Date }>(
    `SELECT job, audience, max(finished_at) AS t FROM ${runs(schema)} WHERE status IN ('succeeded', 'partial') GROUP BY 1, 2 ORDER BY 1, 2`,
  );
  return { byOutcome: byOutcome.rows, last: last.rows, lastSuccess: success.rows };
}

/** Audiences that have runs in the history (or are known from a sync), by name. */
export async function knownAudiences(db: Queryable, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ audience: string }>(
    `SELECT audience FROM ${runs(schema)} WHERE audience IS NOT NULL UNION SELECT name FROM ${escapeIdentifier(schema)}.audiences ORDER BY 1`,
  );
  return rows.map((r) => r.audience);
}
