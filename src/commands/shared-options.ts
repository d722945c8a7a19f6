/** The flags every audience command takes, declared once for yargs. */
import type { Argv } from 'yargs';

export function audienceOptions(y: Argv): Argv {
  return y
    .positional('names', { type: 'string', array: true, describe: 'audience names (file names without .sql); default: all' })
    .option('audiences', { type: 'string', describe: 'folder of audience .sql files [default: sql/audiences]' })
    .option('state-schema', { type: 'string', describe: 'schema for braze-bridge state [default: braze_bridge]' })
    .option('batch-size', { type: 'number', describe: 'attribute objects per request, at most 75 (50 for MAU CY 24-25 contracts) [default: 75]' })
    .option('concurrency', { type: 'number', describe: 'requests in flight at once [default: 4]' })
    .option('rate-limit', { type: 'number', describe: 'requests per --rate-window [default: 3000]' })
    .option('rate-window', { type: 'number', describe: 'rate-limit window in seconds [default: 3]' })
    .option('timeout', { type: 'number', describe: 'seconds before a request is abandoned and retried [default: 30]' })
    .option('max-attempts', { type: 'number', describe: 'attempts per batch before the run aborts [default: 6]' })
    .option('max-change-ratio', { type: 'number', describe: 'stop before sending if more than this share of existing members change or exit [default: 0.5]' })
    .option('force', { type: 'boolean', describe: 'send even when --max-change-ratio is exceeded' })
    .option('json', { type: 'boolean', describe: 'print the summary as JSON on stdout' })
    .option('database-url', { type: 'string', describe: 'overrides DATABASE_URL' });
}
