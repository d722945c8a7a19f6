/**
 * Thin: parse argv, call a command, map errors to exit codes in one place. Each command is a
 * library function in src/commands/.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { environment } from './config.js';
import { ExitCode, exitCodeOf, messageOf } from './errors.js';
import { backfillBinding, planBinding, syncBinding } from './commands/sync.js';
import { migrateBinding } from './commands/migrate.js';
import { demoBinding } from './commands/demo.js';
import { currentsBinding } from './commands/currents.js';
import { failuresBinding, statusBinding } from './commands/status.js';
import { scheduleBinding } from './commands/schedule.js';
import { forwardBinding } from './commands/forward.js';

const epilogue = [
  'Environment:',
  ...environment.map(([name, example, what]) => `  ${name.padEnd(26)} ${what}\n  ${''.padEnd(26)} e.g. ${name}=${example}`),
  '',
  'Exit codes:',
  '  0  success',
  '  1  finished, but some members failed (they are retried next run)',
  '  2  bad configuration or audience file',
  '  3  another run of the same audience holds the lock',
  '  4  aborted: authentication refused, guardrail tripped, retries exhausted',
  '  130 / 143  stopped by SIGINT / SIGTERM after finishing in-flight work',
  '',
  'Audience file format and examples: README.md',
].join('\n');

export async function main(argv = hideBin(process.argv)): Promise<void> {
  try {
    await yargs(argv)
      .scriptName('braze-bridge')
      .usage('$0 <command> [options]')
      .command(syncBinding)
      .command(planBinding)
      .command(backfillBinding)
      .command(migrateBinding)
      .command(statusBinding)
      .command(failuresBinding)
      .command(currentsBinding)
      .command(scheduleBinding)
      .command(forwardBinding)
      .command(demoBinding)
      .demandCommand(1, 'name a command: sync, plan, backfill, status, failures, migrate, currents, forward, schedule or demo')
      .strict()
      .epilogue(epilogue)
      .wrap(Math.min(110, process.stdout.columns ?? 110))
      .fail((message, error) => {
        throw error ?? new UsageError(message);
      })
      .parseAsync();
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`braze-bridge: ${error.message} (see braze-bridge --help)\n`);
      process.exitCode = ExitCode.config;
      return;
    }
    process.stderr.write(`braze-bridge: ${messageOf(error)}\n`);
    process.exitCode = exitCodeOf(error);
  }
}

class UsageError extends Error {}
