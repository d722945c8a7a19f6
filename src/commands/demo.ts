/**
 * `demo` (what `npm start` runs): the main job end to end with nothing installed — the embedded
 * PostgreSQL and the local Braze sandbox, the example audiences synced, a few customers changed
 * and synced again to show that only deltas go out.
 */
import type { CommandModule } from 'yargs';

export const demoBinding: CommandModule = {
  command: 'demo',
  describe: 'run the example audiences against the embedded database and a local Braze sandbox',
  builder: (y) => y,
  handler: async () => {
    const [{ runDemo }, { combineExitCodes }] = await Promise.all([import('../audience/demo.js'), import('../errors.js')]);
    const summaries = await runDemo();
    process.exitCode = combineExitCodes(summaries.map((s) => s.exitCode));
  },
};
