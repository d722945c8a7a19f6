/** `migrate`: create or upgrade the state schema (sync also does it). */
import type { CommandModule } from 'yargs';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import { stateOptions } from './options.js';

export async function migrateCommand(config: Readonly<Config>): Promise<{ applied: string[]; current: number }> {
  const [{ createAppLogger, openDatabase }, { migrate }] = await Promise.all([import('../app.js'), import('../db/migrate.js')]);
  const log = createAppLogger(config);
  const open = await openDatabase(config, log, { poolSize: 2 });
  try {
    return await migrate(open.db, config.stateSchema, log);
  } finally {
    await open.close();
  }
}

export const migrateBinding: CommandModule = {
  command: 'migrate',
  describe: 'create or upgrade the state schema',
  builder: stateOptions,
  handler: async (args) => {
    const config = loadConfig(args as Flags);
    const result = await migrateCommand(config);
    process.stdout.write(
      config.json ? `${JSON.stringify(result)}\n` : `state schema ${config.stateSchema} is at migration ${result.current}${result.applied.length ? ` (applied ${result.applied.join(', ')})` : ' (already up to date)'}\n`,
    );
  },
};
