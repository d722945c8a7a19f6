import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { audienceJobs, nextCron } from '../src/schedule/audience-jobs.js';
import { runScheduler, type ScheduledJob } from '../src/schedule/scheduler.js';
import { silentLogger } from '../src/log.js';
import { useDatabaseAndSandbox } from './helpers/fixture.js';
import { audienceDir, run, testClient } from './helpers/audiences.js';

const at = (hhmm: string) => Date.UTC(2026, 10, 22, Number(hhmm.slice(0, 2)), Number(hhmm.slice(3, 5)));
const hhmm = (t: number) => new Date(t).toISOString().slice(11, 16);
/** Let started jobs and their callbacks run, without waiting on the wall clock. */
const tick = () => new Promise((r) => setImmediate(r));

describe('cron expressions', () => {
  it('are UTC unless @timezone says otherwise', () => {
    expect(hhmm(nextCron('*/15 * * * *', at('10:00') + 30_000))).toBe('10:15');
    expect(hhmm(nextCron('0 16 * * *', at('10:00'), 'Asia/Kolkata'))).toBe('10:30'); // 16:00 IST
    expect(hhmm(nextCron('0 9 * * 1-5', at('10:00'), 'UTC'))).toBe('09:00'); // Monday 23 Nov
  });
});

describe('scheduler', () => {
  it('never starts a job while its previous run is still going', async () => {
    let t = at('10:00');
    const stop = new AbortController();
    let release!: () => void;
    const starts: string[] = [];
    const job: ScheduledJob = {
      id: 'slow',
      spec: 'every 5 min',
      next: (after) => (Math.floor(after / 300_000) + 1) * 300_000,
      run: () => {
        starts.push(hhmm(t));
        return starts.length === 1 ? new Promise<void>((r) => (release = r)) : Promise.resolve();
      },
    };
    await runScheduler({
      jobs: () => [job],
      clock: () => t,
      sleep: async (ms) => {
        t += ms;
        await tick();
        if (t >= at('10:15') && release) release();
        if (t > at('10:20')) stop.abort();
      },
      stop: stop.signal,
      log: silentLogger,
    });
    // 10:05 starts and runs until 10:15; the 10:10 slot is skipped; 10:20 runs again.
    expect(starts).toEqual(['10:05', '10:20']);
  });

  const f = useDatabaseAndSandbox((t) => t.db.query(`CREATE TABLE people AS SELECT 'p' || i AS id, i AS score FROM generate_series(1, 20) i`).then(() => {}));

  it('runs audiences on their @schedule with real syncs, and picks up a file added while running', async () => {
    const dir = audienceDir({
      every_quarter: '-- @schedule */15 * * * *\nSELECT id AS external_id, score FROM people',
      india_afternoon: '-- @schedule 0 16 * * *\n-- @timezone Asia/Kolkata\nSELECT id AS external_id, score AS s2 FROM people',
      unscheduled: 'SELECT id AS external_id, score AS s3 FROM people',
    });
    let now = at('10:00') + 30_000;
    // Real syncs run while the clock is fake: fake time moves only once every started run is done.
    const inFlight = new Set<Promise<void>>();
    const runs: Array<[string, string, number]> = [];
    const jobs = audienceJobs(dir, (audience) => {
      const started = hhmm(now);
      const done = run(f.t.db, dir, { names: [audience.name], client: testClient(f.sandbox.url) }).then((summary) => {
        runs.push([audience.name, started, summary.exitCode]);
      });
      inFlight.add(done);
      return done.finally(() => inFlight.delete(done));
    }, silentLogger);
    const stop = new AbortController();
    let added = false;
    await runScheduler({
      jobs,
      clock: () => now,
      sleep: async (ms) => {
        while (inFlight.size > 0) await Promise.allSettled([...inFlight]); // let real runs finish before fake time moves
        now += ms;
        if (!added && now >= at('10:16')) {
          writeFileSync(join(dir, 'half_hourly.sql'), '-- @schedule */30 * * * *\nSELECT id AS external_id, score AS s4 FROM people');
          added = true;
        }
        if (now >= at('11:05')) stop.abort();
      },
      stop: stop.signal,
      log: silentLogger,
    });
    const byAudience = (name: string) => runs.filter(([n]) => n === name).map(([, time, code]) => `${time}:${code}`);
    expect(byAudience('every_quarter')).toEqual(['10:15:0', '10:30:0', '10:45:0', '11:00:0']);
    expect(byAudience('india_afternoon')).toEqual(['10:30:0']);
    expect(byAudience('half_hourly')).toEqual(['10:30:0', '11:00:0']);
    expect(byAudience('unscheduled')).toEqual([]);
    expect(f.sandbox.profile({ external_id: 'p3' })).toEqual({ score: 3, s2: 3, s4: 3 });
  });
});
