/**
 * `forward movable-ink`: relay ingested Currents events to Movable Ink's Customer Data API.
 *
 * Only flags, configuration and errors are imported up front. The library (the relay, the
 * HTTP client, app.js and with it pg) is imported when a forward actually runs, so `--help`
 * and every other command start without loading it.
 */
import type { CommandModule } from 'yargs';
import { loadConfig, movableInkSettings, type Config, type Flags } from '../config/load-config.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import type { OpenDatabase } from '../app.js';
import type { ForwardConfig } from '../forward/config.js';
import type { ForwardSummary } from '../forward/relay.js';
import { runOptions, stateOptions } from './options.js';

/**
 * One forward run. However it ends, by a summary or by throwing (database gone, a bad endpoint),
 * it prunes the history, rewrites the metrics file and notifies when needed; a dry run does none
 * of that.
 */
export async function forwardCommand(
  config: Readonly<Config>,
  configFile: string,
  stop?: AbortSignal,
  flags: { retryRejected?: boolean; wait?: boolean } = {},
): Promise<ForwardSummary> {
  const { createAppLogger, openMigrated } = await import('../app.js');
  const log = createAppLogger(config);
  if (config.dryRun) return forwardDryRun(config, configFile, log, stop);
  const { withAfterRun } = await import('../run/after-run.js');
  const { loadForwardConfig } = await import('../forward/config.js');
  const { forwardEvents } = await import('../forward/relay.js');
  const { forwardOutcome } = await import('../forward/forward-outcome.js');
  const { MovableInkClient } = await import('../forward/movable-ink-client.js');
  const { RateLimiter } = await import('../http/rate-limiter.js');
  let open: OpenDatabase | undefined;
  try {
    return await withAfterRun(
      {
        // Read when the run ends: absent if the database never opened, so only the notification goes out.
        get db() {
          return open?.db;
        },
        schema: config.stateSchema,
        log,
        options: config,
      },
      'forward',
      async () => {
        const forward = loadForwardConfig(configFile);
        const rateLimiter = new RateLimiter({ limit: forward.ratePerSecond, windowMs: 1000, reserve: forward.concurrency });
        const client = new MovableInkClient({ ...movableInkSettings(config), rateLimiter, log });
        open = await openMigrated(config, log, poolFor(forward));
        return forwardEvents(open.db, log, {
          config: forward,
          stateSchema: config.stateSchema,
          client,
          dryRun: false,
          stop,
          retryRejected: flags.retryRejected,
          waitForLock: flags.wait,
          args: { config: configFile, ...(flags.retryRejected ? { retryRejected: true } : {}) },
        });
      },
      forwardOutcome,
    );
  } finally {
    await open?.close();
  }
}

/** Build the payloads (to --out as NDJSON), send nothing and change nothing, not even the state schema. */
async function forwardDryRun(config: Readonly<Config>, configFile: string, log: Logger, stop?: AbortSignal): Promise<ForwardSummary> {
  const { createWriteStream } = await import('node:fs');
  const { finished } = await import('node:stream/promises');
  const { openDatabase } = await import('../app.js');
  const { loadForwardConfig } = await import('../forward/config.js');
  const { forwardEvents } = await import('../forward/relay.js');
  const forward = loadForwardConfig(configFile);
  const open = await openDatabase(config, log, poolFor(forward));
  const out = config.out ? createWriteStream(config.out) : undefined;
  try {
    return await forwardEvents(open.db, log, { config: forward, stateSchema: config.stateSchema, dryRun: true, out, stop, args: { config: configFile } });
  } finally {
    if (out) {
      out.end();
      await finished(out);
    }
    await open.close();
  }
}

/** Connections: the cursor, the destination's lock, the run lock, and one per request slot (its bookkeeping). */
function poolFor(forward: ForwardConfig): { poolSize: number } {
  return { poolSize: forward.concurrency + 4 };
}

export function formatForward(s: ForwardSummary): string {
  const out = [
    `braze-bridge forward ${s.destination}: ${s.status} in ${(s.durationMs / 1000).toFixed(1)} s${s.status === 'planned' ? ' (dry run: nothing sent, no state changed)' : ''}`,
    `  events pending ${s.events.pending}: sent ${s.events.sent}, rejected ${s.events.rejected}, left pending ${s.events.leftPending}${s.events.gaveUp ? ` (${s.events.gaveUp} not accepted after 5 attempts, for the next run)` : ''}${s.events.requeued ? `; ${s.events.requeued} rejected events re-queued` : ''}`,
    `  requests ${s.requests}, retries ${s.retries}, 429s ${s.rateLimited}`,
  ];
  for (const [event, n] of Object.entries(s.perEvent).sort()) out.push(`  ${event}: ${n}`);
  for (const r of s.skippedRules) out.push(`  skipped ${r}`);
  if (s.error) out.push(`  ${s.error}`);
  if (s.events.rejected > 0) out.push(`  rejected events are listed by: braze-bridge failures --destination ${s.destination}; resend them with --retry-rejected`);
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
      .option('out', { type: 'string', describe: 'with --dry-run: write the exact payloads as NDJSON here' })
      .option('retry-rejected', { type: 'boolean', describe: 'make events rejected for good pending again and send them (after fixing the cause)' })
      .option('wait', { type: 'boolean', describe: 'wait for another forward run of the destination to end, instead of exit 3' }),
  handler: async (args) => {
    const a = args as unknown as Flags & { config: string; destination: string; retryRejected?: boolean; wait?: boolean };
    const config = loadConfig(a);
    if (config.out && !config.dryRun) throw new ConfigError(['--out goes with --dry-run']);
    const { createAppLogger, withShutdown } = await import('../app.js');
    const summary = await withShutdown(config, createAppLogger(config), (stop) => forwardCommand(config, a.config, stop, { retryRejected: a.retryRejected, wait: a.wait }));
    process.stdout.write(`${config.json ? JSON.stringify(summary, null, 2) : formatForward(summary)}\n`);
    process.exitCode = summary.exitCode;
  },
};
