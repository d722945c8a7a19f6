/** Scheduled jobs from audience files (`@schedule`, `@timezone`) and from --currents-every. */
import { CronExpressionParser } from 'cron-parser';
import { findAudienceFiles, loadAudience } from '../audience/load-audience.js';
import type { Logger } from '../log.js';
import type { Audience } from '../types.js';
import type { ScheduledJob } from './scheduler.js';

/** The next time after `after` that the 5-field cron expression matches, in `timezone` (UTC by default). */
export function nextCron(expression: string, after: number, timezone = 'UTC'): number {
  return CronExpressionParser.parse(expression, { currentDate: new Date(after), tz: timezone }).next().toDate().getTime();
}

/**
 * The audiences of `dir` that have a @schedule. A file that does not parse is logged (once per
 * change) and left out; the others keep their schedules.
 */
export function audienceJobs(dir: string, run: (audience: Audience) => Promise<void>, log: Logger): () => ScheduledJob[] {
  const reported = new Map<string, string>();
  let lastUnscheduled: string | undefined;
  return () => {
    let files: string[];
    try {
      files = findAudienceFiles(dir);
    } catch (error) {
      log.error(String((error as Error).message));
      return [];
    }
    const jobs: ScheduledJob[] = [];
    const unscheduled: string[] = [];
    for (const file of files) {
      let audience: Audience;
      try {
        audience = loadAudience(file);
        if (audience.schedule) nextCron(audience.schedule, Date.now(), audience.timezone);
        reported.delete(file);
      } catch (error) {
        const message = (error as Error).message;
        if (reported.get(file) !== message) log.error(`not scheduled: ${message}`);
        reported.set(file, message);
        continue;
      }
      if (!audience.schedule) {
        unscheduled.push(audience.name);
        continue;
      }
      const { schedule, timezone } = audience;
      jobs.push({
        id: audience.name,
        spec: `${schedule}${timezone ? ` (${timezone})` : ' (UTC)'}`,
        next: (after) => nextCron(schedule, after, timezone),
        run: () => run(audience),
      });
    }
    // Said at start and whenever the set changes: an audience without @schedule never runs here.
    const key = unscheduled.join(',');
    if (key !== (lastUnscheduled ?? '')) {
      if (unscheduled.length > 0) log.warn(`not scheduled (no @schedule line): ${unscheduled.join(', ')}; add @schedule to run them here, or sync them from cron`);
    }
    lastUnscheduled = key;
    return jobs;
  };
}

export function everyMinutesJob(id: string, minutes: number, run: () => Promise<void>, start: number): ScheduledJob {
  const period = minutes * 60_000;
  return { id, spec: `every ${minutes} min`, next: (after) => start + (Math.floor((after - start) / period) + 1) * period, run };
}
