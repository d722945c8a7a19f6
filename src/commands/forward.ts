/** `forward movable-ink`: relay ingested Currents events to Movable Ink's Customer Data API. */
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import type { CommandModule } from 'yargs';
import { createAppLogger, openDatabase, openMigrated, withShutdown } from '../app.js';
import { afterRun } from '../run/after-run.js';
import { loadConfig, movableInkSettings, type Config, type Flags } from '../config/load-config.js';
import { ConfigError } from '../errors.js';
import { RateLimiter } from '../http/rate-limiter.js';
import { loadForwardConfig } from '../forward/config.js';
import { forwardEvents, type ForwardSummary } from '../forward/relay.js';
import { MovableInkClient } from '../forward/movable-ink-client.js';
import { runOptions, stateOptions } from './options.js';

export async function forwardCommand(config: Readonly<Config>, configFile: string, stop?: AbortSignal): Promise<ForwardSummary> {
  const forward = loadForwardConfig(configFile);
  const log = createAppLogger(config);
  const client = config.dryRun
    ? undefined
    : new MovableInkClient({ ...movableInkSettings(config), rateLimiter: new RateLimiter({ limit: forward.ratePerSecond, windowMs: 1000, reserve: forward.concurrency }), log });
  // A dry run changes nothing, not even the state schema.
  // Connections: the cursor, the run lock, and one per user being relayed (its bookkeeping).
  const pool = { poolSize: forward.concurrency + 3 };
  const open = config.dryRun ? await openDatabase(config, log, pool) : await openMigrated(config, log, pool);
  const out = config.dryRun && config.out ? createWriteStream(config.out) : undefined;
  try {
    const summary = await forwardEvents(open.db, log, { config: forward, stateSchema: config.stateSchema, client, dryRun: config.dryRun, out, stop, args: { config: configFile } });
    if (!config.dryRun) {
      const handled = summary.events.sent + summary.events.rejected;
      await afterRun(open.db, config.stateSchema, log, config, {
        job: 'forward',
        text: `braze-bridge forward ${forward.destination}: ${summary.status}${summary.error ? `: ${summary.error}` : ''}, ${summary.events.sent} sent, ${summary.events.rejected} rejected, ${summary.events.leftPending} left pending`,
        bad: summary.status === 'aborted' || summary.status === 'interrupted',
        failedRatio: handled === 0 ? 0 : summary.events.rejected / handled,
        summary,
      });
    }
    return summary;
  } finally {
    if (out) {
      out.end();
      await finished(out);
    }
    await open.close();
  }
}

export function formatForward(s: ForwardSummary): string {
  const out = [
    `braze-bridge forward ${s.destination}: ${s.status} in ${(s.durationMs / 1000).toFixed(1)} s${s.status === 'planned' ? ' (dry run: nothing sent, no state changed)' : ''}`,
    `  events pending ${s.events.pending}: sent ${s.events.sent}, rejected ${s.events.rejected}, left pending ${s.events.leftPending}`,
    `  requests ${s.requests}, retries ${s.retries}, 429s ${s.rateLimited}`,
  ];
  for (const [event, n] of Object.entries(s.perEvent).sort()) out.push(`  ${event}: ${n}`);
  for (const r of s.skippedRules) out.push(`  skipped ${r}`);
  if (s.error) out.push(`  ${s.error}`);
  if (s.events.rejected > 0) out.push(`  rejected events are listed by: braze-bridge failures --destination ${s.destination}`);
  return out.join('\n');
}

export const forwardBinding: CommandModule = {
  command: 'forward <destination>',
  describe: 'relay ingested Currents events to a partner (movable-ink)',
  builder: (y) =>
    runOptions(stateOptions(y))
      .positional('destination', { type: 'string', choices: ['movable-ink'] })
      .option('config', { type: 'string', demandOption: true, describe: 'the mapping of Braze events to partner events, e.g. jobs/movable-ink.json' })
      .option('dry-run', { type: 'boolean', describe: 'build the payloads only: nothing sent, no state changed' })
      .option('out', { type: 'string', describe: 'with --dry-run: write the exact payloads as NDJSON here' }),
  handler: async (args) => {
    const a = args as unknown as Flags & { config: string; destination: string };
    const config = loadConfig(a);
    if (config.out && !config.dryRun) throw new ConfigError(['--out goes with --dry-run']);
    const summary = await withShutdown(config, createAppLogger(config), (stop) => forwardCommand(config, a.config, stop));
    process.stdout.write(`${config.json ? JSON.stringify(summary, null, 2) : formatForward(summary)}\n`);
    process.exitCode = summary.exitCode;
  },
};
