/**
 * Thin: parse argv, call a command, turn the outcome into an exit code. Each command's file
 * declares its flags and loads the library it needs only when it runs, so `--help`, `status`
 * and `migrate` never load the AWS SDK. Errors become exit codes in one place (`exitCodeFor`);
 * an error nobody caught, even in a callback, still exits 4 through the logger.
 */
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ExitCode, exitCodeFor, messageOf } from './errors.js';
import { createLogger } from './log.js';
import { environmentSecrets } from './config/secrets.js';
import { epilogue } from './commands/options.js';
import { syncBinding } from './commands/sync.js';
import { planBinding } from './commands/plan.js';
import { backfillBinding } from './commands/backfill.js';
import { migrateBinding } from './commands/migrate.js';
import { statusBinding } from './commands/status.js';
import { failuresBinding } from './commands/failures.js';
import { currentsBinding } from './commands/currents.js';
import { forwardBinding } from './commands/forward.js';
import { scheduleBinding } from './commands/schedule.js';
import { demoBinding } from './commands/demo.js';
import { retireBinding } from './commands/retire.js';
import { verifyBinding } from './commands/verify.js';

/** `help env`: the environment variables and exit codes, printed once here rather than under every command. */
const helpBinding: CommandModule = {
  command: 'help [topic]',
  describe: 'help env: the environment variables and exit codes',
  builder: (y) => y.positional('topic', { type: 'string', choices: ['env'] }),
  handler: (args) => {
    if ((args as { topic?: string }).topic === 'env') process.stdout.write(`${epilogue}\n`);
    else process.stdout.write('braze-bridge --help lists the commands; braze-bridge <command> --help its options; braze-bridge help env the environment\n');
  },
};

const commands = [syncBinding, planBinding, backfillBinding, retireBinding, verifyBinding, migrateBinding, statusBinding, failuresBinding, currentsBinding, forwardBinding, scheduleBinding, demoBinding, helpBinding];

export async function main(argv = hideBin(process.argv)): Promise<void> {
  // A reader that goes away (`| head`, a closed log pipe) must not kill a run half-way: the
  // work and its state matter more than the lines nobody reads any more.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
  // Node's default for an uncaught error is exit 1, which here means "some members failed".
  // Anything uncaught is a run that stopped: exit 4, with one line through the logger.
  const crash = (error: unknown) => {
    createLogger({ level: 'error', secrets: environmentSecrets() }).error(`unexpected error: ${messageOf(error)}`, { stack: error instanceof Error ? error.stack?.split('\n').slice(1, 4).join(' | ') : undefined });
    process.exit(ExitCode.aborted);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);

  try {
    let parser = yargs(argv).scriptName('braze-bridge').usage('$0 <command> [options]');
    for (const command of commands) parser = parser.command(command);
    skipHelpCache(parser);
    await parser
      .demandCommand(1, `name a command: ${commands.map((c) => String(c.command).split(' ')[0]).join(', ')}`)
      .recommendCommands()
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
    // The last line of defence, as in the logger: no secret of the environment is printed.
    const secrets = environmentSecrets().filter((x) => x.length >= 4);
    const line = secrets.reduce((t, x) => t.split(x).join('[redacted]'), messageOf(error));
    process.stderr.write(`braze-bridge: ${line}\n`);
    process.exitCode = exitCodeFor(error);
  }
}

class UsageError extends Error {}

/**
 * yargs lays out a command's whole help text before running it, in case the command shows its
 * help later (none does): 40-50 ms of measuring strings on every run, a cron job's start-up
 * for nothing. Its usage object is internal, so if a later yargs has none of this shape, the
 * help is laid out as before.
 */
export function skipHelpCache(parser: unknown): void {
  type Internals = { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } | undefined } };
  const usage = (parser as Internals).getInternalMethods?.().getUsageInstance?.();
  if (typeof usage?.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
}
