/** `sync [names..]`: send what changed in each audience to Braze. */
import type { CommandModule } from 'yargs';
import { runAudienceCommand, withOut, type AudienceArgs } from './audience-command.js';
import { audienceOptions, sendOptions, runOptions } from './options.js';

export const syncBinding: CommandModule = {
  command: 'sync [names..]',
  describe: 'send what changed in each audience to Braze',
  builder: (y) => runOptions(withOut(sendOptions(audienceOptions(y)))).option('dry-run', { type: 'boolean', describe: 'plan only: nothing sent, no state changed' }),
  handler: (args) => runAudienceCommand(args as unknown as AudienceArgs, 'sync'),
};
