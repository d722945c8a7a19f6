/** `retire <audience>`: apply a deleted audience's last @on_exit to every member, then forget it. */
import type { CommandModule } from 'yargs';
import { loadConfig, type Flags } from '../config/load-config.js';
import { scrubSecrets } from '../config/secrets.js';
import { DEFAULTS } from '../config/environment.js';
import { runOptions, stateOptions } from './options.js';

export const retireBinding: CommandModule = {
  command: 'retire <audience>',
  describe: "apply a deleted audience's last @on_exit to all its members in Braze, then forget it",
  builder: (y) =>
    runOptions(stateOptions(y))
      .positional('audience', { type: 'string', describe: 'the audience name (its former file name without .sql)' })
      .option('audiences', { type: 'string', describe: `folder of audience .sql files; the audience must no longer have a file there [default: ${DEFAULTS.audiences}]` })
      .option('dry-run', { type: 'boolean', describe: 'show what would be sent; nothing sent, nothing forgotten' })
      .option('out', { type: 'string', describe: 'with --dry-run: write the exact request bodies as NDJSON here' }),
  handler: async (raw) => {
    const args = raw as unknown as Flags & { audience: string };
    const config = loadConfig(args);
    const [{ createAppLogger, withShutdown }, { retireJob }, { formatSummary, summaryJson }] = await Promise.all([
      import('../app.js'),
      import('../audience/retire-job.js'),
      import('../audience/format-summary.js'),
    ]);
    const summary = await withShutdown(config, createAppLogger(config), (stop) => retireJob(config, args.audience, stop));
    process.stdout.write(`${scrubSecrets(config, config.json ? summaryJson(summary) : formatSummary(summary))}\n`);
    process.exitCode = summary.exitCode;
  },
};
