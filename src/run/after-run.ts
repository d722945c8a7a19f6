/**
 * What every command does when a run ends, whatever its outcome: prune old history, write the
 * metrics file, and post to the notify webhook when the run needs a person. A failure here is
 * logged, never allowed to change the run's own exit code.
 */
import type { Queryable } from '../db/pool.js';
import { messageOf } from '../errors.js';
import { pruneRuns } from './run-store.js';
import { postJson } from '../http/post-json.js';
import type { Logger } from '../log.js';
import { writeMetricsFile } from './metrics.js';

export interface AfterRunOptions {
  keepDays: number;
  metricsFile?: string;
  notifyUrl?: string;
  /** Notify when failed members / members exceeds this. */
  notifyFailedRatio: number;
}

export interface RunOutcome {
  job: string;
  /** One line for people (Slack shows it as the message). */
  text: string;
  /** Failed, aborted or interrupted: always worth a notification. */
  bad: boolean;
  failedRatio: number;
  summary: object;
}

export interface AfterRunContext {
  /** Absent when the database could not be opened: only the notification is possible. */
  db?: Queryable;
  schema: string;
  log: Logger;
  options: AfterRunOptions;
}

/**
 * Run a job, then — however it ended, by returning or by throwing — prune, refresh metrics and
 * notify. A job that fails outright (S3 unreachable, database gone) alerts like any other.
 */
export async function withAfterRun<T>(ctx: AfterRunContext, job: string, run: () => Promise<T>, outcomeOf: (result: T) => RunOutcome): Promise<T> {
  let outcome: RunOutcome | undefined;
  try {
    const result = await run();
    outcome = outcomeOf(result);
    return result;
  } catch (error) {
    outcome = failedOutcome(job, error);
    throw error;
  } finally {
    await afterRun(ctx.db, ctx.schema, ctx.log, ctx.options, outcome ?? failedOutcome(job, 'stopped'));
  }
}

/** The outcome of a job that threw before it could summarise itself. */
export function failedOutcome(job: string, error: unknown): RunOutcome {
  const message = messageOf(error);
  return { job, text: `braze-bridge ${job} failed: ${message}`, bad: true, failedRatio: 0, summary: { status: 'aborted', error: message } };
}

export async function afterRun(db: Queryable | undefined, schema: string, log: Logger, options: AfterRunOptions, outcome: RunOutcome): Promise<void> {
  if (db) {
    try {
      await pruneRuns(db, schema, options.keepDays);
    } catch (error) {
      log.warn('could not prune old runs', { error: messageOf(error) });
    }
  }
  if (options.metricsFile && db) {
    try {
      await writeMetricsFile(db, schema, options.metricsFile);
    } catch (error) {
      log.warn('could not write the metrics file', { file: options.metricsFile, error: messageOf(error) });
    }
  }
  if (options.notifyUrl && (outcome.bad || outcome.failedRatio > options.notifyFailedRatio)) {
    try {
      const res = await postJson(new URL(options.notifyUrl), {}, JSON.stringify({ text: outcome.text, job: outcome.job, summary: outcome.summary }), 15_000);
      if (res.status >= 300) log.warn('the notify webhook refused the message', { status: res.status });
    } catch (error) {
      log.warn('could not reach the notify webhook', { error: messageOf(error) });
    }
  }
}
