/** Flags shared by several commands, declared once for yargs, with defaults from the settings table. */
import type { Argv } from 'yargs';
import { DEFAULTS, environmentVariables } from '../config/environment.js';

/** Shown under every --help: the environment variables and the exit codes. */
export const epilogue = [
  'Environment:',
  ...environmentVariables.map((v) => `  ${v.name.padEnd(26)} ${v.describe}\n  ${''.padEnd(26)} e.g. ${v.name}=${v.example}`),
  '',
  'Exit codes:',
  '  0  success',
  '  1  finished, but some members failed (they are retried next run)',
  '  2  bad configuration or audience file',
  '  3  another run of the same audience holds the lock',
  '  4  aborted: authentication refused, guardrail tripped, retries exhausted, connection lost',
  '  130 / 143  stopped by SIGINT / SIGTERM after finishing in-flight work',
  '',
  'Audience file format and examples: README.md',
].join('\n');

/** Under each command's --help: a pointer, not the whole environment block again. */
export const commandEpilogue = 'Environment variables and exit codes: braze-bridge help env';

/** Where the state lives, and how to print the result: every command takes these. */
export function stateOptions(y: Argv): Argv {
  return y
    .epilogue(commandEpilogue)
    .option('state-schema', { type: 'string', describe: `schema for braze-bridge state [default: ${DEFAULTS.stateSchema}]` })
    .option('database-url', { type: 'string', describe: 'overrides DATABASE_URL' })
    .option('connect-timeout', { type: 'number', describe: `seconds to wait for a PostgreSQL connection [default: ${DEFAULTS.connectTimeoutSeconds}]` })
    .option('json', { type: 'boolean', describe: 'print the result as JSON on stdout' });
}

/** What a run does when it ends or is stopped: only commands that record runs take these. */
export function runOptions(y: Argv): Argv {
  return y
    .option('metrics-file', { type: 'string', describe: 'write Prometheus metrics here at the end of each run (atomically)' })
    .option('notify-url', { type: 'string', describe: 'POST the run summary here when a run fails, aborts or has too many failed members' })
    .option('notify-failed-ratio', { type: 'number', describe: `notify when failed members exceed this share [default: ${DEFAULTS.notifyFailedRatio}]` })
    .option('keep-days', { type: 'number', describe: `prune run history and failures older than this [default: ${DEFAULTS.keepDays}]` })
    .option('shutdown-timeout', { type: 'number', describe: `seconds to let in-flight work finish after SIGTERM/SIGINT [default: ${DEFAULTS.shutdownTimeoutSeconds}]` });
}

/** What plan and sync share: which audiences, and how they are batched and guarded. */
export function audienceOptions(y: Argv): Argv {
  return stateOptions(y)
    .positional('names', { type: 'string', array: true, describe: 'audience names (file names without .sql); default: all' })
    .option('audiences', { type: 'string', describe: `folder of audience .sql files [default: ${DEFAULTS.audiences}]` })
    .option('batch-size', { type: 'number', describe: `attribute objects per request, at most 75 (50 for MAU CY 24-25 contracts) [default: ${DEFAULTS.batchSize}]` })
    .option('max-change-ratio', { type: 'number', describe: `stop before sending if more than this share of existing members change or exit [default: ${DEFAULTS.maxChangeRatio}]` })
    .option('min-change-count', { type: 'number', describe: `the guardrail applies only from this many exits plus value changes [default: ${DEFAULTS.minChangeCount}]` });
}

/** Only commands that send (sync, backfill, schedule) take these. */
export function sendOptions(y: Argv): Argv {
  return y
    .option('concurrency', { type: 'number', describe: `requests in flight at once [default: ${DEFAULTS.concurrency}]` })
    .option('rate-limit', { type: 'number', describe: `requests per --rate-window [default: ${DEFAULTS.rateLimit}]` })
    .option('rate-window', { type: 'number', describe: `rate-limit window in seconds [default: ${DEFAULTS.rateWindowSeconds}]` })
    .option('timeout', { type: 'number', describe: `seconds before a request is abandoned and retried [default: ${DEFAULTS.timeoutSeconds}]` })
    .option('max-attempts', { type: 'number', describe: `attempts per batch before the run aborts [default: ${DEFAULTS.maxAttempts}]` })
    .option('force', { type: 'boolean', describe: 'send even when the guardrail would stop; it applies to every audience the run selects, so name one (sync NAME --force) to force only it' })
    .option('adopt', { type: 'boolean', describe: 'take over an audience last synced from another path (the file moved)' })
    .option('statement-timeout', { type: 'number', describe: `seconds an audience's query may run before it is cancelled [default: ${DEFAULTS.statementTimeoutSeconds}]` })
    .option('max-array-length', { type: 'number', describe: `items an array attribute may hold; Braze keeps 25 unless raised, up to 100 [default: ${DEFAULTS.maxArrayLength}]` });
}

/** Where Currents files come from (ingest and schedule). */
export function currentsSourceOptions(y: Argv): Argv {
  return y
    .option('source', { type: 'string', describe: 's3://bucket/prefix or file:///path (a local copy of the bucket)' })
    .option('s3-endpoint', { type: 'string', describe: 'an S3-compatible endpoint (path-style); or AWS_ENDPOINT_URL_S3' })
    .option('target-schema', { type: 'string', describe: `schema for the event tables [default: ${DEFAULTS.targetSchema}]` });
}
