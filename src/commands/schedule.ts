/**
 * `schedule`: one long-running process that runs each audience on its @schedule and Currents
 * ingestion every --currents-every minutes. The scheduler is loaded only when it runs.
 */
import type { CommandModule } from 'yargs';
import { loadCurrentsConfig, type CurrentsFlags } from '../config/load-config.js';
import { audienceOptions, sendOptions, currentsSourceOptions, runOptions } from './options.js';

export const scheduleBinding: CommandModule = {
  command: 'schedule',
  describe: 'long-running: run each audience on its @schedule, and Currents ingestion every --currents-every minutes',
  builder: (y) =>
    runOptions(currentsSourceOptions(sendOptions(audienceOptions(y))))
      .option('currents-every', { type: 'number', describe: 'run Currents ingestion every N minutes (needs --source)' })
      .option('verify-every', { type: 'string', describe: 'verify a sample of members against Braze this often, e.g. 24h (30m, 7d)' })
      .option('verify-sample', { type: 'number', describe: 'members per scheduled verify, split between audiences by size [default: 1000]' })
      .option('export-rate-limit', { type: 'number', describe: 'export requests per minute for verify [default: 250]' })
      .option('notify-drift-ratio', { type: 'number', describe: 'notify when drifted members exceed this share of those checked [default: 0.01]' }),
  handler: async (args) => {
    const a = args as CurrentsFlags & { currentsEvery?: number };
    const config = { ...loadCurrentsConfig(a), currentsEvery: a.currentsEvery };
    const [{ createAppLogger, withShutdown }, { scheduleJob }] = await Promise.all([import('../app.js'), import('../schedule/schedule-job.js')]);
    const result = await withShutdown(config, createAppLogger(config), (stop) => scheduleJob(config, stop));
    process.exitCode = result.exitCode;
  },
};
