/** `plan [names..]`: a dry run of `sync`, per audience and attribute; nothing sent, nothing changed. */
import type { CommandModule } from 'yargs';
import { runAudienceCommand, withOut, type AudienceArgs } from './audience-command.js';
import { audienceOptions } from './options.js';

export const planBinding: CommandModule = {
  command: 'plan [names..]',
  describe: 'dry run: what a sync would send, per audience and attribute',
  builder: (y) => withOut(audienceOptions(y)),
  handler: (args) => runAudienceCommand(args as unknown as AudienceArgs, 'plan'),
};
