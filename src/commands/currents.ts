/**
 * `currents ingest` and `currents status`: parse flags, then load the library and run it. The
 * library (the AWS SDK, pg, avsc) is imported inside the handlers, so `--help` and every other
 * command start without loading it.
 */
import type { Argv, CommandModule } from 'yargs';
import { currentsSourceOptions, runOptions, stateOptions } from './options.js';
import { ConfigError } from '../errors.js';
import { loadCurrentsConfig, type CurrentsConfig, type CurrentsFlags } from '../config/load-config.js';
import type { OpenDatabase } from '../app.js';
import type { AfterRunContext } from '../run/after-run.js';
import type { IngestSummary } from '../currents/ingest.js';
import type { CurrentsStatus } from '../currents/status.js';

/**
 * Ingest, then prune, refresh --metrics-file and notify however the run ended: an ingest that
 * throws (S3 unreachable, bucket missing, database gone) alerts like one that fails files.
 */
async function runIngest(config: Readonly<CurrentsConfig>, stop: AbortSignal): Promise<IngestSummary> {
  if (!config.source) throw new ConfigError(['--source is required: s3://bucket/prefix or file:///path']);
  const sourceUrl = config.source;
  const [{ createAppLogger, openMigrated }, { withAfterRun }, { ingest }, { ingestOutcome }, { openSource }] = await Promise.all([
    import('../app.js'),
    import('../run/after-run.js'),
    import('../currents/ingest.js'),
    import('../currents/ingest-outcome.js'),
    import('../currents/source/open-source.js'),
  ]);
  const log = createAppLogger(config);
  const source = openSource(sourceUrl, { endpoint: config.s3Endpoint, region: config.region });
  // Filled once the database is open; without it only the notification can go out.
  const after: AfterRunContext = { schema: config.stateSchema, log, options: config };
  let open: OpenDatabase | undefined;
  try {
    return await withAfterRun(
      after,
      'ingest',
      async () => {
        open = await openMigrated(config, log);
        after.db = open.db;
        return ingest(open.db, log, {
          source,
          stop,
          stateSchema: config.stateSchema,
          targetSchema: config.targetSchema,
          eventTypes: config.eventTypes,
          since: config.since,
          until: config.until,
          retryFailed: config.retryFailed,
          concurrency: config.concurrency,
          args: { eventTypes: config.eventTypes, since: config.since, until: config.until, retryFailed: config.retryFailed, targetSchema: config.targetSchema },
          onProgress: process.stderr.isTTY && !config.json ? progressBar() : undefined,
        });
      },
      ingestOutcome,
    );
  } finally {
    await open?.close();
  }
}

/** A one-line progress bar on stderr (TTY only): files done of those pending, rows and rate. */
function progressBar() {
  const started = Date.now();
  return ({ done, total, rows }: { done: number; total: number; rows: number }) => {
    const width = 30;
    const filled = total ? Math.min(width, Math.round((done / total) * width)) : width;
    const rate = Math.round(rows / Math.max(0.001, (Date.now() - started) / 1000));
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} files, ${rows} rows, ${rate} rows/s`);
    if (done === total) process.stderr.write('\n');
  };
}

async function showStatus(config: Readonly<CurrentsConfig>): Promise<CurrentsStatus> {
  const [{ createAppLogger, openCurrent }, { currentsStatus }, { openSource }] = await Promise.all([
    import('../app.js'),
    import('../currents/status.js'),
    import('../currents/source/open-source.js'),
  ]);
  const open = await openCurrent(config, createAppLogger(config));
  try {
    return await currentsStatus(open.db, config.stateSchema, config.source ? openSource(config.source).name : undefined);
  } finally {
    await open.close();
  }
}

const common = (y: Argv) => currentsSourceOptions(stateOptions(y));

const ingestBinding: CommandModule = {
  command: 'ingest',
  describe: 'load new Currents files into PostgreSQL, exactly once each',
  builder: (y) =>
    runOptions(common(y))
      .option('event-types', { type: 'string', describe: 'comma-separated event types to load, e.g. users.messages.email.Send' })
      .option('since', { type: 'string', describe: 'first date= hour to load, YYYY-MM-DD[-HH] (UTC)' })
      .option('until', { type: 'string', describe: 'last date= hour to load, YYYY-MM-DD[-HH] (UTC)' })
      .option('retry-failed', { type: 'boolean', describe: 'try files that failed before again' })
      .option('concurrency', { type: 'number', describe: 'files loaded at once, at most one per event type [default: 4]' }),
  handler: async (args) => {
    const config = loadCurrentsConfig(args as CurrentsFlags);
    const [{ createAppLogger, withShutdown }, { formatIngest }] = await Promise.all([import('../app.js'), import('../currents/format-ingest.js')]);
    const summary = await withShutdown(config, createAppLogger(config), (stop) => runIngest(config, stop));
    process.stdout.write(`${config.json ? JSON.stringify(summary, null, 2) : formatIngest(summary)}\n`);
    process.exitCode = summary.exitCode;
  },
};

const statusBinding: CommandModule = {
  command: 'status',
  describe: 'files and rows per event type, failures, newest hour, missing hours',
  builder: common,
  handler: async (args) => {
    const config = loadCurrentsConfig(args as CurrentsFlags);
    const status = await showStatus(config);
    const { formatStatus } = await import('../currents/status.js');
    process.stdout.write(`${config.json ? JSON.stringify(status, null, 2) : formatStatus(status)}\n`);
  },
};

export const currentsBinding: CommandModule = {
  command: 'currents <command>',
  describe: 'Braze Currents: ingest Avro files from S3 into PostgreSQL, and their status',
  builder: (y) => y.command(ingestBinding).command(statusBinding).demandCommand(1),
  handler: () => {},
};
