/** `sync`, `plan` and `backfill`: one engine, three modes. */
import type { Argv, CommandModule } from 'yargs';
import { createAppLogger, createTrackClient, openDatabase, openMigrated } from '../app.js';
import { loadConfig, type Config, type Flags } from '../config.js';
import { formatSummary, summaryJson } from '../audience/format-summary.js';
import { runAudiences, type RunSummary } from '../audience/run-audiences.js';
import type { SyncMode } from '../audience/sync-audience.js';
import { audienceOptions } from './shared-options.js';

/** Run audiences in `mode` and return the summary; the CLI prints it and sets the exit code. */
export async function syncCommand(config: Readonly<Config>, mode: SyncMode, names: readonly string[] = []): Promise<RunSummary> {
  const log = createAppLogger(config);
  const planning = mode === 'plan' || config.dryRun;
  // Check the Braze settings before touching the database: a missing key is a config error.
  const client = planning ? undefined : createTrackClient(config, log);
  // Planning changes nothing, not even the state schema.
  const open = planning ? await openDatabase(config, log) : await openMigrated(config, log);
  try {
    return await runAudiences(
      { db: open.db, schema: config.stateSchema, log, client },
      { dir: config.audiencesDir, names },
      {
        mode: planning ? 'plan' : mode,
        batchSize: config.batchSize,
        concurrency: config.concurrency,
        maxChangeRatio: config.maxChangeRatio,
        force: config.force,
        outFile: planning ? config.out : undefined,
        args: { names, batchSize: config.batchSize, concurrency: config.concurrency, rateLimit: config.rateLimit, maxChangeRatio: config.maxChangeRatio, force: config.force },
      },
    );
  } finally {
    await open.close();
  }
}

export function printSummary(config: Readonly<Config>, summary: RunSummary): void {
  process.stdout.write(`${config.json ? summaryJson(summary) : formatSummary(summary)}\n`);
}

type SyncArgs = Flags & { names?: string[] };

function binding(mode: SyncMode, describe: string, extra: (y: Argv) => Argv = (y) => y): CommandModule {
  return {
    command: `${mode} [names..]`,
    describe,
    builder: (y: Argv) => extra(audienceOptions(y)),
    handler: async (raw) => {
      const args = raw as unknown as SyncArgs;
      const config = loadConfig(args);
      const summary = await syncCommand(config, mode, args.names ?? []);
      printSummary(config, summary);
      process.exitCode = summary.exitCode;
    },
  };
}

const withOut = (y: Argv) => y.option('out', { type: 'string', describe: 'write the exact request bodies as NDJSON to this file (with plan / --dry-run)' });

export const syncBinding = binding('sync', 'send what changed in each audience to Braze', (y) =>
  withOut(y).option('dry-run', { type: 'boolean', describe: 'plan only: nothing sent, no state changed' }),
);
export const planBinding = binding('plan', 'dry run: what a sync would send, per audience and attribute', withOut);
export const backfillBinding = binding('backfill', "resend every member's full attribute set, then record it as the snapshot", (y) =>
  withOut(y).option('dry-run', { type: 'boolean', describe: 'plan the backfill only' }),
);
