/** `status [audience]`: the last runs per audience and job, from the run history. */
import type { CommandModule } from 'yargs';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import { scrubSecrets } from '../config/secrets.js';
import type { RunRow } from '../run/run-store.js';
import { ConfigError } from '../errors.js';
import { stateOptions } from './options.js';
import type { Queryable } from '../db/pool.js';

/** An audience with no run in the history: most often a typo. Names the ones that exist. */
export async function unknownAudience(db: Queryable, schema: string, audience: string): Promise<ConfigError> {
  const { knownAudiences } = await import('../run/run-store.js');
  const known = await knownAudiences(db, schema);
  return new ConfigError([`no run of an audience named "${audience}" in the history${known.length ? ` (audiences with runs: ${known.join(', ')})` : ' (no audience has run yet)'}`]);
}

/** The last run of every audience and job, or the last `runs` runs of one audience. */
export async function statusCommand(config: Readonly<Config>, audience?: string, runs = 1): Promise<RunRow[]> {
  const [{ createAppLogger, openCurrent }, { listRuns }] = await Promise.all([import('../app.js'), import('../run/run-store.js')]);
  const open = await openCurrent(config, createAppLogger(config));
  try {
    const rows = await listRuns(open.db, config.stateSchema, { audience, perAudience: runs });
    if (audience && rows.length === 0) throw await unknownAudience(open.db, config.stateSchema, audience);
    return rows;
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
    if (a.runs !== undefined && !(Number.isInteger(a.runs) && a.runs >= 1 && a.runs <= 10_000)) {
      throw new ConfigError([`--runs must be a whole number from 1 to 10000; got ${Number.isNaN(a.runs) ? 'something that is not a number' : a.runs}`]);
    }
    const config = loadConfig(a);
    const rows = await statusCommand(config, a.audience, a.runs ?? (a.audience ? 20 : 1));
    const { formatRuns } = await import('../run/format-runs.js');
    process.stdout.write(`${scrubSecrets(config, config.json ? JSON.stringify(rows, null, 2) : formatRuns(rows))}\n`);
  },
};
