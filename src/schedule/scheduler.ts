/**
 * The `schedule` loop: runs each job when it is due, never two runs of the same job at once
 * (and the advisory lock keeps a cron job and the scheduler apart too), logs every next run
 * time, and re-reads the job list on every tick so edited audience files take effect without
 * a restart. Clock and sleep are injected, so tests drive it with a fake clock.
 */
import type { Logger } from '../log.js';
import { sleepUnless } from '../http/clock.js';

export interface ScheduledJob {
  /** Stable id: the audience name, or `currents`. */
  id: string;
  /** A description of when it runs, e.g. the cron expression and time zone. Changes reschedule. */
  spec: string;
  /** The next time (epoch ms) strictly after `after`. */
  next(after: number): number;
  run(): Promise<void>;
}

export interface SchedulerOptions {
  /** Called on every tick: the jobs as they are now (files re-read). */
  jobs(): ScheduledJob[];
  clock: () => number;
  /** Resolves after `ms`, or early when `stop` aborts. */
  sleep: (ms: number, stop: AbortSignal) => Promise<void>;
  stop: AbortSignal;
  log: Logger;
  /** Longest sleep between looks at the files. */
  tickMs?: number;
}

interface JobState {
  spec: string;
  next: number;
  running?: Promise<void>;
}

export async function runScheduler(o: SchedulerOptions): Promise<void> {
  const state = new Map<string, JobState>();
  const iso = (t: number) => new Date(t).toISOString();
  while (!o.stop.aborted) {
    const now = o.clock();
    const jobs = o.jobs();
    const seen = new Set<string>();
    for (const job of jobs) {
      seen.add(job.id);
      let st = state.get(job.id);
      if (!st || st.spec !== job.spec) {
        st = { spec: job.spec, next: job.next(now), running: st?.running };
        state.set(job.id, st);
        o.log.info('scheduled', { job: job.id, schedule: job.spec, next: iso(st.next) });
      }
      if (st.next > now) continue;
      const s = st;
      s.next = job.next(now);
      if (s.running) {
        o.log.warn('previous run still going: skipping this slot', { job: job.id, next: iso(s.next) });
        continue;
      }
      o.log.info('starting', { job: job.id });
      s.running = job
        .run()
        .catch((error: unknown) => o.log.error('run failed', { job: job.id, error: String(error) }))
        .finally(() => {
          s.running = undefined;
          o.log.info('next run', { job: job.id, next: iso(s.next) });
        });
    }
    for (const id of [...state.keys()]) {
      if (!seen.has(id) && !state.get(id)!.running) {
        state.delete(id);
        o.log.info('unscheduled (file removed or @schedule dropped)', { job: id });
      }
    }
    const nextDue = Math.min(...[...state.values()].map((s) => s.next), now + (o.tickMs ?? 60_000));
    await o.sleep(Math.max(0, nextDue - o.clock()), o.stop);
  }
  // Graceful: runs already started finish (each stops starting new batches on the signal).
  await Promise.all([...state.values()].map((s) => s.running));
}

/** Real sleep that wakes early when `stop` aborts (the one in http/clock.ts). */
export const sleepUnlessStopped = sleepUnless;
