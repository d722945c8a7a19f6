/**
 * `sync`, `plan` and `backfill` as a job: open the database (and, to send, the Braze client),
 * run the selected audiences in one mode, then prune, refresh metrics and notify however the
 * run ended. Planning changes nothing, not even the state schema.
 */
import { createAppLogger, createTrackClient, openDatabase, openMigrated } from '../app.js';
import type { Config } from '../config/load-config.js';
import { withAfterRun } from '../run/after-run.js';
import { progressBar } from '../run/progress.js';
import { runAudiences, type RunSummary } from './run-audiences.js';
import type { SyncMode } from './plan-deltas.js';
import { syncOutcome } from './sync-outcome.js';

export async function syncJob(config: Readonly<Config>, mode: SyncMode, names: readonly string[] = [], stop?: AbortSignal): Promise<RunSummary> {
  const log = createAppLogger(config);
  const planning = mode === 'plan' || config.dryRun;
  // Check the Braze settings before touching the database: a missing key is a config error.
  const client = planning ? undefined : createTrackClient(config, log);
  const open = planning ? await openDatabase(config, log) : await openMigrated(config, log);
  const bar = process.stderr.isTTY && !config.json ? progressBar('members') : undefined;
  const run = async () => {
    const summary = await runAudiences(
      { db: open.db, schema: config.stateSchema, log, client, stop, onProgress: bar && (({ audience, done, total }) => bar.update({ label: audience, done, total })) },
      { dir: config.audiencesDir, names },
      {
        // sync --dry-run is a plan; backfill --dry-run plans the backfill.
        mode: mode === 'backfill' ? 'backfill' : planning ? 'plan' : mode,
        dryRun: planning,
        batchSize: config.batchSize,
        concurrency: config.concurrency,
        maxChangeRatio: config.maxChangeRatio,
        minChangeCount: config.minChangeCount,
        force: config.force,
        adopt: config.adopt,
        statementTimeoutMs: config.statementTimeoutMs,
        maxArrayLength: config.maxArrayLength,
        outFile: planning ? config.out : undefined,
        args: { names, batchSize: config.batchSize, concurrency: config.concurrency, rateLimit: config.rateLimit, maxChangeRatio: config.maxChangeRatio, force: config.force },
      },
    );
    if (config.embedded) {
      // A newcomer running against the empty embedded database: say where their data should be.
      for (const a of summary.audiences) {
        if (a.error && /relation ".*" does not exist/.test(a.error)) {
          a.error += ' (this is the embedded database, which holds no data of yours: set DATABASE_URL; `npm start` runs the demo in its own database)';
        }
      }
    }
    return summary;
  };
  try {
    if (planning) return await run();
    return await withAfterRun({ db: open.db, schema: config.stateSchema, log, options: config }, mode, run, syncOutcome);
  } finally {
    await open.close();
  }
}
