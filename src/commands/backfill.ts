/** `backfill [names..]`: resend every member's full attribute set, then continue incrementally. */
import type { CommandModule } from 'yargs';
import { runAudienceCommand, withOut, type AudienceArgs } from './audience-command.js';
import { audienceOptions, sendOptions, runOptions } from './options.js';

export const backfillBinding: CommandModule = {
  command: 'backfill [names..]',
  describe: "resend every member's full attribute set, then record it as the snapshot",
  builder: (y) => runOptions(withOut(sendOptions(audienceOptions(y)))).option('dry-run', { type: 'boolean', describe: 'plan the backfill only' }),
  handler: (args) => runAudienceCommand(args as unknown as AudienceArgs, 'backfill'),
};
