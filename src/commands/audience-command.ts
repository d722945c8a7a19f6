/**
 * What `sync`, `plan` and `backfill` share as commands: their flags and their handler (load the
 * settings, run the job under graceful shutdown, print the summary, set the exit code). The
 * library is imported only when the command runs, so `--help` stays fast.
 */
import type { Argv } from 'yargs';
import { loadConfig, type Flags } from '../config/load-config.js';
import { scrubSecrets } from '../config/secrets.js';
import { ConfigError } from '../errors.js';
import type { SyncMode } from '../audience/plan-deltas.js';

export type AudienceArgs = Flags & { names?: string[] };

export const withOut = (y: Argv): Argv => y.option('out', { type: 'string', describe: 'write the exact request bodies as NDJSON to this file (with plan / --dry-run)' });

export async function runAudienceCommand(args: AudienceArgs, mode: SyncMode): Promise<void> {
  if (mode !== 'plan' && args.out && !args.dryRun) {
    throw new ConfigError(['--out writes the requests a dry run would send: use it with --dry-run (or plan); a real sync never writes them to a file']);
  }
  const config = loadConfig(args);
  const [{ createAppLogger, withShutdown }, { syncJob }, { formatSummary, summaryJson }] = await Promise.all([
    import('../app.js'),
    import('../audience/sync-job.js'),
    import('../audience/format-summary.js'),
  ]);
  const summary = await withShutdown(config, createAppLogger(config), (stop) => syncJob(config, mode, args.names ?? [], stop));
  process.stdout.write(`${scrubSecrets(config, config.json ? summaryJson(summary) : formatSummary(summary))}\n`);
  process.exitCode = summary.exitCode;
}
