/**
 * Thin: parse argv, call a command, map errors to exit codes in one place. Each command is a
 * library function in src/commands/.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ExitCode, exitCodeFor, messageOf } from './errors.js';
import { backfillBinding, planBinding, syncBinding } from './commands/sync.js';
import { migrateBinding } from './commands/migrate.js';
import { epilogue } from './commands/options.js';
import { demoBinding } from './commands/demo.js';
import { currentsBinding } from './commands/currents.js';
import { failuresBinding, statusBinding } from './commands/status.js';
import { scheduleBinding } from './commands/schedule.js';
import { forwardBinding } from './commands/forward.js';



export async function main(argv = hideBin(process.argv)): Promise<void> {
  // A reader that goes away (`| head`, a closed log pipe) must not kill a run half-way: the
  // work and its state matter more than the lines nobody reads any more.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
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
    process.exitCode = exitCodeFor(error);
  }
}

class UsageError extends Error {}
