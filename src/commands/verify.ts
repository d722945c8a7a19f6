/** `verify [names..]`: read profiles back from Braze and report (and with --repair resend) what drifted. */
import type { CommandModule } from 'yargs';
import { loadConfig, type Flags } from '../config/load-config.js';
import { scrubSecrets } from '../config/secrets.js';
import { DEFAULTS } from '../config/environment.js';
import { ConfigError } from '../errors.js';
import { audienceOptions, runOptions, sendOptions } from './options.js';

type VerifyFlags = Flags & { names?: string[]; sample?: number; all?: boolean; repair?: boolean };

export const verifyBinding: CommandModule = {
  command: 'verify [names..]',
  describe: 'compare members with what Braze holds (POST /users/export/ids); --repair resends what drifted',
  builder: (y) =>
    runOptions(sendOptions(audienceOptions(y)))
      .option('sample', { type: 'number', describe: 'members to check, at random, split between audiences by size [default: 1000]' })
      .option('all', { type: 'boolean', describe: 'every member, paced within the rate limit; an interrupted check resumes' })
      .option('repair', { type: 'boolean', describe: 'resend exactly the drifted attributes right after (with --dry-run: show them)' })
      .option('dry-run', { type: 'boolean', describe: 'record nothing, send nothing' })
      .option('export-rate-limit', { type: 'number', describe: `export requests per minute [default: ${DEFAULTS.exportRateLimit}]` })
      .option('notify-drift-ratio', { type: 'number', describe: `notify when drifted members exceed this share of those checked [default: ${DEFAULTS.notifyDriftRatio}]` }),
  handler: async (raw) => {
    const args = raw as unknown as VerifyFlags;
    if (args.all && args.sample !== undefined) throw new ConfigError(['--all and --sample exclude each other: check every member, or a sample']);
    if (args.sample !== undefined && !(Number.isInteger(args.sample) && args.sample >= 0)) throw new ConfigError([`--sample must be a whole number of members; got ${args.sample}`]);
    const config = loadConfig(args);
    const [{ createAppLogger, withShutdown }, { verifyJob, formatVerify }] = await Promise.all([import('../app.js'), import('../verify/verify-job.js')]);
    const summary = await withShutdown(config, createAppLogger(config), (stop) => verifyJob(config, { names: args.names ?? [], sample: args.sample, all: args.all, repair: args.repair }, stop));
    process.stdout.write(`${scrubSecrets(config, config.json ? JSON.stringify(summary) : formatVerify(summary))}\n`);
    process.exitCode = summary.exitCode;
  },
};
