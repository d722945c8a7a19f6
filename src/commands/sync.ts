/** `sync`, `plan` and `backfill`: one engine, three modes. */
import type { Argv, CommandModule } from 'yargs';
import { createAppLogger, createTrackClient, openDatabase, openMigrated, withShutdown } from '../app.js';
import { afterRun, type RunOutcome } from '../run/after-run.js';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import { formatSummary, summaryJson } from '../audience/format-summary.js';
import { runAudiences, type RunSummary } from '../audience/run-audiences.js';
import type { SyncMode } from '../audience/sync-audience.js';
import { audienceOptions, runOptions } from './options.js';

/** Run audiences in `mode` and return the summary; the CLI prints it and sets the exit code. */
export async function syncCommand(config: Readonly<Config>, mode: SyncMode, names: readonly string[] = [], stop?: AbortSignal): Promise<RunSummary> {
  const log = createAppLogger(config);
  const planning = mode === 'plan' || config.dryRun;
  // Check the Braze settings before touching the database: a missing key is a config error.
  const client = planning ? undefined : createTrackClient(config, log);
  // Planning changes nothing, not even the state schema.
  const open = planning ? await openDatabase(config, log) : await openMigrated(config, log);
  try {
    const summary = await runAudiences(
      { db: open.db, schema: config.stateSchema, log, client, stop, onProgress: process.stderr.isTTY && !config.json ? progressBar() : undefined },
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
    if (config.embedded) {
      // A newcomer running against the empty embedded database: say where their data should be.
      for (const a of summary.audiences) {
        if (a.error && /relation ".*" does not exist/.test(a.error)) {
          a.error += ' (this is the embedded database, which holds no data of yours: set DATABASE_URL; `npm start` runs the demo in its own database)';
        }
      }
    }
    if (!planning) await afterRun(open.db, config.stateSchema, log, config, syncOutcome(summary));
    return summary;
  } finally {
    await open.close();
  }
}

/** A one-line progress bar on stderr (TTY only): members sent of those to send, per audience. */
function progressBar() {
  const started = Date.now();
  return ({ audience, done, total }: { audience: string; done: number; total: number }) => {
    const width = 30;
    const filled = total ? Math.min(width, Math.round((done / total) * width)) : width;
    const rate = Math.round(done / Math.max(0.001, (Date.now() - started) / 1000));
    process.stderr.write(`\r${audience} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} members, ${rate}/s`);
    if (done >= total) process.stderr.write('\n');
  };
}

/** The notification and its trigger for a sync, backfill or scheduled run. */
export function syncOutcome(summary: RunSummary): RunOutcome {
  const members = summary.audiences.reduce((n, a) => n + a.counts.members, 0);
  const failed = summary.audiences.reduce((n, a) => n + a.counts.failed, 0);
  const bad = summary.audiences.filter((a) => ['aborted', 'failed', 'interrupted'].includes(a.status));
  const text = bad.length > 0
    ? `braze-bridge ${summary.mode}: ${bad.map((a) => `${a.audience} ${a.status}${a.error ? `: ${a.error}` : ''}`).join('; ')}`
    : `braze-bridge ${summary.mode}: ${failed} of ${members} members failed (${summary.audiences.filter((a) => a.counts.failed > 0).map((a) => `${a.audience} ${a.counts.failed}`).join(', ')})`;
  return { job: summary.mode, text, bad: bad.length > 0, failedRatio: members === 0 ? 0 : failed / members, summary };
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
      const summary = await withShutdown(config, createAppLogger(config), (stop) => syncCommand(config, mode, args.names ?? [], stop));
      printSummary(config, summary);
      process.exitCode = summary.exitCode;
    },
  };
}

const withOut = (y: Argv) => y.option('out', { type: 'string', describe: 'write the exact request bodies as NDJSON to this file (with plan / --dry-run)' });

export const syncBinding = binding('sync', 'send what changed in each audience to Braze', (y) =>
  runOptions(withOut(y)).option('dry-run', { type: 'boolean', describe: 'plan only: nothing sent, no state changed' }),
);
export const planBinding = binding('plan', 'dry run: what a sync would send, per audience and attribute', withOut);
export const backfillBinding = binding('backfill', "resend every member's full attribute set, then record it as the snapshot", (y) =>
  runOptions(withOut(y)).option('dry-run', { type: 'boolean', describe: 'plan the backfill only' }),
);
