/** `status [audience]`: the last runs per audience and job, from the run history. */
import type { CommandModule } from 'yargs';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import type { RunRow } from '../run/run-store.js';
import { stateOptions } from './options.js';

/** The last run of every audience and job, or the last `runs` runs of one audience. */
export async function statusCommand(config: Readonly<Config>, audience?: string, runs = 1): Promise<RunRow[]> {
  const [{ createAppLogger, openCurrent }, { listRuns }] = await Promise.all([import('../app.js'), import('../run/run-store.js')]);
  const open = await openCurrent(config, createAppLogger(config));
  try {
    return await listRuns(open.db, config.stateSchema, { audience, perAudience: runs });
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
    const { formatRuns } = await import('../run/format-runs.js');
    process.stdout.write(`${config.json ? JSON.stringify(rows, null, 2) : formatRuns(rows)}\n`);
  },
};
