/** `currents ingest` and `currents status`. */
import type { Argv, CommandModule } from 'yargs';
import { currentsSourceOptions, runOptions, stateOptions } from './options.js';
import { createAppLogger, openMigrated, withShutdown } from '../app.js';
import { afterRun, type RunOutcome } from '../run/after-run.js';
import { ConfigError } from '../errors.js';
import { loadCurrentsConfig, type CurrentsConfig, type CurrentsFlags } from '../config/load-config.js';
import { ingest, type IngestSummary } from '../currents/ingest.js';
import { openSource } from '../currents/source/open-source.js';
import { currentsStatus, formatStatus, type CurrentsStatus } from '../currents/status.js';

export async function ingestCommand(config: Readonly<CurrentsConfig>, stop?: AbortSignal): Promise<IngestSummary> {
  if (!config.source) throw new ConfigError(['--source is required: s3://bucket/prefix or file:///path']);
  const log = createAppLogger(config);
  const source = openSource(config.source, { endpoint: config.s3Endpoint, region: config.region });
  const open = await openMigrated(config, log);
  const tty = process.stderr.isTTY && !config.json;
  const started = Date.now();
  try {
    const summary = await ingest(open.db, log, {
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
      onProgress: tty
        ? ({ done, total, rows }) => {
            const width = 30;
            const filled = total ? Math.round((done / total) * width) : width;
            const rate = Math.round(rows / Math.max(0.001, (Date.now() - started) / 1000));
            process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} files, ${rows} rows, ${rate} rows/s`);
            if (done === total) process.stderr.write('\n');
          }
        : undefined,
    });
    await afterRun(open.db, config.stateSchema, log, config, ingestOutcome(summary));
    return summary;
  } finally {
    await open.close();
  }
}

/** The notification and its trigger for an ingest run. */
export function ingestOutcome(summary: IngestSummary): RunOutcome {
  return {
    job: 'ingest',
    text:
      summary.status === 'interrupted'
        ? `braze-bridge currents ingest from ${summary.source}: interrupted by a signal (${summary.files.loaded} files loaded)`
        : `braze-bridge currents ingest from ${summary.source}: ${summary.files.failed} file(s) failed${summary.failures[0] ? `, e.g. ${summary.failures[0].key}: ${summary.failures[0].error}` : ''}`,
    bad: summary.status === 'interrupted',
    failedRatio: summary.files.failed / Math.max(1, summary.files.loaded + summary.files.failed),
    summary,
  };
}

export function formatIngest(s: IngestSummary): string {
  const out = [
    `braze-bridge currents ingest from ${s.source}: ${s.status} in ${(s.durationMs / 1000).toFixed(1)} s (run ${s.runId})`,
    `  keys listed ${s.discovered.listed}, Currents files ${s.discovered.currents} (new ${s.discovered.new}), other keys ignored ${s.discovered.ignored}`,
    `  files loaded ${s.files.loaded}, already loaded ${s.files.alreadyLoaded}, failed ${s.files.failed}, left pending ${s.files.leftPending}`,
    `  rows loaded ${s.rows}, duplicate events skipped ${s.duplicates}`,
  ];
  for (const [type, t] of Object.entries(s.perType).sort()) out.push(`  ${type}: ${t.files} files, ${t.rows} rows, ${t.duplicates} duplicates${t.failed ? `, ${t.failed} failed` : ''}`);
  for (const f of s.failures) out.push(`  FAILED ${f.key}: ${f.error}${f.recordIndex !== null ? ` (record ${f.recordIndex})` : ''}`);
  if (s.files.failed > 0) out.push('  failed files are skipped by later runs until `currents ingest --retry-failed`');
  return out.join('\n');
}

export async function statusCommand(config: Readonly<CurrentsConfig>): Promise<CurrentsStatus> {
  const log = createAppLogger(config);
  const open = await openMigrated(config, log);
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
      .option('concurrency', { type: 'number', describe: 'files loaded at once [default: 4]' }),
  handler: async (args) => {
    const config = loadCurrentsConfig(args as CurrentsFlags);
    const summary = await withShutdown(config, createAppLogger(config), (stop) => ingestCommand(config, stop));
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
    const status = await statusCommand(config);
    process.stdout.write(`${config.json ? JSON.stringify(status, null, 2) : formatStatus(status)}\n`);
  },
};

export const currentsBinding: CommandModule = {
  command: 'currents <command>',
  describe: 'Braze Currents: ingest Avro files from S3 into PostgreSQL, and their status',
  builder: (y) => y.command(ingestBinding).command(statusBinding).demandCommand(1),
  handler: () => {},
};
