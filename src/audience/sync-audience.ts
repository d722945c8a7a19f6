/**
 * One audience, one run, in its steps: take the audience's lock, record the run, plan the
 * deltas (plan-deltas.ts), stop at the guardrail, record what needs no request, deliver the
 * rest (deliver-deltas.ts) and finish the run. The snapshot advances per batch, only for the
 * members Braze accepted, so a run killed at any moment is resumed by the next one sending
 * exactly what was not confirmed.
 */
import type { Writable } from 'node:stream';
import { AbortError, AppError, AudienceError, BrazeHttpError, DatabaseError, exitCodeFor, messageOf, outcomeOfError, type ExitCode, type Outcome } from '../errors.js';
import type { Database } from '../db/pool.js';
import type { Logger } from '../log.js';
import type { TrackClient } from '../braze/track-client.js';
import { abandonStaleRuns, finishRun, recordFailures, startRun } from '../run/run-store.js';
import { releaseAudienceLock, tryAudienceLock } from '../run/run-lock.js';
import { emptyCounts, type Audience, type AudienceCounts } from '../types.js';
import { deliverDeltas, writeBodies } from './deliver-deltas.js';
import { dropPlanTables, planDeltas, type Plan, type SyncMode } from './plan-deltas.js';
import { applyWithoutSending, recordAudience } from './snapshot-store.js';

export type { SyncMode } from './plan-deltas.js';

export interface SyncDeps {
  db: Database;
  schema: string;
  log: Logger;
  /** Absent when planning: nothing is sent. */
  client?: TrackClient;
  clock?: () => number;
  /** Aborted on SIGTERM/SIGINT: no new batch starts; in-flight ones finish and are recorded. */
  stop?: AbortSignal;
  /** After each batch: members confirmed or failed so far, of those to send. */
  onProgress?: (p: { audience: string; done: number; total: number }) => void;
}

export interface SyncOptions {
  mode: SyncMode;
  batchSize: number;
  concurrency: number;
  maxChangeRatio: number;
  force: boolean;
  /** When planning: where to write the exact request bodies, one JSON object per line. */
  out?: Writable;
  /** Recorded in the run history (never secrets). */
  args?: object;
}

export interface AudienceResult {
  audience: string;
  file: string;
  status: Outcome;
  exitCode: ExitCode;
  counts: AudienceCounts;
  durationMs: number;
  runId?: number;
  error?: string;
  /** True when the failure would repeat for every audience (bad key, wrong endpoint). */
  fatal?: boolean;
  /** Share of existing members that change or exit, and whether that trips the guardrail. */
  guardrail?: Plan['guardrail'];
}

