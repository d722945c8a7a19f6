/**
 * `retire` as a job: open the database and the Braze client, retire one audience, and (for a
 * real run) prune, refresh metrics and notify however it ended. A dry run changes nothing.
 */
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { createAppLogger, createTrackClient, openDatabase, openMigrated } from '../app.js';
import type { Config } from '../config/load-config.js';
import { withAfterRun } from '../run/after-run.js';
import { retireAudience } from './retire-audience.js';
import type { RunSummary } from './run-audiences.js';
import { syncOutcome } from './sync-outcome.js';

export async function retireJob(config: Readonly<Config>, name: string, stop?: AbortSignal): Promise<RunSummary> {
  const log = createAppLogger(config);
  const client = config.dryRun ? undefined : createTrackClient(config, log);
  const open = config.dryRun ? await openDatabase(config, log) : await openMigrated(config, log);
  const out = config.dryRun && config.out ? createWriteStream(config.out) : undefined;
  const started = Date.now();
  const run = async (): Promise<RunSummary> => {
    const result = await retireAudience({ db: open.db, schema: config.stateSchema, log, client, stop }, name, {
      audiencesDir: config.audiencesDir,
      dryRun: config.dryRun,
      batchSize: config.batchSize,
      concurrency: config.concurrency,
      out,
    });
    return { mode: 'retire', dryRun: config.dryRun, audiences: [result], orphans: [], exitCode: result.exitCode, durationMs: Date.now() - started };
  };
  try {
    if (config.dryRun) return await run();
    return await withAfterRun({ db: open.db, schema: config.stateSchema, log, options: config }, 'retire', run, syncOutcome);
  } finally {
    if (out) {
      out.end();
      await finished(out);
    }
    await open.close();
  }
}
