/**
 * One audience, one run, in its steps: take the audience's lock, record the run, plan the
 * deltas (plan-deltas.ts), stop at the guardrail, record what needs no request, deliver the
 * rest (deliver-deltas.ts) and finish the run. The snapshot advances per batch, only for the
 * members Braze accepted, so a run killed at any moment is resumed by the next one sending
 * exactly what was not confirmed.
 */
import { realpathSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { AbortError, AppError, AudienceError, BrazeHttpError, DatabaseError, exitCodeFor, messageOf, outcomeOfError, type ExitCode, type Outcome } from '../errors.js';
import type { Database, Queryable } from '../db/pool.js';
import type { Logger } from '../log.js';
import type { TrackClient } from '../braze/track-client.js';
import { abandonStaleRuns, finishRun, recordFailures, startRun, type MemberFailure } from '../run/run-store.js';
import { releaseAudienceLock, tryAudienceLock } from '../run/run-lock.js';
import { DEFAULTS } from '../config/environment.js';
import { emptyCounts, type Audience, type AudienceCounts, type IdentifierKind } from '../types.js';
import { deliverDeltas, writeBodies } from './deliver-deltas.js';
import { dropPlanTables, planDeltas, type Guardrail, type Plan, type SyncMode } from './plan-deltas.js';
import { withoutValues } from './run-query.js';
import { applyWithoutSending, countUnverified, finishBackfill, knownAudiences, recordAudience, startBackfill } from './snapshot-store.js';

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
  /** Plan only (plan, --dry-run): nothing sent, nothing recorded. */
  dryRun?: boolean;
  batchSize: number;
  concurrency: number;
  maxChangeRatio: number;
  /** The guardrail applies only from this many exits plus value changes (default 100). */
  minChangeCount?: number;
  force: boolean;
  /** The file is the audience last synced from another path (moved or renamed folder). */
  adopt?: boolean;
  /** How long the audience's query may run. */
  statementTimeoutMs?: number;
  /** Items an array attribute may hold. */
  maxArrayLength?: number;
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
  /** Members that cannot be sent, by reason: how many, and a few of their keys (never values). */
  failureReasons?: Array<{ reason: string; count: number; examples: string[] }>;
}

