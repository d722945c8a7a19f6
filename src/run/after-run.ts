/**
 * What every command does when a run ends, whatever its outcome: prune old history, write the
 * metrics file, and post to the notify webhook when the run needs a person. A failure here is
 * logged, never allowed to change the run's own exit code.
 */
import { escapeIdentifier, type Queryable } from '../db/pool.js';
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

export async function afterRun(db: Queryable, schema: string, log: Logger, options: AfterRunOptions, outcome: RunOutcome): Promise<void> {
  try {
    await db.query(
      `DELETE FROM ${escapeIdentifier(schema)}.runs WHERE status <> 'running' AND started_at < now() - make_interval(days => $1::int)`,
      [options.keepDays],
    );
  } catch (error) {
    log.warn('could not prune old runs', { error: String(error) });
  }
  if (options.metricsFile) {
    try {
      await writeMetricsFile(db, schema, options.metricsFile);
    } catch (error) {
      log.warn('could not write the metrics file', { file: options.metricsFile, error: String(error) });
    }
  }
  if (options.notifyUrl && (outcome.bad || outcome.failedRatio > options.notifyFailedRatio)) {
    try {
      const res = await postJson(new URL(options.notifyUrl), {}, JSON.stringify({ text: outcome.text, job: outcome.job, summary: outcome.summary }), 15_000);
      if (res.status >= 300) log.warn('the notify webhook refused the message', { status: res.status });
    } catch (error) {
      log.warn('could not reach the notify webhook', { error: String(error) });
    }
  }
}
