/** `status` (the run history) and `failures` (who failed in an audience's last run, and why). */
import type { CommandModule } from 'yargs';
import { createAppLogger, openMigrated } from '../app.js';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import { listRejectedEvents } from '../forward/forward-store.js';
import { stateOptions } from './options.js';
import { ConfigError } from '../errors.js';
import { lastRunFailures, listRuns, type RunRow } from '../run/run-store.js';

/** The last run of every audience and job, or the last `runs` runs of one audience. */
export async function statusCommand(config: Readonly<Config>, audience?: string, runs = 1): Promise<RunRow[]> {
  const open = await openMigrated(config, createAppLogger(config));
  try {
    return await listRuns(open.db, config.stateSchema, { audience, perAudience: runs });
  } finally {
    await open.close();
  }
}

export function formatRuns(rows: RunRow[]): string {
  if (rows.length === 0) return 'no runs recorded yet';
  const n = (r: RunRow, k: string) => String(typeof r.counts[k] === 'number' ? r.counts[k] : '');
  const header = ['run', 'job', 'audience / source', 'status', 'started (UTC)', 'duration', 'new', 'changed', 'exited', 'updates', 'failed'];
  const table = rows.map((r) => [
    String(r.id),
    r.job,
    r.audience ?? String((r.counts as { source?: string }).source ?? ''),
    r.status,
    r.startedAt.slice(0, 19).replace('T', ' '),
    r.durationMs === null ? '-' : `${(r.durationMs / 1000).toFixed(1)} s`,
    n(r, 'new'),
    n(r, 'changed'),
    n(r, 'exited'),
    r.job === 'ingest' ? String((r.counts as { rows?: number }).rows ?? '') : n(r, 'updates'),
    r.job === 'ingest' ? String(((r.counts as { files?: { failed?: number } }).files?.failed) ?? '') : n(r, 'failed'),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  const out = [line(header), ...table.map(line)];
  for (const r of rows) if (r.error) out.push(`  run ${r.id}: ${r.error}`);
  return out.join('\n');
}

export async function failuresCommand(config: Readonly<Config>, audience: string, limit = 1000) {
  const open = await openMigrated(config, createAppLogger(config));
  try {
    return await lastRunFailures(open.db, config.stateSchema, audience, limit);
  } finally {
    await open.close();
  }
}

export const statusBinding: CommandModule = {
  command: 'status [audience]',
  describe: 'the last runs per audience (and of Currents ingestion): outcome, timing, counts',
  builder: (y) => stateOptions(y).positional('audience', { type: 'string' }).option('runs', { type: 'number', describe: 'how many runs per audience [default: 1; 20 with an audience]' }),
  handler: async (args) => {
    const a = args as Flags & { audience?: string; runs?: number };
    const config = loadConfig(a);
    const rows = await statusCommand(config, a.audience, a.runs ?? (a.audience ? 20 : 1));
    process.stdout.write(`${config.json ? JSON.stringify(rows, null, 2) : formatRuns(rows)}\n`);
  },
};

/** Events a destination rejected for good, newest first, with the answer. */
export async function rejectedEvents(config: Readonly<Config>, destination: string, limit = 1000) {
  const open = await openMigrated(config, createAppLogger(config));
  try {
    return await listRejectedEvents(open.db, config.stateSchema, destination, limit);
  } finally {
    await open.close();
  }
}

export const failuresBinding: CommandModule = {
  command: 'failures [audience]',
  describe: 'the members that failed in the last run of an audience, or the events a --destination rejected',
  builder: (y) =>
    stateOptions(y)
      .positional('audience', { type: 'string' })
      .option('destination', { type: 'string', describe: 'list the events this forwarding destination rejected (e.g. movable-ink)' })
      .option('limit', { type: 'number', describe: 'at most this many [default: 1000]' }),
  handler: async (args) => {
    const a = args as unknown as Flags & { audience?: string; destination?: string; limit?: number };
    const config = loadConfig(a);
    if (a.destination) {
      const rows = await rejectedEvents(config, a.destination, a.limit ?? 1000);
      if (config.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      else {
        process.stdout.write(`${rows.length} event(s) rejected by ${a.destination}\n`);
        for (const r of rows) process.stdout.write(`${r.at}\t${r.table}\t${r.id}\t${r.status}\t${r.response ?? ''}\n`);
      }
      return;
    }
    if (!a.audience) throw new ConfigError(['name an audience, or --destination']);
    const result = await failuresCommand(config, a.audience, a.limit ?? 1000);
    if (config.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else if (!result.run) process.stdout.write(`no finished run of ${a.audience} yet\n`);
    else {
      process.stdout.write(`run ${result.run.id} (${result.run.status}, ${result.run.startedAt}): ${result.failures.length} failed member(s)\n`);
      for (const f of result.failures) process.stdout.write(`${f.member ?? '(no identifier)'}\t${f.reason}\n`);
    }
  },
};
