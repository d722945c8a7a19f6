/** `migrate`: create or upgrade the state schema (sync also does it). */
import type { Argv, CommandModule } from 'yargs';
import { createAppLogger, openDatabase } from '../app.js';
import { loadConfig, type Config } from '../config.js';
import { migrate } from '../db/migrate.js';

export async function migrateCommand(config: Readonly<Config>): Promise<{ applied: string[]; current: number }> {
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
  builder: (y: Argv) =>
    y.option('state-schema', { type: 'string', describe: 'schema for braze-bridge state [default: braze_bridge]' }).option('database-url', { type: 'string', describe: 'overrides DATABASE_URL' }).option('json', { type: 'boolean' }),
  handler: async (args) => {
    const config = loadConfig(args as { stateSchema?: string; databaseUrl?: string; json?: boolean });
    const result = await migrateCommand(config);
    process.stdout.write(
      config.json ? `${JSON.stringify(result)}\n` : `state schema ${config.stateSchema} is at migration ${result.current}${result.applied.length ? ` (applied ${result.applied.join(', ')})` : ' (already up to date)'}\n`,
    );
  },
};