export async function syncAudience(deps: SyncDeps, audience: Audience, options: SyncOptions): Promise<AudienceResult> {
  const clock = deps.clock ?? Date.now;
  const started = clock();
  const log = deps.log.child({ audience: audience.name });
  const counts = emptyCounts();
  const planning = options.mode === 'plan' || options.dryRun === true;
  const backfill = options.mode === 'backfill';
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

      const previous = (await knownAudiences(conn, deps.schema)).find((a) => a.name === audience.name);
      if (previous && !samePath(previous.file, audience.file) && !options.adopt) {
        throw new AudienceError(
          audience.file,
          `audience ${audience.name} was last synced from ${previous.file}; two files must not share one audience's snapshot. If this is the same audience moved, run with --adopt; otherwise rename the file`,
        );
      }
      const backfillSince = backfill ? (previous?.backfillStartedAt ?? (await databaseNow(conn))) : null;
      if (backfill && previous?.backfillStartedAt) runLog.info('resuming an unfinished backfill: members confirmed since it started are not sent again', { since: previous.backfillStartedAt.toISOString() });
      const plan = await planDeltas(deps.db, conn, deps.schema, audience, {
        planning,
        backfill,
        backfillSince,
        maxChangeRatio: options.maxChangeRatio,
        minChangeCount: options.minChangeCount ?? DEFAULTS.minChangeCount,
        force: options.force,
        previous: previous && { file: previous.file, attributes: previous.attributes },
        statementTimeoutMs: options.statementTimeoutMs,
        maxArrayLength: options.maxArrayLength,
      });
      Object.assign(counts, plan.counts);
      const failureReasons = summariseFailures(plan.failures);
      // From here on the audience's update mode is known: its own, or Braze's default for its identifier.
      audience = { ...audience, updateExistingOnly: updateExistingOnlyFor(audience, plan.identifier) };
      runLog.info('planned', { new: counts.new, changed: counts.changed, exited: counts.exited, unchanged: counts.unchanged, failed: counts.failed, updates: counts.plannedUpdates });
      if (planning) {
        if (options.out) await writeBodies(conn, audience, options.batchSize, options.out);
        return result('planned', { guardrail: plan.guardrail, failureReasons });
      }
      const id = runId!;
      await recordFailures(conn, deps.schema, id, audience.name, plan.failures);
      if (plan.guardrail.tripped) throw new AbortError(guardrailMessage(audience, plan.guardrail));
      if (!deps.client) throw new AppError('internal: no Braze client for a sync');
      if (deps.stop?.aborted) {
        const error = 'stopped by a signal before sending';
        await finishRun(conn, deps.schema, id, { status: 'interrupted', counts, error });
        return result('interrupted', { runId, guardrail: plan.guardrail, error });
      }
      // Recorded only now, when the run goes ahead: a run the guardrail stopped must not change
      // what the next run compares with, nor the @on_exit a retire would apply.
      await recordAudience(conn, deps.schema, audience, plan.identifier, plan.attributes);
      if (backfill) await startBackfill(conn, deps.schema, audience.name, backfillSince!);

      // Members whose change needs no request: recorded now, no proof to wait for (a first sync
      // has none, and would read every delta for nothing).
      if (plan.quiet > 0) await applyWithoutSending(conn, deps.schema, audience.name, id, backfill);
      const sent = await deliverDeltas(
        conn,
        {
          schema: deps.schema,
          client: deps.client,
          log: runLog,
          runId: id,
          identifier: plan.identifier,
          backfill,
          allNew: plan.firstSync,
          batchSize: options.batchSize,
          concurrency: options.concurrency,
          columns: plan.columns,
          stop: deps.stop,
          onProgress: deps.onProgress,
        },
        audience,
        plan.sendable,
      );
      Object.assign(counts, { updates: sent.updates, perAttribute: sent.perAttribute, requests: sent.requests, retries: sent.retries, rateLimited: sent.rateLimited });

      counts.failed += sent.failed;

      if (audience.updateExistingOnly) counts.unverified = await countUnverified(conn, deps.schema, audience.name);

      const status: Outcome = sent.abort ? 'aborted' : sent.stopped ? 'interrupted' : counts.failed > 0 ? 'partial' : 'succeeded';
      const error = sent.abort
        ? messageOf(sent.abort)
        : status === 'interrupted'
          ? 'stopped by a signal; unconfirmed members are sent next run'
          : sent.heldBack
            ? 'some exits were not confirmed, so entries and changes wait for the next run'
            : undefined;
      // Finished only when every member's full set was confirmed; otherwise the next backfill resumes.
      if (backfill && status === 'succeeded') await finishBackfill(conn, deps.schema, audience.name);
      await finishRun(conn, deps.schema, id, { status, counts, error: sent.abort || sent.heldBack ? error : undefined });
      runLog.info('finished', { status, updates: counts.updates, failed: counts.failed, requests: counts.requests, unverified: counts.unverified || undefined });
      if (counts.unverified > 0) {
        runLog.info('members sent under @update_existing_only true whose profile is not known to exist are sent again each run', { waiting: counts.unverified });
      }
      if (sent.abort) runLog.error(error!);
      // Counts only: a sync's summary reaches --json and the notify webhook, and member keys are
      // people's emails and phone numbers (plan shows a few; `failures` lists them all).
      return result(status, { runId, guardrail: plan.guardrail, error, fatal: isFatal(sent.abort), failureReasons: failureReasons?.map((f) => ({ ...f, examples: [] })) });
    } catch (error) {
      const e = asAudienceError(error, audience);
      const status = outcomeOfError(e);
      if (runId) await finishRun(conn, deps.schema, runId, { status, counts, error: messageOf(e) }).catch(() => {});
      log.error(messageOf(e));
      return result(status, { runId, error: messageOf(e), fatal: isFatal(e) });
    } finally {
      await dropPlanTables(conn).catch(() => {});
      // work_mem set above; jit and extra_float_digits by planDeltas.
      await conn.query('RESET work_mem; RESET jit; RESET extra_float_digits').catch(() => {});
      if (!planning) await releaseAudienceLock(conn, deps.schema, audience.name);
    }
  });
}

/** One line that says how large the change is, of what, the likely cause and the way out. */
function guardrailMessage(audience: Audience, g: Guardrail): string {
  const parts = [g.exits > 0 && `${g.exits} member(s) would leave`, g.valueChanges > 0 && `${g.valueChanges} would have values changed or removed`].filter(Boolean).join(' and ');
  const setting = audience.maxChangeRatio !== undefined ? `@max_change_ratio ${audience.maxChangeRatio}` : `--max-change-ratio ${g.limit}`;
  return `${audience.name}: ${parts} (${(g.ratio * 100).toFixed(1)}% of ${g.existing} existing members, over ${setting}); nothing was sent.${g.cause ? ` Likely cause: ${g.cause}.` : ''} Check the query, then rerun with --force (e.g. braze-bridge sync ${audience.name} --force) if the change is intended`;
}

/** `@update_existing_only` as given, else Braze's default: false, but aliases and braze ids only ever update. */
export function updateExistingOnlyFor(audience: Audience, identifier: IdentifierKind): boolean {
  return audience.updateExistingOnly ?? (identifier === 'user_alias' || identifier === 'braze_id');
}

/** The same file, also through a symbolic link or another spelling of the path. */
function samePath(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

async function databaseNow(conn: Queryable): Promise<Date> {
  return (await conn.query<{ t: Date }>('SELECT now() AS t')).rows[0]!.t;
}

/** Failures grouped by reason, with counts and up to three member keys each. */
function summariseFailures(failures: readonly MemberFailure[]): AudienceResult['failureReasons'] {
  const byReason = new Map<string, { count: number; examples: string[] }>();
  for (const f of failures) {
    const entry = byReason.get(f.reason) ?? { count: 0, examples: [] };
    entry.count++;
    if (f.memberKey !== null && entry.examples.length < 3) entry.examples.push(f.memberKey);
    byReason.set(f.reason, entry);
  }
  return [...byReason].map(([reason, e]) => ({ reason, ...e })).sort((a, b) => b.count - a.count);
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
    return new AudienceError(audience.file, `query failed: ${withoutValues(error.message, error.code)}`, undefined, { cause: error });
  }
  return error;
}
