/**
 * The long-running scheduler as a job: one database pool and one Braze client; each audience
 * runs on its @schedule, Currents ingestion every --currents-every minutes, and each run ends
 * with the after-run step (prune, metrics, notify).
 */
import { createAppLogger, createExportClient, createTrackClient, openMigrated } from '../app.js';
import { verifyAudiences } from '../verify/verify-audiences.js';
import { verifyOutcome } from '../verify/verify-outcome.js';
import { withAfterRun } from '../run/after-run.js';
import type { CurrentsConfig } from '../config/load-config.js';
import { ConfigError, ExitCode } from '../errors.js';
import { runAudiences } from '../audience/run-audiences.js';
import { syncOutcome } from '../audience/sync-outcome.js';
import { ingest } from '../currents/ingest.js';
import { ingestOutcome } from '../currents/ingest-outcome.js';
import { openSource } from '../currents/source/open-source.js';
import { audienceJobs, everyMinutesJob } from './audience-jobs.js';
import { runScheduler, sleepUnlessStopped, type ScheduledJob } from './scheduler.js';

export async function scheduleJob(config: Readonly<CurrentsConfig & { currentsEvery?: number }>, stop: AbortSignal): Promise<{ exitCode: number }> {
  const log = createAppLogger(config).child({ component: 'scheduler' });
  if (config.currentsEvery && !config.source) throw new ConfigError(['--currents-every needs --source s3://bucket/prefix']);
  const client = createTrackClient(config, log);
  // An audience sync (its connection and batch writes) and an ingest (its run lock, workers and
  // DDL) can run at the same time on this one pool.
  const open = await openMigrated(config, log, { poolSize: 2 * config.concurrency + 6 });
  // Each scheduled run ends with the after-run step however it ends, a throw included.
  const after = { db: open.db, schema: config.stateSchema, log, options: config };
  try {
    const runAudience = async (audience: { name: string }) => {
      const summary = await withAfterRun(
        after,
        'sync',
        () =>
          runAudiences(
            { db: open.db, schema: config.stateSchema, log, client, stop },
            { dir: config.audiencesDir, names: [audience.name] },
            {
              mode: 'sync',
              batchSize: config.batchSize,
              concurrency: config.concurrency,
              maxChangeRatio: config.maxChangeRatio,
              minChangeCount: config.minChangeCount,
              force: config.force,
              args: { scheduled: true },
            },
          ),
        syncOutcome,
      );
      const a = summary.audiences[0];
      log.info('run finished', { audience: audience.name, status: a?.status, updates: a?.counts.updates, failed: a?.counts.failed });
    };
    const fromFiles = audienceJobs(config.audiencesDir, runAudience, log);
    const extra: ScheduledJob[] = [];
    if (config.currentsEvery && config.source) {
      const source = openSource(config.source, { endpoint: config.s3Endpoint, region: config.region });
      extra.push(
        everyMinutesJob('currents', config.currentsEvery, async () => {
          const summary = await withAfterRun(
            after,
            'ingest',
            () => ingest(open.db, log, { source, stateSchema: config.stateSchema, targetSchema: config.targetSchema, concurrency: config.concurrency, stop }),
            ingestOutcome,
          );
          log.info('ingest finished', { loaded: summary.files.loaded, failed: summary.files.failed, rows: summary.rows });
        }, Date.now()),
      );
    }
    if (config.verifyEveryMinutes) {
      // Drift found by the scheduled check is reported (history, metrics, notify); repair is a
      // decision for a person: braze-bridge verify --repair.
      const exportClient = createExportClient(config, log);
      const sample = config.verifySample;
      extra.push(
        everyMinutesJob('verify', config.verifyEveryMinutes, async () => {
          const summary = await withAfterRun(
            { ...after, options: { ...config, notifyFailedRatio: config.notifyDriftRatio } },
            'verify',
            () =>
              verifyAudiences({ db: open.db, schema: config.stateSchema, log, client: exportClient, stop, exportRatePerMinute: config.exportRateLimit }, [], {
                sample,
                dryRun: false,
                args: { scheduled: true, sample },
              }),
            verifyOutcome,
          );
          log.info('verify finished', { checked: summary.audiences.reduce((n, a) => n + a.counts.checked, 0), drifted: summary.audiences.reduce((n, a) => n + a.counts.drifted, 0) });
        }, Date.now()),
      );
    }
    await runScheduler({ jobs: () => [...fromFiles(), ...extra], clock: Date.now, sleep: sleepUnlessStopped, stop, log });
    return { exitCode: ExitCode.ok };
  } finally {
    await open.close();
  }
}

