/**
 * `verify` as a job: open the database, the export client (its own rate limit) and, with
 * --repair, the track client; verify the selected audiences; then prune, refresh metrics and
 * notify (when drifted members exceed --notify-drift-ratio of those checked).
 */
import { createAppLogger, createExportClient, createTrackClient, openMigrated } from '../app.js';
import type { Config } from '../config/load-config.js';
import { withAfterRun } from '../run/after-run.js';
import { verifyOutcome } from './verify-outcome.js';
import { progressBar } from '../run/progress.js';
import { verifyAudiences, type VerifySummary } from './verify-audiences.js';

export interface VerifyArgs {
  names: readonly string[];
  sample?: number;
  all?: boolean;
  repair?: boolean;
}

export async function verifyJob(config: Readonly<Config>, args: VerifyArgs, stop?: AbortSignal): Promise<VerifySummary> {
  const log = createAppLogger(config);
  const client = createExportClient(config, log);
  const track = args.repair && !config.dryRun ? createTrackClient(config, log) : undefined;
  const open = await openMigrated(config, log);
  const bar = process.stderr.isTTY && !config.json ? progressBar('members') : undefined;
  try {
    return await withAfterRun(
      { db: open.db, schema: config.stateSchema, log, options: { ...config, notifyFailedRatio: config.notifyDriftRatio } },
      'verify',
      () =>
        verifyAudiences(
          { db: open.db, schema: config.stateSchema, log, client, stop, exportRatePerMinute: config.exportRateLimit, onProgress: bar && (({ audience, done, total }) => bar.update({ label: audience, done, total })) },
          args.names,
          { sample: args.all ? undefined : (args.sample ?? 1000), all: args.all, repair: args.repair, dryRun: config.dryRun, args: { sample: args.sample, all: args.all, repair: args.repair } },
          track && {
            dir: config.audiencesDir,
            deps: { client: track },
            options: { batchSize: config.batchSize, concurrency: config.concurrency, maxChangeRatio: config.maxChangeRatio, minChangeCount: config.minChangeCount, force: config.force, args: { repair: true } },
          },
        ),
      verifyOutcome,
    );
  } finally {
    await open.close();
  }
}

/** For people: one line per audience, the attributes that drifted, keys (never values). */
export function formatVerify(summary: VerifySummary): string {
  const lines = summary.audiences.map((a) => {
    const attrs = Object.entries(a.counts.perAttribute).map(([k, v]) => `${k}: ${v.changed} changed, ${v.missing} missing, ${v.unexpected} unexpected`);
    return [
      `${a.audience}: ${a.status}, ${a.counts.checked} checked, ${a.counts.drifted} drifted, ${a.counts.missingProfiles} missing from Braze, ${a.counts.confirmed} update-only confirmed, ${a.counts.waiting} waiting`,
      ...attrs.map((l) => `  ${l}`),
      ...(a.examples.length > 0 ? [`  e.g. ${a.examples.join(', ')}`] : []),
      ...(a.error ? [`  ${a.error}`] : []),
    ].join('\n');
  });
  if (summary.repair) lines.push(`repair: ${summary.repair.audiences.map((a) => `${a.audience} ${a.status}, ${a.counts.updates} data points resent`).join('; ')}`);
  return lines.join('\n');
}
