/** `failures [audience]`: who failed in an audience's last run and why, or the events a destination rejected. */
import type { CommandModule } from 'yargs';
import { loadConfig, type Config, type Flags } from '../config/load-config.js';
import { ConfigError } from '../errors.js';
import { stateOptions } from './options.js';

/** The failed members of the audience's last finished run. */
export async function failuresCommand(config: Readonly<Config>, audience: string, limit = 1000) {
  const [{ createAppLogger, openCurrent }, { lastRunFailures }] = await Promise.all([import('../app.js'), import('../run/run-store.js')]);
  const open = await openCurrent(config, createAppLogger(config));
  try {
    const result = await lastRunFailures(open.db, config.stateSchema, audience, limit);
    if (!result.run) {
      const { knownAudiences } = await import('../run/run-store.js');
      if (!(await knownAudiences(open.db, config.stateSchema)).includes(audience)) {
        const { unknownAudience } = await import('./status.js');
        throw await unknownAudience(open.db, config.stateSchema, audience);
      }
    }
    return result;
  } finally {
    await open.close();
  }
}

/** Events a forwarding destination rejected for good, newest first, with the answer. */
export async function rejectedEvents(config: Readonly<Config>, destination: string, limit = 1000) {
  const [{ createAppLogger, openCurrent }, { listRejectedEvents }] = await Promise.all([import('../app.js'), import('../forward/forward-store.js')]);
  const open = await openCurrent(config, createAppLogger(config));
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
    if (a.limit !== undefined && !(Number.isInteger(a.limit) && a.limit >= 1)) throw new ConfigError([`--limit must be a whole number of at least 1; got ${a.limit}`]);
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
