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
    runOptions(currentsSourceOptions(sendOptions(audienceOptions(y)))).option('currents-every', { type: 'number', describe: 'run Currents ingestion every N minutes (needs --source)' }),
  handler: async (args) => {
    const a = args as CurrentsFlags & { currentsEvery?: number };
    const config = { ...loadCurrentsConfig(a), currentsEvery: a.currentsEvery };
    const [{ createAppLogger, withShutdown }, { scheduleJob }] = await Promise.all([import('../app.js'), import('../schedule/schedule-job.js')]);
    const result = await withShutdown(config, createAppLogger(config), (stop) => scheduleJob(config, stop));
    process.exitCode = result.exitCode;
  },
};