export async function syncAudience(deps: SyncDeps, audience: Audience, options: SyncOptions): Promise<AudienceResult> {
  const clock = deps.clock ?? Date.now;
  const started = clock();
  const log = deps.log.child({ audience: audience.name });
  const counts = emptyCounts();
  const planning = options.mode === 'plan';
  const result = (status: Outcome, r: Partial<AudienceResult> = {}): AudienceResult => ({
    audience: audience.name,
    file: audience.file,
    status,
    exitCode: exitCodeFor(status),
    counts,
    durationMs: clock() - started,
    ...r,
  });

  return deps.db.withConnection(async (conn) => {
    if (!planning) {
      const lock = await tryAudienceLock(conn, deps.schema, audience.name);
      if (!lock.ok) {
        const error = `audience ${audience.name} is being synced by another run${lock.holderPid ? ` (PostgreSQL backend pid ${lock.holderPid})` : ''}; this run sent nothing`;
        log.warn(error);
        return result('locked', { error });
      }
    }
    let runId: number | undefined;
    try {
      // Joins and aggregates over a million members spill to disk at the 4 MB default.
      await conn.query(`SET work_mem = '256MB'`);
      if (!planning) {
        const abandoned = await abandonStaleRuns(conn, deps.schema, options.mode, audience.name);
        if (abandoned > 0) log.warn('an earlier run stopped without finishing; this run sends what it left unconfirmed', { abandoned });
        runId = await startRun(conn, deps.schema, { job: options.mode, audience: audience.name, args: options.args ?? {} });
      }
      const runLog = runId ? log.child({ run: runId }) : log;

      const plan = await planDeltas(deps.db, conn, deps.schema, audience, options);
      Object.assign(counts, plan.counts);
      runLog.info('planned', { new: counts.new, changed: counts.changed, exited: counts.exited, unchanged: counts.unchanged, failed: counts.failed, updates: counts.updates });
      if (planning) {
        if (options.out) await writeBodies(conn, audience, options.batchSize, options.out);
        return result('planned', { guardrail: plan.guardrail });
      }
      const id = runId!;
      await recordAudience(conn, deps.schema, audience, plan.identifier);
      await recordFailures(conn, deps.schema, id, audience.name, plan.failures);
      if (plan.guardrail.tripped) {
        throw new AbortError(
          `${audience.name}: this run would change or remove ${(plan.guardrail.ratio * 100).toFixed(1)}% of ${plan.existing} existing members, over --max-change-ratio ${options.maxChangeRatio}; nothing was sent. Check the query, then rerun with --force if the change is intended`,
        );
      }
      if (!deps.client) throw new AppError('internal: no Braze client for a sync');
      if (deps.stop?.aborted) {
        const error = 'stopped by a signal before sending';
        await finishRun(conn, deps.schema, id, { status: 'interrupted', counts, error });
        return result('interrupted', { runId, guardrail: plan.guardrail, error });
      }

      // Members whose change needs no request: recorded now, no proof to wait for.
      await applyWithoutSending(conn, deps.schema, audience.name, id);
      const sent = await deliverDeltas(
        conn,
        { db: deps.db, schema: deps.schema, client: deps.client, log: runLog, runId: id, batchSize: options.batchSize, concurrency: options.concurrency, stop: deps.stop, onProgress: deps.onProgress },
        audience,
        plan.sendable,
      );
      Object.assign(counts, { updates: sent.updates, perAttribute: sent.perAttribute, requests: sent.requests, retries: sent.retries, rateLimited: sent.rateLimited });
      counts.failed += sent.failed;

      const status: Outcome = sent.abort ? 'aborted' : sent.stopped ? 'interrupted' : counts.failed > 0 ? 'partial' : 'succeeded';
      const error = sent.abort ? messageOf(sent.abort) : status === 'interrupted' ? 'stopped by a signal; unconfirmed members are sent next run' : undefined;
      await finishRun(conn, deps.schema, id, { status, counts, error: sent.abort ? error : undefined });
      runLog.info('finished', { status, updates: counts.updates, failed: counts.failed, requests: counts.requests });
      if (sent.abort) runLog.error(error!);
      return result(status, { runId, guardrail: plan.guardrail, error, fatal: isFatal(sent.abort) });
    } catch (error) {
      const e = asAudienceError(error, audience);
      const status = outcomeOfError(e);
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts, error: messageOf(e) }).catch(() => {});
      log.error(messageOf(e));
      return result(status, { runId, error: messageOf(e), fatal: isFatal(e) });
    } finally {
      await dropPlanTables(conn).catch(() => {});
      await conn.query('RESET work_mem').catch(() => {});
      if (!planning) await releaseAudienceLock(conn, deps.schema, audience.name);
    }
  });
}

/** Failures that would repeat for every audience: stop the whole run. */
function isFatal(error: unknown): boolean {
  return error instanceof BrazeHttpError;
}

/**
 * PostgreSQL errors while the audience's rows are turned into attributes are the audience's
 * (bad values, a query that no longer plans): exit 2. Anything else (a lost connection, a
 * deadlock, a full disk) is not the file's fault and keeps its own class: exit 4.
 */
function asAudienceError(error: unknown, audience: Audience): unknown {
  if (error instanceof DatabaseError && /^(22|42)/.test(error.code ?? '')) {
    return new AudienceError(audience.file, `query failed: ${error.message}`, undefined, { cause: error });
  }
  return error;
}
